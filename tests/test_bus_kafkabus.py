"""Kafka as the bus: gateways read events from a real Tansu broker, ownership by Redis lease."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
import websockets
from aiokafka import AIOKafkaProducer

from conftest import wait_for
from servers import RedisServer, TansuBroker, running_kafka, running_redis

TTL = 0.6


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def kafka() -> AsyncIterator[TansuBroker]:
    async with running_kafka(partitions=2) as broker:
        yield broker


def kafka_bus(redis_server: RedisServer, kafka: TansuBroker, name: str) -> dict[str, Any]:
    return dict(bus="kafka", redis_url=redis_server.url, kafka_broker_url=kafka.bootstrap,
                instance_id=name, bus_lease_ttl=TTL, bus_linger=0.2, bus_backoff_max=0.3)


async def recv_json(ws: Any, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(orjson.loads(await ws.recv()))
    return out


async def test_a_kafka_bus_gateway_serves_the_owners_events_from_the_log(make_hub, sim, redis_server, kafka):
    owner = await make_hub(**kafka_bus(redis_server, kafka, "hub-owner"))
    other = await make_hub(**kafka_bus(redis_server, kafka, "hub-other"))
    # max_queue=None: not read to the end, so its close is not stuck behind unread frames.
    async with websockets.connect(f"{owner.url}/ws/btcusdt@trade", max_queue=None) as wo:
        await recv_json(wo, 2)
        assert owner.bus.status()["owned"] == ["btcusdt@trade"]
        async with websockets.connect(f"{other.url}/ws/btcusdt@trade") as wb:
            events = await recv_json(wb, 20)
            trades = [m["t"] for m in events]
            assert trades == list(range(trades[0], trades[0] + 20))  # in order, no gap, no dup
            status = other.bus.status()
            assert status["kind"] == "kafka" and status["owned"] == []
            assert status["counters"]["records_received"] >= 20
            assert sim.subscriptions() == {"btcusdt@trade": 1}
            # An upstream drop at the owner reaches the other instance through a gap record.
            sim.drop_connections()
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(10.0):
                while not (seen and seen[-1].get("e") == "trade" and
                           any(m.get("e") == "streamGap" for m in seen)):
                    seen.append(orjson.loads(await wb.recv()))
            assert [m["reason"] for m in seen if m.get("e") == "streamGap"] == ["reconnect"]


async def test_records_of_the_documented_shape_reach_websocket_clients(make_hub, redis_server, kafka):
    # Another process owns the stream (its lease is in Redis): this gateway only reads the log.
    r = aioredis.Redis.from_url(redis_server.url)
    await r.set("tickhub:owner:xrpusdt@trade", "feeder 1", px=60_000)
    await r.aclose()
    hub = await make_hub(**kafka_bus(redis_server, kafka, "edge"))
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        async with websockets.connect(f"{hub.url}/stream?streams=xrpusdt@trade") as ws:
            await wait_for(lambda: hub.bus.status()["kafka_consumer"], timeout=10.0, what="consumer up")
            await asyncio.sleep(0.3)  # the consumer starts at the latest offset

            async def send(t: int, gap: bytes | None = None) -> None:
                headers = [("received_ns", b"1"), ("instance", b"feeder")]
                if gap is not None:
                    headers.append(("gap", gap))
                value = b"" if gap else b'{"e":"trade","E":1,"s":"XRPUSDT","t":%d,"p":"1","q":"1","T":1,"m":true,"M":true}' % t
                await producer.send_and_wait("tickhub.binance", value, key=b"xrpusdt@trade", headers=headers)

            for t in (1, 2, 2, 3):  # the repeated 2: a second owner's copy, de-duplicated
                await send(t)
            await send(0, gap=b"reconnect")
            await send(4)
            got = await recv_json(ws, 5)
            assert [m["stream"] for m in got] == ["xrpusdt@trade"] * 5
            data = [m["data"] for m in got]
            assert [d.get("t") for d in data[:3]] == [1, 2, 3]
            assert data[3]["e"] == "streamGap" and data[3]["reason"] == "reconnect"
            assert data[4]["t"] == 4
    finally:
        await producer.stop()
