"""Shared fixtures: a real exchange simulator and a real hub on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable

import pytest
import uvloop

from tickhub.config import Config


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every async test on uvloop, the loop the hub runs on in production."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    from tickhub.sim import SimConfig, Simulator

    s = Simulator(SimConfig(symbols=("btcusdt", "ethusdt", "bnbusdt"), rate=50.0, seed=7))
    await s.start(host="127.0.0.1", port=0)
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def make_hub(sim: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start a Gateway wired to the simulator; keyword arguments override Config fields."""
    from tickhub.server import Gateway

    started: list[Any] = []

    async def factory(**overrides: Any) -> Any:
        fields = dict(
            listen_url="ws://127.0.0.1:0",
            binance_ws_url=sim.url,
            upstream_linger=0.2,
            drain_seconds=0.0,
        )
        fields.update(overrides)
        gw = Gateway(Config(**fields))
        await gw.start()
        gw.url = f"ws://127.0.0.1:{gw.port}"
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        with contextlib.suppress(Exception):
            await gw.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
