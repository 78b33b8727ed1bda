"""Real Binance client libraries pointed at the hub, unchanged except for their base URL.

python-binance and unicorn-binance-websocket-api are what users run against Binance; if
they receive live trades through the hub, the hub is a drop-in replacement for them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import picows
import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport

from conftest import wait_for


def _contiguous(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


# -- python-binance --------------------------------------------------------------------------


@pytest.fixture
async def binance_client(sim: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """python-binance's AsyncClient; its REST calls (ping, time) go to the simulator."""
    binance = pytest.importorskip("binance")
    monkeypatch.setattr(binance.AsyncClient, "API_URL", sim.url.replace("ws://", "http://") + "/api")
    client = await binance.AsyncClient.create()
    try:
        yield client
    finally:
        await client.close_connection()


async def test_python_binance_trade_socket_through_the_hub(make_hub, sim, binance_client):
    import binance

    hub = await make_hub()
    manager = binance.BinanceSocketManager(binance_client)
    manager.STREAM_URL = f"{hub.url}/"
    async with manager.trade_socket("BTCUSDT") as socket:
        msgs = [await asyncio.wait_for(socket.recv(), 5) for _ in range(10)]
    assert all(m["e"] == "trade" and m["s"] == "BTCUSDT" for m in msgs)
    assert _contiguous([m["t"] for m in msgs])
    assert sim.subscriptions().get("btcusdt@trade") == 1  # the hub, not the library


async def test_python_binance_multiplex_socket_through_the_hub(make_hub, sim, binance_client):
    import binance

    hub = await make_hub()
    manager = binance.BinanceSocketManager(binance_client)
    manager.STREAM_URL = f"{hub.url}/"
    by_stream: dict[str, list[int]] = {"btcusdt@trade": [], "ethusdt@trade": []}
    async with manager.multiplex_socket(list(by_stream)) as socket:
        async with asyncio.timeout(5):
            while min(len(v) for v in by_stream.values()) < 5:
                m = await socket.recv()
                assert m["data"]["e"] == "trade"
                by_stream[m["stream"]].append(m["data"]["t"])
    assert all(_contiguous(ids) for ids in by_stream.values())
    assert len(hub.sessions) <= 1  # closing the socket closed its connection (or is doing so)


# -- unicorn-binance-websocket-api --------------------------------------------------------------


def _ubwa_collect(hub_url: str, want: int, timeout: float) -> tuple[list[dict[str, Any]], int]:
    """Run UBWA (its own threads and loops) until ``want`` trades arrived; always stop it.

    Returns the trades and the number of subscriptions UBWA reports for its stream.
    """
    from unicorn_binance_websocket_api import BinanceWebSocketApiManager

    manager = BinanceWebSocketApiManager(
        exchange="binance.com",
        websocket_base_uri=f"{hub_url}/",
        warn_on_update=False,
        disable_colorama=True,
        output_default="raw_data",
    )
    trades: list[dict[str, Any]] = []
    threads_before = set(threading.enumerate())
    try:
        stream_id = manager.create_stream(["trade"], ["btcusdt", "ethusdt"])
        deadline = time.monotonic() + timeout
        while len(trades) < want and time.monotonic() < deadline:
            raw = manager.pop_stream_data_from_stream_buffer()
            if raw is False or raw is None:
                time.sleep(0.01)
                continue
            m = orjson.loads(raw)
            data = m.get("data", m)
            if isinstance(data, dict) and data.get("e") == "trade":
                trades.append(data)
        return trades, int(manager.get_stream_info(stream_id)["subscriptions"])
    finally:
        manager.stop_manager()
        for thread in set(threading.enumerate()) - threads_before:
            thread.join(5)
        leftover = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
        assert not leftover, f"UBWA threads still running after stop_manager: {leftover}"


async def test_unicorn_binance_websocket_api_through_the_hub(make_hub, sim):
    pytest.importorskip("unicorn_binance_websocket_api")
    hub = await make_hub()
    # ~5 s of this is UBWA's own start-up: create_stream sends its SUBSCRIBE before the
    # socket exists, and send_with_stream() waits its 5 s timeout before queueing it.
    trades, subscriptions = await asyncio.to_thread(_ubwa_collect, hub.url, 40, 15.0)
    assert subscriptions == 2
    assert len(trades) >= 40, "UBWA received too few trades through the hub"
    symbols = {t["s"] for t in trades}
    assert symbols == {"BTCUSDT", "ETHUSDT"}
    for symbol in symbols:
        assert _contiguous([t["t"] for t in trades if t["s"] == symbol])
    # its connection is gone after stop_manager, and it never hit the rate limit
    assert 'tickhub_disconnects_total{code="RATE_LIMITED"} 0.0' in hub.metrics.render()[0].decode()
    await wait_for(lambda: not hub.sessions, 5)


# -- picows ----------------------------------------------------------------------------------


class _TradeCounter(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[int] = []
        self.replies: list[dict[str, Any]] = []

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            m = orjson.loads(frame.get_payload_as_bytes())
            if "id" in m:
                self.replies.append(m)
            elif m.get("e") == "trade":
                self.ids.append(m["t"])
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


async def test_picows_client_with_subscribe_and_auto_ping(make_hub):
    # Pongs count toward the 5 messages/s limit (as on Binance): 0.3 s pings leave room
    # for the SUBSCRIBE in the same second.
    hub = await make_hub(ping_interval=0.3, pong_timeout=1.0)
    transport, client = await picows.ws_connect(
        _TradeCounter, f"{hub.url}/ws", enable_auto_ping=True, auto_ping_idle_timeout=0.5,
        auto_ping_reply_timeout=0.5,
    )
    try:
        transport.send(WSMsgType.TEXT, b'{"method":"SUBSCRIBE","params":["bnbusdt@trade"],"id":1}')
        await wait_for(lambda: len(client.ids) >= 60, 5)  # > 1 s: pings both ways, no close
        assert client.replies[0] == {"result": None, "id": 1}
        assert _contiguous(client.ids)
        assert not transport.is_disconnected
    finally:
        transport.disconnect()
