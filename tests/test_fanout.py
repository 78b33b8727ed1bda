"""Fan-out end to end: a picows server publishing through Fanout to real clients.

Parametrised over the compiled module and its pure-Python twin; clients are picows and the
`websockets` library (an independent frame parser).
"""

from __future__ import annotations

import asyncio

import orjson
import picows
import pytest
import websockets

from tickhub import _ext

IMPLS = ["compiled", "python"]


@pytest.fixture(params=IMPLS)
def fo(request):
    return _ext.load(request.param)["fanout"]


class _ServerSide(picows.WSListener):
    def __init__(self, hub: "Hub"):
        self.hub = hub

    def on_ws_connected(self, transport):
        self.sub = self.hub.mod.Subscriber(transport)
        if self.hub.track_backlog:  # as the gateway's sessions do
            transport.underlying_transport.set_write_buffer_limits(high=0, low=0)
            self.sub.tracks_backlog = True
        self.hub.subs.append(self.sub)
        self.hub.connected.set()

    def pause_writing(self):
        self.sub.backlogged = True

    def resume_writing(self):
        self.sub.backlogged = False

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == picows.WSMsgType.CLOSE:  # picows leaves the close handshake to us
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport):
        self.hub.fanout.remove(self.sub)


class Hub:
    """A minimal server: every connection becomes a Subscriber; the test assigns topics."""

    def __init__(self, mod, track_backlog=False, **kw):
        self.mod = mod
        self.track_backlog = track_backlog
        self.fanout = mod.Fanout(asyncio.get_running_loop(), **kw)
        self.subs: list = []
        self.connected = asyncio.Event()

    async def start(self):
        self.server = await picows.ws_create_server(lambda req: _ServerSide(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/"

    async def wait_clients(self, n):
        async with asyncio.timeout(5):
            while len(self.subs) < n:
                await asyncio.sleep(0.005)

    async def close(self):
        self.server.close()


async def _collect(ws, n):
    out = []
    async with asyncio.timeout(10):
        while len(out) < n:
            out.append(await ws.recv(decode=False))
    return out


@pytest.mark.parametrize("track_backlog", [False, True])
async def test_every_client_gets_every_message_in_order(fo, track_backlog):
    hub = Hub(fo, track_backlog=track_backlog)
    await hub.start()
    topic = fo.Topic(b"btcusdt@trade")
    clients = [await websockets.connect(hub.url, max_size=None) for _ in range(20)]
    await hub.wait_clients(20)
    for sub in hub.subs:
        hub.fanout.set_subscriptions(sub, [topic], False)
    payloads = [orjson.dumps({"e": "trade", "t": i, "p": "1.0" * (i % 7)}) for i in range(500)]
    for i, p in enumerate(payloads):
        hub.fanout.publish(topic, p)
        if i % 37 == 0:
            await asyncio.sleep(0)  # vary the number of messages per loop turn
    got = await asyncio.gather(*(_collect(ws, len(payloads)) for ws in clients))
    for msgs in got:
        assert msgs == payloads  # byte-identical, in order
    assert hub.fanout.messages_out == 20 * len(payloads)
    # one write per client per turn, not one per message
    assert hub.fanout.writes < 20 * len(payloads) / 5
    for ws in clients:
        await ws.close()
    await hub.close()


async def test_raw_and_combined_variants(fo):
    hub = Hub(fo)
    await hub.start()
    a, b = fo.Topic(b"btcusdt@trade"), fo.Topic(b"ethusdt@bookTicker")
    raw = await websockets.connect(hub.url)
    comb = await websockets.connect(hub.url)
    await hub.wait_clients(2)
    hub.fanout.set_subscriptions(hub.subs[0], [a], False)
    hub.fanout.set_subscriptions(hub.subs[1], [a, b], True)
    hub.fanout.publish(a, b'{"e":"trade","t":1}')
    hub.fanout.publish(b, b'{"u":7,"s":"ETHUSDT"}')
    hub.fanout.publish(a, b'{"e":"trade","t":2}')
    assert await _collect(raw, 2) == [b'{"e":"trade","t":1}', b'{"e":"trade","t":2}']
    got = await _collect(comb, 3)
    assert [orjson.loads(m) for m in got] == [
        {"stream": "btcusdt@trade", "data": {"e": "trade", "t": 1}},
        {"stream": "ethusdt@bookTicker", "data": {"u": 7, "s": "ETHUSDT"}},
        {"stream": "btcusdt@trade", "data": {"e": "trade", "t": 2}},
    ]
    await raw.close()
    await comb.close()
    await hub.close()


async def test_interleaved_streams_reach_each_subscription_set_in_order(fo):
    """Several streams in one turn, three subscription sets, one joining mid-turn: each
    client gets exactly its streams' messages of the turn, in publish order, once."""
    hub = Hub(fo)
    await hub.start()
    a, b = fo.Topic(b"a@trade"), fo.Topic(b"b@trade")
    only_a, both, late = [await websockets.connect(hub.url) for _ in range(3)]
    await hub.wait_clients(3)
    hub.fanout.set_subscriptions(hub.subs[0], [a], False)
    hub.fanout.set_subscriptions(hub.subs[1], [a, b], False)
    hub.fanout.publish(a, b'{"a":1}')
    hub.fanout.set_subscriptions(hub.subs[2], [a, b], False)  # joins the second set mid-turn
    hub.fanout.publish(b, b'{"b":1}')
    hub.fanout.publish(a, b'{"a":2}')
    hub.fanout.publish(b, b'{"b":2}')
    assert await _collect(only_a, 2) == [b'{"a":1}', b'{"a":2}']
    assert await _collect(both, 4) == [b'{"a":1}', b'{"b":1}', b'{"a":2}', b'{"b":2}']
    assert await _collect(late, 3) == [b'{"b":1}', b'{"a":2}', b'{"b":2}']
    hub.fanout.publish(b, b'{"b":3}')  # the next turn starts clean
    assert await _collect(late, 1) == [b'{"b":3}']
    assert await _collect(both, 1) == [b'{"b":3}']
    for ws in (only_a, both, late):
        await ws.close()
    await hub.close()


async def test_identical_subscription_sets_share_one_buffer(fo):
    hub = Hub(fo)
    await hub.start()
    a, b = fo.Topic(b"a@trade"), fo.Topic(b"b@trade")
    clients = [await websockets.connect(hub.url) for _ in range(6)]
    await hub.wait_clients(6)
    for sub in hub.subs[:4]:
        hub.fanout.set_subscriptions(sub, [a, b], True)
    for sub in hub.subs[4:]:
        hub.fanout.set_subscriptions(sub, [b], True)
    assert len(hub.fanout.groups) == 2
    assert len(a.groups) == 1 and len(b.groups) == 2
    for ws in clients:
        await ws.close()
    await hub.close()


async def test_changing_subscriptions_mid_turn_loses_and_duplicates_nothing(fo):
    hub = Hub(fo)
    await hub.start()
    a, b = fo.Topic(b"a@trade"), fo.Topic(b"b@trade")
    ws = await websockets.connect(hub.url)
    await hub.wait_clients(1)
    sub = hub.subs[0]
    hub.fanout.set_subscriptions(sub, [a], False)
    hub.fanout.publish(a, b'{"n":1}')
    hub.fanout.publish(b, b'{"n":-1}')  # not subscribed yet: never delivered
    hub.fanout.set_subscriptions(sub, [a, b], False)  # same turn
    hub.fanout.publish(a, b'{"n":2}')
    hub.fanout.publish(b, b'{"n":3}')
    hub.fanout.set_subscriptions(sub, [b], False)  # same turn again
    hub.fanout.publish(a, b'{"n":-2}')
    hub.fanout.publish(b, b'{"n":4}')
    got = await _collect(ws, 4)
    assert got == [b'{"n":1}', b'{"n":2}', b'{"n":3}', b'{"n":4}']
    await asyncio.sleep(0.05)
    assert sub.messages_out == 4
    await ws.close()
    await hub.close()


class _Stalled(picows.WSListener):
    """A client that never reads: the kernel buffers fill, then the hub's transport buffer."""


@pytest.mark.parametrize("track_backlog", [False, True])
async def test_slow_consumer_is_bounded_and_others_keep_up(fo, track_backlog):
    slow_subs = []
    hub = Hub(fo, track_backlog=track_backlog, max_queued_bytes=256 * 1024, on_slow_consumer=slow_subs.append)
    await hub.start()
    topic = fo.Topic(b"btcusdt@depth")
    # the stalled client: picows client whose socket we stop reading
    st_transport, _ = await picows.ws_connect(_Stalled, hub.url)
    st_transport.underlying_transport.pause_reading()
    fast = await websockets.connect(hub.url, max_size=None, max_queue=None)
    await hub.wait_clients(2)
    for sub in hub.subs:
        hub.fanout.set_subscriptions(sub, [topic], False)
    payload = b'{"e":"depthUpdate","b":[' + b'["1.0","2.0"],' * 200 + b'["1","2"]]}'
    n = 2000  # ~5 MB: far past the stalled client's kernel buffers + limit
    received = asyncio.create_task(_collect(fast, n))
    for i in range(n):
        hub.fanout.publish(topic, payload)
        if i % 20 == 0:
            await asyncio.sleep(0)
    got = await received
    assert len(got) == n and all(m == payload for m in got)
    assert len(slow_subs) == 1
    slow = slow_subs[0]
    assert slow.transport is not hub.subs[1].transport or slow is hub.subs[0]
    assert hub.fanout.slow_consumers == 1
    # bounded: what the hub holds for it never exceeds the limit plus one turn's output
    held = slow.transport.underlying_transport.get_write_buffer_size()
    assert held <= 256 * 1024 + 20 * (len(payload) + 10) * 2
    st_transport.disconnect()
    await fast.close()
    await hub.close()


async def test_topics_with_the_same_name_never_share_a_buffer(fo):
    # one exchange stream served in two forms (e.g. milliseconds and microseconds)
    hub = Hub(fo)
    await hub.start()
    ms, us = fo.Topic(b"btcusdt@trade"), fo.Topic(b"btcusdt@trade")
    a = await websockets.connect(hub.url)
    b = await websockets.connect(hub.url)
    await hub.wait_clients(2)
    hub.fanout.set_subscriptions(hub.subs[0], [ms], False)
    hub.fanout.set_subscriptions(hub.subs[1], [us], False)
    hub.fanout.publish(ms, b'{"E":1}')
    hub.fanout.publish(us, b'{"E":1000}')
    assert await _collect(a, 1) == [b'{"E":1}']
    assert await _collect(b, 1) == [b'{"E":1000}']
    assert len(hub.fanout.groups) == 2
    await a.close()
    await b.close()
    await hub.close()
