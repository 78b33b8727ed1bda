"""Added latency at a fixed offered load: tickhub (relay) vs uWebSockets.js and Bun, each both
as a relay on the same feeder and as a publisher.

For each client count N (``--clients``, default 1000 — the issue's setup — and 100) and
each server:

1. Saturation: a short flat-out run with bursts of B (bench/fanout.py's cells: the
   ping/pong-paced feeder into the relay for the relays, the publisher handed B per loop
   turn for the publishers). Saturation = delivered msgs/s ÷ N, in upstream msgs/s.
   ``--saturation tickhub:1000=2500,...`` takes it from the command line instead.
2. Latency windows at ``--loads`` (default 10 %, 50 %, 90 %) of that saturation: the
   sender sends bursts of B at a fixed rate against a deadline and stamps every
   message with ``"T"`` = CLOCK_MONOTONIC ns at send time; the benchclient (N connections,
   core 1) puts ``now - T`` of every frame at every client in a 1 µs histogram.

* Relays — tickhub (the real ``python -m tickhub serve``), ``uws-relay`` and ``bun-relay``
  (uws_publish.js / bun_publish.js in relay mode: subscribe upstream, publish each message
  on arrival), all on core 0: bench/peers/feeder.py (core 1, with the client) stamps T when
  it builds a burst and writes it to the relay. The figure includes the feeder → relay hop,
  finding the payload in the envelope, and the wait behind the relay's previous fan-out
  pass when a burst arrives during one: what a hub's clients see.
* Publishers — ``uws`` / ``bun`` (uws_publish.js / bun_publish.js in paced mode, core 0)
  stamp T right before ``publish()``. A publisher only publishes between its own passes,
  so its figure has no hop and never waits behind a pass: a lower bound, not a hub.

Physics: on one core a burst reaches N clients through N sequential ``send()`` calls
(≈ 5 µs each here, the figure is printed per server as "pass/client"), so the last client
of a burst gets it ≈ N × 5 µs after the first — 5 ms at N=1000 — on an otherwise idle
server, and the client process then reads N sockets one after another as well. The p50 is
about half a pass, p99 about a whole pass. N=100 shows the server's own share.

    .venv/bin/python bench/latency.py                    # N=1000 and 100, 3 loads, 5 servers, ~6 min
    .venv/bin/python bench/latency.py --quick            # 2 s windows, ~3 min
    .venv/bin/python bench/latency.py --servers tickhub,uws-relay --clients 100
    .venv/bin/python bench/latency.py --reps 3           # 3 interleaved windows per cell (medians)

Output: JSON lines in bench/results/latency.jsonl, the markdown table in
bench/results/latency.md (also printed), the CDF plot in bench/results/latency.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import BENCH, PYTHON, Proc, append_jsonl, cpu_seconds, ensure_benchclient, median, versions

RESULTS = BENCH / "results"
JSONL = RESULTS / "latency.jsonl"
TABLE = RESULTS / "latency.md"
PLOT = RESULTS / "latency.png"
SERVERS = ("tickhub", "uws-relay", "bun-relay", "uws", "bun")
LABELS = {"tickhub": "tickhub (relay)", "uws-relay": "uWS.js 3.0.6 relay", "bun-relay": "Bun relay",
          "uws": "uWS.js 3.0.6 publish", "bun": "Bun publish"}
#: fanout.py cell giving each server's flat-out figure
SATURATION_CELL = {"tickhub": "tickhub-relay", "uws-relay": "uws-relay", "bun-relay": "bun-relay",
                   "uws": "uws", "bun": "bun"}
#: servers fed by the timestamping feeder (the rest publish and stamp themselves)
RELAYS = ("tickhub", "uws-relay", "bun-relay")
#: quantiles read from the client's histogram (the CDF); the table's come from here too
QUANTILES = sorted({i / 200 for i in range(1, 200)}
                   | {0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0})
REPORTED = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))


# --- the client process --------------------------------------------------------------

def client_main(argv: list[str]) -> int:
    """``latency.py client``: N benchclient connections, one latency window, the CDF on stdout.

    bench/client.py reports four percentiles; the plot needs the whole distribution, so this
    mode reads the same compiled histogram at ``QUANTILES``.
    """
    import asyncio
    import os

    import uvloop

    import benchclient
    from client import RCVBUF, READ_BUFFER, _connect_all, _emit

    p = argparse.ArgumentParser(prog="latency.py client")
    p.add_argument("--url", required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    args = p.parse_args(argv)

    async def run() -> None:
        stats = benchclient.Stats()
        stats.latency = True
        t0 = time.monotonic()
        listeners, failed = await _connect_all([args.url] * args.connections, 64, READ_BUFFER, stats, RCVBUF)
        _emit(event="connected", connections=len(listeners), failed=failed,
              seconds=round(time.monotonic() - t0, 3))
        await asyncio.sleep(args.warmup)
        base = sum(ls.window_frames for ls in listeners)
        stats.reset_latency()
        cpu0, w0 = os.times(), time.monotonic()
        stats.counting = True
        _emit(event="window_start")
        await asyncio.sleep(args.duration)
        stats.counting = False
        cpu1, seconds = os.times(), time.monotonic() - w0
        frames = sum(ls.window_frames for ls in listeners) - base
        errors = sum(ls.errors for ls in listeners)
        disconnected = sum(1 for ls in listeners if ls.disconnected)
        _emit(event="result", connections=len(listeners), failed_connects=failed,
              seconds=seconds, frames=frames, frames_per_s=frames / seconds,
              seq_errors=errors, disconnected=disconnected,
              client_busy=(cpu1.user - cpu0.user + cpu1.system - cpu0.system) / seconds,
              samples=stats.lat_count, quantiles=QUANTILES,
              latency_us=stats.percentiles_us(QUANTILES),
              ok=errors == 0 and disconnected == 0 and failed == 0 and frames > 0)
        for listener in listeners:
            if listener.transport is not None:
                listener.transport.disconnect()

    uvloop.run(run())
    return 0


# --- the servers -------------------------------------------------------------------

def start_sender(server: str, burst: int, clients: int, rate: float, log: Any) -> tuple[list[Proc], str]:
    """The paced sender (and for tickhub the gateway behind it); returns (procs, client URL)."""
    from fanout import BUN, JS_RELAYS, PEERS, ensure_node_modules, start_js_relay
    from hub_e2e import start_hub_behind_feeder

    feeder_args = ["--rate", f"{rate:.3f}", "--burst", str(burst)]
    if server == "tickhub":
        return start_hub_behind_feeder(feeder_args, stderr=log)
    if server in JS_RELAYS:
        feeder = Proc([PYTHON, str(PEERS / "feeder.py"), *feeder_args], core=1, stderr=log)
        try:
            relay = start_js_relay(JS_RELAYS[server], feeder.read_event(10, "listening")["port"], log)
            port = relay.read_event(15, "listening")["port"]
        except BaseException:
            feeder.stop()
            raise
        return [relay, feeder], f"ws://127.0.0.1:{port}/"
    ensure_node_modules()
    exe = {"uws": "node", "bun": str(BUN)}[server]
    script = {"uws": "uws_publish.js", "bun": "bun_publish.js"}[server]
    pub = Proc([exe, str(PEERS / script), str(burst), str(clients), f"{rate:.3f}"], core=0, stderr=log)
    try:
        port = pub.read_event(15, "listening")["port"]
    except BaseException:
        pub.stop()
        raise
    return [pub], f"ws://127.0.0.1:{port}/"


def saturation(server: str, burst: int, clients: int, warmup: float, duration: float) -> dict[str, Any]:
    """The flat-out fanout.py cell for ``server``: upstream msgs/s it delivers to N clients."""
    from fanout import ensure_node_modules, run_publisher, run_relay

    cell = SATURATION_CELL[server]
    if server in RELAYS:
        row = run_relay(cell, burst, clients, warmup, duration)
    else:
        ensure_node_modules()
        row = run_publisher(cell, burst, clients, warmup, duration, "aiofastnet")
    return {"upstream_per_s": row["msgs_per_s"] / clients, "ok": row["ok"],
            "server_busy": row["server_cpu_busy"], "client_busy": row["client_cpu_busy"]}


def latency_window(server: str, burst: int, clients: int, rate: float, warmup: float,
                   duration: float, log: Any) -> dict[str, Any]:
    procs, url = start_sender(server, burst, clients, rate, log)
    server_pid = procs[0].pid
    cli = Proc([PYTHON, str(Path(__file__).resolve()), "client", "--url", url,
                "--connections", str(clients), "--warmup", str(warmup), "--duration", str(duration)],
               core=1, stderr=log)
    try:
        connected = cli.read_event(60, "connected")
        cli.read_event(warmup + 30, "window_start")
        u0, s0 = cpu_seconds(server_pid)
        result = cli.read_event(duration + 30, "result")
        u1, s1 = cpu_seconds(server_pid)
    finally:
        cli.stop()
        for proc in procs:
            proc.stop()
    offered = rate * result["connections"]
    result.update(connect_seconds=connected["seconds"], offered_per_s=offered,
                  server_busy=(u1 - u0 + s1 - s0) / result["seconds"],
                  delivered_fraction=result["frames_per_s"] / offered if offered else None)
    if result["delivered_fraction"] is not None and result["delivered_fraction"] < 0.95:
        result["ok"] = False  # fell behind the offered load: the latency would be a queue
    return result


# --- report --------------------------------------------------------------------------

def quantile(row: dict[str, Any], q: float) -> int | None:
    values = dict(zip(row["quantiles"], row["latency_us"]))
    return values.get(q)


def cells_of(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by (N, load, server), in first-seen order (the repetitions of a cell)."""
    cells: dict[tuple[int, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["clients"], r["load"], r["server"]), []).append(r)
    return list(cells.values())


def cell_quantile(cell: list[dict[str, Any]], q: float, spread: bool) -> str:
    """Quantile ``q`` of a cell: the median over its repetitions, with their min–max if
    ``spread``."""
    vs = [v for v in (quantile(r, q) for r in cell) if v is not None]
    if not vs:
        return "–"
    text = f"{median(vs):,.0f}"
    return f"{text} ({min(vs):,}–{max(vs):,})" if spread and len(vs) > 1 else text


def median_run(cell: list[dict[str, Any]]) -> dict[str, Any]:
    """The repetition whose p99.9 is the median: the one a CDF plot shows for the cell."""
    ranked = sorted(cell, key=lambda r: quantile(r, 0.999) or 0)
    return ranked[(len(ranked) - 1) // 2]


def markdown(rows: list[dict[str, Any]], sats: dict[tuple[str, int], dict[str, Any]],
             burst: int, command: str) -> str:
    out = [f"Added latency (µs, `now - T` per frame at every client), bursts of B={burst}, "
           f"made by `{command}`", ""]
    reps = max((r.get("rep", 0) for r in rows), default=0) + 1
    if reps > 1:
        out.append(f"{reps} interleaved repetitions per cell: each figure is the median over them, "
                   "p99 and p99.9 with their min–max.")
        out.append("")
    out.append("| N | load | server | upstream msgs/s | delivered/s | ok | server busy | client busy "
               "| p50 | p90 | p99 | p99.9 | max |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in cells_of(rows):
        r0 = cell[0]
        lat = " | ".join(cell_quantile(cell, q, name in ("p99", "p99.9")) for name, q in REPORTED)
        out.append(f"| {r0['clients']} | {r0['load']:.0%} | {LABELS[r0['server']]} | {r0['rate']:,.0f} | "
                   f"{median([r['frames_per_s'] for r in cell]) / 1e6:.2f} M | "
                   f"{'yes' if all(r['ok'] for r in cell) else 'NO'} | "
                   f"{median([r['server_busy'] for r in cell]):.0%} | "
                   f"{median([r['client_busy'] for r in cell]):.0%} | {lat} |")
    out += ["", "Saturation (flat-out, B per turn) and the fan-out pass it implies:", "",
            "| N | server | saturation upstream msgs/s | delivered msgs/s | server busy | client busy "
            "| one pass over N clients | per client |",
            "|---|---|---|---|---|---|---|---|"]
    for (server, n), s in sorted(sats.items(), key=lambda kv: (-kv[0][1], SERVERS.index(kv[0][0]))):
        pass_us = 1e6 * burst / s["upstream_per_s"] if s["upstream_per_s"] else float("nan")
        src = "" if s.get("measured", True) else " (given)"
        out.append(f"| {n} | {LABELS[server]} | {s['upstream_per_s']:,.0f}{src} | "
                   f"{s['upstream_per_s'] * n / 1e6:.2f} M | {s.get('server_busy', float('nan')):.0%} | "
                   f"{s.get('client_busy', float('nan')):.0%} | {pass_us:,.0f} µs | {pass_us / n:.1f} µs |")
    out += ["", "How to read it: a burst reaches N clients through N sequential sends on one core, so the "
            "last client of a burst gets it about one pass (N × per-client cost) after the first; "
            "p50 ≈ half a pass, p99 ≈ a whole pass plus the client's own pass over its N sockets, even "
            "at 10 % load. At N=100 the pass is ten times shorter and the rest is the server's own "
            "latency. The relays' figures (tickhub and the uWS.js / Bun relays on the same feeder) also "
            "include the feeder → relay hop, finding the payload in the envelope and the wait behind the "
            "relay's previous pass; the publishers have none of these (they publish only between their "
            "own passes), so their figures are a lower bound, not a hub. A run that delivered < 95 % of the offered load or "
            "broke a sequence is `ok: NO` and its latency is a queue, not a number. When the saturation "
            "run's client busy is near 100 % too, saturation is the limit of the server and the one "
            "client core together (both stated), the same rule for every server."]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], burst: int, command: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    ns = sorted({r["clients"] for r in rows}, reverse=True)
    loads = sorted({r["load"] for r in rows})
    fig, axes = plt.subplots(len(ns), len(loads), figsize=(5 * len(loads), 4 * len(ns)),
                             squeeze=False, sharey=True)
    colors = {"tickhub": "tab:blue", "uws-relay": "tab:orange", "bun-relay": "tab:green",
              "uws": "tab:red", "bun": "tab:purple"}
    for i, n in enumerate(ns):
        for j, load in enumerate(loads):
            ax = axes[i][j]
            for r in (median_run(c) for c in cells_of(rows)):
                if r["clients"] != n or r["load"] != load:
                    continue
                pts = [(us, q) for q, us in zip(r["quantiles"], r["latency_us"]) if us is not None and q < 1.0]
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                label = f"{LABELS[r['server']]} ({r['rate']:,.0f}/s)" + ("" if r["ok"] else " NOT OK")
                ax.step(xs, ys, where="post", color=colors[r["server"]], label=label)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on narrow ranges
            ax.set_yscale("logit")
            ax.set_ylim(0.005, 0.9999)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"N={n} clients, {load:.0%} of each server's saturation")
            ax.set_xlabel("added latency, µs (log)")
            if j == 0:
                ax.set_ylabel("fraction of frames ≤ x (logit)")
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Latency CDF, bursts of B={burst}, every frame at every client — one core sends a burst "
                 f"to N clients one after another (≈ 5 µs each), so the last client waits ≈ N × 5 µs", fontsize=11)
    fig.text(0.01, 0.005, command, fontsize=8, family="monospace")
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------

def parse_given(spec: str) -> dict[tuple[str, int], float]:
    """``tickhub:1000=2500,uws:100=40000`` → {(server, N): upstream msgs/s}."""
    given: dict[tuple[str, int], float] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        server, _, n = key.partition(":")
        if server not in SERVERS or not n.isdigit() or not value:
            raise SystemExit(f"--saturation: {item!r} is not SERVER:N=MSGS_PER_S")
        given[(server, int(n))] = float(value)
    return given


def main() -> int:
    if sys.argv[1:2] == ["client"]:
        return client_main(sys.argv[2:])
    p = argparse.ArgumentParser(description="added latency at fixed fractions of saturation")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--clients", default="1000,100", help="client counts N")
    p.add_argument("--loads", default="0.1,0.5,0.9", help="fractions of each server's saturation")
    p.add_argument("--burst", type=int, default=10, help="messages per publish turn / feeder write")
    p.add_argument("--saturation", default="", help="SERVER:N=MSGS_PER_S,... instead of measuring")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=3.0, help="latency window, seconds")
    p.add_argument("--sat-duration", type=float, default=2.0, help="saturation window, seconds")
    p.add_argument("--reps", type=int, default=1,
                   help="latency windows per cell, interleaved; the table shows medians and ranges")
    p.add_argument("--quick", action="store_true", help="2 s latency windows, 1.5 s saturation windows")
    args = p.parse_args()
    if args.quick:
        args.duration, args.sat_duration = 2.0, 1.5
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"--servers: unknown {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    counts = [int(n) for n in args.clients.split(",")]
    loads = [float(f) for f in args.loads.split(",")]
    given = parse_given(args.saturation)
    command = "bench/latency.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    ensure_benchclient()
    info = versions()
    print(json.dumps({"versions": info}), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = (RESULTS / "latency-servers.log").open("a")
    sats: dict[tuple[str, int], dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    try:
        for n in counts:
            for server in servers:
                if (server, n) in given:
                    sats[(server, n)] = {"upstream_per_s": given[(server, n)], "measured": False}
                    continue
                s = saturation(server, args.burst, n, args.warmup, args.sat_duration)
                sats[(server, n)] = s
                print(f"# saturation {server} N={n}: {s['upstream_per_s']:,.0f} upstream msgs/s "
                      f"(server busy {s['server_busy']:.0%}, client busy {s['client_busy']:.0%}, "
                      f"ok={s['ok']})", file=sys.stderr, flush=True)
            for rep in range(args.reps):  # repetitions, loads and servers interleaved
                for load in loads:
                    for server in servers:
                        rate = sats[(server, n)]["upstream_per_s"] * load
                        r = latency_window(server, args.burst, n, rate, args.warmup, args.duration, log)
                        row = {"server": server, "clients": n, "load": load, "rate": rate, "burst": args.burst,
                               "rep": rep, "saturation_per_s": sats[(server, n)]["upstream_per_s"], **r,
                               "command": command, "versions": info, "when": time.time()}
                        append_jsonl(JSONL, row)
                        rows.append(row)
                        lat = {k: quantile(r, q) for k, q in REPORTED}
                        print(f"# rep {rep} {server} N={n} load {load:.0%} ({rate:,.0f}/s): ok={r['ok']} "
                              f"server busy {r['server_busy']:.0%} "
                              + " ".join(f"{k}={v}" for k, v in lat.items()), file=sys.stderr, flush=True)
    finally:
        log.close()
    table = markdown(rows, sats, args.burst, command)
    TABLE.write_text(table + "\n")
    plot(rows, args.burst, command, PLOT)
    print("\n" + table)
    print(f"\ntable: {TABLE}\nplot: {PLOT}\njson lines: {JSONL}")
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
