"""A minimal Binance-compatible upstream for the hub benchmarks, in three pacing modes.

A picows server speaking the parts of Binance's ``/stream`` protocol the hub's upstream
uses: it answers ``SUBSCRIBE`` / ``UNSUBSCRIBE`` with ``{"result":null,"id":N}`` (and
``LIST_SUBSCRIPTIONS`` with the connection's streams), tracks which of its streams each
connection subscribed, and sends combined frames ``{"stream":"<name>","data":{...}}``
only on subscribed streams. Names it does not serve are acknowledged and never sent,
like a Binance stream with no traffic. One socket write carries one burst of ``--burst``
frames.

``--mode rate`` (default; bench/latency.py, memory.py, storm.py, hub_e2e.py, cluster.py,
idle_rss.py): ``btcusdt@trade`` to every subscribed connection at ``--rate`` messages per
second, paced against a deadline (a late timer catches up with back-to-back bursts), from
the start. ``"T"`` is ``time.monotonic_ns()`` when the burst was built, so a client on the
same machine measures end-to-end latency as ``now - T``. Why not the simulator: its
event times are milliseconds of wall clock, too coarse for µs latency. ``--rate 0``
sends nothing (idle-memory measurement).

The two other modes serve bench/fanout.py's relay cells. A publisher peer is handed
exactly B messages per loop turn; a relay is handed whatever its upstream socket holds
when it reads, so to compare like with like the upstream must send the next burst of B
only after the hub has read the last one. They send to one connection (one hub, one
upstream connection) and nothing before ``go`` on stdin:

* ``--mode paced``: after each burst it sends a WebSocket PING and waits for the PONG.
  tickhub's upstream connection answers a ping in its frame callback, right after the
  burst's data frames from the same read, so the pong means exactly "the hub has read and
  published the burst" — its fan-out flush of that burst then runs while the next burst
  travels, and the hub reads about B messages per turn.
* ``--mode flat``: bursts back to back, waiting only while its transport asks to pause
  writing (above its high-water mark, resumed as soon as the hub has read enough): the
  hub reads as much as its socket holds, which is what it does under a real burst.

Mix workload (paced and flat; ``BENCH_MIX=<file>`` in the environment, as for the
publishers, see common.py's MixWorkload): the file's 400 streams instead of
``btcusdt@trade``. A burst is the next B messages ``t`` of the publish sequence, message
``t`` on stream ``sequence[t % len]`` with data ``head + str(t) + tail`` — except that the
top-level ``"u"`` (update id) in the tail becomes ``u + t``: the hub drops an event whose
update id does not increase as a duplicate (its rotation-overlap check, as Binance's
ids do increase), and ``u + t`` has as many digits as ``u``, so every payload keeps the
publishers' size. A message on a stream the hub has not subscribed is not sent (Binance
would not send it, and no client expects it) but still uses up its ``t``, so the harness
can compute what every client must receive from ``published`` alone. ``go`` must come
once the hub has subscribed every stream a client uses (``streams_subscribed`` in
``snap``); ``stop`` ends sending after the current burst and answers
``{"event":"stopped","published":N}`` (messages of the sequence used up, sent or not).

stdin commands: ``rate <msgs/s>`` (rate mode), ``go``, ``stop``, ``sync`` (PING the hub
and answer ``{"event":"synced","ok":true}`` on its PONG: the hub has read everything sent
before; the harness says it after ``stop`` so the drain waits only for the hub's client
queues, not for an upstream backlog), ``snap`` (prints the
counters: ``sent`` frames, ``published`` sequence messages, ``skipped`` unsubscribed ones,
``bursts``, ``pings``, ``waits``, ``writes``, ``requests`` (control messages received),
``subscribed`` connections,
``streams_subscribed``, ``rate``). EOF ends the process.
Usage: ``feeder.py --rate 2000 --burst 10``, ``feeder.py --mode paced --burst 10``
(first stdout line: ``{"event":"listening","port":...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import orjson
import picows
import uvloop

from benchlib import trade_payload
from common import MixWorkload, emit, on_stdin_lines

STREAM = "btcusdt@trade"
#: a tail's top-level update id: ``,"u":<digits>`` (the mix templates start with ``{"t":``)
_UPDATE_ID = re.compile(rb',"u":(\d+)')


def _frame(payload: bytes) -> bytes:
    """An unmasked server text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126, n >> 8, n & 0xFF)) + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class MixFrames:
    """Builds the combined frame of mix message ``t`` from the workload file."""

    def __init__(self, mix: MixWorkload) -> None:
        self.names = mix.names
        self.sequence = mix.sequence
        self.heads: list[bytes] = []
        self.middles: list[bytes] = []
        self.update_ids: list[int] = []
        self.ends: list[bytes] = []
        for name, head, tail in zip(mix.names, mix.heads, mix.tails):
            self.heads.append(b'{"stream":"' + name.encode() + b'","data":' + head)
            found = _UPDATE_ID.search(tail)
            if found is None:  # no update id: nothing for the hub to de-duplicate on
                self.middles.append(b"")
                self.update_ids.append(-1)
                self.ends.append(tail + b"}")
            else:
                self.middles.append(tail[:found.start(1)])
                self.update_ids.append(int(found.group(1)))
                self.ends.append(tail[found.end(1):] + b"}")

    def frame(self, t: int) -> tuple[int, bytes]:
        """(stream index, frame) of message ``t``."""
        s = self.sequence[t % len(self.sequence)]
        uid = self.update_ids[s]
        if uid < 0:
            return s, _frame(b"%s%d%s" % (self.heads[s], t, self.ends[s]))
        return s, _frame(b"%s%d%s%d%s" % (self.heads[s], t, self.middles[s], uid + t, self.ends[s]))


class Feeder:
    def __init__(self, mode: str, rate: float, burst: int, mix: MixWorkload | None) -> None:
        self.mode = mode
        self.rate = rate
        self.burst = burst
        self.mix = None if mix is None else MixFrames(mix)
        self.names = [STREAM] if mix is None else mix.names
        self.index = {name: i for i, name in enumerate(self.names)}
        #: connection -> indices of the streams it subscribed (insertion-ordered)
        self.subscriptions: dict[picows.WSTransport, dict[int, None]] = {}
        self.started = asyncio.Event()
        self.stopped = False
        #: PING payload -> future resolved by the hub's PONG (the pong echoes the payload)
        self.pongs: dict[bytes, asyncio.Future[None]] = {}
        self.seq = 0  # next message number (published)
        self.sent = 0  # frames written (to the first connection in paced/flat mode)
        self.writes = 0
        self.bursts = 0
        self.pings = 0
        self.waits = 0  # flat mode: times the hub had not read enough and the feeder waited
        self.requests = 0  # control messages received (SUBSCRIBE, UNSUBSCRIBE, ...)
        self.background: set[asyncio.Task[None]] = set()  # ``sync`` tasks in flight
        self.writable = asyncio.Event()  # cleared while the transport asks to pause writing
        self.writable.set()

    # ----------------------------------------------------------------- protocol
    def _subscribers(self, stream: int) -> list[picows.WSTransport]:
        return [tr for tr, subs in self.subscriptions.items() if stream in subs]

    def streams_subscribed(self) -> int:
        """Distinct served streams some connection subscribed."""
        return len(set().union(*self.subscriptions.values())) if self.subscriptions else 0

    def on_request(self, transport: picows.WSTransport, payload: bytes) -> None:
        """SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, for every mode."""
        self.requests += 1
        try:
            req = orjson.loads(payload)
            method, params, req_id = req["method"], req.get("params", []), req["id"]
            streams = [self.index[p] for p in params if isinstance(p, str) and p in self.index]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            transport.send(picows.WSMsgType.TEXT, b'{"code":2,"msg":"Invalid request"}')
            return
        subs = self.subscriptions.get(transport)
        result: list[str] | None = None
        if method == "SUBSCRIBE" and streams:
            if subs is None:
                subs = self.subscriptions[transport] = {}
            subs.update(dict.fromkeys(streams))
        elif method == "UNSUBSCRIBE" and subs is not None:
            for s in streams:
                subs.pop(s, None)
            if not subs:
                del self.subscriptions[transport]
        elif method == "LIST_SUBSCRIPTIONS":
            result = [self.names[s] for s in subs] if subs else []
        transport.send(picows.WSMsgType.TEXT, orjson.dumps({"result": result, "id": req_id}))

    def listener(self) -> picows.WSListener:
        feeder = self

        class Conn(picows.WSListener):
            def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
                msg_type = frame.msg_type
                if msg_type == picows.WSMsgType.PONG:
                    waiter = feeder.pongs.pop(frame.get_payload_as_bytes(), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif msg_type == picows.WSMsgType.TEXT:
                    feeder.on_request(transport, frame.get_payload_as_bytes())
                elif msg_type == picows.WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()

            def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
                feeder.subscriptions.pop(transport, None)
                feeder.writable.set()

            def pause_writing(self) -> None:
                feeder.writable.clear()

            def resume_writing(self) -> None:
                feeder.writable.set()

        return Conn()

    # ----------------------------------------------------------------- bursts
    def _trade_burst(self, sent_ns: int) -> bytes:
        seq = self.seq
        self.seq += self.burst
        return b"".join(_frame(b'{"stream":"btcusdt@trade","data":' + trade_payload(s, sent_ns) + b"}")
                        for s in range(seq, seq + self.burst))

    def _mix_burst(self, subs: dict[int, None]) -> tuple[bytes, int]:
        """The next B sequence messages that ``subs`` wants, and how many frames that is."""
        assert self.mix is not None
        frames = []
        for t in range(self.seq, self.seq + self.burst):
            stream, frame = self.mix.frame(t)
            if stream in subs:
                frames.append(frame)
        self.seq += self.burst
        return b"".join(frames), len(frames)

    async def run_rate(self) -> None:
        """Send ``burst``-sized writes so that ``seq`` tracks ``rate × elapsed``."""
        t0 = time.monotonic()
        base = 0
        rate = self.rate
        while True:
            subscribers = self._subscribers(0)
            if self.rate != rate or not subscribers or rate <= 0:
                # Rate changed or nobody listens: restart the schedule from now.
                rate = self.rate
                t0, base = time.monotonic(), self.seq
                if not subscribers or rate <= 0:
                    await asyncio.sleep(0.01)
                    continue
            due = base + rate * (time.monotonic() - t0)
            while self.seq + self.burst <= due:
                data = self._trade_burst(time.monotonic_ns())
                for tr in subscribers:
                    tr.underlying_transport.write(data)
                    self.writes += 1
                self.sent += self.burst
                self.bursts += 1
            wait = (self.seq + self.burst - base) / rate - (time.monotonic() - t0)
            await asyncio.sleep(max(wait, 0.0))

    async def run_turns(self) -> None:
        """Paced or flat: one burst per write to the hub's connection, from ``go`` to ``stop``.
        Counters are updated when the burst is written, so ``stop`` (handled between two
        awaits) always sees the final count."""
        await self.started.wait()
        loop = asyncio.get_running_loop()
        while True:
            if self.stopped or not self.subscriptions:
                await asyncio.sleep(0.01)
                continue
            tr, subs = next(iter(self.subscriptions.items()))  # one hub, one upstream connection
            if self.mix is None:
                data, frames = self._trade_burst(1723456789122), self.burst
            else:
                data, frames = self._mix_burst(subs)
            if self.mode == "paced":
                key = b"%d" % self.bursts
                pong = self.pongs[key] = loop.create_future()
                tr.underlying_transport.write(data)
                tr.send_ping(key)
                self._count(frames)
                self.pings += 1
                try:
                    await asyncio.wait_for(pong, 5.0)
                except TimeoutError:
                    self.pongs.pop(key, None)
                    continue  # hub gone or reconnecting; the loop re-reads `subscriptions`
            else:
                tr.underlying_transport.write(data)
                self._count(frames)
                if not self.writable.is_set():
                    self.waits += 1
                    await self.writable.wait()  # resumed as soon as the hub has read enough
                elif self.bursts % 16 == 0:
                    await asyncio.sleep(0)  # let the loop read the hub's frames now and then

    async def sync(self) -> None:
        """PING the hub's connection and answer ``synced`` on its PONG: the hub has read
        (and published) everything sent before, so after ``stop`` only its client queues
        are left to drain. ``synced`` with ``ok`` false when no hub or no pong in 10 s."""
        if not self.subscriptions:
            emit(event="synced", ok=False)
            return
        tr = next(iter(self.subscriptions))
        key = b"sync%d" % self.bursts
        pong = self.pongs[key] = asyncio.get_running_loop().create_future()
        tr.send_ping(key)
        try:
            await asyncio.wait_for(pong, 10.0)
        except TimeoutError:
            self.pongs.pop(key, None)
            emit(event="synced", ok=False)
            return
        emit(event="synced", ok=True)

    def _count(self, frames: int) -> None:
        self.sent += frames
        self.writes += 1
        self.bursts += 1

    def snapshot(self) -> dict[str, object]:
        return {
            "sent": self.sent, "published": self.seq, "skipped": self.seq - self.sent,
            "bursts": self.bursts, "pings": self.pings, "waits": self.waits, "writes": self.writes,
            "requests": self.requests, "subscribed": len(self.subscriptions),
            "streams_subscribed": self.streams_subscribed(),
            "rate": self.rate,
        }

    def command(self, line: str) -> None:
        cmd = line.split()
        if cmd[:1] == ["rate"] and len(cmd) == 2:
            self.rate = float(cmd[1])
        elif cmd == ["go"]:
            self.started.set()
        elif cmd == ["stop"]:
            self.stopped = True  # between two bursts: ``seq`` is final
            emit(event="stopped", published=self.seq)
        elif cmd == ["sync"]:
            self.background.add(task := asyncio.get_running_loop().create_task(self.sync()))
            task.add_done_callback(self.background.discard)
        elif cmd == ["snap"]:
            emit(event="snap", **self.snapshot())


async def main() -> None:
    p = argparse.ArgumentParser(description="Binance-shaped upstream for the hub benchmarks")
    p.add_argument("--mode", choices=("rate", "paced", "flat"), default="rate",
                   help="rate: at --rate from the start; paced: next burst after the hub's pong; "
                        "flat: back to back (paced and flat wait for 'go')")
    p.add_argument("--rate", type=float, default=1000.0, help="rate mode: messages per second (0: silent)")
    p.add_argument("--burst", type=int, default=10, help="messages per socket write")
    args = p.parse_args()
    if args.burst < 1:
        p.error("--burst must be >= 1")
    mix = MixWorkload.from_env()
    if mix is not None and args.mode == "rate":
        p.error("BENCH_MIX needs --mode paced or flat (rate mode stamps trades for latency)")
    feeder = Feeder(args.mode, args.rate, args.burst, mix)
    server = await picows.ws_create_server(lambda _req: feeder.listener(), "127.0.0.1", 0)
    emit(event="listening", port=server.sockets[0].getsockname()[1])
    on_stdin_lines(feeder.command)
    await (feeder.run_rate() if args.mode == "rate" else feeder.run_turns())


if __name__ == "__main__":
    uvloop.run(main())
