"""End-to-end tests of ``tickhub simulate`` with real clients (websockets, picows) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import websockets
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from websockets.asyncio.client import ClientConnection

from tickhub.sim import SimConfig, Simulator
from tickhub.sim.cli import build_parser, main

StartSim = Callable[..., Awaitable[Simulator]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    sims: list[Simulator] = []

    async def _start(**kwargs: Any) -> Simulator:
        sim = Simulator(SimConfig(**kwargs))
        await sim.start("127.0.0.1", 0)
        sims.append(sim)
        return sim

    yield _start
    for sim in sims:
        await sim.stop()


async def recv_json(ws: ClientConnection, timeout: float = 2.0) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws: ClientConnection, message: Any) -> Any:
    """Send one control request and return the reply (skipping market data)."""
    await ws.send(message if isinstance(message, (str, bytes)) else orjson.dumps(message).decode())
    while True:
        doc = await recv_json(ws)
        if isinstance(doc, dict) and "id" in doc:
            return doc


async def http_get(sim: Simulator, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 2.0)  # the server closes after answering
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


class Collector(WSListener):
    """picows client listener that queues (type, payload, close code) of every frame."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[tuple[WSMsgType, bytes, Any] | None] = asyncio.Queue()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        code = frame.get_close_code() if frame.msg_type == WSMsgType.CLOSE else None
        self.frames.put_nowait((frame.msg_type, frame.get_payload_as_bytes(), code))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.frames.put_nowait(None)

    async def next(self, kind: WSMsgType, timeout: float = 2.0) -> tuple[WSMsgType, bytes, Any]:
        while True:
            item = await asyncio.wait_for(self.frames.get(), timeout)
            assert item is not None, f"disconnected while waiting for {kind}"
            if item[0] == kind:
                return item


async def picows_client(url: str, **kwargs: Any) -> tuple[WSTransport, Collector]:
    transport, listener = await ws_connect(Collector, url, **kwargs)
    assert isinstance(listener, Collector)
    return transport, listener


def _decimal(value: Any) -> Decimal:
    assert isinstance(value, str)
    return Decimal(value)


def _check_levels(levels: Any) -> None:
    assert isinstance(levels, list)
    for level in levels:
        assert len(level) == 2
        _decimal(level[0])
        _decimal(level[1])


# --------------------------------------------------------------------------------------
# routes and payloads

async def test_raw_route_trade_payload(start_sim: StartSim) -> None:
    sim = await start_sim(rate=100.0)
    async with websockets.connect(sim.url + "/ws/btcusdt@trade") as ws:
        events = [await recv_json(ws) for _ in range(5)]
    for ev in events:
        assert set(ev) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
        assert ev["e"] == "trade" and ev["s"] == "BTCUSDT"
        assert all(isinstance(ev[k], int) for k in ("E", "t", "T"))
        assert isinstance(ev["m"], bool) and isinstance(ev["M"], bool)
        assert _decimal(ev["p"]) > 0 and _decimal(ev["q"]) > 0
        assert abs(ev["E"] - time.time() * 1000) < 5000
    assert [ev["t"] for ev in events] == list(range(events[0]["t"], events[0]["t"] + 5))


async def test_combined_route_wraps_payloads(start_sim: StartSim) -> None:
    sim = await start_sim(rate=100.0)
    url = sim.url + "/stream?streams=btcusdt@aggTrade/ethusdt@bookTicker"
    seen: dict[str, Any] = {}
    async with websockets.connect(url) as ws:
        while len(seen) < 2:
            msg = await recv_json(ws)
            assert set(msg) == {"stream", "data"}
            seen[msg["stream"]] = msg["data"]
    agg = seen["btcusdt@aggTrade"]
    assert set(agg) == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
    assert agg["e"] == "aggTrade" and agg["f"] <= agg["l"]
    book = seen["ethusdt@bookTicker"]
    assert set(book) == {"u", "s", "b", "B", "a", "A"} and book["s"] == "ETHUSDT"
    assert _decimal(book["b"]) < _decimal(book["a"])


async def test_every_stream_kind_has_binance_fields(start_sim: StartSim) -> None:
    sim = await start_sim(rate=50.0)
    names = ["btcusdt@kline_1m", "btcusdt@kline_1s", "btcusdt@miniTicker", "btcusdt@ticker",
             "btcusdt@depth5", "btcusdt@depth20@100ms", "btcusdt@depth10@1000ms",
             "btcusdt@depth", "btcusdt@depth@100ms", "btcusdt@depth@1000ms", "!miniTicker@arr"]
    seen: dict[str, Any] = {}
    async with websockets.connect(sim.url + "/stream?streams=" + "/".join(names)) as ws:
        while len(seen) < len(names):
            msg = await recv_json(ws)
            seen.setdefault(msg["stream"], msg["data"])
    kline = seen["btcusdt@kline_1m"]
    assert set(kline) == {"e", "E", "s", "k"} and kline["e"] == "kline"
    k = kline["k"]
    assert set(k) == set("tTsifLochlvnxqVQB")
    assert k["i"] == "1m" and k["t"] % 60_000 == 0 and k["T"] == k["t"] + 59_999
    assert isinstance(k["n"], int) and isinstance(k["x"], bool)
    assert _decimal(k["l"]) <= _decimal(k["o"]) <= _decimal(k["h"])
    assert seen["btcusdt@kline_1s"]["k"]["i"] == "1s"
    assert set(seen["btcusdt@miniTicker"]) == {"e", "E", "s", "c", "o", "h", "l", "v", "q"}
    ticker = seen["btcusdt@ticker"]
    assert set(ticker) == set("eEspPwxcQbBaAohlvqOCFLn") and ticker["e"] == "24hrTicker"
    assert ticker["C"] - ticker["O"] == 86_400_000 and ticker["n"] == ticker["L"] - ticker["F"] + 1
    for name, levels in (("btcusdt@depth5", 5), ("btcusdt@depth20@100ms", 20),
                         ("btcusdt@depth10@1000ms", 10)):
        part = seen[name]
        assert set(part) == {"lastUpdateId", "bids", "asks"}
        assert len(part["bids"]) == len(part["asks"]) == levels
        _check_levels(part["bids"])
        bids = [_decimal(p) for p, _ in part["bids"]]
        asks = [_decimal(p) for p, _ in part["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    for name in ("btcusdt@depth", "btcusdt@depth@100ms", "btcusdt@depth@1000ms"):
        diff = seen[name]
        assert set(diff) == {"e", "E", "s", "U", "u", "b", "a"} and diff["e"] == "depthUpdate"
        assert diff["U"] <= diff["u"]
        _check_levels(diff["b"])
        _check_levels(diff["a"])
    arr = seen["!miniTicker@arr"]
    assert [t["s"] for t in arr] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    assert all(t["e"] == "24hrMiniTicker" for t in arr)


async def test_unknown_path_and_invalid_url_streams_are_refused(start_sim: StartSim) -> None:
    sim = await start_sim()
    status, _, _ = await http_get(sim, "/nowhere")
    assert status == 404
    with pytest.raises(websockets.InvalidStatus) as bad_stream:
        await websockets.connect(sim.url + "/ws/btcusdt@bogus")
    assert bad_stream.value.response.status_code == 400
    assert b"invalid stream" in bad_stream.value.response.body
    with pytest.raises(websockets.InvalidStatus) as unknown_symbol:
        await websockets.connect(sim.url + "/stream?streams=dogeusdt@trade")
    assert unknown_symbol.value.response.status_code == 400
    with pytest.raises(websockets.InvalidStatus) as bad_unit:
        await websockets.connect(sim.url + "/ws/btcusdt@trade?timeUnit=SECOND")
    assert bad_unit.value.response.status_code == 400
    # ccxt opens /ws/<n> and subscribes afterwards
    async with websockets.connect(sim.url + "/ws/0") as ws:
        assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [], "id": 1}


async def test_time_unit_microseconds(start_sim: StartSim) -> None:
    sim = await start_sim(rate=100.0)
    async with websockets.connect(sim.url + "/ws/btcusdt@trade?timeUnit=MICROSECOND") as ws:
        trade = await recv_json(ws)
    assert abs(trade["E"] - time.time() * 1e6) < 5e6 and trade["T"] == trade["E"]
    # python-binance's double "?" form, lower case
    url = sim.url + "/stream?streams=btcusdt@kline_1m?timeUnit=microsecond"
    async with websockets.connect(url) as ws:
        kline = (await recv_json(ws))["data"]
    assert abs(kline["E"] - time.time() * 1e6) < 5e6
    assert kline["k"]["t"] % 60_000_000 == 0 and kline["k"]["T"] == kline["k"]["t"] + 59_999_000
    async with websockets.connect(sim.url + "/ws/btcusdt@trade?timeUnit=millisecond") as ws:
        assert abs((await recv_json(ws))["E"] - time.time() * 1000) < 5000


# --------------------------------------------------------------------------------------
# live subscription protocol

async def test_subscription_methods_and_errors(start_sim: StartSim) -> None:
    sim = await start_sim(rate=1.0, max_incoming_per_second=0)
    async with websockets.connect(sim.url + "/ws") as ws:
        async def ask(message: Any) -> Any:
            return await request(ws, message)

        assert await ask({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@depth"],
                          "id": 1}) == {"result": None, "id": 1}
        assert await ask({"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {
            "result": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 3}
        assert await ask({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 312}) == {
            "result": None, "id": 312}
        assert await ask({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 4}) == {
            "result": None, "id": 4}  # duplicate subscribe is idempotent
        assert await ask({"method": "LIST_SUBSCRIPTIONS", "id": "abc-1"}) == {
            "result": ["btcusdt@aggTrade"], "id": "abc-1"}
        assert await ask({"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == {
            "result": False, "id": 2}
        assert await ask({"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}) == {
            "result": None, "id": 5}
        assert await ask({"method": "GET_PROPERTY", "params": ["combined"], "id": None}) == {
            "result": True, "id": None}

        def error(code: int, msg: str, request_id: Any) -> Any:
            return {"error": {"code": code, "msg": msg}, "id": request_id}

        invalid = "Invalid request: invalid stream"
        assert await ask({"method": "SUBSCRIBE", "params": ["btcusdt@bogus"], "id": 6}) == error(
            2, invalid, 6)
        assert await ask({"method": "SUBSCRIBE", "params": ["ethusdt@trade", "xyzusdt@trade"],
                          "id": 7}) == error(2, invalid, 7)
        assert await ask({"method": "SUBSCRIBE", "params": [42], "id": 8}) == error(2, invalid, 8)
        # a refused SUBSCRIBE adds nothing, not even its valid names
        assert (await ask({"method": "LIST_SUBSCRIPTIONS", "id": 9}))["result"] == ["btcusdt@aggTrade"]
        assert await ask({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 10}) == error(
            1, "Invalid value type: expected Boolean", 10)
        assert await ask({"method": "SET_PROPERTY", "params": ["compressed", True], "id": 11}) == error(
            0, "Unknown property", 11)
        assert await ask({"method": "GET_PROPERTY", "params": [], "id": 12}) == error(
            2, "Invalid request: property name must be a string", 12)
        assert await ask({"method": "GET_PROPERTY", "params": ["combined", 1], "id": 13}) == error(
            2, "Invalid request: too many parameters", 13)
        assert await ask({"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 14}) == error(
            2, "Invalid request: too many parameters", 14)
        unknown = await ask('{"method":"FOO","id":15}')
        assert unknown["id"] == 15 and unknown["error"]["code"] == 2
        assert unknown["error"]["msg"].startswith(
            "Invalid request: unknown variant `FOO`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
            "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 15")
        missing = await ask('{"params":[],"id":16}')
        assert missing == error(2, "Invalid request: missing field `method` at line 1 column 21", 16)
        bad_id = await ask({"method": "LIST_SUBSCRIPTIONS", "id": 1.5})
        assert bad_id == error(2, "Invalid request: request ID must be an unsigned integer", None)
        await ws.send("{not json")
        bad_json = await recv_json(ws)
        assert bad_json["id"] is None and bad_json["error"]["code"] == 3
        assert bad_json["error"]["msg"].startswith("Invalid JSON: expected value at line 1 column")
        await ws.send(b"\xff\xfe\x00")  # binary garbage gets an answer, not a crash
        assert (await recv_json(ws))["error"]["code"] == 3
        assert (await ask({"method": "LIST_SUBSCRIPTIONS", "id": 17}))["id"] == 17
    assert sim.control_messages == 23


async def test_set_property_switches_the_wrapper(start_sim: StartSim) -> None:
    sim = await start_sim(rate=100.0, max_incoming_per_second=0)
    async with websockets.connect(sim.url + "/ws/btcusdt@trade") as ws:
        assert "e" in await recv_json(ws)
        await request(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 1})
        wrapped = await recv_json(ws)
        assert wrapped["stream"] == "btcusdt@trade" and wrapped["data"]["e"] == "trade"
        await request(ws, {"method": "SET_PROPERTY", "params": ["combined", False], "id": 2})
        assert (await recv_json(ws))["e"] == "trade"
    async with websockets.connect(sim.url + "/stream") as ws:
        assert await request(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 1}) == {
            "result": True, "id": 1}


async def test_stream_limit_per_connection(start_sim: StartSim) -> None:
    sim = await start_sim(max_streams_per_connection=3, max_incoming_per_second=0)
    with pytest.raises(websockets.InvalidStatus) as too_many:
        await websockets.connect(sim.url + "/ws/btcusdt@trade/btcusdt@aggTrade/btcusdt@depth/"
                                           "btcusdt@ticker")
    assert too_many.value.response.status_code == 400
    async with websockets.connect(sim.url + "/ws/btcusdt@trade/btcusdt@aggTrade") as ws:
        refused = await request(ws, {"method": "SUBSCRIBE", "id": 1,
                                     "params": ["ethusdt@trade", "ethusdt@aggTrade"]})
        assert refused == {"error": {"code": 2, "msg": "Invalid request: too many streams, at most "
                                                       "3 per connection"}, "id": 1}
        assert await request(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 2}) == {
            "result": None, "id": 2}
        listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
        assert listed["result"] == ["btcusdt@trade", "btcusdt@aggTrade", "ethusdt@trade"]


async def test_subscription_counts_follow_connections(start_sim: StartSim) -> None:
    sim = await start_sim(rate=200.0, max_incoming_per_second=0)
    assert sim.subscriptions() == {} and sim.connection_count == 0
    a = await websockets.connect(sim.url + "/ws/btcusdt@trade")
    b = await websockets.connect(sim.url + "/stream?streams=btcusdt@trade/ethusdt@depth")
    await recv_json(a)
    assert sim.connection_count == 2 and sim.handshakes == 2
    assert sim.subscriptions() == {"btcusdt@trade": 2, "ethusdt@depth": 1}
    await request(b, {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
    assert sim.subscriptions() == {"btcusdt@trade": 1, "ethusdt@depth": 1}
    await a.close()
    await b.close()
    for _ in range(100):
        if sim.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert sim.connection_count == 0 and sim.subscriptions() == {}
    # with nobody subscribed nothing is generated or sent
    sent = sim.events_sent
    assert sent > 0
    await asyncio.sleep(0.2)
    assert sim.events_sent == sent


# --------------------------------------------------------------------------------------
# fan-out, ids and determinism

async def test_two_connections_receive_identical_bytes(start_sim: StartSim) -> None:
    sim = await start_sim(rate=300.0)
    url = sim.url + "/ws/btcusdt@trade"
    transport, collector = await picows_client(url)
    async with websockets.connect(url) as ws:
        via_websockets = [await asyncio.wait_for(ws.recv(decode=False), 2) for _ in range(30)]
    via_picows: list[bytes] = []
    while len(via_picows) < 60:
        via_picows.append((await collector.next(WSMsgType.TEXT))[1])
    transport.disconnect()
    by_id = {orjson.loads(p)["t"]: p for p in via_picows}
    common = [p for p in via_websockets if orjson.loads(p)["t"] in by_id]
    assert len(common) == 30
    assert all(by_id[orjson.loads(p)["t"]] == p for p in common)
    ids = [orjson.loads(p)["t"] for p in via_picows]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


async def _first_events(sim: Simulator, stream: str, n: int) -> list[Any]:
    async with websockets.connect(sim.url + "/ws/" + stream) as ws:
        return [await recv_json(ws) for _ in range(n)]


def _without_times(events: list[Any]) -> list[Any]:
    return [{k: v for k, v in ev.items() if k not in ("E", "T")} for ev in events]


async def test_same_seed_same_events(start_sim: StartSim) -> None:
    first = await start_sim(rate=500.0, seed=7)
    second = await start_sim(rate=500.0, seed=7)
    other = await start_sim(rate=500.0, seed=8)
    trades: list[Any] = []
    for stream in ("btcusdt@trade", "ethusdt@depth", "btcusdt@bookTicker"):
        a = _without_times(await _first_events(first, stream, 20))
        b = _without_times(await _first_events(second, stream, 20))
        assert a == b
        trades = trades or a
    assert _without_times(await _first_events(other, "btcusdt@trade", 20)) != trades


async def test_depth_ids_are_contiguous_and_match_rest_snapshot(start_sim: StartSim) -> None:
    sim = await start_sim(rate=200.0, max_incoming_per_second=0)
    url = sim.url + "/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@depth5@100ms"
    async with websockets.connect(url) as ws:
        diffs: list[Any] = []
        ticker_ids: list[int] = []
        partial_ids: list[int] = []

        async def pump(until: Callable[[], bool]) -> None:
            while not until():
                msg = await recv_json(ws)
                data = msg["data"]
                if msg["stream"] == "btcusdt@bookTicker":
                    ticker_ids.append(data["u"])
                elif msg["stream"] == "btcusdt@depth5@100ms":
                    partial_ids.append(data["lastUpdateId"])
                else:
                    diffs.append(data)

        await pump(lambda: len(diffs) >= 20)
        status, headers, body = await http_get(sim, "/api/v3/depth?symbol=BTCUSDT&limit=50")
        assert status == 200 and headers["content-type"].startswith("application/json")
        snapshot = orjson.loads(body)
        seen = len(diffs)
        await pump(lambda: any(d["u"] > snapshot["lastUpdateId"] for d in diffs[seen:])
                   and len(partial_ids) >= 2)
    for prev, cur in zip(diffs, diffs[1:]):
        assert cur["U"] == prev["u"] + 1
    # python-binance's DepthCacheManager: the first event after the snapshot has U == id + 1
    after = [d for d in diffs if d["u"] > snapshot["lastUpdateId"]]
    assert after[0]["U"] == snapshot["lastUpdateId"] + 1
    assert any(d["u"] == snapshot["lastUpdateId"] for d in diffs)
    # one id space per symbol: bookTicker.u and partial lastUpdateId are diff u values
    # (a partial pushed before the first change carries the id just before it)
    diff_ids = {d["u"] for d in diffs} | {diffs[0]["U"] - 1}
    assert ticker_ids and set(ticker_ids) <= diff_ids
    assert partial_ids and set(partial_ids) <= diff_ids
    assert len(snapshot["bids"]) == len(snapshot["asks"]) == 50
    _check_levels(snapshot["bids"])
    assert _decimal(snapshot["bids"][0][0]) < _decimal(snapshot["asks"][0][0])


async def test_rest_endpoints(start_sim: StartSim) -> None:
    sim = await start_sim()
    assert (await http_get(sim, "/api/v3/ping"))[::2] == (200, b"{}")
    status, _, body = await http_get(sim, "/api/v3/time")
    assert status == 200 and abs(orjson.loads(body)["serverTime"] - time.time() * 1000) < 5000
    status, _, body = await http_get(sim, "/api/v3/depth?symbol=ETHUSDT")
    assert status == 200 and len(orjson.loads(body)["bids"]) == 100  # Binance's default limit
    status, _, body = await http_get(sim, "/api/v3/depth?symbol=ETHUSDT&limit=9999")
    assert status == 200 and len(orjson.loads(body)["asks"]) == 1000  # all levels, capped at 5000
    for path, code in (("/api/v3/depth", -1102), ("/api/v3/depth?symbol=NOPE", -1121),
                       ("/api/v3/depth?symbol=BTCUSDT&limit=x", -1100)):
        status, _, body = await http_get(sim, path)
        assert status == 400 and orjson.loads(body)["code"] == code
    status, _, _ = await http_get(sim, "/api/v3/exchangeInfo")
    assert status == 404
    assert sim.handshakes == 0  # REST requests are not WebSocket handshakes


# --------------------------------------------------------------------------------------
# fault injection

async def test_drop_connections_resets_without_close_frame(start_sim: StartSim) -> None:
    sim = await start_sim(rate=100.0)
    clients = [await websockets.connect(sim.url + "/ws/btcusdt@trade") for _ in range(2)]
    await recv_json(clients[0])
    assert sim.drop_connections() == 2
    for ws in clients:
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 2)
        assert closed.value.rcvd is None
    assert sim.connection_count == 0


async def test_stall_freezes_existing_connections_only(start_sim: StartSim) -> None:
    sim = await start_sim(rate=100.0, max_incoming_per_second=0)
    async with websockets.connect(sim.url + "/ws/btcusdt@trade") as ws:
        await recv_json(ws)
        sim.stall(True)
        await asyncio.sleep(0.05)
        while True:  # drain what was in flight before the stall
            try:
                await asyncio.wait_for(ws.recv(), 0.1)
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.4)
        assert sim.connection_count == 1
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')  # not even replies
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.2)
        async with websockets.connect(sim.url + "/ws/btcusdt@trade") as fresh:
            assert (await recv_json(fresh))["e"] == "trade"  # a reconnect recovers
        sim.stall(False)
        assert (await recv_json(ws))["e"] == "trade"


@pytest.mark.parametrize("status", [429, 503])
async def test_refuse_handshakes(start_sim: StartSim, status: int) -> None:
    sim = await start_sim()
    sim.refuse_handshakes(status, count=2)
    for _ in range(2):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(sim.url + "/ws/btcusdt@trade")
        assert refused.value.response.status_code == status
    async with websockets.connect(sim.url + "/ws/btcusdt@trade"):
        pass
    sim.refuse_handshakes(status)
    for _ in range(3):
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(sim.url + "/ws")
    sim.clear_faults()
    async with websockets.connect(sim.url + "/ws"):
        pass
    assert sim.handshakes == 7
    with pytest.raises(ValueError):
        sim.refuse_handshakes(200)


async def test_server_shutdown_event_then_close(start_sim: StartSim) -> None:
    sim = await start_sim()
    raw = await websockets.connect(sim.url + "/ws")
    combined = await websockets.connect(sim.url + "/stream")
    micro = await websockets.connect(sim.url + "/ws?timeUnit=MICROSECOND")
    assert await sim.send_server_shutdown(close_after=0.2) == 3
    event = await recv_json(raw)
    assert event["e"] == "serverShutdown" and abs(event["E"] - time.time() * 1000) < 5000
    wrapped = await recv_json(combined)
    assert wrapped["stream"] == "!serverShutdown" and wrapped["data"]["e"] == "serverShutdown"
    assert abs((await recv_json(micro))["E"] - time.time() * 1e6) < 5e6
    for ws in (raw, combined, micro):
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 2)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


async def test_server_shutdown_without_close_keeps_connections(start_sim: StartSim) -> None:
    sim = await start_sim()
    async with websockets.connect(sim.url + "/ws") as ws:
        await sim.send_server_shutdown()
        assert (await recv_json(ws))["e"] == "serverShutdown"
        await asyncio.sleep(0.2)
        assert sim.connection_count == 1
        assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [], "id": 1}


# --------------------------------------------------------------------------------------
# pings and limits

async def test_server_pings_and_accepts_matching_pongs(start_sim: StartSim) -> None:
    sim = await start_sim(ping_interval=0.15, pong_timeout=0.4, max_incoming_per_second=0)
    transport, collector = await picows_client(sim.url + "/ws", enable_auto_pong=False)
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        _, payload, _ = await collector.next(WSMsgType.PING)
        transport.send_pong(payload)
    assert not transport.is_disconnected and sim.connection_count == 1
    transport.send_ping(b"client")  # the server answers client pings
    assert (await collector.next(WSMsgType.PONG))[1] == b"client"
    transport.disconnect()


async def test_connection_without_pongs_is_closed(start_sim: StartSim) -> None:
    sim = await start_sim(ping_interval=0.1, pong_timeout=0.3)
    transport, collector = await picows_client(sim.url + "/ws", enable_auto_pong=False)
    await collector.next(WSMsgType.PING)
    transport.send_pong(b"unsolicited")  # a pong that answers no ping does not count
    _, _, code = await collector.next(WSMsgType.CLOSE, timeout=2.0)
    assert code == WSCloseCode.POLICY_VIOLATION
    transport.disconnect()


async def test_incoming_message_rate_limit(start_sim: StartSim) -> None:
    sim = await start_sim(max_incoming_per_second=5)
    async with websockets.connect(sim.url + "/ws", ping_interval=None) as ws:
        for i in range(5):
            assert (await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i}))["id"] == i
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":5}')
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 2)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    transport, collector = await picows_client(sim.url + "/ws")
    for _ in range(6):  # ping frames count too
        transport.send_ping(b"x")
    _, _, code = await collector.next(WSMsgType.CLOSE)
    assert code == WSCloseCode.POLICY_VIOLATION
    transport.disconnect()
    async with websockets.connect(sim.url + "/ws", ping_interval=None) as ws:
        for i in range(4):  # paced under the limit: never closed
            await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i})
            await asyncio.sleep(0.25)
        assert sim.connection_count == 1


async def test_slow_consumer_is_aborted(start_sim: StartSim,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickhub.sim")
    sim = await start_sim(rate=100_000.0, max_send_buffer=256 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"GET /ws/btcusdt@trade HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)).startswith(b"HTTP/1.1 101")
    assert sim.connection_count == 1
    # this client never reads again: once the kernel buffers are full the server's own
    # buffer grows past max_send_buffer and the connection is dropped
    deadline = time.monotonic() + 10
    while sim.connection_count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sim.connection_count == 0 and sim.subscriptions() == {}
    assert "aborting slow consumer" in caplog.text
    writer.close()


async def test_connection_age_limit(start_sim: StartSim) -> None:
    sim = await start_sim(max_connection_age=0.3)
    async with websockets.connect(sim.url + "/ws") as ws:
        with pytest.raises(websockets.ConnectionClosedOK) as closed:
            await asyncio.wait_for(ws.recv(), 2)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_fragmented_message_is_refused(start_sim: StartSim) -> None:
    sim = await start_sim()
    transport, collector = await picows_client(sim.url + "/ws")
    transport.send(WSMsgType.TEXT, b'{"method":', fin=False)
    _, _, code = await collector.next(WSMsgType.CLOSE)
    assert code == WSCloseCode.UNSUPPORTED_DATA
    transport.disconnect()


async def test_burst_groups_events_per_write(start_sim: StartSim) -> None:
    sim = await start_sim(rate=2000.0, burst=50)
    # picows reads as fast as the server sends; websockets' bounded queue would pause
    # reading at this rate and make its closing handshake wait for close_timeout
    transport, collector = await picows_client(sim.url + "/ws/btcusdt@trade")
    ids = [orjson.loads((await collector.next(WSMsgType.TEXT))[1])["t"] for _ in range(120)]
    assert ids == list(range(ids[0], ids[0] + 120))
    for _ in range(5):
        assert sim.events_sent % 50 == 0
        await asyncio.sleep(0.03)
    transport.disconnect()


# --------------------------------------------------------------------------------------
# CLI

def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rate", "-1"]) == 2
    assert "rate must be >= 0" in capsys.readouterr().err
    assert main(["--symbols", "BTC-USDT"]) == 2
    assert main(["--port", "nope"]) == 2
    assert build_parser().parse_args([]).port == 9443


async def test_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickhub.sim.cli", "--port", "0", "--symbols", "btcusdt",
         "--rate", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        assert line.startswith("listening on ws://127.0.0.1:")
        url = line.split()[-1]
        async with websockets.connect(url + "/ws/btcusdt@trade") as ws:
            assert (await recv_json(ws))["s"] == "BTCUSDT"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------
# a real Binance client library as the oracle

async def test_python_binance_depth_cache_and_multiplex(
        start_sim: StartSim, monkeypatch: pytest.MonkeyPatch) -> None:
    binance = pytest.importorskip("binance")
    sim = await start_sim(rate=100.0)
    monkeypatch.setattr(binance.AsyncClient, "API_URL", sim.url.replace("ws://", "http://") + "/api")
    monkeypatch.setattr(binance.BinanceSocketManager, "STREAM_URL", sim.url + "/")
    client = await binance.AsyncClient.create()  # calls /api/v3/ping and /time
    snapshots = 0
    get_order_book = client.get_order_book

    async def counting_get_order_book(**kwargs: Any) -> Any:
        nonlocal snapshots
        snapshots += 1
        return await get_order_book(**kwargs)

    client.get_order_book = counting_get_order_book
    try:
        async with binance.DepthCacheManager(client, "BTCUSDT", refresh_interval=0) as cache:
            for _ in range(10):
                depth = await asyncio.wait_for(cache.recv(), 5)
                best_bid, best_ask = depth.get_bids()[0][0], depth.get_asks()[0][0]
                assert best_bid < best_ask
        # DepthCacheManager re-fetches the snapshot whenever U != lastUpdateId + 1
        assert snapshots == 1
        manager = binance.BinanceSocketManager(client)
        async with manager.multiplex_socket(["btcusdt@trade", "ethusdt@kline_1m"]) as socket:
            streams = {(await asyncio.wait_for(socket.recv(), 5))["stream"] for _ in range(5)}
        assert streams == {"btcusdt@trade", "ethusdt@kline_1m"}
    finally:
        await client.close_connection()
