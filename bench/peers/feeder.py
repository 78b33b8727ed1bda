"""A minimal Binance-compatible upstream for the hub benchmarks.

A picows server speaking the parts of Binance's ``/stream`` protocol the hub's upstream
uses: it answers ``SUBSCRIBE`` / ``UNSUBSCRIBE`` with ``{"result":null,"id":N}`` and then
sends ``{"stream":"btcusdt@trade","data":{...,"t":<seq>,"T":<monotonic ns>,...}}`` to every
connection subscribed to ``btcusdt@trade``, in bursts of ``--burst`` frames per socket
write, at ``--rate`` messages per second (paced against a deadline, so a late timer
catches up with back-to-back bursts). ``"T"`` is ``time.monotonic_ns()`` when the burst
was built, so a client on the same machine measures end-to-end latency as ``now - T``.

Why not the simulator: its event times are milliseconds of wall clock, too coarse for
µs latency. ``--rate 0`` sends nothing (idle-memory measurement).

stdin commands: ``rate <msgs/s>`` changes the rate; ``snap`` prints the counters.
Usage: ``feeder.py --rate 2000 --burst 10`` (first stdout line: ``{"event":"listening",...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import orjson
import picows
import uvloop

from common import emit

STREAM = "btcusdt@trade"


def _frame(payload: bytes) -> bytes:
    """An unmasked server text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126, n >> 8, n & 0xFF)) + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Feeder:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.subscribed: list[picows.WSTransport] = []
        self.sent = 0
        self.writes = 0
        self.seq = 0
        self.prefix = b'{"stream":"' + STREAM.encode() + b'","data":'

    def listener(self) -> picows.WSListener:
        feeder = self

        class Conn(picows.WSListener):
            def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
                if frame.msg_type == picows.WSMsgType.TEXT:
                    try:
                        req = orjson.loads(frame.get_payload_as_bytes())
                        method, params, req_id = req["method"], req.get("params", []), req["id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        transport.send(picows.WSMsgType.TEXT,
                                       b'{"code":2,"msg":"Invalid request"}')
                        return
                    if method == "SUBSCRIBE" and STREAM in params and transport not in feeder.subscribed:
                        feeder.subscribed.append(transport)
                    elif method == "UNSUBSCRIBE" and STREAM in params and transport in feeder.subscribed:
                        feeder.subscribed.remove(transport)
                    if method == "LIST_SUBSCRIPTIONS":
                        result = [STREAM] if transport in feeder.subscribed else []
                        transport.send(picows.WSMsgType.TEXT, orjson.dumps({"result": result, "id": req_id}))
                    else:
                        transport.send(picows.WSMsgType.TEXT, orjson.dumps({"result": None, "id": req_id}))
                elif frame.msg_type == picows.WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()

            def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
                if transport in feeder.subscribed:
                    feeder.subscribed.remove(transport)

        return Conn()

    def _burst_bytes(self) -> bytes:
        now = time.monotonic_ns()
        parts = []
        for _ in range(self.burst):
            payload = (
                b'{"e":"trade","E":1723456789123,"s":"BTCUSDT","t":%d,"p":"61234.56000000",'
                b'"q":"0.00125000","T":%d,"m":true,"M":true}' % (self.seq, now)
            )
            self.seq += 1
            parts.append(_frame(self.prefix + payload + b"}"))
        return b"".join(parts)

    async def run(self) -> None:
        """Send ``burst``-sized writes so that ``sent`` tracks ``rate × elapsed``."""
        t0 = time.monotonic()
        base = 0
        rate = self.rate
        while True:
            if self.rate != rate or not self.subscribed or rate <= 0:
                # Rate changed or nobody listens: restart the schedule from now.
                rate = self.rate
                t0, base = time.monotonic(), self.sent
                if not self.subscribed or rate <= 0:
                    await asyncio.sleep(0.01)
                    continue
            due = base + rate * (time.monotonic() - t0)
            while self.sent + self.burst <= due:
                data = self._burst_bytes()
                for tr in self.subscribed:
                    tr.underlying_transport.write(data)
                    self.writes += 1
                self.sent += self.burst
            wait = (self.sent + self.burst - base) / rate - (time.monotonic() - t0)
            await asyncio.sleep(max(wait, 0.0))


async def main() -> None:
    p = argparse.ArgumentParser(description="Binance-shaped upstream for the hub benchmarks")
    p.add_argument("--rate", type=float, default=1000.0, help="messages per second (0: silent)")
    p.add_argument("--burst", type=int, default=10, help="messages per socket write")
    args = p.parse_args()
    feeder = Feeder(args.rate, args.burst)
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
            cmd = line.split()
            if cmd[:1] == ["rate"] and len(cmd) == 2:
                feeder.rate = float(cmd[1])
            elif cmd[:1] == ["snap"]:
                emit(event="snap", sent=feeder.sent, writes=feeder.writes,
                     subscribed=len(feeder.subscribed), rate=feeder.rate)

    loop.add_reader(0, readable)
    await feeder.run()


if __name__ == "__main__":
    uvloop.run(main())
