"""Memory per idle client connection of a ``tickhub serve`` process.

The gateway (core 0) takes its upstream from a silent feeder (``--rate 0``: it answers
SUBSCRIBE and sends nothing). One probe connection to ``/ws/btcusdt@trade`` warms every
code path and the upstream subscription; the gateway's VmRSS is read, then ``--connections``
more idle connections (default 10,000, from one benchclient process on core 1) subscribe
to the same stream through their URL, and VmRSS is read again after they settle.

    .venv/bin/python bench/idle_rss.py                 # 10,000 connections
    .venv/bin/python bench/idle_rss.py --quick         # 2,000 connections

Needs ``ulimit -n`` above the connection count (each process holds one fd per connection).
JSON lines go to bench/results/idle_rss.jsonl; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from benchlib import BENCH, PYTHON, Proc, append_jsonl, client_argv, ensure_benchclient, rss_kb, versions
from hub_e2e import start_gateway

RESULTS = BENCH / "results" / "idle_rss.jsonl"


def idle_client(url: str, n: int) -> Proc:
    argv = client_argv(url, n, 0, 0, idle=True) + ["--read-buffer", "4096"]
    return Proc(argv, core=1)


def main() -> int:
    p = argparse.ArgumentParser(description="RSS per idle client connection")
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--settle", type=float, default=2.0, help="seconds before reading RSS")
    p.add_argument("--quick", action="store_true", help="2,000 connections")
    args = p.parse_args()
    if args.quick:
        args.connections = 2000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 100:
        print(f"ulimit -n is {soft}: too low for {args.connections} connections", file=sys.stderr)
        return 2
    ensure_benchclient()
    info = versions()
    print(json.dumps({"versions": info}), flush=True)
    feeder = Proc([PYTHON, str(BENCH / "peers" / "feeder.py"), "--rate", "0"], core=1)
    gw = probe = many = None
    try:
        feeder_port = feeder.read_event(10, "listening")["port"]
        gw, port = start_gateway(feeder_port, max_queued=4 << 20)
        url = f"ws://127.0.0.1:{port}/ws/btcusdt@trade"
        rss_start = rss_kb(gw.pid)
        probe = idle_client(url, 1)
        assert probe.read_event(30, "connected")["connections"] == 1
        time.sleep(args.settle)
        before = rss_kb(gw.pid)
        many = idle_client(url, args.connections)
        connected = many.read_event(300, "connected")
        time.sleep(args.settle)
        after = rss_kb(gw.pid)
    finally:
        for proc in (many, probe):
            if proc is not None:
                proc.command("")
                proc.stop()
        if gw is not None:
            gw.stop()
        feeder.stop()
    n = connected["connections"]
    row = {
        "connections": n, "failed": connected["failed"], "connect_seconds": connected["seconds"],
        "rss_start_kb": rss_start, "rss_before_kb": before, "rss_after_kb": after,
        "kb_per_connection": (after - before) / n if n else None, "versions": info, "when": time.time(),
    }
    append_jsonl(RESULTS, row)
    print(f"\n| gateway RSS at start | with 1 client | with {n} more idle clients | KB per connection "
          "| connect time | failed |")
    print("|---|---|---|---|---|---|")
    print(f"| {rss_start / 1024:.1f} MiB | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB "
          f"| {row['kb_per_connection']:.2f} | {connected['seconds']:.1f} s | {connected['failed']} |")
    return 0 if n == args.connections else 1


if __name__ == "__main__":
    sys.exit(main())
