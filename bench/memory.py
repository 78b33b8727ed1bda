"""RSS per idle connection at 1,000 / 10,000 / 19,000 clients: tickhub vs uWebSockets.js vs Bun.

Each server runs on core 0 with nothing to publish:

* tickhub: the real ``python -m tickhub serve`` with its default settings, its upstream a
  silent bench/peers/feeder.py (``--rate 0``: answers SUBSCRIBE, sends nothing); clients
  subscribe through their URL, ``/ws/btcusdt@trade``;
* uWS.js / Bun: bench/peers/uws_publish.js / bun_publish.js in idle mode (burst 0): every
  connection is accepted and subscribed to the topic, nothing is published.

One probe connection warms the code paths (and tickhub's upstream subscription); after
``--settle`` seconds the server's VmRSS is the baseline. Then idle benchclient processes
(core 1, 4 KiB read buffers) add connections up to each level — one process per step, so
the client side never needs more fds than the step — and VmRSS is read again after
``--settle`` seconds. KB per connection = (RSS − baseline) / connections at that level,
so it counts user-space memory only (socket buffers are kernel memory, not RSS). The issue's target for tickhub: ≤ 8 KB per connection.

The server holds one fd per connection, so the top level must stay under ``ulimit -n``
(20,000 here): the script raises its soft limit to the hard one and lowers the top level,
saying so, when that is still too low.

    .venv/bin/python bench/memory.py                       # 1k / 10k / 19k, 3 servers, ~2 min
    .venv/bin/python bench/memory.py --levels 1000,5000    # quicker
    .venv/bin/python bench/memory.py --servers tickhub

JSON lines to bench/results/memory.jsonl; the markdown table to bench/results/memory.md
(and stdout).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import time
from typing import Any

from benchlib import BENCH, Proc, append_jsonl, client_argv, ensure_benchclient, rss_kb, versions

RESULTS = BENCH / "results"
JSONL = RESULTS / "memory.jsonl"
TABLE = RESULTS / "memory.md"
SERVERS = ("tickhub", "uws", "bun")
LABELS = {"tickhub": "tickhub serve", "uws": "uWS.js 3.0.6", "bun": "Bun"}
#: fds the server needs besides its client connections (listener, upstream, stdio, epoll, libs)
FD_MARGIN = 200
TARGET_KB = 8.0


def start_idle_server(server: str, log: Any) -> tuple[list[Proc], str]:
    """The server with nothing to publish; returns (procs, client URL), the server first."""
    from fanout import BUN, PEERS, ensure_node_modules
    from hub_e2e import start_hub_behind_feeder

    if server == "tickhub":
        return start_hub_behind_feeder(["--rate", "0"], stderr=log)
    ensure_node_modules()
    exe = {"uws": "node", "bun": str(BUN)}[server]
    script = {"uws": "uws_publish.js", "bun": "bun_publish.js"}[server]
    pub = Proc([exe, str(PEERS / script), "0", "0"], core=0, stderr=log)  # burst 0: idle
    try:
        port = pub.read_event(15, "listening")["port"]
    except BaseException:
        pub.stop()
        raise
    return [pub], f"ws://127.0.0.1:{port}/"


def idle_clients(url: str, n: int, log: Any) -> Proc:
    return Proc(client_argv(url, n, 0, 0, idle=True) + ["--read-buffer", "4096"], core=1, stderr=log)


def measure_server(server: str, levels: list[int], settle: float, log: Any) -> dict[str, Any]:
    procs, url = start_idle_server(server, log)
    pid = procs[0].pid
    clients: list[Proc] = []
    steps: list[dict[str, Any]] = []
    try:
        rss_start = rss_kb(pid)
        probe = idle_clients(url, 1, log)
        clients.append(probe)
        if probe.read_event(30, "connected")["connections"] != 1:
            raise RuntimeError(f"{server}: the probe connection failed")
        time.sleep(settle)
        baseline = rss_kb(pid)
        held = 0
        for level in levels:
            add = level - held
            step_client = idle_clients(url, add, log)
            clients.append(step_client)
            connected = step_client.read_event(300, "connected")
            held += connected["connections"]
            time.sleep(settle)
            rss = rss_kb(pid)
            steps.append({"level": level, "connections": held, "failed": connected["failed"],
                          "connect_seconds": connected["seconds"], "rss_kb": rss,
                          "kb_per_connection": (rss - baseline) / held if held else None})
            print(f"# {server}: {held} idle connections, RSS {rss / 1024:.1f} MiB, "
                  f"{steps[-1]['kb_per_connection']:.2f} KB each", file=sys.stderr, flush=True)
            if connected["failed"]:
                break  # the next level would measure fewer connections than it says
    finally:
        for proc in reversed(clients):
            if proc.popen.poll() is None:
                try:
                    proc.command("")  # the idle client disconnects and exits on a stdin line
                except OSError:
                    pass
            proc.stop()
        for proc in procs:
            proc.stop()
    return {"server": server, "rss_start_kb": rss_start, "rss_baseline_kb": baseline, "steps": steps}


def fd_budget(top: int) -> tuple[int, str | None]:
    """Raise the soft fd limit to the hard one (children inherit it); cap ``top`` under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if top + FD_MARGIN <= soft:
        return top, None
    capped = soft - FD_MARGIN
    return capped, (f"ulimit -n is {soft}: the server needs one fd per connection plus ~{FD_MARGIN}, "
                    f"so the top level is lowered from {top:,} to {capped:,}")


def markdown(results: list[dict[str, Any]], levels: list[int], command: str, note: str | None) -> str:
    out = [f"RSS per idle connection (VmRSS delta over a 1-connection baseline ÷ connections), "
           f"made by `{command}`", ""]
    if note:
        out += [f"Note: {note}.", ""]
    head = " | ".join(f"{n:,} conns: RSS / KB each" for n in levels)
    out.append(f"| server | baseline RSS | {head} |")
    out.append("|---|---|" + "---|" * len(levels))
    for r in results:
        by_level = {s["level"]: s for s in r["steps"]}
        cells = []
        for n in levels:
            s = by_level.get(n)
            if s is None:
                cells.append("–")
                continue
            failed = f" ({s['failed']} failed)" if s["failed"] else ""
            cells.append(f"{s['rss_kb'] / 1024:.1f} MiB / **{s['kb_per_connection']:.2f}**{failed}")
        out.append(f"| {LABELS[r['server']]} | {r['rss_baseline_kb'] / 1024:.1f} MiB | " + " | ".join(cells) + " |")
    tick = next((r for r in results if r["server"] == "tickhub"), None)
    if tick and tick["steps"]:
        worst = max(s["kb_per_connection"] for s in tick["steps"])
        out += ["", f"Target (issue 5): tickhub ≤ {TARGET_KB:g} KB per connection — worst level "
                f"{worst:.2f} KB: {'met' if worst <= TARGET_KB else 'NOT met'}."]
    out += ["", "RSS is user-space memory: the kernel's socket buffers are not in it (they are the "
            "same for every server). A small level carries more allocator noise (arenas, heap "
            "growth steps) per connection than a large one."]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description="RSS per idle connection, tickhub vs uWS.js vs Bun")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--levels", default="1000,10000,19000", help="idle connection counts, rising")
    p.add_argument("--settle", type=float, default=2.0, help="seconds before each RSS reading")
    args = p.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"--servers: unknown {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    levels = sorted(int(n) for n in args.levels.split(","))
    top, note = fd_budget(levels[-1])
    if note:
        print(f"# {note}", file=sys.stderr, flush=True)
        levels = sorted({min(n, top) for n in levels})
    command = "bench/memory.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    ensure_benchclient()
    info = versions()
    print(json.dumps({"versions": info}), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    with (RESULTS / "memory-servers.log").open("a") as log:
        for server in servers:
            r = measure_server(server, levels, args.settle, log)
            append_jsonl(JSONL, {**r, "command": command, "note": note, "versions": info, "when": time.time()})
            results.append(r)
    table = markdown(results, levels, command, note)
    TABLE.write_text(table + "\n")
    print("\n" + table + f"\n\ntable: {TABLE}\njson lines: {JSONL}")
    complete = all(len(r["steps"]) == len(levels) and not any(s["failed"] for s in r["steps"]) for r in results)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
