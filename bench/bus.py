"""Bus throughput: upstream events/s that one gateway receives through Redis pub/sub or
through Kafka, batched versus one bus message per upstream event.

A publisher process floods ``tickhub:ev:btcusdt@trade`` with bus messages built by the
compiled ``tickhub._ext.batch`` (pipelined PUBLISH, 200 per round trip), as an owner
instance would; the receiving side is a real :class:`tickhub.server.Gateway` with the Redis
bus and one local subscription of the stream, counting the events its compiled
``Channel.deliver`` hands to the fan-out over the measuring window. A fake lease keeps the
receiver from taking the upstream itself. Redis (valkey-server) runs on 127.0.0.1.

Kafka (``TICKHUB_BUS=kafka``; a Tansu broker with in-memory storage on 127.0.0.1, Redis
still holding the leases): the record layout of :mod:`tickhub.bus.kafka` is one record
per upstream event, so the batching that differs is the producer's. ``batched`` is what
an owner's ``KafkaLog`` does (aiokafka producer, ``linger_ms=5``, ``send`` without waiting,
so records travel in record batches); ``single`` waits for every record's acknowledgement
(``send_and_wait`` with ``linger_ms=0``: one record per produce request, one round trip
each). The receiver is a real Gateway with
the Kafka bus (its consumer's lag bound raised so it never skips ahead during the flood).

    .venv/bin/python bench/bus.py            # Redis B = 1, 10, 100; Kafka single, batched; 3 s
    .venv/bin/python bench/bus.py --seconds 2 --batches 1 50 --buses redis

Prints versions first, then one line per B and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

PUBLISHER = r"""
import sys, time, redis
from tickhub._ext import batch, fanout
import asyncio
url, b, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
loop = asyncio.new_event_loop()
ch = batch.Channel(fanout.Fanout(loop))
r = redis.Redis.from_url(url)
tid, seq = 1, 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    pipe = r.pipeline(transaction=False)
    for _ in range(max(1, 200 // b)):
        for _ in range(b):
            ch.add(b'{"e":"trade","E":1700000000000,"s":"BTCUSDT","t":%d,"p":"42000.10","q":"0.00100","T":1700000000000,"m":true,"M":true}' % tid)
            tid += 1
        seq += 1
        pipe.publish(b"tickhub:ev:btcusdt@trade", ch.take(batch.header(b"bench-owner", 1, seq)))
    pipe.execute()
"""

KAFKA_PUBLISHER = r"""
import asyncio, sys, time
from aiokafka import AIOKafkaProducer
bootstrap, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
async def main():
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1,
                                linger_ms=0 if mode == "single" else 5, enable_idempotence=False)
    await producer.start()
    headers = [("received_ns", b"1700000000000000000"), ("instance", b"bench-owner")]
    tid = 1
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(200):
                value = b'{"e":"trade","E":1700000000000,"s":"BTCUSDT","t":%d,"p":"42000.10","q":"0.00100","T":1700000000000,"m":true,"M":true}' % tid
                tid += 1
                if mode == "single":
                    await producer.send_and_wait("tickhub.binance", value, key=b"btcusdt@trade", headers=headers)
                else:
                    await producer.send("tickhub.binance", value, key=b"btcusdt@trade", headers=headers)
    finally:
        await producer.stop()
asyncio.run(main())
"""


class NoUpstream:
    def acquire(self, stream: str) -> None:
        return None

    def release(self, stream: str) -> None:
        return None


async def measure(url: str, b: int, seconds: float) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from tickhub.config import Config
    from tickhub.names import parse_stream
    from tickhub.server import Gateway

    admin = aioredis.Redis.from_url(url)
    await admin.flushall()
    await admin.set("tickhub:owner:btcusdt@trade", "bench-owner 1", px=600_000)
    gw = Gateway(Config(listen_url="ws://127.0.0.1:0", bus="redis", redis_url=url,
                        instance_id="bench-receiver", drain_seconds=0.0),
                 upstreams={"binance": NoUpstream()})
    await gw.start()
    gw.registry.acquire(parse_stream("btcusdt@trade"))
    st = gw.bus._streams["btcusdt@trade"]
    while not st.subscribed:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    warmup = 0.5
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, url, str(b), str(seconds + warmup + 0.5)])
    await asyncio.sleep(warmup)
    d0, b0, t0 = st.chan.delivered, gw.bus.batches_received, time.perf_counter()
    await asyncio.sleep(seconds)
    d1, b1, t1 = st.chan.delivered, gw.bus.batches_received, time.perf_counter()
    proc.wait()
    gaps = gw.bus.gaps
    await gw.stop()
    await admin.aclose()
    return {"bus": "redis", "B": b, "events_per_s": (d1 - d0) / (t1 - t0),
            "bus_messages_per_s": (b1 - b0) / (t1 - t0), "gaps_reported": gaps}


async def measure_kafka(redis_url: str, bootstrap: str, mode: str, seconds: float) -> dict[str, Any]:
    """Events/s a Kafka-bus gateway hands to its fan-out while a producer floods the topic."""
    import redis.asyncio as aioredis

    from tickhub.config import Config
    from tickhub.names import parse_stream
    from tickhub.server import Gateway

    admin = aioredis.Redis.from_url(redis_url)
    await admin.flushall()
    await admin.set("tickhub:owner:btcusdt@trade", "bench-owner 1", px=600_000)
    gw = Gateway(Config(listen_url="ws://127.0.0.1:0", bus="kafka", redis_url=redis_url,
                        kafka_broker_url=bootstrap, instance_id="bench-receiver",
                        kafka_max_lag=100_000_000, drain_seconds=0.0),
                 upstreams={"binance": NoUpstream()})
    await gw.start()
    gw.registry.acquire(parse_stream("btcusdt@trade"))
    deadline = time.monotonic() + 15
    while not (gw.bus._assigned and gw.bus.pubsub_up):
        if time.monotonic() > deadline:
            raise TimeoutError("the kafka consumer was not assigned the topic within 15 s")
        await asyncio.sleep(0.05)
    st = gw.bus._streams["btcusdt@trade"]
    await asyncio.sleep(0.3)
    warmup = 1.0
    proc = subprocess.Popen([sys.executable, "-c", KAFKA_PUBLISHER, bootstrap, mode,
                             str(seconds + warmup + 0.5)])
    await asyncio.sleep(warmup)
    d0, r0, t0 = st.chan.delivered, gw.bus.records_received, time.perf_counter()
    await asyncio.sleep(seconds)
    d1, r1, t1 = st.chan.delivered, gw.bus.records_received, time.perf_counter()
    proc.wait()
    gaps = gw.bus.gaps
    await gw.stop()
    await admin.aclose()
    return {"bus": "kafka", "mode": mode, "events_per_s": (d1 - d0) / (t1 - t0),
            "bus_messages_per_s": (r1 - r0) / (t1 - t0), "gaps_reported": gaps}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--kafka-modes", nargs="+", default=["single", "batched"],
                        choices=["single", "batched"])
    parser.add_argument("--buses", nargs="+", default=["redis", "kafka"], choices=["redis", "kafka"])
    args = parser.parse_args()
    import aiokafka  # type: ignore[import-untyped]
    import redis
    import uvloop

    from servers import RedisServer, running_kafka
    from tickhub import _ext

    print(f"python {platform.python_version()}, redis-py {redis.__version__}, "
          f"aiokafka {aiokafka.__version__}, uvloop {uvloop.__version__}, "
          f"tickhub hot path {_ext.IMPLEMENTATION}")
    server = RedisServer()
    server.start()
    try:
        results = []
        if "redis" in args.buses:
            redis_rows = []
            for b in args.batches:
                res = await measure(server.url, b, args.seconds)
                redis_rows.append(res)
                print(f"redis B={b:<4} {res['events_per_s']:>12,.0f} events/s  "
                      f"{res['bus_messages_per_s']:>10,.0f} bus messages/s  gaps={res['gaps_reported']}")
            base = redis_rows[0]["events_per_s"] or 1.0
            for res in redis_rows:
                res["ratio_vs_first"] = round(res["events_per_s"] / base, 2)
            results += redis_rows
        if "kafka" in args.buses:
            kafka_rows = []
            for mode in args.kafka_modes:
                async with running_kafka(partitions=1) as broker:
                    res = await measure_kafka(server.url, broker.bootstrap, mode, args.seconds)
                kafka_rows.append(res)
                print(f"kafka {mode:<8} {res['events_per_s']:>10,.0f} events/s  "
                      f"{res['bus_messages_per_s']:>10,.0f} records/s  gaps={res['gaps_reported']}")
            base = kafka_rows[0]["events_per_s"] or 1.0
            for res in kafka_rows:
                res["ratio_vs_first"] = round(res["events_per_s"] / base, 2)
            results += kafka_rows
        print(json.dumps(results))
    finally:
        server.stop()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
