"""Fan-out throughput: tickhub's compiled Fanout vs picows-naive vs websockets.broadcast().

For each cell (server × B messages per loop turn) and repetition, cells interleaved:
the server process runs on core 0 (uvloop), the benchclient process with N connections on
core 1. The server publishes bursts of B ~120-byte trade messages per loop turn under the
flow-control rule of bench/peers/common.py (pause while any client's write buffer is above
256 KiB, checked every 10 turns), so nothing is dropped. After a warm-up the client counts
delivered frames over the window (checking every connection's sequence) while the parent
reads the server's CPU time from /proc/<pid>/stat at the window's start and end.

    .venv/bin/python bench/fanout.py              # full campaign, 3 reps (~5 min)
    .venv/bin/python bench/fanout.py --quick      # one rep of B=1,10 (~1 min)

Writes one JSON line per run to bench/results/fanout.jsonl and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Any

from benchlib import (BENCH, PYTHON, Proc, append_jsonl, client_argv, cpu_seconds,
                      ensure_benchclient, median, versions)

SERVERS = {
    "tickhub": "tickhub_fanout.py",
    "picows-naive": "picows_naive.py",
    "websockets.broadcast": "websockets_broadcast.py",
}
RESULTS = BENCH / "results" / "fanout.jsonl"


def run_cell(server: str, burst: int, clients: int, warmup: float, duration: float,
             aiofastnet: bool = True) -> dict[str, Any]:
    """One measured run; always stops both subprocesses."""
    srv = Proc([PYTHON, str(BENCH / "peers" / SERVERS[server]), str(burst), str(clients)], core=0,
               env={} if aiofastnet else {"BENCH_AIOFASTNET": "0"})
    cli: Proc | None = None
    try:
        port = srv.read_event(10, "listening")["port"]
        cli = Proc(client_argv(f"ws://127.0.0.1:{port}/", clients, warmup, duration), core=1)
        connected = cli.read_event(60, "connected")
        cli.read_event(warmup + 30, "window_start")
        u0, s0 = cpu_seconds(srv.pid)
        srv.command("snap")
        snap0 = srv.read_event(5, "snap")
        result = cli.read_event(duration + 30, "result")
        u1, s1 = cpu_seconds(srv.pid)
        srv.command("snap")
        snap1 = srv.read_event(5, "snap")
    finally:
        if cli is not None:
            cli.stop()
        srv.stop()
    delivered = result["frames"]
    srv_delivered = snap1["delivered"] - snap0["delivered"]
    writes = snap1["writes"] - snap0["writes"]
    return {
        "server": server, "burst": burst, "clients": clients,
        "connect_seconds": connected["seconds"],
        "window_s": result["seconds"], "delivered": delivered, "msgs_per_s": result["frames_per_s"],
        "per_conn_min": result["per_conn_min"], "per_conn_max": result["per_conn_max"],
        "seq_errors": result["seq_errors"], "ok": result["ok"], "first_error": result["first_error"],
        "server_cpu_user_s": u1 - u0, "server_cpu_sys_s": s1 - s0,
        "server_cpu_busy": (u1 - u0 + s1 - s0) / result["seconds"],
        "us_per_msg_user": 1e6 * (u1 - u0) / delivered if delivered else None,
        "us_per_msg_sys": 1e6 * (s1 - s0) / delivered if delivered else None,
        "writes_per_msg": writes / srv_delivered if srv_delivered else None,
        "paused_checks": snap1["paused"] - snap0["paused"],
        "client_cpu_busy": (result["client_cpu_user"] + result["client_cpu_sys"]) / result["seconds"],
    }


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M/s" if x >= 1e6 else f"{x / 1e3:.0f} k/s"


def report(rows: list[dict[str, Any]], bursts: list[int]) -> str:
    by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["server"], r["burst"])].append(r)
    med = {k: median([r["msgs_per_s"] for r in v]) for k, v in by.items()}
    lines = [
        "| server | B | delivered msgs/s (median) | min–max | n | ok | vs picows-naive | vs websockets.broadcast "
        "| server CPU µs/msg user / sys | server busy | writes/msg | client busy | flow pauses |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server in SERVERS:
        for b in bursts:
            runs = by.get((server, b))
            if not runs:
                continue
            rates = [r["msgs_per_s"] for r in runs]
            naive = med.get(("picows-naive", b))
            wsb = med.get(("websockets.broadcast", b))
            lines.append(
                f"| {server} | {b} | {_fmt_rate(med[(server, b)])} | {_fmt_rate(min(rates))}–{_fmt_rate(max(rates))} "
                f"| {len(runs)} | {'yes' if all(r['ok'] for r in runs) else 'NO'} "
                f"| {med[(server, b)] / naive:.2f}× | " if naive else
                f"| {server} | {b} | {_fmt_rate(med[(server, b)])} | {_fmt_rate(min(rates))}–{_fmt_rate(max(rates))} "
                f"| {len(runs)} | {'yes' if all(r['ok'] for r in runs) else 'NO'} | – | "
            )
            lines[-1] += (f"{med[(server, b)] / wsb:.2f}× | " if wsb else "– | ")
            lines[-1] += (
                f"{median([r['us_per_msg_user'] for r in runs]):.3f} / {median([r['us_per_msg_sys'] for r in runs]):.3f} "
                f"| {median([r['server_cpu_busy'] for r in runs]):.0%} "
                f"| {median([r['writes_per_msg'] for r in runs]):.3f} "
                f"| {median([r['client_cpu_busy'] for r in runs]):.0%} "
                f"| {sum(r['paused_checks'] for r in runs)} |"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description="fan-out throughput campaign")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--bursts", default="1,10,100")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--no-aiofastnet", action="store_true",
                   help="picows servers on uvloop's transports instead of aiofastnet's")
    p.add_argument("--quick", action="store_true", help="1 rep of B=1,10 (B=100 for tickhub only)")
    args = p.parse_args()
    ensure_benchclient()
    info = versions()
    info["picows_transport"] = "uvloop" if args.no_aiofastnet else "aiofastnet"
    print(json.dumps({"versions": info}), flush=True)
    bursts = [int(b) for b in args.bursts.split(",")]
    servers = args.servers.split(",")
    if args.quick:
        args.reps = 1
    cells = [(s, b) for b in bursts for s in servers]
    # B=100 of websockets.broadcast takes long and says nothing new (one write per message).
    cells = [(s, b) for s, b in cells if not (s == "websockets.broadcast" and b >= 100)]
    if args.quick:
        cells = [(s, b) for s, b in cells if b < 100 or s == "tickhub"]
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for rep in range(args.reps):
        for server, burst in cells:
            try:
                row = run_cell(server, burst, args.clients, args.warmup, args.duration,
                               aiofastnet=not args.no_aiofastnet)
            except (TimeoutError, RuntimeError) as exc:
                print(f"# {server} B={burst} rep {rep}: FAILED: {exc}", file=sys.stderr, flush=True)
                continue
            row.update(rep=rep, versions=info, when=time.time(), aiofastnet=not args.no_aiofastnet)
            append_jsonl(RESULTS, row)
            rows.append(row)
            print(f"# rep {rep} {server:22s} B={burst:<3d} {_fmt_rate(row['msgs_per_s']):>10s} "
                  f"cpu {row['server_cpu_busy']:.0%} user/sys µs/msg {row['us_per_msg_user']:.3f}/"
                  f"{row['us_per_msg_sys']:.3f} writes/msg {row['writes_per_msg']:.3f} "
                  f"client {row['client_cpu_busy']:.0%} ok={row['ok']}", file=sys.stderr, flush=True)
    print(f"\n{args.clients} clients, window {args.duration:g} s after {args.warmup:g} s warm-up, "
          f"{args.reps} rep(s), {time.monotonic() - started:.0f} s total\n")
    print(report(rows, bursts))
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
