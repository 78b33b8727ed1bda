"""The whole hub end to end: feeder → ``tickhub serve`` → N benchclient connections.

Processes: the feeder (bench/peers/feeder.py, a Binance-shaped ``/stream`` upstream that
stamps every trade with ``"T": time.monotonic_ns()``) and the benchclient share core 1;
the gateway (the real ``python -m tickhub serve`` command) has core 0. Every client
connects to ``/ws/btcusdt@trade``; the hub holds one upstream subscription and fans out.

1. Saturation: the feeder's rate (bursts of ``--burst`` messages per write, so the hub
   reads about B messages per loop turn) is raised step by step; each step measures
   delivered msgs/s over a window with a fresh client. The search stops when delivered
   falls below 95 % of offered, a sequence check fails, or clients are disconnected
   (the gateway's slow-consumer limit is lowered to 1 MiB so an overload shows quickly
   and memory stays bounded).
2. Latency: windows at fractions (``--latency-at``, default 0.5 and 0.25) of the highest
   rate delivered in full, each on a fresh gateway, with ``now - T`` per frame in a 1 µs
   histogram (p50 / p99 / p99.9 / max). ``T`` is taken when the feeder builds a burst, so
   the figure includes the feeder's write, the hub's read, parse, fan-out and the
   client's read.

Note that a saturated hub reads several feeder bursts per loop turn, so its batch grows
and the saturation figure is above the fixed-B fan-out figure (bench/fanout.py) — this is
the self-batching DESIGN.md §2 expects from a relay under a real burst.

    .venv/bin/python bench/hub_e2e.py            # rate steps up to saturation, then latency
    .venv/bin/python bench/hub_e2e.py --quick    # fewer, shorter steps

JSON lines go to bench/results/hub_e2e.jsonl; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

from benchlib import (BENCH, PYTHON, Proc, append_jsonl, client_argv, cpu_seconds,
                      ensure_benchclient, versions)

RESULTS = BENCH / "results" / "hub_e2e.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: Proc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"gateway exited with rc={proc.popen.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("gateway did not start listening")


def start_gateway(feeder_port: int, max_queued: int, stderr: Any = None) -> tuple[Proc, int]:
    """``python -m tickhub serve`` on core 0, upstream pointed at the feeder."""
    port = free_port()
    env = {
        "BINANCE_WS_URL": f"ws://127.0.0.1:{feeder_port}",
        "TICKHUB_LISTEN_URL": f"ws://127.0.0.1:{port}",
        "TICKHUB_DRAIN_SECONDS": "0",
        "TICKHUB_MAX_QUEUED_BYTES": str(max_queued),
        "TICKHUB_LOG_LEVEL": "WARNING",
        "TICKHUB_UPSTREAM_LINGER": "30",  # keep the upstream subscription between client runs
    }
    gw = Proc([PYTHON, "-m", "tickhub", "serve"], core=0, env=env, stderr=stderr)
    wait_listening(port, gw)
    return gw, port


def start_hub_behind_feeder(feeder_args: list[str], max_queued: int = 4 << 20,
                            stderr: Any = None) -> tuple[list[Proc], str]:
    """A feeder (core 1, ``feeder.py`` with ``feeder_args``) and ``tickhub serve`` on it;
    returns ([gateway, feeder], the client URL of btcusdt@trade). The default 4 MiB is the
    gateway's own slow-consumer limit: a client that far behind is disconnected and the run
    fails instead of hiding a queue."""
    feeder = Proc([PYTHON, str(BENCH / "peers" / "feeder.py"), *feeder_args], core=1, stderr=stderr)
    try:
        feeder_port = feeder.read_event(10, "listening")["port"]
        gw, port = start_gateway(feeder_port, max_queued=max_queued, stderr=stderr)
    except BaseException:
        feeder.stop()
        raise
    return [gw, feeder], f"ws://127.0.0.1:{port}/ws/btcusdt@trade"


def measure(gw: Proc, url: str, clients: int, warmup: float, duration: float,
            latency: bool) -> dict[str, Any]:
    cli = Proc(client_argv(url, clients, warmup, duration, latency=latency), core=1)
    try:
        connected = cli.read_event(60, "connected")
        cli.read_event(warmup + 30, "window_start")
        u0, s0 = cpu_seconds(gw.pid)
        result = cli.read_event(duration + 30, "result")
        u1, s1 = cpu_seconds(gw.pid)
    finally:
        cli.stop()
    delivered = result["frames"]
    result.update(
        connect_seconds=connected["seconds"],
        gateway_cpu_busy=(u1 - u0 + s1 - s0) / result["seconds"],
        us_per_msg_user=1e6 * (u1 - u0) / delivered if delivered else None,
        us_per_msg_sys=1e6 * (s1 - s0) / delivered if delivered else None,
    )
    return result


def sat_rate(rows: list[dict[str, Any]]) -> float:
    """Delivered msgs/s per client (= upstream msgs/s) of the best step delivered in full."""
    full = [r for r in rows if r["phase"] == "throughput" and r["full"]]
    return max((r["frames_per_s"] / r["connections"] for r in full), default=0.0)


def main() -> int:
    p = argparse.ArgumentParser(description="end-to-end hub throughput and latency")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--burst", type=int, default=10, help="messages per feeder write (≈ per hub turn)")
    p.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,8000",
                   help="upstream msgs/s steps (delivered = rate × clients)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--latency-at", default="0.5,0.25",
                   help="latency windows at these fractions of the saturation rate")
    p.add_argument("--quick", action="store_true", help="2 s windows, coarser rate steps")
    args = p.parse_args()
    if args.quick:
        args.duration = 2.0
        args.rates = "1000,2000,4000,6000"
    ensure_benchclient()
    info = versions()
    print(json.dumps({"versions": info}), flush=True)
    rates = [float(r) for r in args.rates.split(",")]

    feeder = Proc([PYTHON, str(BENCH / "peers" / "feeder.py"), "--rate", "0", "--burst", str(args.burst)], core=1)
    gw: Proc | None = None
    rows: list[dict[str, Any]] = []
    try:
        feeder_port = feeder.read_event(10, "listening")["port"]
        gw, port = start_gateway(feeder_port, max_queued=1 << 20)
        url = f"ws://127.0.0.1:{port}/ws/btcusdt@trade"
        for rate in rates:
            feeder.command(f"rate {rate}")
            r = measure(gw, url, args.clients, args.warmup, args.duration, latency=False)
            offered = rate * r["connections"]
            full = r["ok"] and r["frames_per_s"] >= 0.95 * offered
            row = {"phase": "throughput", "rate": rate, "burst": args.burst, "offered_per_s": offered,
                   "full": full, **r, "versions": info, "when": time.time()}
            append_jsonl(RESULTS, row)
            rows.append(row)
            print(f"# rate {rate:>6.0f}/s offered {offered / 1e6:.2f} M/s delivered "
                  f"{r['frames_per_s'] / 1e6:.2f} M/s gw cpu {r['gateway_cpu_busy']:.0%} "
                  f"ok={r['ok']} disconnected={r['disconnected']}", file=sys.stderr, flush=True)
            if not full:
                break
        for fraction in [float(f) for f in args.latency_at.split(",")]:
            rate = (sat_rate(rows) or rates[0]) * fraction
            # A fresh gateway: the overload step may have disconnected clients and left buffers.
            feeder.command("rate 0")
            gw.stop()
            gw, port = start_gateway(feeder_port, max_queued=1 << 20)
            url = f"ws://127.0.0.1:{port}/ws/btcusdt@trade"
            feeder.command(f"rate {rate}")
            r = measure(gw, url, args.clients, args.warmup, max(args.duration, 3.0), latency=True)
            row = {"phase": f"latency @{fraction:g}×sat", "rate": rate, "burst": args.burst,
                   "offered_per_s": rate * r["connections"], **r, "versions": info, "when": time.time()}
            append_jsonl(RESULTS, row)
            rows.append(row)
    finally:
        if gw is not None:
            gw.stop()
        feeder.stop()

    sat = max((r["frames_per_s"] for r in rows if r["phase"] == "throughput" and r["ok"]), default=0.0)
    saturated = [r for r in rows if r["phase"] == "throughput" and not r["full"]]
    print(f"\n{args.clients} clients on /ws/btcusdt@trade, feeder bursts of {args.burst}, "
          f"windows {args.duration:g} s after {args.warmup:g} s warm-up\n")
    print("| phase | upstream msgs/s | offered | delivered msgs/s | ok | gateway busy | µs/msg user / sys "
          "| client busy | p50 µs | p99 µs | p99.9 µs | max µs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lat = r["latency_us"] if r["phase"].startswith("latency") else {}
        client_busy = (r["client_cpu_user"] + r["client_cpu_sys"]) / r["seconds"]
        print(f"| {r['phase']} | {r['rate']:.0f} | {r['offered_per_s'] / 1e6:.2f} M/s | "
              f"{r['frames_per_s'] / 1e6:.2f} M/s | {'yes' if r['ok'] else 'NO'} | {r['gateway_cpu_busy']:.0%} | "
              f"{r['us_per_msg_user']:.3f} / {r['us_per_msg_sys']:.3f} | {client_busy:.0%} | "
              f"{lat.get('p50', '–')} | {lat.get('p99', '–')} | {lat.get('p99.9', '–')} | {lat.get('max', '–')} |")
    print(f"\nsaturation (highest delivered with every sequence intact): {sat / 1e6:.2f} M/s"
          + ("" if saturated else " (never fell behind: the last step is a lower bound)"))
    return 0 if rows and rows[-1]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
