"""Binance upstream adapter: unit tests of its pacing and de-dup logic, e2e against the simulator.

The e2e tests run the real Binance-compatible simulator on 127.0.0.1 (port 0) and the real
picows client inside :class:`BinanceUpstream`; timings are shortened through
:class:`UpstreamSettings` so every test takes a few seconds at most.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import uvloop
import websockets

from picows import WSMsgType
from picows.picows import _make_test_ws_frame

from tickhub.upstream import BinanceUpstream, UpstreamSettings
from tickhub.upstream.backoff import Backoff, SlidingWindowLimiter

# --------------------------------------------------------------------------------------
# helpers


class Recorder:
    """Collects everything the adapter reports, as a hub would see it."""

    def __init__(self) -> None:
        self.data: dict[str, list[bytes]] = defaultdict(list)
        self.errors: list[tuple[str, int, str]] = []
        self.statuses: list[tuple[str, dict[str, Any]]] = []

    def on_data(self, stream: bytes, payload: bytes) -> None:
        self.data[stream.decode()].append(payload)

    def on_stream_error(self, stream: str, code: int, msg: str) -> None:
        self.errors.append((stream, code, msg))

    def on_status(self, event: str, info: dict[str, Any]) -> None:
        self.statuses.append((event, info))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [info for event, info in self.statuses if event == name]

    def ids(self, stream: str, field: str = "t") -> list[int]:
        return [orjson.loads(p)[field] for p in self.data[stream]]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def assert_contiguous(ids: list[int], stream: str) -> None:
    assert ids, f"no events on {stream}"
    expected = list(range(ids[0], ids[0] + len(ids)))
    if ids != expected:
        dups = len(ids) - len(set(ids))
        missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
        raise AssertionError(f"{stream}: {dups} duplicates, missing {missing[:10]}")


def fast(url: str, **overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = dict(
        base_url=url, linger=0.3, stall_timeout=1.0, backoff_initial=0.05, backoff_max=0.4,
        connect_timeout=2.0, subscribe_timeout=2.0, rotation_timeout=1.5, batch_window=0.01,
    )
    values.update(overrides)
    return UpstreamSettings(**values)


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Any]]:
    from tickhub.sim import SimConfig, Simulator

    started: list[Any] = []

    async def factory(**config: Any) -> Any:
        values: dict[str, Any] = dict(symbols=("btcusdt", "ethusdt", "bnbusdt"), rate=20.0, seed=1)
        values.update(config)
        sim = Simulator(SimConfig(**values))
        await sim.start(host="127.0.0.1", port=0)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        await sim.stop()


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[..., tuple[BinanceUpstream, Recorder]]]:
    made: list[BinanceUpstream] = []

    def factory(settings: UpstreamSettings) -> tuple[BinanceUpstream, Recorder]:
        rec = Recorder()
        up = BinanceUpstream(settings, on_data=rec.on_data, on_stream_error=rec.on_stream_error,
                             on_status=rec.on_status)
        made.append(up)
        return up, rec

    yield factory
    for up in made:
        await up.stop()


# --------------------------------------------------------------------------------------
# unit: pacing


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    top = Backoff(0.5, 30.0, rng=lambda: 1.0)
    assert [top.next_delay() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    top.reset()
    assert top.next_delay() == 0.5
    bottom = Backoff(0.5, 30.0, rng=lambda: 0.0)
    assert bottom.next_delay() == 0.0
    # "too many requests" waits at least half the cap, and honours a longer Retry-After
    assert Backoff(0.5, 30.0, rng=lambda: 0.0).throttled() == 15.0
    assert Backoff(0.5, 30.0, rng=lambda: 0.0).throttled(retry_after=120.0) == 120.0


def test_sliding_window_limiter_never_exceeds_limit() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(4, 1.0, clock=lambda: now[0])
    sent: list[float] = []
    while len(sent) < 20:
        wait = limiter.delay()
        if wait > 0:
            now[0] += wait
            continue
        limiter.record()
        sent.append(now[0])
        now[0] += 0.01
    for i, t in enumerate(sent):
        assert sum(1 for u in sent[i:] if u < t + 1.0) <= 4
    assert sent[-1] < 5.0  # and it is not slower than it has to be


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="base_url"):
        UpstreamSettings(base_url="http://example.com")
    with pytest.raises(ValueError, match="control_per_second"):
        UpstreamSettings(control_per_second=1)
    with pytest.raises(ValueError, match="linger"):
        UpstreamSettings(linger=-1.0)
    with pytest.raises(ValueError, match="backoff_max"):
        UpstreamSettings(backoff_initial=2.0, backoff_max=1.0)


async def test_empty_stream_name_is_refused_and_unknown_release_ignored() -> None:
    up = BinanceUpstream(UpstreamSettings(), on_data=lambda s, p: None)
    with pytest.raises(ValueError):
        up.acquire("")
    up.release("never@acquired")
    assert up.refcount("never@acquired") == 0


# --------------------------------------------------------------------------------------
# unit: the rotation merge, driven frame by frame (no sockets)

_STREAM = "btcusdt@trade"


def _trade(t: int) -> bytes:
    return (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":%d,'
            b'"p":"1.00","q":"1.0","T":1,"m":true,"M":true}}' % t)


async def test_rotation_merge_delivers_each_event_once_whatever_the_interleaving() -> None:
    rng = random.Random(7)
    for trial in range(300):
        delivered: list[int] = []
        up = BinanceUpstream(UpstreamSettings(), lambda s, p: delivered.append(orjson.loads(p)["t"]))
        up.acquire(_STREAM)
        old = up._connections[0]
        old.acked.add(_STREAM)
        first_common = rng.randint(1, 15)
        for t in range(1, first_common):  # delivered before the rotation starts
            old.on_message(_trade(t))
        up._rotate(old, "test")
        new = up._connections[-1]
        assert new is not old
        new.acked.add(_STREAM)
        # both have everything from first_common on; old has it all, new starts later
        old_queue = list(range(first_common, 40))
        new_queue = list(range(first_common + rng.randint(0, 5), 40))
        while old_queue or new_queue:
            take_old = old_queue and (not new_queue or rng.random() < 0.5)
            queue, conn = (old_queue, old) if take_old else (new_queue, new)
            for _ in range(rng.randint(1, 4)):  # a read delivers a few frames at once
                if queue:
                    conn.on_message(_trade(queue.pop(0)))
        await asyncio.sleep(0)
        assert delivered == list(range(1, 40)), f"trial {trial}: {delivered}"
        assert up.rotations == 1, f"trial {trial}: rotation did not finish"
        assert up._states[_STREAM.encode()].source is new


async def test_raw_server_shutdown_starts_a_rotation() -> None:
    rec = Recorder()
    up = BinanceUpstream(UpstreamSettings(), rec.on_data, rec.on_stream_error, rec.on_status)
    up.acquire(_STREAM)
    conn = up._connections[0]
    conn.acked.add(_STREAM)
    conn.on_message(b'{"e":"serverShutdown","E":1700000000000}')
    assert [(e["old"], e["new"], e["reason"]) for e in rec.events("rotating")] == [(1, 2, "serverShutdown")]
    conn.on_message(b'{"e":"serverShutdown","E":1700000000001}')  # announced twice: one rotation
    assert len(rec.events("rotating")) == 1


def test_fragmented_message_is_reassembled() -> None:
    delivered: list[bytes] = []
    up = BinanceUpstream(UpstreamSettings(), lambda s, p: delivered.append(p))
    up.acquire(_STREAM)
    conn = up._connections[0]
    whole = _trade(5)
    conn.on_ws_frame(None, _make_test_ws_frame(WSMsgType.TEXT, whole[:30], False, False))
    conn.on_ws_frame(None, _make_test_ws_frame(WSMsgType.CONTINUATION, whole[30:60], False, False))
    assert delivered == []
    conn.on_ws_frame(None, _make_test_ws_frame(WSMsgType.CONTINUATION, whole[60:], True, False))
    assert [orjson.loads(p)["t"] for p in delivered] == [5]


async def test_events_without_id_come_from_old_before_switch_and_new_after() -> None:
    delivered: list[bytes] = []
    up = BinanceUpstream(UpstreamSettings(), lambda s, p: delivered.append(p))
    up.acquire("btcusdt@odd")
    old = up._connections[0]
    old.acked.add("btcusdt@odd")

    def frame(tag: bytes) -> bytes:
        return b'{"stream":"btcusdt@odd","data":{"tag":"' + tag + b'"}}'

    old.on_message(frame(b"o1"))
    up._rotate(old, "test")
    new = up._connections[-1]
    old.on_message(frame(b"o2"))
    new.on_message(frame(b"n1"))  # first event of the successor: the stream switches
    old.on_message(frame(b"o3"))  # old is no longer the source
    new.on_message(frame(b"n2"))
    assert [orjson.loads(p)["tag"] for p in delivered] == ["o1", "o2", "n1", "n2"]


# --------------------------------------------------------------------------------------
# e2e against the simulator


async def test_delivers_exact_bytes_with_one_upstream_subscription(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    up, rec = make_upstream(fast(sim.url))
    streams = ["btcusdt@trade", "ethusdt@trade"]
    for s in streams:
        up.acquire(s)
    for _ in range(99):
        up.acquire("btcusdt@trade")
    await up.start()
    await wait_until(lambda: all(len(rec.data[s]) >= 5 for s in streams), what="data on both streams")
    assert sim.subscriptions() == {"btcusdt@trade": 1, "ethusdt@trade": 1}
    assert sim.connection_count == 1
    assert up.refcount("btcusdt@trade") == 100

    # an independent client of the exchange sees the same bytes the adapter hands over
    direct: dict[str, list[bytes]] = defaultdict(list)
    async with websockets.connect(sim.url + "/stream?streams=" + "/".join(streams)) as ws:
        while min(len(direct[s]) for s in streams) < 10:
            message = await asyncio.wait_for(ws.recv(), 5)
            raw = message.encode() if isinstance(message, str) else message
            for s in streams:
                prefix = b'{"stream":"' + s.encode() + b'","data":'
                if raw.startswith(prefix):
                    assert raw.endswith(b"}")
                    direct[s].append(raw[len(prefix):-1])
    for s in streams:
        seen = {orjson.loads(p)["t"]: p for p in direct[s]}
        await wait_until(lambda: max(rec.ids(s)) >= max(seen), what=f"adapter catching up on {s}")
        ours = {orjson.loads(p)["t"]: p for p in rec.data[s]}
        common = sorted(set(seen) & set(ours))
        assert len(common) >= 10
        assert [ours[t] for t in common] == [seen[t] for t in common]
        assert_contiguous(rec.ids(s), s)
    snap = up.snapshot()
    assert snap["counters"]["messages"] >= 10
    assert [c["streams"] for c in snap["connections"]] == [sorted(streams)]
    orjson.dumps(snap)  # the admin view is plain JSON


async def test_linger_unsubscribes_late_and_reacquire_cancels(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    up, rec = make_upstream(fast(sim.url, linger=0.4))
    await up.start()
    for _ in range(3):
        up.acquire("btcusdt@trade")
    await wait_until(lambda: sim.subscriptions().get("btcusdt@trade") == 1, what="subscribed")
    for _ in range(3):
        up.release("btcusdt@trade")
    await asyncio.sleep(0.2)
    up.acquire("btcusdt@trade")  # within the linger: no UNSUBSCRIBE at all
    await asyncio.sleep(0.5)
    assert sim.subscriptions().get("btcusdt@trade") == 1
    before = len(rec.data["btcusdt@trade"])
    await wait_until(lambda: len(rec.data["btcusdt@trade"]) > before + 3, what="data still flowing")

    up.release("btcusdt@trade")
    await asyncio.sleep(0.2)
    assert sim.subscriptions().get("btcusdt@trade") == 1, "unsubscribed before the linger ended"
    await wait_until(lambda: not sim.subscriptions().get("btcusdt@trade"), timeout=2.0,
                     what="unsubscribe after the linger")
    # the empty connection closes after a further linger
    await wait_until(lambda: sim.connection_count == 0, timeout=2.0, what="empty connection closed")


async def test_rejected_stream_is_reported_and_others_keep_flowing(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    up, rec = make_upstream(fast(sim.url))
    await up.start()
    for s in ("btcusdt@trade", "nosuchcoin@trade", "ethusdt@trade", "bnbusdt@trade"):
        up.acquire(s)
    await wait_until(lambda: rec.errors, what="stream error")
    await wait_until(lambda: all(len(rec.data[s]) >= 3 for s in ("btcusdt@trade", "ethusdt@trade", "bnbusdt@trade")),
                     what="valid streams flowing")
    assert rec.errors == [("nosuchcoin@trade", 2, "Invalid request: invalid stream")]
    assert up.refcount("nosuchcoin@trade") == 0
    up.release("nosuchcoin@trade")  # the hub's later release is harmless
    assert set(sim.subscriptions()) == {"btcusdt@trade", "ethusdt@trade", "bnbusdt@trade"}
    assert up.snapshot()["counters"]["streams_rejected"] == 1


async def test_streams_are_sharded_over_connections(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    up, rec = make_upstream(fast(sim.url, streams_per_connection=2))
    streams = ["btcusdt@trade", "ethusdt@trade", "bnbusdt@trade", "btcusdt@aggTrade", "ethusdt@aggTrade"]
    for s in streams:
        up.acquire(s)
    await up.start()
    await wait_until(lambda: all(rec.data[s] for s in streams), what="data on all streams")
    assert sim.connection_count == 3
    assert sim.subscriptions() == {s: 1 for s in streams}
    shares = [c["streams"] for c in up.snapshot()["connections"]]
    assert sorted(len(x) for x in shares) == [1, 2, 2]
    assert sorted(s for share in shares for s in share) == sorted(streams)


def _fifty_streams() -> list[str]:
    from tickhub.sim.market import KLINE_INTERVALS

    names = [f"{sym}@kline_{iv}" for sym in ("btcusdt", "ethusdt", "bnbusdt") for iv in KLINE_INTERVALS]
    return (names + ["btcusdt@trade", "ethusdt@trade"])[:50]


async def test_fifty_acquires_in_one_turn_are_one_message(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    up, rec = make_upstream(fast(sim.url))
    await up.start()
    await asyncio.sleep(0)
    streams = _fifty_streams()
    for s in streams:
        up.acquire(s)
    await wait_until(lambda: len(sim.subscriptions()) == 50, what="50 subscriptions")
    assert sim.control_messages <= 2
    assert up.snapshot()["counters"]["control_messages"] <= 2


async def test_control_messages_stay_under_the_rate_limit(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    # 5 params per message: 50 streams need 10 SUBSCRIBEs; at most 4 (5 minus a pong slot) per second
    up, rec = make_upstream(fast(sim.url, params_per_message=5))
    await up.start()
    for s in _fifty_streams():
        up.acquire(s)
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + 6
    while len(sim.subscriptions()) < 50 and time.monotonic() < deadline:
        samples.append((time.monotonic(), sim.control_messages))
        await asyncio.sleep(0.02)
    samples.append((time.monotonic(), sim.control_messages))
    assert len(sim.subscriptions()) == 50
    assert samples[-1][1] == 10
    for i, (t0, c0) in enumerate(samples):
        for t1, c1 in samples[i:]:
            if t1 - t0 <= 1.0:
                assert c1 - c0 <= 4, f"{c1 - c0} control messages within {t1 - t0:.2f}s"
    assert sim.handshakes == 1  # never cut for flooding


async def test_dropped_connection_reconnects_resubscribes_and_reports_gap(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    up, rec = make_upstream(fast(sim.url))
    streams = ["btcusdt@trade", "ethusdt@trade"]
    for s in streams:
        up.acquire(s)
    await up.start()
    await wait_until(lambda: all(len(rec.data[s]) >= 3 for s in streams), what="data")
    counts = {s: len(rec.data[s]) for s in streams}
    sim.drop_connections()
    await wait_until(lambda: rec.events("gap"), what="gap report")
    assert rec.events("disconnected")
    assert [e["reconnect"] for e in rec.events("connected")] == [False, True]
    assert sorted(rec.events("gap")[0]["streams"]) == streams
    await wait_until(lambda: all(len(rec.data[s]) > counts[s] + 3 for s in streams), what="data resumes")
    assert sim.subscriptions() == {s: 1 for s in streams}
    assert up.snapshot()["counters"]["reconnects"] == 1


async def test_refused_handshakes_back_off_then_connect(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    sim.refuse_handshakes(status=503, count=3)
    up, rec = make_upstream(fast(sim.url))
    up.acquire("btcusdt@trade")
    await up.start()
    await wait_until(lambda: len(rec.data["btcusdt@trade"]) >= 3, what="data after refusals")
    failed = rec.events("handshake_failed")
    assert [f["status"] for f in failed] == [503, 503, 503]
    assert all(0 <= f["retry_in"] <= 0.4 for f in failed)
    assert sim.handshakes >= 4


async def test_connect_budget_spreads_attempts(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    sim.refuse_handshakes(status=503, count=3)
    up, rec = make_upstream(fast(sim.url, connect_budget=2, connect_window=1.0,
                                 backoff_initial=0.01, backoff_max=0.02))
    up.acquire("btcusdt@trade")
    started = time.monotonic()
    await up.start()
    await wait_until(lambda: rec.events("connected"), what="connected within the budget")
    # attempts 1 and 2 go at once, 3 and 4 only after the first window has passed
    assert time.monotonic() - started >= 0.95
    assert sim.handshakes == 4


async def test_http_429_backs_off_longer(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    sim.refuse_handshakes(status=429, count=1)
    up, rec = make_upstream(fast(sim.url, backoff_max=0.6))
    up.acquire("btcusdt@trade")
    started = time.monotonic()
    await up.start()
    await wait_until(lambda: rec.data["btcusdt@trade"], what="data after 429")
    (failed,) = rec.events("handshake_failed")
    assert failed["status"] == 429 and failed["retry_in"] >= 0.3
    assert time.monotonic() - started >= 0.3


async def test_stalled_connection_is_replaced(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim()
    up, rec = make_upstream(fast(sim.url, stall_timeout=0.5))
    up.acquire("btcusdt@trade")
    await up.start()
    await wait_until(lambda: len(rec.data["btcusdt@trade"]) >= 3, what="data")
    sim.stall(True)
    await wait_until(lambda: rec.events("stalled"), timeout=3.0, what="stall detected")
    sim.stall(False)
    count = len(rec.data["btcusdt@trade"])
    await wait_until(lambda: len(rec.data["btcusdt@trade"]) > count + 3, what="data after the stall")
    assert [e["reconnect"] for e in rec.events("connected")][-1] is True
    assert rec.events("gap")


async def _assert_rotation_is_seamless(sim: Any, up: BinanceUpstream, rec: Recorder,
                                       streams: list[str]) -> None:
    await wait_until(lambda: up.rotations >= 1, timeout=6.0, what="rotation")
    counts = {s: len(rec.data[s]) for s in streams}
    await wait_until(lambda: all(len(rec.data[s]) > counts[s] + 5 for s in streams), what="data after rotation")
    for s in streams:
        assert_contiguous(rec.ids(s), s)
    assert not rec.events("gap")
    assert not rec.events("disconnected")
    (rotated, *_) = rec.events("rotated")
    assert rotated["gap"] == 0
    assert up.snapshot()["counters"]["duplicates_dropped"] > 0  # the overlap really happened
    await wait_until(lambda: sim.connection_count == 1, what="old connection closed")
    assert sim.subscriptions() == {s: 1 for s in streams}


async def test_server_shutdown_rotates_without_gap_or_duplicate(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim(rate=200.0)
    up, rec = make_upstream(fast(sim.url))
    streams = ["btcusdt@trade", "ethusdt@trade"]
    for s in streams:
        up.acquire(s)
    await up.start()
    await wait_until(lambda: all(len(rec.data[s]) >= 5 for s in streams), what="data")
    await sim.send_server_shutdown()
    await _assert_rotation_is_seamless(sim, up, rec, streams)
    assert rec.events("rotating")[0]["reason"] == "serverShutdown"


async def test_max_age_rotates_without_gap_or_duplicate(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim(rate=200.0)
    up, rec = make_upstream(fast(sim.url, max_age=1.0))
    streams = ["btcusdt@trade", "ethusdt@aggTrade"]
    for s in streams:
        up.acquire(s)
    await up.start()
    await wait_until(lambda: up.rotations >= 1, timeout=4.0, what="age rotation")
    counts = {s: len(rec.data[s]) for s in streams}
    await wait_until(lambda: all(len(rec.data[s]) > counts[s] + 5 for s in streams), what="data after rotation")
    assert_contiguous(rec.ids("btcusdt@trade"), "btcusdt@trade")
    assert_contiguous(rec.ids("ethusdt@aggTrade", "a"), "ethusdt@aggTrade")
    assert rec.events("rotating")[0]["reason"] == "max_age"
    assert not rec.events("gap") and not rec.events("disconnected")
    assert up.snapshot()["counters"]["duplicates_dropped"] > 0  # the overlap really happened


def test_runs_on_uvloop_through_a_reconnect() -> None:
    """Production runs on uvloop; the other tests use pytest-asyncio's default loop."""
    from tickhub.sim import SimConfig, Simulator

    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        sim = Simulator(SimConfig(symbols=("btcusdt",), rate=50.0, seed=3))
        await sim.start(host="127.0.0.1", port=0)
        rec = Recorder()
        up = BinanceUpstream(fast(sim.url), rec.on_data, rec.on_stream_error, rec.on_status)
        try:
            up.acquire("btcusdt@trade")
            await up.start()
            await wait_until(lambda: len(rec.data["btcusdt@trade"]) >= 3, what="data")
            sim.drop_connections()
            count = len(rec.data["btcusdt@trade"])
            await wait_until(lambda: len(rec.data["btcusdt@trade"]) > count + 3, what="data after drop")
            assert rec.events("gap")
        finally:
            await up.stop()
            await sim.stop()

    uvloop.run(scenario())


async def test_old_connection_lost_mid_rotation_reports_gap(make_sim: Any, make_upstream: Any) -> None:
    sim = await make_sim(rate=200.0)
    up, rec = make_upstream(fast(sim.url))
    up.acquire("btcusdt@trade")
    await up.start()
    await wait_until(lambda: len(rec.data["btcusdt@trade"]) >= 5, what="data")
    await sim.send_server_shutdown(close_after=0.0)  # closed before the successor can overlap
    await wait_until(lambda: up.rotations == 1, what="rotation finished")
    (gap,) = rec.events("gap")
    assert gap["streams"] == ["btcusdt@trade"] and gap["reason"] == "old connection lost"
    count = len(rec.data["btcusdt@trade"])
    await wait_until(lambda: len(rec.data["btcusdt@trade"]) > count + 5, what="data from the successor")
    ids = rec.ids("btcusdt@trade")
    assert len(ids) == len(set(ids))  # a gap perhaps, but never a duplicate
    assert sim.connection_count == 1
