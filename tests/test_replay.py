"""Replay of the last N seconds from a real Kafka log (Tansu), then live without a seam."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import orjson
import pytest
import websockets

from servers import TansuBroker, running_kafka


@pytest.fixture
async def kafka() -> AsyncIterator[TansuBroker]:
    async with running_kafka(partitions=2) as broker:
        yield broker


async def recv_json(ws: Any, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(orjson.loads(await ws.recv()))
    return out


@pytest.mark.parametrize("combined", [False, True])
async def test_replay_then_live_without_gap_or_duplicate(make_hub, kafka, combined):
    hub = await make_hub(kafka_broker_url=kafka.bootstrap)
    # max_queue=None: not read to the end, so its close is not stuck behind unread frames.
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade", max_queue=None) as first:
        early = await recv_json(first, 40)  # ~0.8 s of trades, logged to Kafka meanwhile
        await asyncio.sleep(0.5)
        url = (f"{hub.url}/stream?streams=btcusdt@trade&replay=30" if combined
               else f"{hub.url}/ws/btcusdt@trade?replay=30")
        async with websockets.connect(url) as late:
            got = await recv_json(late, 120)
    if combined:
        assert {m["stream"] for m in got} == {"btcusdt@trade"}
        got = [m["data"] for m in got]
    trades = [m["t"] for m in got]
    # The history from before this client connected, then live: consecutive ids, once each.
    assert trades[0] <= early[0]["t"], (trades[0], early[0]["t"])
    assert trades == list(range(trades[0], trades[0] + len(trades)))


async def test_replay_is_bounded_by_max_messages(make_hub, kafka):
    hub = await make_hub(kafka_broker_url=kafka.bootstrap, replay_max_messages=5)
    async with websockets.connect(f"{hub.url}/ws/ethusdt@trade", max_queue=None) as first:
        early = await recv_json(first, 30)
        async with websockets.connect(f"{hub.url}/ws/ethusdt@trade?replay=30") as late:
            got = await recv_json(late, 30)
    trades = [m["t"] for m in got]
    assert trades[0] > early[0]["t"]  # only the newest 5 of the history
    assert trades == list(range(trades[0], trades[0] + len(trades)))


def _http_status(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_replay_refused_with_a_clear_reason(make_hub, kafka):
    plain = await make_hub()
    status, body = await asyncio.to_thread(_http_status, plain.port, "/ws/btcusdt@trade?replay=10")
    assert status == 400 and b"KAFKA_BROKER_URL" in body
    logged = await make_hub(kafka_broker_url=kafka.bootstrap, replay_max_seconds=60)
    for query, why in (("replay=61", b"over the limit of 60"), ("replay=abc", b"number of seconds"),
                       ("replay=0", b"> 0"), ("replay=-5", b"> 0")):
        status, body = await asyncio.to_thread(_http_status, logged.port, f"/ws/btcusdt@trade?{query}")
        assert status == 400 and why in body, (query, status, body)
    off = await make_hub(kafka_broker_url=kafka.bootstrap, replay_max_seconds=0)
    status, body = await asyncio.to_thread(_http_status, off.port, "/ws/btcusdt@trade?replay=5")
    assert status == 400 and b"turned off" in body


async def test_replays_over_the_cap_are_refused_with_503_until_one_finishes(make_hub, kafka):
    hub = await make_hub(kafka_broker_url=kafka.bootstrap, max_replays=2)
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade", max_queue=None) as first:
        await recv_json(first, 20)  # the log holds some history
        # Two streams in one URL are two replays: the cap is full while they run.
        async with websockets.connect(
                f"{hub.url}/stream?streams=btcusdt@trade/ethusdt@trade&replay=30", max_queue=None) as both:
            assert hub.replays_running == 2
            status, body = await asyncio.to_thread(_http_status, hub.port, "/ws/bnbusdt@trade?replay=5")
            assert status == 503 and b"too many replays" in body, (status, body)
            # live-only clients are not affected by the cap
            async with websockets.connect(f"{hub.url}/ws/bnbusdt@trade") as live:
                assert (await recv_json(live, 1))[0]["s"] == "BNBUSDT"
            await recv_json(both, 40)  # history, then live: both replays joined the stream
    async with asyncio.timeout(15):
        while hub.replays_running:
            await asyncio.sleep(0.05)
    async with websockets.connect(f"{hub.url}/ws/bnbusdt@trade?replay=5") as again:
        assert (await recv_json(again, 1))[0]["s"] == "BNBUSDT"
