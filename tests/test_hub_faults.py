"""Upstream faults seen through the hub: clients stay connected, data resumes, and a
planned rotation (serverShutdown, max age) loses and repeats nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import orjson
import pytest
import websockets

from conftest import wait_for


@pytest.fixture
async def pinging_sim() -> AsyncIterator[Any]:
    """An exchange that pings every 0.5 s, so a 1 s stall timeout is above its ping interval."""
    from tickhub.sim import SimConfig, Simulator

    s = Simulator(SimConfig(symbols=("btcusdt", "ethusdt"), rate=50.0, seed=11, ping_interval=0.5))
    await s.start(host="127.0.0.1", port=0)
    try:
        yield s
    finally:
        await s.stop()


class TradeReader:
    """Reads one raw trade stream; keeps trade ids and the streamGap notices seen."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids: list[int] = []
        self.gaps: list[dict[str, Any]] = []

    async def read_until(self, done: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                m = orjson.loads(await self.ws.recv())
                if m.get("e") == "trade":
                    self.ids.append(m["t"])
                elif m.get("e") == "streamGap":
                    self.gaps.append(m)
                else:
                    raise AssertionError(f"unexpected message {m}")

    async def read_n(self, n: int, timeout: float = 3.0) -> None:
        target = len(self.ids) + n
        await self.read_until(lambda: len(self.ids) >= target, timeout)

    def increasing(self) -> bool:
        return all(a < b for a, b in zip(self.ids, self.ids[1:]))

    def contiguous(self) -> bool:
        return self.ids == list(range(self.ids[0], self.ids[0] + len(self.ids)))


async def _connected(hub: Any) -> tuple[Any, TradeReader]:
    ws = await websockets.connect(f"{hub.url}/ws/btcusdt@trade")
    reader = TradeReader(ws)
    await reader.read_n(5)
    return ws, reader


def _upstream(hub: Any) -> Any:
    return hub.upstreams["binance"]


async def test_dropped_upstream_reconnects_and_clients_stay_connected(make_hub, sim):
    hub = await make_hub(upstream_backoff_initial=0.1, upstream_backoff_max=0.5)
    ws, reader = await _connected(hub)
    async with ws:
        before = reader.ids[-1]
        assert sim.drop_connections() == 1
        await reader.read_until(lambda: bool(reader.ids) and reader.ids[-1] > before + 20, 5)
        assert reader.increasing()  # no duplicate, nothing out of order
        assert [g["stream"] for g in reader.gaps] == ["btcusdt@trade"]  # the client is told
        assert sim.connection_count == 1 and sim.subscriptions() == {"btcusdt@trade": 1}
        assert len(hub.sessions) == 1


async def test_refused_handshakes_during_reconnect_then_recovery(make_hub, sim):
    hub = await make_hub(upstream_backoff_initial=0.1, upstream_backoff_max=0.4)
    ws, reader = await _connected(hub)
    async with ws:
        handshakes = sim.handshakes
        sim.refuse_handshakes(503, count=3)
        sim.drop_connections()
        before = reader.ids[-1]
        await reader.read_until(lambda: reader.ids[-1] > before + 10, 6)
        assert sim.handshakes - handshakes >= 4  # three refused, then the one that worked
        assert reader.increasing() and reader.gaps
        assert sim.connection_count == 1


async def test_stalled_upstream_is_replaced(make_hub, pinging_sim):
    hub = await make_hub(binance_ws_url=pinging_sim.url, upstream_stall_timeout=1.0,
                         upstream_backoff_initial=0.1, upstream_backoff_max=0.5)
    ws, reader = await _connected(hub)
    async with ws:
        before = reader.ids[-1]
        stalled_at = time.monotonic()
        pinging_sim.stall(True)  # the open connection goes silent; new ones are normal
        await reader.read_until(lambda: reader.ids[-1] > before + 10, 6)
        assert time.monotonic() - stalled_at > 0.9  # not before the stall timeout
        assert reader.increasing() and reader.gaps
        assert _upstream(hub).snapshot()["counters"]["stalls"] >= 1


async def test_server_shutdown_rotation_keeps_trade_ids_contiguous(make_hub, pinging_sim):
    hub = await make_hub(binance_ws_url=pinging_sim.url)
    ws, reader = await _connected(hub)
    async with ws:
        assert await pinging_sim.send_server_shutdown() == 1
        await wait_for(lambda: pinging_sim.connection_count == 2, 3)  # make before break
        await reader.read_until(lambda: pinging_sim.connection_count == 1, 8)  # then break
        await reader.read_n(20)
        assert reader.contiguous(), "a rotation must neither lose nor repeat a trade"
        assert reader.gaps == []
        assert _rotations(hub) == 1


async def test_rotation_by_age_keeps_trade_ids_contiguous(make_hub, pinging_sim):
    hub = await make_hub(binance_ws_url=pinging_sim.url, upstream_max_age=1.5)
    ws, reader = await _connected(hub)
    async with ws:
        # read all along: the trades keep coming while the connections are replaced
        await reader.read_until(lambda: _rotations(hub) >= 2, 8)
        await reader.read_n(20)
        assert reader.contiguous(), "a rotation must neither lose nor repeat a trade"
        assert reader.gaps == []
        assert pinging_sim.subscriptions() == {"btcusdt@trade": 1}


async def test_zero_max_age_and_stall_timeout_mean_never(make_hub, sim):
    """Config documents 0 as "never rotate" / "no stall watchdog": the hub must start."""
    hub = await make_hub(upstream_max_age=0, upstream_stall_timeout=0)
    ws, reader = await _connected(hub)
    async with ws:
        await reader.read_n(10)
        assert reader.contiguous()


def _rotations(hub: Any) -> float:
    for line in hub.metrics.render()[0].decode().splitlines():
        if line.startswith('tickhub_upstream_rotations_total{exchange="binance"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
