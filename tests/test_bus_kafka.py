"""The Kafka event log against a real Kafka-protocol broker (Tansu) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import pytest
import websockets
from aiokafka import AIOKafkaConsumer

from conftest import wait_for
from servers import TansuBroker, free_port, running_kafka


@pytest.fixture
async def kafka() -> AsyncIterator[TansuBroker]:
    async with running_kafka(partitions=1) as broker:
        yield broker


async def consume(bootstrap: str, n: int, timeout: float = 10.0) -> list[Any]:
    consumer = AIOKafkaConsumer("tickhub.binance", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend(records)
    finally:
        await consumer.stop()
    return out


async def test_upstream_events_land_in_kafka_with_key_value_and_receive_time(make_hub, kafka):
    started_ns = time.time_ns()
    hub = await make_hub(kafka_broker_url=kafka.bootstrap)
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade") as ws:
        received = set()
        async with asyncio.timeout(5.0):
            while len(received) < 20:
                received.add((await ws.recv()).encode())
        records = await consume(kafka.bootstrap, 20)
    assert hub.bus.status()["kind"] == "memory+kafka"
    assert {r.key for r in records} == {b"btcusdt@trade"}
    values = [r.value for r in records]
    assert set(values) & received, "the log holds the exchange's payload bytes unchanged"
    for r in records:
        headers = dict(r.headers)
        received_ns = int(headers["received_ns"])
        assert started_ns <= received_ns <= time.time_ns()
    trade_ids = [int(v.split(b'"t":')[1].split(b",")[0]) for v in values]
    assert trade_ids == list(range(trade_ids[0], trade_ids[0] + len(trade_ids)))  # in order, once


async def test_broker_down_never_slows_the_fan_out(make_hub, sim):
    # Nothing listens on this port: the producer cannot connect, its buffer fills.
    hub = await make_hub(kafka_broker_url=f"127.0.0.1:{free_port()}", kafka_max_buffered=20)
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade") as ws:
        await ws.recv()
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 1.0:
            await ws.recv()
            n += 1
    status = hub.bus.status()["kafka"]
    assert not status["connected"]
    assert status["buffered"] <= 20 and status["dropped"] > 0
    assert n >= 0.7 * sim.config.rate, (n, sim.config.rate)  # the fan-out kept the exchange's pace
    await wait_for(lambda: hub.bus.status()["kafka"]["dropped"] > status["dropped"], timeout=3.0,
                   what="drops keep being counted")
