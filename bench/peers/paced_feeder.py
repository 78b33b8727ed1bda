"""Upstream for fanout.py's relay cells: Binance-shaped trade bursts, paced by ping/pong.

A publisher peer is handed exactly B messages per loop turn. A relay is handed whatever its
upstream socket holds when it reads, so to compare like with like the upstream must send
the next burst of B only after the hub has read the last one. ``--mode paced`` does that:
after each burst (one socket write of B combined frames) it sends a WebSocket PING and
waits for the PONG. tickhub's upstream connection answers a ping in its frame callback,
right after the burst's data frames from the same read, so the pong means exactly "the hub
has read and published the burst" — its fan-out flush of that burst then runs while the
next burst travels, and the hub reads about B messages per turn.

``--mode flat`` writes bursts back to back, waiting only while its transport asks to pause
writing (above its high-water mark, resumed as soon as the hub has read enough): the hub
reads as much as its socket holds, which is what it does under a real burst.

The server speaks the parts of Binance's ``/stream`` protocol the hub uses (SUBSCRIBE /
UNSUBSCRIBE answered with ``{"result":null,"id":N}``). Nothing is sent before ``go`` on
stdin (the harness says it once every client is connected); ``snap`` prints the counters.
Usage: ``paced_feeder.py --burst 10 --mode paced`` (first stdout line: ``listening``).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import orjson
import picows
import uvloop

from benchlib import trade_payload
from common import emit
from feeder import _frame

STREAM = "btcusdt@trade"
PREFIX = b'{"stream":"' + STREAM.encode() + b'","data":'


class PacedFeeder:
    def __init__(self, burst: int, mode: str) -> None:
        self.burst = burst
        self.mode = mode
        self.subscribed: list[picows.WSTransport] = []
        self.started = asyncio.Event()
        self.pong: asyncio.Future[None] | None = None
        self.seq = 0
        self.sent = 0
        self.bursts = 0
        self.pings = 0
        self.waits = 0  # flat mode: times the hub had not read enough and the feeder waited
        self.writable = asyncio.Event()  # cleared while the transport asks to pause writing
        self.writable.set()

    def listener(self) -> picows.WSListener:
        feeder = self

        class Conn(picows.WSListener):
            def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
                msg_type = frame.msg_type
                if msg_type == picows.WSMsgType.PONG:
                    if feeder.pong is not None and not feeder.pong.done():
                        feeder.pong.set_result(None)
                elif msg_type == picows.WSMsgType.TEXT:
                    try:
                        req = orjson.loads(frame.get_payload_as_bytes())
                        method, params, req_id = req["method"], req.get("params", []), req["id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        transport.send(picows.WSMsgType.TEXT, b'{"code":2,"msg":"Invalid request"}')
                        return
                    if method == "SUBSCRIBE" and STREAM in params and transport not in feeder.subscribed:
                        feeder.subscribed.append(transport)
                    elif method == "UNSUBSCRIBE" and STREAM in params and transport in feeder.subscribed:
                        feeder.subscribed.remove(transport)
                    result = ([STREAM] if transport in feeder.subscribed else []) \
                        if method == "LIST_SUBSCRIPTIONS" else None
                    transport.send(picows.WSMsgType.TEXT, orjson.dumps({"result": result, "id": req_id}))
                elif msg_type == picows.WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()

            def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
                if transport in feeder.subscribed:
                    feeder.subscribed.remove(transport)
                feeder.writable.set()

            def pause_writing(self) -> None:
                feeder.writable.clear()

            def resume_writing(self) -> None:
                feeder.writable.set()

        return Conn()

    def _burst_bytes(self) -> bytes:
        seq = self.seq
        self.seq += self.burst
        return b"".join(_frame(PREFIX + trade_payload(s) + b"}") for s in range(seq, seq + self.burst))

    async def run(self) -> None:
        await self.started.wait()
        loop = asyncio.get_running_loop()
        while True:
            if not self.subscribed:
                await asyncio.sleep(0.01)
                continue
            tr = self.subscribed[0]  # one hub, one upstream connection
            data = self._burst_bytes()
            if self.mode == "paced":
                self.pong = loop.create_future()
                tr.underlying_transport.write(data)
                tr.send_ping(b"%d" % self.bursts)
                self.pings += 1
                try:
                    await asyncio.wait_for(self.pong, 5.0)
                except asyncio.TimeoutError:
                    continue  # hub gone or reconnecting; the loop re-reads `subscribed`
            else:
                tr.underlying_transport.write(data)
                if not self.writable.is_set():
                    self.waits += 1
                    await self.writable.wait()  # resumed as soon as the hub has read enough
                elif self.bursts % 16 == 15:
                    await asyncio.sleep(0)  # let the loop read the hub's frames now and then
            self.sent += self.burst
            self.bursts += 1


async def main() -> None:
    p = argparse.ArgumentParser(description="ping/pong-paced Binance-shaped upstream")
    p.add_argument("--burst", type=int, default=10, help="messages per socket write")
    p.add_argument("--mode", choices=("paced", "flat"), default="paced")
    args = p.parse_args()
    feeder = PacedFeeder(args.burst, args.mode)
    server = await picows.ws_create_server(lambda _req: feeder.listener(), "127.0.0.1", 0)
    emit(event="listening", port=server.sockets[0].getsockname()[1])
    loop = asyncio.get_running_loop()

    def readable() -> None:
        data = os.read(0, 4096)
        if not data:
            loop.remove_reader(0)
            loop.stop()
            return
        for line in data.decode().splitlines():
            if line.strip() == "go":
                feeder.started.set()
            elif line.strip() == "snap":
                emit(event="snap", sent=feeder.sent, bursts=feeder.bursts, pings=feeder.pings,
                     waits=feeder.waits, subscribed=len(feeder.subscribed))

    loop.add_reader(0, readable)
    await feeder.run()


if __name__ == "__main__":
    uvloop.run(main())
