"""Load client process: N picows connections counted by the compiled benchclient.

Prints JSON lines on stdout, in order:

* ``{"event":"connected", ...}`` once every connection is open (or failed);
* ``{"event":"window_start"}`` after ``--warmup`` seconds (the parent snapshots server CPU);
* ``{"event":"result", ...}`` after ``--duration`` more seconds: frames in the window,
  frames/s, per-connection min/max, sequence errors, disconnects, latency percentiles.

With ``--assignment FILE`` (the ``--mix`` workload of fanout.py) connection ``i`` opens a
URL for its streams, the file's ``clients[i]``: ``<url>m/<stream indices, comma-separated>``
(the publishers' form, the default) or, with ``--assignment-urls names``,
``<url><name>/<name>/...`` (the hub's Binance raw multi-stream form with ``<url>`` ending
in ``/ws/``). ``--increasing`` checks a strictly increasing (not contiguous) ``"t"`` per
connection. With ``--wait-start`` the warm-up begins only when a line arrives on stdin
after ``connected`` (the parent first has the hub subscribe its upstream).
With ``--drain``, after the result it waits for a line on stdin (the parent has stopped
the publisher), waits until no frame has arrived for 0.3 s, and prints
``{"event":"drained", ...}`` with every connection's total frame count (in connection
order) so the parent can check each one against what was published.

With ``--idle`` it prints ``connected`` and then holds the connections until a line
arrives on stdin (memory measurements).

Receive window: each connection's SO_RCVBUF is fixed (``--rcvbuf``, 256 KiB, which the
kernel doubles) and its read buffer sized above it (``--read-buffer``), so one recv never
fills the read buffer past picows's grow mark. Left to autotuning, a client behind a fast
server let the kernel queue MBs per socket, picows kept doubling its read buffers, and a
third of the client's CPU went to page faults on fresh buffer memory (perf: clear_page
under recv), capping every fast server at the client's loss rather than its own rate.
The window is the same for every server; each server still buffers what a client has
not taken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time

import picows
import uvloop

import benchclient


#: SO_RCVBUF of every connection (the kernel doubles it: a 512 KiB window)
RCVBUF = 256 * 1024
#: read buffer above the doubled RCVBUF plus a partial frame, under picows's 90 % grow mark
READ_BUFFER = 2 * RCVBUF + RCVBUF // 2


def _emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _connect_all(urls: list[str], concurrency: int, read_buffer: int,
                       stats: benchclient.Stats, rcvbuf: int = 0) -> tuple[list[benchclient.CountingListener], int]:
    """Open one connection per URL; the listeners come back in URL order (failed ones left out)."""
    slots: list[benchclient.CountingListener | None] = [None] * len(urls)
    failed = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, url: str) -> None:
        nonlocal failed
        async with sem:
            for attempt in range(3):
                try:
                    transport, listener = await picows.ws_connect(
                        lambda: benchclient.CountingListener(stats), url,
                        websocket_handshake_timeout=10, read_buffer_init_size=read_buffer,
                    )
                    if rcvbuf:
                        sock = transport.underlying_transport.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                    slots[i] = listener
                    return
                except (OSError, asyncio.TimeoutError, picows.WSError):
                    await asyncio.sleep(0.05 * (attempt + 1))
            failed += 1

    await asyncio.gather(*(one(i, url) for i, url in enumerate(urls)))
    return [ls for ls in slots if ls is not None], failed


def _urls(base: str, connections: int, assignment: str | None, form: str = "indices") -> list[str]:
    """``connections`` copies of ``base``, or one mix URL per client of the assignment file:
    ``base + "m/<i>,<j>,..."`` (``form`` "indices") or ``base + "<name>/<name>/..."`` ("names")."""
    if assignment is None:
        return [base] * connections
    with open(assignment) as f:
        mix = json.load(f)
    clients = mix["clients"][:connections]
    if form == "names":
        names = [stream["name"] for stream in mix["streams"]]
        return [base + "/".join(names[s] for s in streams) for streams in clients]
    return [base + "m/" + ",".join(str(s) for s in streams) for streams in clients]


async def _drain(listeners: list[benchclient.CountingListener]) -> None:
    """Wait for a line on stdin, then until 0.3 s pass without a frame (at most 20 s)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    deadline = time.monotonic() + 20
    last = -1
    while time.monotonic() < deadline:
        total = sum(ls.frames for ls in listeners)
        if total == last:
            break
        last = total
        await asyncio.sleep(0.3)
    _emit(event="drained", per_conn_frames=[ls.frames for ls in listeners],
          seq_errors=sum(ls.errors for ls in listeners),
          disconnected=sum(1 for ls in listeners if ls.disconnected))


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--latency", action="store_true", help='read "T" as a monotonic-ns send time')
    p.add_argument("--idle", action="store_true", help="connect, report, hold until stdin has a line")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight")
    p.add_argument("--rcvbuf", type=int, default=RCVBUF,
                   help="SO_RCVBUF per connection, bytes (0: kernel autotuning); see the docstring")
    p.add_argument("--read-buffer", type=int, default=None,
                   help="picows read buffer per connection (default: above the doubled --rcvbuf)")
    p.add_argument("--assignment", help="mix workload file: one URL per client (see the docstring)")
    p.add_argument("--assignment-urls", choices=("indices", "names"), default="indices",
                   help="URL form per client: <url>m/<i>,<j>,... (publishers) or <url><name>/<name>/... (hub /ws/)")
    p.add_argument("--wait-start", action="store_true",
                   help="after connected, start the warm-up only when a line arrives on stdin")
    p.add_argument("--increasing", action="store_true",
                   help='"t" must increase strictly per connection (gaps allowed), not by exactly 1')
    p.add_argument("--drain", action="store_true",
                   help="after the result, on a stdin line, wait for quiet and report every connection's total")
    args = p.parse_args()
    if args.read_buffer is None:
        args.read_buffer = max(64 * 1024, 2 * args.rcvbuf + args.rcvbuf // 2)  # READ_BUFFER at RCVBUF

    stats = benchclient.Stats()
    stats.latency = args.latency
    stats.increasing = args.increasing
    t0 = time.monotonic()
    listeners, failed = await _connect_all(
        _urls(args.url, args.connections, args.assignment, args.assignment_urls),
        args.concurrency, args.read_buffer, stats, args.rcvbuf)
    _emit(event="connected", connections=len(listeners), failed=failed,
          seconds=round(time.monotonic() - t0, 3))
    if args.idle:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        for listener in listeners:
            if listener.transport is not None:
                listener.transport.disconnect()
        return 0
    if args.wait_start:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    await asyncio.sleep(args.warmup)
    base = [ls.window_frames for ls in listeners]
    stats.reset_latency()
    cpu0 = os.times()
    w0 = time.monotonic()
    stats.counting = True
    _emit(event="window_start")
    await asyncio.sleep(args.duration)
    stats.counting = False
    w1 = time.monotonic()
    cpu1 = os.times()
    per_conn = [ls.window_frames - b for ls, b in zip(listeners, base)]
    seconds = w1 - w0
    frames = sum(per_conn)
    errors = sum(ls.errors for ls in listeners)
    bad = next((ls for ls in listeners if ls.errors), None)
    disconnected = sum(1 for ls in listeners if ls.disconnected)
    p50, p99, p999, p100 = stats.percentiles_us([0.5, 0.99, 0.999, 1.0])
    _emit(
        event="result",
        connections=len(listeners), failed_connects=failed, seconds=round(seconds, 4),
        frames=frames, frames_per_s=frames / seconds,
        per_conn_min=min(per_conn) if per_conn else 0, per_conn_max=max(per_conn) if per_conn else 0,
        frames_ever=sum(ls.frames for ls in listeners),
        seq_errors=errors, first_error=None if bad is None else
        {"got": bad.first_bad_got, "expected": bad.first_bad_expected},
        disconnected=disconnected,
        client_cpu_user=cpu1.user - cpu0.user, client_cpu_sys=cpu1.system - cpu0.system,
        latency_samples=stats.lat_count, latency_us={"p50": p50, "p99": p99, "p99.9": p999, "max": p100},
        latency_histogram=stats.histogram() if args.latency else None,
        ok=errors == 0 and disconnected == 0 and failed == 0 and frames > 0,
    )
    if args.drain:
        await _drain(listeners)
    for listener in listeners:
        if listener.transport is not None:
            listener.transport.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
