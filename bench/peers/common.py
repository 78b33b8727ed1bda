"""What every fan-out benchmark server shares: the publishing loop, the flow-control rule
and the stdin/stdout control channel.

The rule is the same for every server so the comparison is fair and nothing is ever
dropped: every ``FLOW_CHECK_TURNS`` publishing turns the publisher reads every client's
transport write-buffer size; while any is above ``FLOW_LIMIT`` (256 KiB) it does not
publish and sleeps 1 ms (the event loop keeps draining sockets meanwhile). A turn is one
burst of ``B`` messages followed by ``await asyncio.sleep(0)``, so the server's own
per-turn work (a flush for tickhub) runs once per burst.

Control channel: the parent writes ``snap`` on stdin and reads one JSON line with the
counters; the first stdout line is ``{"event":"listening","port":...}``. ``stop`` (the
``--mix`` workload) ends publishing after the current turn and answers
``{"event":"stopped","published":N}``, so the parent knows exactly what was sent.

Mix workload (``BENCH_MIX=<file>`` in the environment, written by bench/fanout.py --mix):
the file lists the streams (name and payload template ``head + str(t) + tail``), every
client's streams and a cyclic publish sequence of stream indices drawn by popularity.
Message ``t`` (a global publish number) goes to stream ``sequence[t % len(sequence)]``;
clients connect to ``/m/<i>,<j>,...`` and are subscribed to those stream indices.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from benchlib import FLOW_CHECK_TURNS, FLOW_LIMIT, trade_payload

T = TypeVar("T")


class Counters:
    """Publishing counters reported on ``snap``; ``writes`` is filled by the server."""

    def __init__(self) -> None:
        self.turns = 0
        self.published = 0
        self.stopped = False
        self.paused = 0
        self.clients = 0
        self.writes: Callable[[], int] = lambda: 0
        self.delivered: Callable[[], int] = lambda: 0

    def snapshot(self) -> dict[str, int]:
        return {
            "turns": self.turns, "published": self.published, "paused": self.paused,
            "clients": self.clients, "writes": self.writes(), "delivered": self.delivered(),
        }


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def on_stdin_lines(handle: Callable[[str], None]) -> None:
    """Call ``handle(line)`` for every line the parent writes on stdin (from the event loop,
    between turns); EOF stops the loop, so the process ends with its parent."""
    loop = asyncio.get_running_loop()
    buf = bytearray()

    def readable() -> None:
        data = os.read(0, 4096)
        if not data:
            loop.remove_reader(0)
            loop.stop()
            return
        buf.extend(data)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            handle(line.decode())

    loop.add_reader(0, readable)


def serve_control(counters: Counters) -> None:
    """Answer ``snap`` lines on stdin with the counters and ``stop`` with the published count."""

    def handle(line: str) -> None:
        if line.strip() == "snap":
            emit(event="snap", **counters.snapshot())
        elif line.strip() == "stop":
            # Runs between publishing turns, so ``published`` is final.
            counters.stopped = True
            emit(event="stopped", published=counters.published)

    on_stdin_lines(handle)


async def publish_forever(
    burst: int,
    clients_wanted: int,
    publish_burst: Callable[[list[bytes]], None],
    buffer_sizes: Callable[[], Iterable[int]],
    counters: Counters,
) -> None:
    """Wait for ``clients_wanted`` clients, then publish bursts of ``burst`` messages per turn."""
    while counters.clients < clients_wanted:
        await asyncio.sleep(0.01)
    seq = 0
    while True:
        if counters.turns % FLOW_CHECK_TURNS == 0:
            while max(buffer_sizes(), default=0) > FLOW_LIMIT:
                counters.paused += 1
                await asyncio.sleep(0.001)
        publish_burst([trade_payload(seq + i) for i in range(burst)])
        seq += burst
        counters.published += burst
        counters.turns += 1
        await asyncio.sleep(0)


class MixWorkload:
    """The ``--mix`` workload file: streams, payload templates and the publish sequence."""

    def __init__(self, path: str) -> None:
        with open(path) as f:
            data = json.load(f)
        self.names = [s["name"] for s in data["streams"]]
        self.heads = [s["head"].encode() for s in data["streams"]]
        self.tails = [s["tail"].encode() for s in data["streams"]]
        self.sequence: list[int] = data["sequence"]

    def streams_of_path(self, path: bytes) -> list[int]:
        """Stream indices of a client's upgrade path ``/m/<i>,<j>,...``; [] when malformed
        or out of range (the client then gets nothing and the run's counts fail)."""
        _, _, tail = path.partition(b"/m/")
        try:
            idx = [int(x) for x in tail.split(b",")]
        except ValueError:
            return []
        return idx if all(0 <= i < len(self.names) for i in idx) else []

    @staticmethod
    def from_env() -> MixWorkload | None:
        path = os.environ.get("BENCH_MIX")
        return MixWorkload(path) if path else None


async def publish_mix_forever(
    burst: int,
    clients_wanted: int,
    mix: MixWorkload,
    targets: Sequence[T],
    publish: Callable[[T, bytes], object],
    buffer_sizes: Callable[[], Iterable[int]],
    counters: Counters,
) -> None:
    """Like publish_forever, but message ``t`` goes to stream ``mix.sequence[t % L]`` with
    that stream's payload (``publish(targets[stream], payload)``), until the parent sends
    ``stop``."""
    while counters.clients < clients_wanted:
        await asyncio.sleep(0.01)
    seq = 0
    sequence, heads, tails = mix.sequence, mix.heads, mix.tails
    cycle = len(sequence)
    while True:
        if counters.turns % FLOW_CHECK_TURNS == 0:
            while max(buffer_sizes(), default=0) > FLOW_LIMIT:
                counters.paused += 1
                await asyncio.sleep(0.001)
        if counters.stopped:
            await asyncio.sleep(3600)
            continue
        for t in range(seq, seq + burst):
            stream = sequence[t % cycle]
            publish(targets[stream], b"%s%d%s" % (heads[stream], t, tails[stream]))
        seq += burst
        counters.published += burst
        counters.turns += 1
        await asyncio.sleep(0)


def picows_server_options() -> dict[str, object]:
    """Keyword arguments for ``picows.ws_create_server``: ``BENCH_AIOFASTNET=0`` makes picows
    use uvloop's own TCP transports instead of aiofastnet's (picows' default when the
    package is installed) — the two differ in memory per connection and in write cost."""
    if os.environ.get("BENCH_AIOFASTNET", "") == "0":
        return {"use_aiofastnet": False}
    return {}


def parse_args() -> tuple[int, int]:
    """``<burst> <clients>`` from argv."""
    return int(sys.argv[1]), int(sys.argv[2])
