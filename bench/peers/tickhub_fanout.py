"""Fan-out benchmark server: tickhub's compiled Fanout on a picows server.

Every connection subscribes to one topic (raw variant), so all clients share one group
buffer; each turn's burst is written with one send() per client by the Fanout's flush.
Usage: ``tickhub_fanout.py <burst> <clients>`` (started by bench/fanout.py).

With ``BENCH_MIX=<file>`` (fanout.py --mix) there is one topic per stream of the file and
each client is subscribed to the streams of its path ``/m/<i>,<j>,...``; clients with the
same set share a group buffer, so with 5 of 400 streams nearly every client has its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import picows
import uvloop
from common import (
    Counters,
    MixWorkload,
    emit,
    parse_args,
    picows_server_options,
    publish_forever,
    publish_mix_forever,
    serve_control,
)

from tickhub import _ext


async def main() -> None:
    burst, clients = parse_args()
    fo_mod = _ext.fanout
    fanout = fo_mod.Fanout(asyncio.get_running_loop(), max_queued_bytes=1 << 40, share_buffers=True)
    topic = fo_mod.Topic(b"btcusdt@trade")
    mix = MixWorkload.from_env()
    mix_topics = [] if mix is None else [fo_mod.Topic(name.encode()) for name in mix.names]
    transports: list[object] = []
    counters = Counters()
    counters.writes = lambda: fanout.writes
    counters.delivered = lambda: fanout.messages_out

    class Listener(picows.WSListener):
        def __init__(self, topics: list[object]) -> None:
            super().__init__()
            self.topics = topics

        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            self.sub = fo_mod.Subscriber(transport)
            # As the gateway's sessions do: the transport pauses us as soon as it holds a
            # byte, so the flush may send directly without asking it (fan-out fast path).
            transport.underlying_transport.set_write_buffer_limits(high=0, low=0)
            self.sub.tracks_backlog = True
            fanout.set_subscriptions(self.sub, self.topics, False)
            transports.append(transport.underlying_transport)
            counters.clients += 1

        def pause_writing(self) -> None:
            self.sub.backlogged = True

        def resume_writing(self) -> None:
            self.sub.backlogged = False

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
            fanout.remove(self.sub)

    def listener_for(request: picows.WSUpgradeRequest) -> Listener:
        if mix is None:
            return Listener([topic])
        return Listener([mix_topics[i] for i in mix.streams_of_path(request.path)])

    server = await picows.ws_create_server(listener_for, "127.0.0.1", 0, **picows_server_options())
    emit(event="listening", port=server.sockets[0].getsockname()[1], implementation=_ext.IMPLEMENTATION)
    serve_control(counters)

    def publish_burst(msgs: list[bytes]) -> None:
        publish = fanout.publish
        for m in msgs:
            publish(topic, m)

    def buffer_sizes() -> Iterable[int]:
        return (t.get_write_buffer_size() for t in transports)

    if mix is None:
        await publish_forever(burst, clients, publish_burst, buffer_sizes, counters)
    else:
        await publish_mix_forever(burst, clients, mix, mix_topics, fanout.publish, buffer_sizes, counters)


if __name__ == "__main__":
    uvloop.run(main())
