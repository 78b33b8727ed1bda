"""The compiled classes expose their .pxd-declared attributes.

Cython finds a .pxd by the module's dotted name; a build that silently ignored one would
compile and then fail at run time (see CONVENTIONS: the ext/ build trap). Reading the
declared attributes of each compiled class catches that, and proves the compiled modules
(not the twins) are what the selector loaded.
"""

from __future__ import annotations

import asyncio

import picows
import pytest

from tickhub import _ext


def test_selector_runs_the_compiled_hot_path() -> None:
    assert _ext.IMPLEMENTATION == "compiled", _ext.COMPILED_IMPORT_ERROR
    for name in ("frames", "envelope", "fanout", "listener", "batch"):
        assert getattr(_ext, name).__file__.endswith(".so")


async def test_pxd_attributes_of_every_compiled_class() -> None:
    fo = _ext.fanout
    loop = asyncio.get_running_loop()
    fanout = fo.Fanout(loop, max_queued_bytes=1234)
    assert (fanout.max_queued_bytes, fanout.messages_in, fanout.writes, fanout.flushes) == (1234, 0, 0, 0)
    topic = fo.Topic(b"btcusdt@trade")
    assert topic.name == b"btcusdt@trade"
    assert topic.prefix == b'{"stream":"btcusdt@trade","data":'
    assert topic.groups == [] and topic.messages_in == 0
    with pytest.raises(AttributeError):
        topic.name = b"other"  # readonly in the .pxd

    # a Subscriber and a Group need a real transport: one connection to a picows server
    subs: list = []

    class Server(picows.WSListener):
        def on_ws_connected(self, transport):
            subs.append(fo.Subscriber(transport, "session"))

    server = await picows.ws_create_server(lambda _r: Server(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client, _ = await picows.ws_connect(picows.WSListener, f"ws://127.0.0.1:{port}/")
    async with asyncio.timeout(5):
        while not subs:
            await asyncio.sleep(0.01)
    sub = subs[0]
    assert (sub.session, sub.messages_out, sub.bytes_out, sub.closed, sub.group) == ("session", 0, 0, False, None)
    fanout.set_subscriptions(sub, [topic], True)
    group = sub.group
    assert group.combined is True and group.members == [sub] and group.topics == (topic,)
    fanout.publish(topic, b"{}")
    assert group.pending.endswith(b'{"stream":"btcusdt@trade","data":{}}')

    listener = _ext.listener.ClientListener(object(), 7, 99)
    assert (listener.max_per_second, listener.max_message_size) == (7, 99)
    assert listener.last_pong <= _ext.listener.monotonic()

    channel = _ext.batch.Channel(fanout, topic)
    assert channel.fanout is fanout and channel.topic is topic
    assert (channel.last_id, channel.pending, channel.delivered, channel.duplicates) == (-1, 0, 0, 0)

    client.disconnect()
    server.close()
