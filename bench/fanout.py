"""Fan-out throughput, side by side: tickhub vs uWebSockets.js, Bun, Node ws, picows, websockets.

For each cell (server × B messages per loop turn) and repetition, cells interleaved, the
server process runs on core 0 and the benchclient process with N connections on core 1.

Publishers (bench/peers/): each publishes bursts of B ~120-byte trade messages per loop
turn under the flow-control rule of bench/peers/common.py / common.js (pause while any
client's buffered amount is above 256 KiB, checked every 10 turns), so nothing is dropped.

* ``tickhub``       compiled Fanout on picows (tickhub_fanout.py)
* ``uws``           uWebSockets.js ``app.publish`` (uws_publish.js, Node)
* ``bun``           ``Bun.serve`` + ``server.publish`` (bun_publish.js)
* ``node-ws``       Node ``ws``, one ``send()`` per client per message (ws_loop.js)
* ``picows-naive``  picows, one ``send()`` per client per message
* ``websockets.broadcast``  Python websockets' ``broadcast()``

Relay: the real gateway (``python -m tickhub serve``, core 0) fed by bench/peers/feeder.py
(``--mode paced`` / ``flat``, core 1, with the client); clients open ``/ws/btcusdt@trade``
on the hub.

* ``tickhub-relay``       the feeder sends the next burst of B only after the hub answered a
  PING sent behind the last one, i.e. the hub has read it: B messages per hub turn, as a
  publisher is handed B. This figure includes parsing the upstream, which publishers don't pay.
* ``tickhub-relay-flat``  the feeder writes bursts back to back: the hub reads what its socket
  holds (what it does under a real burst); reported separately, not compared.

After a warm-up the client counts delivered frames over the window (checking every
connection's sequence) while the parent reads the server's CPU time (/proc/<pid>/stat,
all threads) at the window's edges and counts its send-type syscalls (write, writev,
sendto, sendmsg, sendmmsg) over the window with ``perf stat`` on the syscall tracepoints.

    .venv/bin/python bench/fanout.py                 # full campaign, 3 reps (~7 min)
    .venv/bin/python bench/fanout.py --quick         # 1 rep, short windows (~2 min)
    .venv/bin/python bench/fanout.py --transports aiofastnet,uvloop --servers tickhub --bursts 1,10
    .venv/bin/python bench/fanout.py --mix           # 200 symbols x 2 streams, Zipf, ~2.5 min

Mix workload (``--mix``; tickhub-relay, tickhub, uws, bun, and tickhub-relay-flat on request):
200 symbols x {bookTicker-like ~120 B,
depth-like ~1.4 KB} payloads (bench/payloads.py shapes) = 400 streams, each of the N
clients subscribed to 5 distinct streams drawn by Zipf popularity (s = 1.1, seeded), and
message ``t`` published on a stream drawn by the same popularity (a seeded cyclic
sequence). The harness writes this assignment to one file that every server and the
client read (``BENCH_MIX``, ``client.py --assignment``). ``"t"`` is a global publish
number, so each connection checks only that it strictly increases (``--increasing``);
loss is found exactly: after the window the publisher is stopped, the client waits for
quiet, and every connection's total frame count must equal the number of published
messages on its streams.

In the mix the relay's feeder serves the file's 400 streams (``BENCH_MIX``, as the
publishers): clients open the hub's Binance raw multi-stream URL ``/ws/<name>/<name>/...``
(``client.py --assignment-urls names``), so they receive the payloads alone, the bytes the
publishers send except the update id ``"u"``, which the feeder makes ``u + t`` (same width)
because the hub drops events whose update id does not increase. The feeder starts (``go``)
only once the hub has subscribed upstream every stream a client uses (its ``snap``
``streams_subscribed``; the client's warm-up waits for that too, ``--wait-start``); a burst
is the next B messages of the publish sequence, those on streams the hub did not
subscribe skipped (no client expects them) but counted in ``published``. After ``stop``
the feeder pings the hub (``sync``): its pong says the hub has read every burst, then the
client drains and the same exact check runs.

The JavaScript peers need bench/node_modules; it is installed with ``npm ci --prefix bench``
(from bench/package-lock.json) on first use. Writes one JSON line per run to
bench/results/fanout.jsonl and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from benchlib import (BENCH, PYTHON, Proc, append_jsonl, client_argv, cpu_seconds,
                      ensure_benchclient, median, rss_kb, versions)

PEERS = BENCH / "peers"
NODE_MODULES = BENCH / "node_modules"
BUN = NODE_MODULES / ".bin" / "bun"

#: server kind -> (runtime, script); runtime "python" | "node" | "bun".
PUBLISHERS = {
    "tickhub": ("python", "tickhub_fanout.py"),
    "uws": ("node", "uws_publish.js"),
    "bun": ("bun", "bun_publish.js"),
    "node-ws": ("node", "ws_loop.js"),
    "picows-naive": ("python", "picows_naive.py"),
    "websockets.broadcast": ("python", "websockets_broadcast.py"),
}
#: relay kind -> feeder.py --mode
RELAYS = {"tickhub-relay": "paced", "tickhub-relay-flat": "flat", "uws-relay": "paced", "bun-relay": "paced"}
#: relays that are a JavaScript peer in relay mode (BENCH_UPSTREAM, common.js relayUpstream)
JS_RELAYS = {"uws-relay": "uws", "bun-relay": "bun"}
#: display order of the table
SERVERS = ["tickhub-relay", "uws-relay", "bun-relay", "tickhub", "uws", "bun", "node-ws", "picows-naive",
           "websockets.broadcast", "tickhub-relay-flat"]
#: kinds whose transport is picows' (aiofastnet or uvloop's): the only ones --transports varies
PICOWS_PUBLISHERS = {"tickhub", "picows-naive"}
#: one write per message per client: B=100 takes long and says nothing new
ONE_WRITE_PER_MESSAGE = {"node-ws", "picows-naive", "websockets.broadcast"}
RESULTS = BENCH / "results" / "fanout.jsonl"
#: every server's (and the relay feeder's) stderr
SERVER_LOG = BENCH / "results" / "fanout-servers.log"
#: the gateway's slow-consumer limit in relay cells: its default, so a client that falls
#: 4 MiB behind is disconnected and the run fails instead of the hub's memory growing
RELAY_MAX_QUEUED = 4 << 20
#: longest wait for the hub to subscribe every stream the mix clients use (it sends at
#: most 4 SUBSCRIBE messages a second, 200 streams each)
RELAY_SUBSCRIBE_TIMEOUT = 30.0
#: servers the --mix workload runs on, in table order
MIX_SERVERS = ["tickhub-relay", "tickhub", "uws", "bun", "tickhub-relay-flat"]
#: --mix without --servers: the flat relay only on request (it reads whole upstream
#: backlogs per turn and its clients often pass the 4 MiB slow-consumer limit: ok NO)
MIX_DEFAULT = ["tickhub-relay", "tickhub", "uws", "bun"]
MIX_RESULTS = BENCH / "results" / "fanout-mix.jsonl"
MIX_FILE = BENCH / "results" / "fanout-mix-assignment.json"
MIX_SYMBOLS = 200
MIX_STREAMS_PER_CLIENT = 5
MIX_ZIPF_S = 1.1
MIX_SEED = 20240817
#: length of the cyclic publish sequence (stream of message t = sequence[t % length])
MIX_CYCLE = 1 << 16


def ensure_node_modules() -> None:
    """Install the JavaScript peers from bench/package-lock.json when missing or stale."""
    stamp = NODE_MODULES / ".package-lock.json"
    lock = BENCH / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime and BUN.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("the JavaScript peers need node and npm on PATH (or leave them out with --servers)")
    print("installing the JavaScript peers: npm ci --prefix bench", file=sys.stderr, flush=True)
    subprocess.run([npm, "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund"], check=True,
                   stdout=subprocess.DEVNULL)


def js_versions() -> dict[str, str]:
    out = {"node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}
    for pkg in ("uwebsockets", "bun", "ws"):
        meta = NODE_MODULES / pkg / "package.json"
        if meta.exists():
            out[pkg] = json.loads(meta.read_text())["version"]
    return out


#: the syscalls a fan-out send can be (libuv and uvloop use write/writev, uWS send/sendto)
SEND_SYSCALLS = ("write", "writev", "sendto", "sendmsg", "sendmmsg")


class SyscallCounter:
    """Counts send-type syscalls of ``pid`` (all its threads) with ``perf stat`` on the
    kernel's syscall tracepoints: in-kernel counters, no ptrace, so the server runs at full
    speed. ``None`` when perf or its tracepoints are not available."""

    def __init__(self, pid: int) -> None:
        self.popen: subprocess.Popen[str] | None = None
        perf = shutil.which("perf")
        if perf is None:
            return
        events = ",".join(f"syscalls:sys_enter_{name}" for name in SEND_SYSCALLS)
        self.popen = subprocess.Popen([perf, "stat", "-x", ",", "-e", events, "-p", str(pid)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> int | None:
        """Stop perf (SIGINT by pid, as Ctrl-C) and return the total count."""
        if self.popen is None:
            return None
        try:
            self.popen.send_signal(signal.SIGINT)
            _, err = self.popen.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            return None
        total, seen = 0, 0
        for line in err.splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
                if not fields[0].strip().isdigit():
                    return None  # "<not supported>": no tracepoints here
                total += int(fields[0])
                seen += 1
        return total if seen else None


def publisher_argv(server: str, burst: int, clients: int) -> list[str]:
    runtime, script = PUBLISHERS[server]
    exe = {"python": PYTHON, "node": "node", "bun": str(BUN)}[runtime]
    return [exe, str(PEERS / script), str(burst), str(clients)]


def _edges(pid: int) -> tuple[float, float]:
    return cpu_seconds(pid)


def _measured_window(srv: Proc, cli: Proc, warmup: float, duration: float) -> dict[str, Any]:
    """Wait for the client's measured window and read the publisher around it: CPU edges,
    send syscalls, its counters (``snap``) before and after, and its RSS."""
    w: dict[str, Any] = {"connected": cli.read_event(60, "connected")}
    cli.read_event(warmup + 30, "window_start")
    counter = SyscallCounter(srv.pid)
    w["e0"] = _edges(srv.pid)
    srv.command("snap")
    w["snap0"] = srv.read_event(5, "snap")
    w["result"] = cli.read_event(duration + 30, "result")
    w["e1"] = _edges(srv.pid)
    w["sends"] = counter.stop()
    srv.command("snap")
    w["snap1"] = srv.read_event(5, "snap")
    w["rss"] = rss_kb(srv.pid)
    return w


def _publisher_row(server: str, burst: int, clients: int, transport: str, w: dict[str, Any]) -> dict[str, Any]:
    snap0, snap1 = w["snap0"], w["snap1"]
    srv_delivered = snap1["delivered"] - snap0["delivered"]
    app_writes = None
    if snap0.get("writes") is not None and srv_delivered:
        app_writes = (snap1["writes"] - snap0["writes"]) / srv_delivered
    return _row(server, burst, clients, transport, w["connected"], w["result"], w["e0"], w["e1"],
                w["rss"], w["sends"], app_writes=app_writes, paused=snap1["paused"] - snap0["paused"])


def run_publisher(server: str, burst: int, clients: int, warmup: float, duration: float,
                  transport: str) -> dict[str, Any]:
    """One measured run of a publisher; always stops both subprocesses."""
    env = {"BENCH_AIOFASTNET": "0"} if transport == "uvloop" else {}
    log = _server_log(server, burst)
    srv = Proc(publisher_argv(server, burst, clients), core=0, env=env, stderr=log)
    cli: Proc | None = None
    try:
        port = srv.read_event(15, "listening")["port"]
        cli = Proc(client_argv(f"ws://127.0.0.1:{port}/", clients, warmup, duration), core=1)
        w = _measured_window(srv, cli, warmup, duration)
    finally:
        if cli is not None:
            cli.stop()
        srv.stop()
        log.close()
    return _publisher_row(server, burst, clients, transport, w)


def write_mix(path: Any, clients: int, seed: int = MIX_SEED, zipf_s: float = MIX_ZIPF_S) -> dict[str, Any]:
    """Write the mix workload file (streams with payload templates, every client's streams,
    the publish sequence) and return it. Stream popularity is Zipf over a seeded random
    ranking of the 400 streams, so hot symbols' bookTicker and depth streams are not tied."""
    from payloads import BOOK_TICKER, DEPTH_UPDATE

    rng = random.Random(seed)
    streams = []
    for i in range(MIX_SYMBOLS):
        sym = f"s{i:03d}usdt"
        upper = b'"s":"%s"' % sym.upper().encode()
        for kind, template in (("bookTicker", BOOK_TICKER), ("depth", DEPTH_UPDATE)):
            body = template.replace(b'"s":"BTCUSDT"', upper)
            # "t" first: the client reads the first "t" as the message's publish number.
            streams.append({"name": f"{sym}@{kind}", "head": '{"t":', "tail": "," + body[1:].decode()})
    ranking = list(range(len(streams)))
    rng.shuffle(ranking)
    weights = [0.0] * len(streams)
    for rank, stream in enumerate(ranking):
        weights[stream] = 1.0 / (rank + 1) ** zipf_s
    assignment = []
    for _ in range(clients):
        chosen: set[int] = set()
        while len(chosen) < MIX_STREAMS_PER_CLIENT:
            chosen.add(rng.choices(range(len(streams)), weights)[0])
        assignment.append(sorted(chosen))
    sequence = rng.choices(range(len(streams)), weights, k=MIX_CYCLE)
    mix = {"seed": seed, "zipf_s": zipf_s, "streams": streams, "clients": assignment, "sequence": sequence}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mix))
    return mix


def mix_expected(mix: dict[str, Any], published: int) -> list[int]:
    """Frames each client must have received once messages 0..published-1 are delivered."""
    seq = mix["sequence"]
    full, rest = divmod(published, len(seq))
    per_stream = [0] * len(mix["streams"])
    for s in seq:
        per_stream[s] += full
    for s in seq[:rest]:
        per_stream[s] += 1
    return [sum(per_stream[s] for s in streams) for streams in mix["clients"]]


def mix_summary(mix: dict[str, Any]) -> dict[str, float]:
    """What the assignment implies: distinct subscription sets, deliveries per published
    message and mean delivered payload size (over the publish sequence)."""
    subs = [0] * len(mix["streams"])
    for streams in mix["clients"]:
        for s in streams:
            subs[s] += 1
    size = [len(st["head"]) + 7 + len(st["tail"]) for st in mix["streams"]]
    fan = sum(subs[s] for s in mix["sequence"])
    return {
        "distinct_sets": len({tuple(c) for c in mix["clients"]}),
        "deliveries_per_msg": fan / len(mix["sequence"]),
        "mean_delivered_bytes": sum(subs[s] * size[s] for s in mix["sequence"]) / fan,
        "hottest_stream_subscribers": max(subs),
    }


def run_mix(server: str, burst: int, clients: int, warmup: float, duration: float, transport: str,
            mix: dict[str, Any]) -> dict[str, Any]:
    """One measured run of the mix workload, then the exact loss check (stop, drain, compare
    every connection's total with what was published on its streams)."""
    env = {"BENCH_MIX": str(MIX_FILE)}
    if transport == "uvloop":
        env["BENCH_AIOFASTNET"] = "0"
    log = _server_log(f"{server} mix", burst)
    srv = Proc(publisher_argv(server, burst, clients), core=0, env=env, stderr=log)
    cli: Proc | None = None
    try:
        port = srv.read_event(15, "listening")["port"]
        argv = client_argv(f"ws://127.0.0.1:{port}/", clients, warmup, duration)
        cli = Proc(argv + ["--assignment", str(MIX_FILE), "--increasing", "--drain"], core=1)
        w = _measured_window(srv, cli, warmup, duration)
        srv.command("stop")
        published = srv.read_event(5, "stopped")["published"]
        cli.command("drain")
        drained = cli.read_event(30, "drained")
    finally:
        if cli is not None:
            cli.stop()
        srv.stop()
        log.close()
    return _mix_checked(_publisher_row(server, burst, clients, transport, w), mix, published, drained)


def _mix_checked(row: dict[str, Any], mix: dict[str, Any], published: int, drained: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the exact loss check: every connection's total after the drain must
    equal what messages 0..published-1 put on its streams."""
    expected = mix_expected(mix, published)
    got = drained["per_conn_frames"]
    wrong = sum(1 for e, g in zip(expected, got) if e != g) + abs(len(expected) - len(got))
    row.update(
        workload="mix", published=published, expected_total=sum(expected), delivered_total=sum(got),
        conns_with_wrong_count=wrong, seq_errors=drained["seq_errors"],
        disconnected_after_drain=drained["disconnected"],
        ok=row["ok"] and wrong == 0 and drained["seq_errors"] == 0 and drained["disconnected"] == 0,
    )
    return row


def mix_report(rows: list[dict[str, Any]], bursts: list[int]) -> str:
    """The mix table: throughput, CPU and syscalls per delivered message, and the loss check."""
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["server"], r["transport"], r["burst"])].append(r)
    uws = {b: median([r["msgs_per_s"] for r in by[("uws", "-", b)]]) for b in bursts if by.get(("uws", "-", b))}
    lines = [
        ("| server | B | delivered msgs/s (median) | min–max | n | ok | vs uWS.js "
         "| server CPU µs/msg user / sys | server busy | send syscalls/msg | app writes/msg "
         "| client busy | feeder busy | flow pauses | delivered = expected (frames after drain) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server in MIX_SERVERS:
        for transport in ("aiofastnet", "uvloop", "-"):
            for b in bursts:
                runs = by.get((server, transport, b))
                if not runs:
                    continue
                rates = [r["msgs_per_s"] for r in runs]
                m = median(rates)
                writes = _med(runs, "writes_per_msg")
                feeder = _med(runs, "feeder_cpu_busy")
                pauses = [r["paused_checks"] for r in runs if r.get("paused_checks") is not None]
                compared = uws.get(b) and server != "tickhub-relay-flat"  # flat: another workload
                exact = all(r["conns_with_wrong_count"] == 0 for r in runs)
                totals = f"{sum(r['delivered_total'] for r in runs) / 1e6:.2f} M of " \
                         f"{sum(r['expected_total'] for r in runs) / 1e6:.2f} M"
                lines.append(
                    f"| {_label(server, transport)} | {b} | {_fmt_rate(m)} "
                    f"| {_fmt_rate(min(rates))}–{_fmt_rate(max(rates))} | {len(runs)} "
                    f"| {'yes' if all(r['ok'] for r in runs) else 'NO'} "
                    f"| {f'{m / uws[b]:.2f}×' if compared else '–'} "
                    f"| {_med(runs, 'us_per_msg_user'):.3f} / {_med(runs, 'us_per_msg_sys'):.3f} "
                    f"| {_med(runs, 'server_cpu_busy'):.0%} | {_fmt_opt(_med(runs, 'send_syscalls_per_msg'))} "
                    f"| {'–' if writes is None else f'{writes:.3f}'} | {_med(runs, 'client_cpu_busy'):.0%} "
                    f"| {'–' if feeder is None else f'{feeder:.0%}'} "
                    f"| {sum(pauses) if pauses else '–'} | {'yes' if exact else 'NO'}: {totals} |"
                )
    if any(r["server"] in RELAYS for r in rows):
        lines.append("\ntickhub-relay(-flat) is the gateway fed by feeder.py: its figure includes parsing "
                     "its upstream (envelope scan, stream routing, duplicate check), which the publishers "
                     "don't pay; tickhub-relay-flat is another workload (the hub reads what its socket "
                     "holds) and is not compared.")
    return "\n".join(lines)


def _server_log(server: str, burst: int) -> Any:
    """The servers' stderr goes to a log, not the report (picows/asyncio notices such as
    "write() called after connection lost" when the client leaves first)."""
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    log = SERVER_LOG.open("a")
    log.write(f"--- {server} B={burst} {time.ctime()}\n")
    log.flush()
    return log


def _start_relay(server: str, burst: int, log: Any, env: dict[str, str] | None = None) -> tuple[Proc, Proc, str]:
    """The feeder (core 1) in the relay's mode and the relay (core 0) on it: the gateway,
    or a JavaScript peer in relay mode; returns (feeder, relay, the relay's base URL
    ``ws://127.0.0.1:<port>/``). Stops the feeder if the relay fails to start."""
    from hub_e2e import start_gateway

    feeder = Proc([PYTHON, str(PEERS / "feeder.py"), "--burst", str(burst), "--mode", RELAYS[server]],
                  core=1, env=env, stderr=log)
    try:
        feeder_port = feeder.read_event(10, "listening")["port"]
        if server in JS_RELAYS:
            relay = start_js_relay(JS_RELAYS[server], feeder_port, log)
            port = relay.read_event(15, "listening")["port"]
        else:
            relay, port = start_gateway(feeder_port, max_queued=RELAY_MAX_QUEUED, stderr=log)
    except BaseException:
        feeder.stop()
        raise
    return feeder, relay, f"ws://127.0.0.1:{port}/"


def start_js_relay(peer: str, feeder_port: int, log: Any) -> Proc:
    """uws_publish.js / bun_publish.js in relay mode (core 0), upstream at the feeder: the
    peer subscribes btcusdt@trade there and publishes each message on arrival."""
    ensure_node_modules()
    return Proc(publisher_argv(peer, 0, 0), core=0, env={"BENCH_UPSTREAM": f"ws://127.0.0.1:{feeder_port}"},
                stderr=log)


def _relay_window(feeder: Proc, gw: Proc, cli: Proc, warmup: float, duration: float) -> dict[str, Any]:
    """Read the gateway and the feeder around the client's measured window (the feeder has
    been told ``go``): CPU edges of both, the gateway's send syscalls and RSS, feeder snaps."""
    w: dict[str, Any] = {}
    cli.read_event(warmup + 30, "window_start")
    counter = SyscallCounter(gw.pid)
    w["e0"] = _edges(gw.pid)
    w["f0"] = cpu_seconds(feeder.pid)
    feeder.command("snap")
    w["fs0"] = feeder.read_event(5, "snap")
    w["result"] = cli.read_event(duration + 30, "result")
    w["e1"] = _edges(gw.pid)
    w["sends"] = counter.stop()
    w["f1"] = cpu_seconds(feeder.pid)
    feeder.command("snap")
    w["fs1"] = feeder.read_event(5, "snap")
    w["rss"] = rss_kb(gw.pid)
    return w


def _relay_row(server: str, burst: int, clients: int, connected: dict[str, Any], w: dict[str, Any]) -> dict[str, Any]:
    f0, f1, fs0, fs1, result = w["f0"], w["f1"], w["fs0"], w["fs1"], w["result"]
    transport = "-" if server in JS_RELAYS else "aiofastnet"
    row = _row(server, burst, clients, transport, connected, result, w["e0"], w["e1"], w["rss"], w["sends"])
    row.update(
        feeder_cpu_busy=(f1[0] - f0[0] + f1[1] - f0[1]) / result["seconds"],
        upstream_msgs=fs1["sent"] - fs0["sent"], upstream_bursts=fs1["bursts"] - fs0["bursts"],
        upstream_skipped=fs1["skipped"] - fs0["skipped"], feeder_waits=fs1["waits"] - fs0["waits"],
    )
    return row


@contextlib.contextmanager
def _relay_processes(server: str, burst: int, label: str,
                     env: dict[str, str] | None = None) -> Iterator[tuple[Proc, Proc, str, list[Proc]]]:
    """A relay cell's feeder and relay (``_start_relay``), and a list the caller adds its
    client to; on leaving, every process stops, the client first."""
    log = _server_log(label, burst)
    clients: list[Proc] = []
    try:
        feeder, relay, base = _start_relay(server, burst, log, env)
        try:
            yield feeder, relay, base, clients
        finally:
            for proc in (*clients, relay, feeder):
                proc.stop()
    finally:
        log.close()


def run_relay(server: str, burst: int, clients: int, warmup: float, duration: float) -> dict[str, Any]:
    """One measured run of a relay; always stops the three subprocesses."""
    with _relay_processes(server, burst, server) as (feeder, relay, base, started):
        url = base if server in JS_RELAYS else base + "ws/btcusdt@trade"  # the peers serve any path
        cli = Proc(client_argv(url, clients, warmup, duration), core=1)
        started.append(cli)
        connected = cli.read_event(60, "connected")
        feeder.command("go")
        w = _relay_window(feeder, relay, cli, warmup, duration)
    return _relay_row(server, burst, clients, connected, w)


def _wait_streams_subscribed(feeder: Proc, wanted: int, timeout: float = RELAY_SUBSCRIBE_TIMEOUT) -> float:
    """Poll the feeder until the hub has subscribed ``wanted`` streams; seconds it took."""
    t0 = time.monotonic()
    while True:
        feeder.command("snap")
        have = feeder.read_event(5, "snap")["streams_subscribed"]
        waited = time.monotonic() - t0
        if have >= wanted:
            return waited
        if waited > timeout:
            raise TimeoutError(f"the hub subscribed {have} of {wanted} streams upstream in {timeout:g} s")
        time.sleep(0.05)


def run_relay_mix(server: str, burst: int, clients: int, warmup: float, duration: float,
                  mix: dict[str, Any]) -> dict[str, Any]:
    """The mix workload through the gateway: clients open ``/ws/<name>/<name>/...`` (raw
    payloads, as the publishers send them), the hub subscribes those streams upstream, and
    only then the feeder starts; after the window the same exact loss check as run_mix."""
    with _relay_processes(server, burst, f"{server} mix", {"BENCH_MIX": str(MIX_FILE)}) as (
            feeder, relay, base, started):
        argv = client_argv(base + "ws/", clients, warmup, duration)
        cli = Proc(argv + ["--assignment", str(MIX_FILE), "--assignment-urls", "names", "--wait-start",
                           "--increasing", "--drain"], core=1)
        started.append(cli)
        connected = cli.read_event(60, "connected")
        wanted = len({s for streams in mix["clients"][:clients] for s in streams})
        subscribe_seconds = _wait_streams_subscribed(feeder, wanted)
        feeder.command("snap")
        control_messages = feeder.read_event(5, "snap")["requests"]
        feeder.command("go")
        cli.command("start")
        w = _relay_window(feeder, relay, cli, warmup, duration)
        feeder.command("stop")
        published = feeder.read_event(5, "stopped")["published"]
        # The hub may still hold an upstream backlog (flat mode): drain once it has read it all.
        feeder.command("sync")
        if not feeder.read_event(15, "synced")["ok"]:
            raise RuntimeError("the hub did not answer the feeder's ping after stop")
        cli.command("drain")
        drained = cli.read_event(30, "drained")
    row = _relay_row(server, burst, clients, connected, w)
    # seconds from every client connected to every stream subscribed upstream, and the
    # control messages the hub needed for that (at most 4 a second)
    row.update(subscribe_seconds=subscribe_seconds, upstream_control_messages=control_messages)
    return _mix_checked(row, mix, published, drained)


def _row(server: str, burst: int, clients: int, transport: str, connected: dict[str, Any],
         result: dict[str, Any], e0: tuple[float, float], e1: tuple[float, float],
         rss: int, sends: int | None, app_writes: float | None = None, paused: int | None = None) -> dict[str, Any]:
    delivered = result["frames"]
    user, system = e1[0] - e0[0], e1[1] - e0[1]
    return {
        "server": server, "burst": burst, "clients": clients, "transport": transport,
        "connect_seconds": connected["seconds"],
        "window_s": result["seconds"], "delivered": delivered, "msgs_per_s": result["frames_per_s"],
        "per_conn_min": result["per_conn_min"], "per_conn_max": result["per_conn_max"],
        "seq_errors": result["seq_errors"], "disconnected": result["disconnected"],
        "ok": result["ok"], "first_error": result["first_error"],
        "server_cpu_user_s": user, "server_cpu_sys_s": system,
        "server_cpu_busy": (user + system) / result["seconds"],
        "us_per_msg_user": 1e6 * user / delivered if delivered else None,
        "us_per_msg_sys": 1e6 * system / delivered if delivered else None,
        "send_syscalls": sends,
        "send_syscalls_per_msg": sends / delivered if delivered and sends is not None else None,
        "writes_per_msg": app_writes,
        "paused_checks": paused,
        "server_rss_kb": rss,
        "client_cpu_busy": (result["client_cpu_user"] + result["client_cpu_sys"]) / result["seconds"],
    }


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M/s" if x >= 1e6 else f"{x / 1e3:.0f} k/s"


def _fmt_opt(x: float | None) -> str:
    """Three decimals, or three significant digits below 0.01 (a relay's sends under a burst)."""
    if x is None:
        return "–"
    return f"{x:.3f}" if x >= 0.01 else f"{x:.3g}"


def _label(server: str, transport: str) -> str:
    return f"{server} [uvloop transports]" if transport == "uvloop" else server


def _med(runs: list[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in runs if r.get(key) is not None]
    return median(xs) if xs else None


def report(rows: list[dict[str, Any]], bursts: list[int]) -> str:
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["server"], r["transport"], r["burst"])].append(r)
    med = {k: median([r["msgs_per_s"] for r in v]) for k, v in by.items()}

    def ref(server: str, b: int) -> float | None:
        return med.get((server, "aiofastnet", b)) or med.get((server, "-", b)) or med.get((server, "uvloop", b))

    def ratio(x: float, base: float | None) -> str:
        return f"{x / base:.2f}×" if base and not flat else "–"

    lines = [
        "| server | B | delivered msgs/s (median) | min–max | n | ok | vs uWS.js | vs picows-naive "
        "| vs websockets.broadcast | server CPU µs/msg user / sys | server busy | send syscalls/msg "
        "| app writes/msg | client busy | feeder busy | flow pauses |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server in SERVERS:
        for transport in ("aiofastnet", "uvloop", "-"):
            for b in bursts:
                runs = by.get((server, transport, b))
                if not runs:
                    continue
                m = med[(server, transport, b)]
                flat = server == "tickhub-relay-flat"  # a different workload: not compared
                rates = [r["msgs_per_s"] for r in runs]
                writes = _med(runs, "writes_per_msg")
                feeder = _med(runs, "feeder_cpu_busy")
                pauses = [r["paused_checks"] for r in runs if r.get("paused_checks") is not None]
                lines.append(
                    f"| {_label(server, transport)} | {b} | {_fmt_rate(m)} "
                    f"| {_fmt_rate(min(rates))}–{_fmt_rate(max(rates))} | {len(runs)} "
                    f"| {'yes' if all(r['ok'] for r in runs) else 'NO'} "
                    f"| {ratio(m, ref('uws', b))} | {ratio(m, ref('picows-naive', b))} "
                    f"| {ratio(m, ref('websockets.broadcast', b))} "
                    f"| {_med(runs, 'us_per_msg_user'):.3f} / {_med(runs, 'us_per_msg_sys'):.3f} "
                    f"| {_med(runs, 'server_cpu_busy'):.0%} | {_fmt_opt(_med(runs, 'send_syscalls_per_msg'))} "
                    f"| {'–' if writes is None else f'{writes:.3f}'} | {_med(runs, 'client_cpu_busy'):.0%} "
                    f"| {'–' if feeder is None else f'{feeder:.0%}'} "
                    f"| {sum(pauses) if pauses else '–'} |"
                )
    return "\n".join(lines)


def headline(rows: list[dict[str, Any]], bursts: list[int]) -> str:
    """tickhub against the issue's targets (vs uWS.js publishing, user CPU at B=10), and the
    relays against each other (every one fed by the same paced feeder)."""
    targets = {1: 0.95, 10: 1.0, 100: 2.5}
    by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["transport"] in ("aiofastnet", "-"):
            by[(r["server"], r["burst"])].append(r)

    def rate(kind: str, b: int) -> float | None:
        runs = by.get((kind, b))
        return median([r["msgs_per_s"] for r in runs]) if runs else None

    out = []
    for b in bursts:
        base = rate("uws", b)
        for kind in ("tickhub-relay", "tickhub"):
            m = rate(kind, b)
            if m is None or base is None:
                continue
            goal = targets.get(b)
            verdict = "" if goal is None else f" (target ≥ {goal}×: {'met' if m / base >= goal else 'NOT met'})"
            user = median([r["us_per_msg_user"] for r in by[(kind, b)]])
            cpu = f"; user CPU {user:.3f} µs/msg (target ≤ 0.05: {'met' if user <= 0.05 else 'NOT met'})" \
                if b == 10 else ""
            out.append(f"- B={b}: {kind} {m / base:.2f}× uWS.js{verdict}{cpu}")
        ours = rate("tickhub-relay", b)
        for peer, label in (("uws-relay", "uWS.js"), ("bun-relay", "Bun")):
            theirs = rate(peer, b)
            if ours is not None and theirs:
                out.append(f"- B={b}: tickhub-relay {ours / theirs:.2f}× {label} as a relay on the same feeder")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description="side-by-side fan-out throughput campaign")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--bursts", default=None, help="B values (default 1,10,100; with --mix 10,100)")
    p.add_argument("--servers", default=None,
                   help=f"any of {','.join(SERVERS)} (default all; with --mix any of {','.join(MIX_SERVERS)}, "
                        f"default {','.join(MIX_DEFAULT)})")
    p.add_argument("--transports", default="aiofastnet",
                   help="picows transports for tickhub and picows-naive: aiofastnet, uvloop or both "
                        "(aiofastnet,uvloop: interleaved); the gateway always uses its own default")
    p.add_argument("--no-aiofastnet", action="store_true", help="same as --transports uvloop")
    p.add_argument("--quick", action="store_true", help="1 rep, 0.5 s warm-up, 1.5 s windows")
    p.add_argument("--mix", action="store_true",
                   help="the 400-stream Zipf workload (see the module docstring) instead of one trade stream")
    p.add_argument("--seed", type=int, default=MIX_SEED, help="--mix: seed of the assignment and publish sequence")
    args = p.parse_args()
    if args.no_aiofastnet:
        args.transports = "uvloop"
    if args.quick:
        args.reps, args.warmup, args.duration = 1, 0.5, 1.5
    known = MIX_SERVERS if args.mix else SERVERS
    bursts = [int(b) for b in (args.bursts or ("10,100" if args.mix else "1,10,100")).split(",")]
    servers = (args.servers or ",".join(MIX_DEFAULT if args.mix else known)).split(",")
    unknown = [s for s in servers if s not in known]
    if unknown:
        p.error(f"unknown server(s) {unknown}{' for --mix' if args.mix else ''}; choose from {known}")
    transports = args.transports.split(",")
    ensure_benchclient()
    info = versions()
    if any(PUBLISHERS.get(s, ("python",))[0] != "python" or s in JS_RELAYS for s in servers):
        ensure_node_modules()
        info.update(js_versions())
    print(json.dumps({"versions": info}), flush=True)
    mix: dict[str, Any] | None = None
    if args.mix:
        mix = write_mix(MIX_FILE, args.clients, args.seed)
        summary = mix_summary(mix)
        print(json.dumps({"mix": summary, "file": str(MIX_FILE)}), flush=True)

    cells: list[tuple[str, int, str]] = []
    for b in bursts:
        for s in servers:
            if s in ONE_WRITE_PER_MESSAGE and b >= 100:
                continue
            for t in (transports if s in PICOWS_PUBLISHERS else ["-" if s in PUBLISHERS or s in JS_RELAYS else "aiofastnet"]):
                cells.append((s, b, t))
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for rep in range(args.reps):
        for server, burst, transport in cells:
            try:
                if mix is not None and server in RELAYS:
                    row = run_relay_mix(server, burst, args.clients, args.warmup, args.duration, mix)
                elif mix is not None:
                    row = run_mix(server, burst, args.clients, args.warmup, args.duration, transport, mix)
                elif server in RELAYS:
                    row = run_relay(server, burst, args.clients, args.warmup, args.duration)
                else:
                    row = run_publisher(server, burst, args.clients, args.warmup, args.duration, transport)
            except (TimeoutError, RuntimeError, OSError) as exc:
                print(f"# {server} B={burst} rep {rep}: FAILED: {exc}", file=sys.stderr, flush=True)
                continue
            row.update(rep=rep, versions=info, when=time.time())
            append_jsonl(MIX_RESULTS if mix is not None else RESULTS, row)
            rows.append(row)
            print(f"# rep {rep} {_label(server, transport):34s} B={burst:<3d} {_fmt_rate(row['msgs_per_s']):>10s} "
                  f"cpu {row['server_cpu_busy']:.0%} user/sys µs/msg {row['us_per_msg_user']:.3f}/"
                  f"{row['us_per_msg_sys']:.3f} sends/msg {_fmt_opt(row['send_syscalls_per_msg'])} "
                  f"client {row['client_cpu_busy']:.0%} ok={row['ok']}", file=sys.stderr, flush=True)
    print(f"\n{args.clients} clients, window {args.duration:g} s after {args.warmup:g} s warm-up, "
          f"{args.reps} rep(s) interleaved, {time.monotonic() - started:.0f} s total\n")
    if mix is not None:
        sm = mix_summary(mix)
        print(f"Mix: {MIX_SYMBOLS} symbols x (bookTicker-like, depth-like) = {len(mix['streams'])} streams, "
              f"{MIX_STREAMS_PER_CLIENT} streams per client by Zipf s={mix['zipf_s']} (seed {mix['seed']}); "
              f"{sm['distinct_sets']} distinct subscription sets of {args.clients}, "
              f"{sm['deliveries_per_msg']:.0f} deliveries per published message, "
              f"mean delivered payload {sm['mean_delivered_bytes']:.0f} B, hottest stream "
              f"{sm['hottest_stream_subscribers']} subscribers\n")
        print(mix_report(rows, bursts))
        return 0 if rows and all(r["ok"] for r in rows) else 1
    print(report(rows, bursts))
    head = headline(rows, bursts)
    if head:
        print("\nAgainst uWS.js (tickhub-relay includes parsing its upstream; the publishers don't pay that):\n")
        print(head)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
