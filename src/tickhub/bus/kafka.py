"""The Kafka event log: every upstream event the instance owns, appended to Kafka.

Record layout (one record per upstream event):

==========  ==============================================================
topic       ``tickhub.<exchange>`` (``tickhub.binance``); created by the operator
key         the exchange's stream name (``btcusdt@trade``), so one stream stays in
            one partition, in order (Kafka's default murmur2 partitioner)
value       the payload bytes exactly as the exchange sent them
header      ``received_ns``: the hub's receive time, nanoseconds since the epoch,
            as ASCII decimal digits
header      ``instance`` (cluster buses only): the id of the instance that wrote it
header      ``gap`` (gap records only): why events of this stream may be missing
            before this record; the value of a gap record is empty and it carries
            no event
==========  ==============================================================

Gap records are written when the owner's upstream lost events (an exchange reconnect),
when a new owner took the stream over, and — once the buffer has room again — for every
stream whose events were dropped from a full buffer, so a reader of the log (the Kafka
bus, replay, analytics) can tell a hole from a quiet stream.

Only the upstream *owner* appends (with the Redis bus, one instance per stream; with the
memory bus, the single instance), so the log holds each event once however many
instances run.

The fan-out path never waits for Kafka: :meth:`KafkaLog.append` puts the event in a
bounded in-memory buffer (``kafka_max_buffered`` events) and returns; a background task
feeds the aiokafka producer. When the buffer is full (broker down or slow) new events are
left out of the log and counted (``dropped``); a failed producer is closed and started
again with backoff. The log is best effort: an event is in it unless ``dropped`` or
``failed`` counted it.

Reading the log back: :mod:`tickhub.bus.kafkabus` (Kafka as the bus between instances)
and :mod:`tickhub.bus.replay` (the last N seconds of a stream for one client).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from .. import _ext
from ..names import StreamRef, parse_stream

__all__ = ["KafkaLog", "LoggedBus", "HEADER_RECEIVED_NS", "HEADER_INSTANCE", "HEADER_GAP", "topic_for"]

log = logging.getLogger("tickhub.bus.kafka")

HEADER_RECEIVED_NS = "received_ns"
HEADER_INSTANCE = "instance"
HEADER_GAP = "gap"


def topic_for(exchange: str) -> str:
    """The log topic of one exchange: ``tickhub.<exchange>``."""
    return f"tickhub.{exchange}"


class KafkaLog:
    """Bounded, non-blocking appender of upstream events to Kafka (see the module)."""

    def __init__(self, bootstrap: str, max_buffered: int, *, backoff_max: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.max_buffered = max_buffered
        self.backoff_max = backoff_max
        #: (exchange, stream, payload, received_ns, gap reason or None)
        self._buf: deque[tuple[str, bytes, bytes, int, bytes | None]] = deque()
        #: Streams that lost events to a full buffer: a gap record is owed to each.
        self._dropped_streams: set[tuple[str, bytes]] = set()
        #: Written in the ``instance`` header when set (cluster buses).
        self.instance: bytes | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self.connected = False
        self.appended = 0
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.reconnects = 0

    def append(self, exchange: str, stream: bytes, payload: bytes) -> None:
        """Hot path: queue one event for the log, or count it dropped; never blocks."""
        if len(self._buf) >= self.max_buffered:
            self.dropped += 1
            self._dropped_streams.add((exchange, stream))
            return
        if self._dropped_streams:
            self._owe_gaps()
        self._buf.append((exchange, stream, payload, time.time_ns(), None))
        self.appended += 1
        if not self._wake.is_set():
            self._wake.set()

    def append_gap(self, exchange: str, stream: bytes, reason: str) -> None:
        """Queue a gap record for ``stream`` (see the module); never blocks."""
        if len(self._buf) >= self.max_buffered:
            self._dropped_streams.add((exchange, stream))
            return
        self._buf.append((exchange, stream, b"", time.time_ns(), reason.encode()[:1000]))
        if not self._wake.is_set():
            self._wake.set()

    def _owe_gaps(self) -> None:
        owed, self._dropped_streams = self._dropped_streams, set()
        for exchange, stream in sorted(owed):
            self.append_gap(exchange, stream, "kafka log dropped events")

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tickhub-kafka-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close()

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "buffered": len(self._buf),
            "appended": self.appended,
            "sent": self.sent,
            "dropped": self.dropped,
            "failed": self.failed,
            "reconnects": self.reconnects,
        }

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        self.connected = False
        if producer is not None:
            try:
                async with asyncio.timeout(2.0):
                    await producer.stop()
            except Exception:  # noqa: BLE001 -- a broken producer may fail to stop any way
                pass

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap, acks=1, linger_ms=5,
                        request_timeout_ms=5000, enable_idempotence=False)
                    self._producer = producer
                    async with asyncio.timeout(10.0):
                        await producer.start()
                    self.connected = True
                    if failures:
                        self.reconnects += 1
                        log.warning("kafka log: producer connected again to %s", self.bootstrap)
                    failures = 0
                await self._drain()
            except (KafkaError, OSError, TimeoutError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("kafka log: producer failed (%r); events are buffered up to %d, "
                                "then dropped; reconnecting", exc, self.max_buffered)
                await self._close()
                await asyncio.sleep(random.uniform(0.5, 1.0) * min(self.backoff_max, 0.2 * 2 ** min(failures, 10)))

    async def _drain(self) -> None:
        producer = self._producer
        assert producer is not None
        while True:
            if not self._buf:
                self._wake.clear()
                await self._wake.wait()
            while self._buf:
                exchange, stream, payload, received_ns, gap = self._buf[0]
                headers = [(HEADER_RECEIVED_NS, str(received_ns).encode())]
                if self.instance is not None:
                    headers.append((HEADER_INSTANCE, self.instance))
                if gap is not None:
                    headers.append((HEADER_GAP, gap))
                fut = await producer.send(topic_for(exchange), value=payload, key=stream,
                                          headers=headers)
                self._buf.popleft()
                fut.add_done_callback(self._delivered)

    def _delivered(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1
        else:
            self.sent += 1


class LoggedBus:
    """A bus whose upstream events are also appended to a :class:`KafkaLog`."""

    def __init__(self, inner: Any, event_log: KafkaLog) -> None:
        self.inner = inner
        self.event_log = event_log
        self.kind = f"{inner.kind}+kafka"
        #: stream (as the upstream names it) -> id of its last event: the replay seam
        self._last_ids: dict[tuple[str, bytes], int] = {}

    def subscribe(self, ref: StreamRef) -> None:
        self.inner.subscribe(ref)

    def unsubscribe(self, ref: StreamRef) -> None:
        self.inner.unsubscribe(ref)

    def on_upstream_data(self, exchange: str, stream: bytes, payload: bytes) -> None:
        self.inner.on_upstream_data(exchange, stream, payload)
        self.event_log.append(exchange, stream, payload)
        eid = _ext.envelope.event_id(payload)
        if eid >= 0:
            self._last_ids[(exchange, stream)] = eid

    def live_last_id(self, key: str) -> int:
        ref = parse_stream(key)
        return self._last_ids.get((ref.exchange, ref.name.encode()), -1)

    def upstream_gap(self, keys: list[str], reason: str) -> None:
        self.inner.upstream_gap(keys, reason)
        for key in keys:
            ref = parse_stream(key)
            self.event_log.append_gap(ref.exchange, ref.name.encode(), reason)

    async def start(self) -> None:
        await self.inner.start()
        await self.event_log.start()

    async def stop(self) -> None:
        await self.inner.stop()
        await self.event_log.stop()

    def status(self) -> dict[str, Any]:
        out = dict(self.inner.status())
        out["kind"] = self.kind
        out["kafka"] = self.event_log.status()
        return out
