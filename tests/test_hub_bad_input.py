"""Bad client input against a real hub: every case gets its documented answer, and another
client on the same hub keeps receiving data afterwards (the hub never falls over)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import urllib.error
import urllib.request
from typing import Any, AsyncIterator

import orjson
import picows
import pytest
import websockets
from picows import WSFrame, WSListener, WSMsgType, WSTransport
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import wait_for


class Witness:
    """A client subscribed to btcusdt@trade that must keep getting fresh trades."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.last_id = -1

    async def next_trade(self, timeout: float = 3.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                m = orjson.loads(await self.ws.recv())
                if m.get("e") == "trade":
                    assert m["t"] > self.last_id, "trade ids must keep increasing"
                    self.last_id = m["t"]
                    return m

    async def still_receives(self) -> None:
        """Fresh data arrives: drain what is buffered, then see a newer trade arrive."""
        before = time.monotonic()
        first = await self.next_trade()
        while time.monotonic() - before < 0.05:  # skip what was already queued
            first = await self.next_trade()
        second = await self.next_trade()
        assert second["t"] > first["t"]


@contextlib.asynccontextmanager
async def witness(hub: Any) -> AsyncIterator[Witness]:
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade") as ws:
        w = Witness(ws)
        await w.next_trade()
        yield w


async def _reply(ws: Any, timeout: float = 3.0) -> dict[str, Any]:
    """The next control reply (a message with an ``id`` key), skipping market data."""
    async with asyncio.timeout(timeout):
        while True:
            m = orjson.loads(await ws.recv())
            if "id" in m:
                return m


async def _close_code_websockets(ws: Any, timeout: float = 3.0) -> int:
    """Read until the hub closes; the close code the client received."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None, "the hub must send a close frame"
    return closed.value.rcvd.code


class RawClient(WSListener):  # type: ignore[misc]
    """A picows client that records text frames and the close frame it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[bytes] = []
        self.close_code: int | None = None
        self.disconnected = asyncio.Event()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.texts.append(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected.set()


async def _raw_connect(url: str, **kwargs: Any) -> tuple[WSTransport, RawClient]:
    transport, client = await picows.ws_connect(RawClient, url, **kwargs)
    return transport, client


async def _closed_with(client: RawClient, timeout: float = 3.0) -> int | None:
    async with asyncio.timeout(timeout):
        await client.disconnected.wait()
    return client.close_code


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def _upgrade_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(3):
            await websockets.connect(url)
    return int(refused.value.response.status_code)


# -- control messages ----------------------------------------------------------------------


async def test_invalid_json_gets_code_3_and_connection_stays_open(make_hub):
    hub = await make_hub()
    async with witness(hub) as w, websockets.connect(f"{hub.url}/ws") as ws:
        await ws.send("{not json")
        reply = await _reply(ws)
        assert reply["error"]["code"] == 3 and reply["id"] is None
        assert reply["error"]["msg"].startswith("Invalid JSON")
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":7}')
        assert await _reply(ws) == {"result": [], "id": 7}
        await w.still_receives()


async def test_unknown_method_gets_code_2(make_hub):
    hub = await make_hub()
    async with witness(hub) as w, websockets.connect(f"{hub.url}/ws") as ws:
        await ws.send('{"method":"FROBNICATE","params":[],"id":11}')
        reply = await _reply(ws)
        assert reply["error"]["code"] == 2 and reply["id"] == 11
        assert "FROBNICATE" in reply["error"]["msg"]
        await w.still_receives()


async def test_invalid_stream_in_subscribe_is_refused_and_never_reaches_the_exchange(make_hub, sim):
    hub = await make_hub()
    async with witness(hub) as w, websockets.connect(f"{hub.url}/ws") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@trade","btcusdt@nonsense"],"id":5}')
        reply = await _reply(ws)
        assert reply == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 5}
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":6}')
        assert await _reply(ws) == {"result": [], "id": 6}  # refused as a whole
        await w.still_receives()
        assert set(sim.subscriptions()) == {"btcusdt@trade"}


async def test_invalid_stream_in_url_is_http_400(make_hub):
    hub = await make_hub()
    async with witness(hub) as w:
        assert await _upgrade_status(f"{hub.url}/ws/btcusdt@nonsense") == 400
        assert await _upgrade_status(f"{hub.url}/stream?streams=btcusdt@trade/NOT%20A%20STREAM") == 400
        await w.still_receives()


async def test_unknown_path_is_404(make_hub):
    hub = await make_hub()
    async with witness(hub) as w:
        assert await _upgrade_status(f"{hub.url}/api/v3/trades") == 404
        assert await asyncio.to_thread(_http_status, hub.port, "/favicon.ico") == 404
        await w.still_receives()


async def test_too_many_streams_is_an_error_reply_and_existing_streams_keep_flowing(make_hub, sim):
    hub = await make_hub(max_streams_per_connection=3, max_incoming_per_second=50)
    assert await _upgrade_status(
        f"{hub.url}/stream?streams=btcusdt@trade/ethusdt@trade/bnbusdt@trade/btcusdt@aggTrade") == 400
    async with websockets.connect(f"{hub.url}/stream?streams=btcusdt@trade/ethusdt@trade") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["bnbusdt@trade","btcusdt@aggTrade"],"id":1}')
        reply = await _reply(ws)
        assert reply["error"]["code"] == 2 and reply["id"] == 1
        assert "too many streams" in reply["error"]["msg"]
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
        assert await _reply(ws) == {"result": ["btcusdt@trade", "ethusdt@trade"], "id": 2}
        seen: set[str] = set()
        async with asyncio.timeout(3):
            while seen != {"btcusdt@trade", "ethusdt@trade"}:
                m = orjson.loads(await ws.recv())
                assert m.get("stream") != "bnbusdt@trade"
                seen.add(m.get("stream", ""))
        # one more still fits
        await ws.send('{"method":"SUBSCRIBE","params":["bnbusdt@trade"],"id":3}')
        assert await _reply(ws) == {"result": None, "id": 3}
    assert "btcusdt@aggTrade" not in sim.subscriptions()


# -- rate limit ----------------------------------------------------------------------------


async def test_flood_of_control_messages_closes_with_4029(make_hub):
    hub = await make_hub()  # 5 incoming messages per second
    async with witness(hub) as w, websockets.connect(f"{hub.url}/ws") as ws:
        for i in range(10):
            await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
        assert await _close_code_websockets(ws) == 4029
        await w.still_receives()


async def test_pings_count_toward_the_rate_limit(make_hub):
    hub = await make_hub()
    async with witness(hub) as w, websockets.connect(f"{hub.url}/ws", ping_interval=None) as ws:
        pongs = [await ws.ping() for _ in range(3)]
        async with asyncio.timeout(3):
            await asyncio.gather(*pongs)  # the hub answers pings within the limit
        for _ in range(7):
            await ws.ping()
        assert await _close_code_websockets(ws) == 4029
        await w.still_receives()


async def test_five_messages_per_second_is_allowed(make_hub):
    hub = await make_hub()
    async with websockets.connect(f"{hub.url}/ws") as ws:
        for second in range(2):
            for i in range(5):
                await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": second * 10 + i}).decode())
            for _ in range(5):
                assert "result" in await _reply(ws)
            await asyncio.sleep(1.05)
        await ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":99}')
        assert await _reply(ws) == {"result": False, "id": 99}


# -- frames --------------------------------------------------------------------------------


async def test_invalid_utf8_text_closes_with_1007(make_hub):
    hub = await make_hub()
    async with witness(hub) as w:
        transport, client = await _raw_connect(f"{hub.url}/ws")
        try:
            transport.send(WSMsgType.TEXT, b'{"method":"LIST_SUBSCRIPTIONS","id":"\xff\xfe"}')
            assert await _closed_with(client) == 1007
            assert client.texts == []
        finally:
            transport.disconnect()
        await w.still_receives()


async def test_binary_frame_closes_with_1003(make_hub):
    hub = await make_hub()
    async with witness(hub) as w:
        transport, client = await _raw_connect(f"{hub.url}/ws")
        try:
            transport.send(WSMsgType.BINARY, b'{"method":"LIST_SUBSCRIPTIONS","id":1}')
            assert await _closed_with(client) == 1003
        finally:
            transport.disconnect()
        await w.still_receives()


async def test_oversized_frame_closes_with_1009(make_hub):
    hub = await make_hub(max_frame_size=4096)
    async with witness(hub) as w:
        transport, client = await _raw_connect(f"{hub.url}/ws")
        try:
            transport.send(WSMsgType.TEXT, b" " * 5000)
            assert await _closed_with(client) == 1009
        finally:
            transport.disconnect()
        await w.still_receives()


def _disconnects(hub: Any, code: str) -> float:
    """tickhub_disconnects_total{code=...} as /metrics shows it."""
    prefix = f'tickhub_disconnects_total{{code="{code}"}} '
    for line in hub.metrics.render()[0].decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    raise AssertionError(f"no {prefix!r} in /metrics")


async def test_every_disconnect_is_counted_once_by_its_close_code(make_hub):
    """Closes picows sends on its own (an oversized frame) and peers that vanish without a
    close frame show up in tickhub_disconnects_total like the hub's own closes."""
    hub = await make_hub(max_frame_size=4096)
    transport, client = await _raw_connect(f"{hub.url}/ws")
    transport.send(WSMsgType.TEXT, b" " * 5000)
    assert await _closed_with(client) == 1009
    await wait_for(lambda: not hub.sessions, 3)
    assert _disconnects(hub, "MESSAGE_TOO_BIG") == 1

    transport, client = await _raw_connect(f"{hub.url}/ws")
    await wait_for(lambda: len(hub.sessions) == 1, 3)
    transport.underlying_transport.abort()  # TCP reset, no close frame
    await wait_for(lambda: not hub.sessions, 3)
    assert _disconnects(hub, "ABNORMAL_CLOSURE") == 1

    transport, client = await _raw_connect(f"{hub.url}/ws")
    transport.send_close(1000)
    await _closed_with(client)
    await wait_for(lambda: not hub.sessions, 3)
    assert _disconnects(hub, "NORMAL") == 1
    assert _disconnects(hub, "MESSAGE_TOO_BIG") == 1 and _disconnects(hub, "ABNORMAL_CLOSURE") == 1


async def test_a_flood_of_protocol_errors_logs_one_line_a_second(make_hub, caplog):
    """picows logs each client's protocol error at ERROR; 20 oversized frames within a
    second must not write 20 lines (a misbehaving client must not flood the log)."""
    hub = await make_hub(max_frame_size=4096)
    caplog.set_level(logging.INFO, logger="tickhub.picows")
    await asyncio.sleep(1.1)  # past the limiter's window of any earlier test's record
    pairs = [await _raw_connect(f"{hub.url}/ws") for _ in range(20)]
    try:
        for transport, _ in pairs:
            transport.send(WSMsgType.TEXT, b" " * 5000)
        for _, client in pairs:
            assert await _closed_with(client) == 1009
    finally:
        for transport, _ in pairs:
            transport.disconnect()
    records = [r for r in caplog.records if r.name.startswith("tickhub.picows")]
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert 1 <= len(errors) <= 2, [r.getMessage() for r in errors]
    # 20 connects and 20 disconnects at INFO are kept to about one line a second too
    assert len(records) <= 6, [r.getMessage() for r in records]


async def test_oversized_fragmented_message_closes_with_1009(make_hub):
    hub = await make_hub(max_frame_size=4096, max_incoming_per_second=50)
    async with witness(hub) as w:
        transport, client = await _raw_connect(f"{hub.url}/ws")
        try:
            transport.send(WSMsgType.TEXT, b" " * 3000, fin=False)
            transport.send(WSMsgType.CONTINUATION, b" " * 3000, fin=False)
            transport.send(WSMsgType.CONTINUATION, b"{}", fin=True)
            assert await _closed_with(client) == 1009
        finally:
            transport.disconnect()
        await w.still_receives()


async def test_fragmented_message_within_the_limit_is_answered(make_hub):
    hub = await make_hub(max_frame_size=4096, max_incoming_per_second=50)
    transport, client = await _raw_connect(f"{hub.url}/ws")
    try:
        transport.send(WSMsgType.TEXT, b'{"method":"LIST_SUB', fin=False)
        transport.send(WSMsgType.CONTINUATION, b'SCRIPTIONS","id":42}', fin=True)
        await wait_for(lambda: bool(client.texts), 3)
        assert orjson.loads(client.texts[0]) == {"result": [], "id": 42}
    finally:
        transport.disconnect()


async def test_client_close_is_echoed_with_1000(make_hub):
    hub = await make_hub()
    ws = await websockets.connect(f"{hub.url}/ws/btcusdt@trade")
    await ws.recv()
    started = time.monotonic()
    await ws.close()
    assert time.monotonic() - started < 1.0
    assert ws.close_code == 1000  # the code the hub sent back
    await wait_for(lambda: not hub.sessions, 3)


# -- raw TCP -------------------------------------------------------------------------------


async def test_garbage_http_gets_4xx_or_close_and_the_hub_keeps_serving(make_hub):
    hub = await make_hub()
    async with witness(hub) as w:
        for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost\r\n\r\n", b"GET /ws HTTP/1.1\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
            try:
                writer.write(garbage)
                await writer.drain()
                async with asyncio.timeout(3):
                    answer = await reader.read(1024)
                assert answer.startswith(b"HTTP/1.1 400 "), answer
            finally:
                writer.close()
        await w.still_receives()
    async with witness(hub) as fresh:
        await fresh.still_receives()


async def test_hundred_half_open_sockets_do_not_block_other_clients(make_hub):
    hub = await make_hub()
    async with witness(hub) as w:
        idle = []
        try:
            for i in range(100):
                reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
                if i % 2:
                    writer.write(b"GET /ws/btcusdt@trade HTTP/1.1\r\nHost: x\r\n")  # never finished
                idle.append((reader, writer))
            await w.still_receives()
            async with witness(hub) as fresh:  # new clients still get through
                await fresh.still_receives()
                assert len(hub.sessions) == 2  # half-open sockets are not sessions
            # the hub hangs up on them after its 5 s handshake timeout
            async with asyncio.timeout(8):
                answers = await asyncio.gather(*(reader.read(1024) for reader, _ in idle))
            assert answers == [b""] * 100
        finally:
            for _, writer in idle:
                writer.close()
        await w.still_receives()


# -- slow consumer -------------------------------------------------------------------------


@pytest.fixture
async def fast_sim() -> AsyncIterator[Any]:
    from tickhub.sim import SimConfig, Simulator

    s = Simulator(SimConfig(symbols=("btcusdt",), rate=8000.0, seed=3))
    await s.start(host="127.0.0.1", port=0)
    try:
        yield s
    finally:
        await s.stop()


def _small_receive_buffer_socket(_url: Any) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


async def test_slow_consumer_is_closed_with_4008_while_a_fast_client_keeps_up(make_hub, fast_sim):
    hub = await make_hub(binance_ws_url=fast_sim.url, max_queued_bytes=64 * 1024)
    url = f"{hub.url}/ws/btcusdt@trade"
    heavy = f"{hub.url}/ws/btcusdt@trade/btcusdt@aggTrade/btcusdt@depth@100ms/btcusdt@bookTicker"
    transport, slow = await _raw_connect(heavy, socket_factory=_small_receive_buffer_socket)
    fast = await websockets.connect(url, max_queue=None)
    try:
        transport.underlying_transport.pause_reading()
        ids: list[int] = []
        started = time.monotonic()
        async with asyncio.timeout(8):
            while hub.fanout.slow_consumers == 0:
                ids.append(orjson.loads(await fast.recv())["t"])
        # the fast client saw every trade in order while the slow one fell behind
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        assert len(ids) / (time.monotonic() - started) > 1000
        transport.underlying_transport.resume_reading()
        assert await _closed_with(slow, 5) == 4008
        for _ in range(200):  # and keeps its rate afterwards
            t = orjson.loads(await asyncio.wait_for(fast.recv(), 3))["t"]
            assert t == ids[-1] + 1
            ids.append(t)
        assert len(hub.sessions) == 1
    finally:
        transport.disconnect()
        await fast.close()
