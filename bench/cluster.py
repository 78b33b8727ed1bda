"""Cluster fan-out: one ``tickhub serve`` versus three on the Redis bus, same offered load.

Processes (bench/hub_e2e.py's pieces): the feeder (bench/peers/feeder.py, a Binance-shaped
upstream stamping every trade with ``"T": time.monotonic_ns()``), the real
``python -m tickhub serve`` command, and benchclient load processes counting frames and
``now - T`` per frame. Every client connects to ``/ws/btcusdt@trade``.

* **1 instance**: the memory bus, ``--clients`` connections to it.
* **3 instances**: ``TICKHUB_BUS=redis``, ``REDIS_URL`` (valkey-server on 127.0.0.1),
  ``TICKHUB_INSTANCE_ID=hub-1..3``; the clients spread evenly, one load process per
  instance. One instance wins the stream's lease and holds the upstream; it publishes a
  bus batch per loop turn and the other two fan out what they receive from Redis.

The feeder offers the same fixed rate (bursts of ``--burst``) to both setups. Reported per
setup: delivered msgs/s (all clients), p50 / p99 / p99.9 / max latency over every frame of
every client (the load processes' histograms merged) and p99 per instance, CPU of all hub
processes and of Redis over the measuring window.

What this can show on a 2-core machine: all hubs share core 0 (``--hub-core``) and the
feeder, the load processes and Redis share core 1, so three instances get no more CPU
than one. The figure is therefore the *cost* of the cluster path (bus publish, Redis
round trip, three event loops on one core) at equal CPU, not the scale-out a cluster on
separate machines would give.

    .venv/bin/python bench/cluster.py                  # 1000 clients, 1000 msgs/s, 5 s windows
    .venv/bin/python bench/cluster.py --rate 2000 --duration 3

JSON lines go to bench/results/cluster.jsonl; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchlib import (
    BENCH,
    PYTHON,
    ROOT,
    Proc,
    append_jsonl,
    client_argv,
    cpu_seconds,
    ensure_benchclient,
    merged_percentiles_us,
    versions,
)
from hub_e2e import free_port, wait_listening

sys.path.insert(0, str(ROOT / "tests"))
from servers import RedisServer

RESULTS = BENCH / "results" / "cluster.jsonl"


def start_hub(feeder_port: int, core: int | None, extra_env: dict[str, str]) -> tuple[Proc, int]:
    """``python -m tickhub serve`` with its upstream pointed at the feeder."""
    port = free_port()
    env = {
        "BINANCE_WS_URL": f"ws://127.0.0.1:{feeder_port}",
        "TICKHUB_LISTEN_URL": f"ws://127.0.0.1:{port}",
        "TICKHUB_DRAIN_SECONDS": "0",
        "TICKHUB_MAX_QUEUED_BYTES": str(1 << 20),
        "TICKHUB_LOG_LEVEL": "WARNING",
        **extra_env,
    }
    hub = Proc([PYTHON, "-m", "tickhub", "serve"], core=core, env=env)
    wait_listening(port, hub)
    return hub, port


def split(total: int, parts: int) -> list[int]:
    """``total`` clients spread as evenly as possible over ``parts`` instances."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_setup(instances: int, args: argparse.Namespace, feeder_port: int,
              redis: RedisServer | None) -> dict[str, Any]:
    hubs: list[Proc] = []
    clients: list[Proc] = []
    try:
        ports = []
        for i in range(instances):
            env = {} if redis is None else {
                "TICKHUB_BUS": "redis", "REDIS_URL": redis.url, "TICKHUB_INSTANCE_ID": f"hub-{i + 1}"}
            hub, port = start_hub(feeder_port, args.hub_core, env)
            hubs.append(hub)
            ports.append(port)
        for port, n in zip(ports, split(args.clients, instances)):
            url = f"ws://127.0.0.1:{port}/ws/btcusdt@trade"
            clients.append(Proc(client_argv(url, n, args.warmup, args.duration, latency=True),
                                core=args.client_core))
        for cli in clients:
            cli.read_event(60, "connected")
        for cli in clients:
            cli.read_event(args.warmup + 30, "window_start")
        watched = [h.pid for h in hubs] + ([redis.proc.pid] if redis is not None and redis.proc else [])
        cpu0 = [sum(cpu_seconds(pid)) for pid in watched]
        w0 = time.monotonic()
        results = [cli.read_event(args.duration + 30, "result") for cli in clients]
        w1 = time.monotonic()
        cpu1 = [sum(cpu_seconds(pid)) for pid in watched]
    finally:
        for cli in clients:
            cli.stop()
        for hub in hubs:
            hub.stop()
    span = w1 - w0
    busy = [(b - a) / span for a, b in zip(cpu0, cpu1)]
    hub_busy = busy[:instances]
    return {
        "instances": instances,
        "clients": sum(r["connections"] for r in results),
        "delivered_per_s": sum(r["frames_per_s"] for r in results),
        "ok": all(r["ok"] for r in results),
        "seq_errors": sum(r["seq_errors"] for r in results),
        "disconnected": sum(r["disconnected"] for r in results),
        "p50_us": [r["latency_us"]["p50"] for r in results],
        "p99_us": [r["latency_us"]["p99"] for r in results],
        # every frame of every load process, merged: the cluster's own percentiles
        "merged_us": dict(zip(("p50", "p99", "p99.9", "max"), merged_percentiles_us(
            [r.get("latency_histogram") for r in results], (0.5, 0.99, 0.999, 1.0)))),
        "hub_cpu_busy": hub_busy,
        "hub_cpu_total": sum(hub_busy),
        "redis_cpu_busy": busy[instances] if len(busy) > instances else None,
        "per_process": results,
    }


def main() -> int:
    p = argparse.ArgumentParser(description="cluster fan-out: 1 instance vs 3 on the Redis bus")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1000.0, help="upstream msgs/s offered to both setups")
    p.add_argument("--burst", type=int, default=10, help="messages per feeder write")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--hub-core", type=int, default=0, help="core every hub process is pinned to")
    p.add_argument("--client-core", type=int, default=1, help="core of the feeder and load processes")
    args = p.parse_args()
    ensure_benchclient()
    info = versions()
    print(json.dumps({"versions": info}), flush=True)

    feeder = Proc([PYTHON, str(BENCH / "peers" / "feeder.py"), "--rate", str(args.rate),
                   "--burst", str(args.burst)], core=args.client_core)
    redis = RedisServer()
    rows: list[dict[str, Any]] = []
    try:
        feeder_port = feeder.read_event(10, "listening")["port"]
        redis.start()
        for instances, bus in ((1, None), (3, redis)):
            row = run_setup(instances, args, feeder_port, bus)
            row.update(rate=args.rate, burst=args.burst, offered_per_s=args.rate * row["clients"],
                       duration=args.duration, versions=info, when=time.time())
            append_jsonl(RESULTS, row)
            rows.append(row)
            print(f"# {instances} instance(s): delivered {row['delivered_per_s'] / 1e6:.3f} M/s "
                  f"ok={row['ok']} hub cpu {row['hub_cpu_total']:.0%}", file=sys.stderr, flush=True)
    finally:
        redis.stop()
        feeder.stop()

    print(f"\n{args.clients} clients on /ws/btcusdt@trade, upstream {args.rate:g} msgs/s in bursts of "
          f"{args.burst}, {args.duration:g} s windows after {args.warmup:g} s warm-up; hubs on core "
          f"{args.hub_core}, feeder + load + Redis on core {args.client_core}\n")
    print("| setup | offered msgs/s | delivered msgs/s | ok | p50 / p99 / p99.9 / max µs (all clients) "
          "| p99 µs per instance | hub CPU (sum) | Redis CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        setup = "1 instance (memory bus)" if r["instances"] == 1 else f"{r['instances']} instances (Redis bus)"
        merged = " / ".join("–" if v is None else f"{v:,}" for v in r["merged_us"].values())
        per_instance = " / ".join("–" if x is None else f"{x:,}" for x in r["p99_us"])
        redis_cpu = "–" if r["redis_cpu_busy"] is None else f"{r['redis_cpu_busy']:.0%}"
        per_hub = " + ".join(f"{b:.0%}" for b in r["hub_cpu_busy"])
        print(f"| {setup} | {r['offered_per_s'] / 1e6:.3f} M/s | {r['delivered_per_s'] / 1e6:.3f} M/s | "
              f"{'yes' if r['ok'] else 'NO'} | {merged} | {per_instance} | {r['hub_cpu_total']:.0%}"
              f"{'' if r['instances'] == 1 else f' ({per_hub})'} | {redis_cpu} |")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
