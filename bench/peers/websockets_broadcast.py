"""Fan-out benchmark server: the ``websockets`` asyncio server and ``websockets.broadcast()``.

Messages are ``str`` so they go out as text frames, as market data does.
Usage: ``websockets_broadcast.py <burst> <clients>``.
"""

from __future__ import annotations

from typing import Any

import uvloop
import websockets
from websockets.asyncio.server import ServerConnection, serve

from common import Counters, emit, parse_args, publish_forever, serve_control


async def main() -> None:
    burst, clients = parse_args()
    conns: set[ServerConnection] = set()
    counters = Counters()
    delivered = [0]
    counters.writes = lambda: delivered[0]  # broadcast writes each frame to each transport
    counters.delivered = lambda: delivered[0]

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        counters.clients += 1
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    server: Any = await serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None,
                              max_queue=None)
    emit(event="listening", port=server.sockets[0].getsockname()[1])
    serve_control(counters)

    def publish_burst(msgs: list[bytes]) -> None:
        for m in msgs:
            websockets.broadcast(conns, m.decode())
        delivered[0] += len(msgs) * len(conns)

    await publish_forever(
        burst, clients, publish_burst,
        lambda: (ws.transport.get_write_buffer_size() for ws in conns), counters)


if __name__ == "__main__":
    uvloop.run(main())
