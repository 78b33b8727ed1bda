"""Connection storm: 5,000 clients connecting within 2 s, then all leaving — tickhub vs uWS.js.

The server (core 0) publishes a trickle (``--rate`` messages/s, default 20) so every
client can be "served": connected *and* holding its first message.

* tickhub: the real ``python -m tickhub serve`` (default settings) fed by
  bench/peers/feeder.py at that rate; clients open ``/ws/btcusdt@trade``;
* uWS.js: bench/peers/uws_publish.js in paced mode at that rate (burst 1).

One probe connection warms the server (and tickhub's upstream subscription); VmRSS after
``--settle`` s is "before". Then the storm client (``storm.py client``, core 1, picows)
starts ``--connections`` handshakes evenly spread over ``--spread`` seconds, without
retries: each one is accepted (the upgrade completed), refused (TCP refused or a non-101
answer) or timed out (``--timeout``). "Served in" is the time from the first attempt until
the last accepted client had its first message. Meanwhile a thread samples the server's
VmRSS every 20 ms ("peak"). All clients then close (WebSocket close, then TCP), and
"after" is read ``--settle`` s after the last one is gone.

Leak check: a round is repeated ``--rounds`` times (default 3) against the same server.
An allocator keeps much of what it grew at the peak (pymalloc arenas, glibc heap top, V8's
heap) and the second storm can still raise that high-water mark a little, so after ≈ before
is not required; what must hold is that RSS plateaus: after the last round ≤ the highest
"after" of the earlier rounds + max(1 MiB, 5 % of the first round's peak growth). A leak
of the per-connection state would instead add about the same amount every round. That is
the "no leak" verdict printed.

    .venv/bin/python bench/storm.py                          # 5,000 in 2 s, 3 rounds, tickhub and uWS.js, ~1.5 min
    .venv/bin/python bench/storm.py --servers tickhub --rounds 3
    .venv/bin/python bench/storm.py --connections 2000 --spread 1

JSON lines to bench/results/storm.jsonl; the markdown table to bench/results/storm.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
import time
from typing import Any

from benchlib import BENCH, PYTHON, Proc, append_jsonl, client_argv, ensure_benchclient, rss_kb, versions

RESULTS = BENCH / "results"
JSONL = RESULTS / "storm.jsonl"
TABLE = RESULTS / "storm.md"
SERVERS = ("tickhub", "uws")
LABELS = {"tickhub": "tickhub serve", "uws": "uWS.js 3.0.6"}
LEAK_FLOOR_KB = 1024
LEAK_FRACTION = 0.05


# --- the storm client ----------------------------------------------------------------

def client_main(argv: list[str]) -> int:
    """``storm.py client``: the storm, one ``served`` line, then ``closed`` after a stdin line."""
    import asyncio
    import os

    import picows
    import uvloop

    p = argparse.ArgumentParser(prog="storm.py client")
    p.add_argument("--url", required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--spread", type=float, required=True)
    p.add_argument("--timeout", type=float, required=True)
    args = p.parse_args(argv)

    class Client(picows.WSListener):
        """Remembers when its first data frame came and when it was disconnected."""

        def __init__(self, served: asyncio.Event, pending: list[int]) -> None:
            self.first_frame_at: float | None = None
            self.transport: picows.WSTransport | None = None
            self.gone = asyncio.Event()
            self._served = served
            self._pending = pending

        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type in (picows.WSMsgType.TEXT, picows.WSMsgType.BINARY):
                if self.first_frame_at is None:
                    self.first_frame_at = time.monotonic()
                    self._pending[0] -= 1
                    if self._pending[0] == 0:
                        self._served.set()
            elif frame.msg_type == picows.WSMsgType.PING:
                transport.send_pong(frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
            self.gone.set()

    def emit(**event: object) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        served = asyncio.Event()
        pending = [args.connections]  # attempts without a first message (or a failure) yet
        clients: list[Client] = []
        outcomes: dict[str, int] = {}
        connect_times: list[float] = []
        t0 = time.monotonic()

        def settle_one() -> None:
            pending[0] -= 1
            if pending[0] == 0:
                served.set()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i * args.spread / args.connections - time.monotonic()))
            started = time.monotonic()
            try:
                _, client = await asyncio.wait_for(
                    picows.ws_connect(lambda: Client(served, pending), args.url,
                                      websocket_handshake_timeout=args.timeout),
                    args.timeout)
            except picows.WSInvalidStatusError:  # an HTTP answer other than 101 (e.g. 503)
                outcomes["refused (HTTP answer)"] = outcomes.get("refused (HTTP answer)", 0) + 1
                settle_one()
                return
            except picows.WSError as exc:
                key = f"error ({type(exc).__name__})"
                outcomes[key] = outcomes.get(key, 0) + 1
                settle_one()
                return
            except ConnectionRefusedError:
                outcomes["refused (TCP)"] = outcomes.get("refused (TCP)", 0) + 1
                settle_one()
                return
            except (asyncio.TimeoutError, TimeoutError):
                outcomes["timed out"] = outcomes.get("timed out", 0) + 1
                settle_one()
                return
            except OSError as exc:
                key = f"error ({type(exc).__name__})"
                outcomes[key] = outcomes.get(key, 0) + 1
                settle_one()
                return
            connect_times.append(time.monotonic() - started)
            assert isinstance(client, Client)
            clients.append(client)

        attempts = [asyncio.ensure_future(one(i)) for i in range(args.connections)]
        await asyncio.gather(*attempts)
        handshakes_done = time.monotonic() - t0
        try:
            await asyncio.wait_for(served.wait(), args.timeout)
        except asyncio.TimeoutError:
            pass
        firsts = [c.first_frame_at for c in clients if c.first_frame_at is not None]
        connect_times.sort()
        emit(event="served", attempts=args.connections, accepted=len(clients), outcomes=outcomes,
             refused=sum(v for k, v in outcomes.items() if k.startswith("refused")),
             timed_out=outcomes.get("timed out", 0),
             errors=sum(v for k, v in outcomes.items() if k.startswith("error")),
             unserved=len(clients) - len(firsts),
             handshakes_done_s=round(handshakes_done, 3),
             served_s=round(max(firsts) - t0, 3) if firsts else None,
             connect_p50_ms=round(1e3 * connect_times[len(connect_times) // 2], 2) if connect_times else None,
             connect_p99_ms=round(1e3 * connect_times[int(len(connect_times) * 0.99)], 2) if connect_times else None,
             connect_max_ms=round(1e3 * connect_times[-1], 2) if connect_times else None)

        await loop.run_in_executor(None, sys.stdin.readline)
        c0 = time.monotonic()
        for c in clients:
            if c.transport is not None:
                c.transport.send_close(picows.WSCloseCode.OK)
        gone = [asyncio.ensure_future(c.gone.wait()) for c in clients]
        _, still = await asyncio.wait(gone, timeout=args.timeout) if gone else (set(), set())
        for c in clients:
            if c.transport is not None and not c.gone.is_set():
                c.transport.disconnect()
        emit(event="closed", seconds=round(time.monotonic() - c0, 3), not_closed_by_server=len(still))
        for task in still:
            task.cancel()
        os._exit(0)  # every socket is closed; skip tearing down thousands of objects

    uvloop.run(run())
    return 0


# --- the servers -------------------------------------------------------------------

def start_server(server: str, rate: float, log: Any) -> tuple[list[Proc], str]:
    from fanout import PEERS, ensure_node_modules
    from hub_e2e import start_hub_behind_feeder

    if server == "tickhub":
        return start_hub_behind_feeder(["--rate", str(rate), "--burst", "1"], stderr=log)
    ensure_node_modules()
    pub = Proc(["node", str(PEERS / "uws_publish.js"), "1", "0", str(rate)], core=0, stderr=log)
    try:
        port = pub.read_event(15, "listening")["port"]
    except BaseException:
        pub.stop()
        raise
    return [pub], f"ws://127.0.0.1:{port}/"


class PeakSampler:
    """Highest VmRSS of ``pid`` seen while running, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


def storm_server(server: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    procs, url = start_server(server, args.rate, log)
    pid = procs[0].pid
    probe: Proc | None = None
    rounds: list[dict[str, Any]] = []
    try:
        probe = Proc(client_argv(url, 1, 0, 0, idle=True), core=1, stderr=log)
        if probe.read_event(30, "connected")["connections"] != 1:
            raise RuntimeError(f"{server}: the probe connection failed")
        time.sleep(args.settle)
        before = rss_kb(pid)
        for i in range(args.rounds):
            storm = Proc([PYTHON, __file__, "client", "--url", url, "--connections", str(args.connections),
                          "--spread", str(args.spread), "--timeout", str(args.timeout)], core=1, stderr=log)
            sampler = PeakSampler(pid)
            try:
                served = storm.read_event(args.spread + 3 * args.timeout + 30, "served")
                storm.command("close")
                closed = storm.read_event(args.timeout + 30, "closed")
            finally:
                peak = sampler.stop()
                storm.stop()
            time.sleep(args.settle)
            after = rss_kb(pid)
            rounds.append({"round": i + 1, **served, "close_seconds": closed["seconds"],
                           "not_closed_by_server": closed["not_closed_by_server"],
                           "rss_before_kb": before if i == 0 else rounds[-1]["rss_after_kb"],
                           "rss_peak_kb": peak, "rss_after_kb": after})
            print(f"# {server} round {i + 1}: accepted {served['accepted']}/{served['attempts']}, "
                  f"refused {served['refused']}, timed out {served['timed_out']}, served in "
                  f"{served['served_s']} s; RSS {before / 1024:.1f} → peak {peak / 1024:.1f} → "
                  f"after {after / 1024:.1f} MiB", file=sys.stderr, flush=True)
    finally:
        if probe is not None:
            if probe.popen.poll() is None:
                try:
                    probe.command("")
                except OSError:
                    pass
            probe.stop()
        for proc in procs:
            proc.stop()
    first, last = rounds[0], rounds[-1]
    growth = last["rss_after_kb"] - max(r["rss_after_kb"] for r in rounds[:-1]) if len(rounds) > 1 else 0
    tolerance = max(LEAK_FLOOR_KB, LEAK_FRACTION * (first["rss_peak_kb"] - before))
    return {"server": server, "rss_before_kb": before, "rounds": rounds,
            "growth_last_round_kb": growth, "leak_tolerance_kb": tolerance,
            "no_leak": growth <= tolerance if len(rounds) > 1 else None}


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    out = [f"Connection storm: {args.connections:,} clients started evenly over {args.spread:g} s, "
           f"no retries, server publishing {args.rate:g} msgs/s; made by `{command}`", "",
           "| server | round | accepted | refused | timed out / errors | handshakes done | served in "
           "| connect p50 / p99 / max | RSS before | peak | after disconnect |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for rd in r["rounds"]:
            served = "–" if rd["served_s"] is None else f"{rd['served_s']:.2f} s"
            if rd["unserved"]:
                served += f" ({rd['unserved']} never got a message)"
            out.append(
                f"| {LABELS[r['server']]} | {rd['round']} | {rd['accepted']:,} | {rd['refused']:,} | "
                f"{rd['timed_out']:,} / {rd['errors']:,} | {rd['handshakes_done_s']:.2f} s | {served} | "
                f"{rd['connect_p50_ms']} / {rd['connect_p99_ms']} / {rd['connect_max_ms']} ms | "
                f"{rd['rss_before_kb'] / 1024:.1f} MiB | {rd['rss_peak_kb'] / 1024:.1f} MiB | "
                f"{rd['rss_after_kb'] / 1024:.1f} MiB |")
    out += ["", "Leak check (RSS after the last round − the highest after of the earlier rounds; "
            "tolerance max(1 MiB, 5 % of the first round's peak growth)):", ""]
    for r in results:
        verdict = {True: "no leak", False: "GROWS", None: "one round: not checked"}[r["no_leak"]]
        out.append(f"* {LABELS[r['server']]}: {r['growth_last_round_kb'] / 1024:+.2f} MiB in round "
                   f"{len(r['rounds'])}, tolerance {r['leak_tolerance_kb'] / 1024:.2f} MiB: "
                   f"**{verdict}**; after − before (first round) "
                   f"{(r['rounds'][0]['rss_after_kb'] - r['rss_before_kb']) / 1024:+.2f} MiB")
    out += ["", "\"Served in\": from the first attempt until the last accepted client had its first "
            "message; with the attempts spread over the window it cannot be below the spread. "
            "The storm client (Python picows, core 1) does its own handshake work, so a slow figure "
            "can be the client: compare the servers, and the connect-time tail."]
    return "\n".join(out)


def main() -> int:
    if sys.argv[1:2] == ["client"]:
        return client_main(sys.argv[2:])
    p = argparse.ArgumentParser(description="connection storm against tickhub serve and uWS.js")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--spread", type=float, default=2.0, help="seconds over which the attempts start")
    p.add_argument("--timeout", type=float, default=10.0, help="per handshake and for the first message")
    p.add_argument("--rate", type=float, default=20.0, help="messages/s the server publishes")
    p.add_argument("--rounds", type=int, default=3, help="storms per server (leak check from 2)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds before the before/after RSS readings")
    args = p.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"--servers: unknown {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    if args.connections < 1 or args.spread <= 0 or args.rounds < 1 or args.rate <= 0:
        raise SystemExit("--connections, --rounds, --spread and --rate must be positive")
    command = "bench/storm.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    ensure_benchclient()
    info = versions()
    print(json.dumps({"versions": info}), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    with (RESULTS / "storm-servers.log").open("a") as log:
        for server in servers:
            r = storm_server(server, args, log)
            append_jsonl(JSONL, {**r, "command": command, "versions": info, "when": time.time()})
            results.append(r)
    table = markdown(results, args, command)
    TABLE.write_text(table + "\n")
    print("\n" + table + f"\n\ntable: {TABLE}\njson lines: {JSONL}")
    ok = all(rd["accepted"] == rd["attempts"] and not rd["unserved"] for r in results for rd in r["rounds"])
    return 0 if ok and all(r["no_leak"] is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
