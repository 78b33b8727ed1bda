"""Fan-out benchmark server: picows with one ``transport.send()`` per client per message.

The straightforward design tickhub is measured against: no coalescing, so every message
costs one socket write per client. Usage: ``picows_naive.py <burst> <clients>``.
"""

from __future__ import annotations

import picows
import uvloop

from common import Counters, emit, parse_args, picows_server_options, publish_forever, serve_control


async def main() -> None:
    burst, clients = parse_args()
    transports: list[picows.WSTransport] = []
    counters = Counters()
    delivered = [0]
    counters.writes = lambda: delivered[0]  # one send() per delivered message
    counters.delivered = lambda: delivered[0]

    class Listener(picows.WSListener):
        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            transports.append(transport)
            counters.clients += 1

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
            transports.remove(transport)

    server = await picows.ws_create_server(lambda _req: Listener(), "127.0.0.1", 0, **picows_server_options())
    emit(event="listening", port=server.sockets[0].getsockname()[1])
    serve_control(counters)
    text = picows.WSMsgType.TEXT

    def publish_burst(msgs: list[bytes]) -> None:
        for m in msgs:
            for tr in transports:
                tr.send(text, m)
        delivered[0] += len(msgs) * len(transports)

    await publish_forever(
        burst, clients, publish_burst,
        lambda: (t.underlying_transport.get_write_buffer_size() for t in transports), counters)


if __name__ == "__main__":
    uvloop.run(main())
