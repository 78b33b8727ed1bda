"""Kafka as the bus (``TICKHUB_BUS=kafka``): instances receive events from the Kafka log.

Picture (one stream, three instances; A owns it)::

    exchange ─▶ A: upstream ─▶ Channel.add ─▶ local clients of A
                                 └─ KafkaLog ─▶ topic tickhub.binance (key btcusdt@trade)
    B, C: one consumer each, every partition of tickhub.binance ─▶ filter by key ─▶ clients

Design decisions:

* **Ownership stays on Redis.** Kafka has no lease store, so the Redis leases and demand
  sets of :class:`~tickhub.bus.redis.RedisBus` decide who runs each upstream (one per
  stream for the cluster); only the transport changes. ``TICKHUB_BUS=kafka`` therefore
  needs ``REDIS_URL`` and ``KAFKA_BROKER_URL``. Every instance of a cluster must use the
  same bus: an owner on the Kafka bus publishes nothing on Redis pub/sub.
* **One consumer per instance, no consumer group.** It is assigned every partition of
  ``tickhub.<exchange>`` for each exchange this instance serves, starts at the latest
  offset, commits nothing, and drops records whose key has no local subscribers. So
  every instance sees every event — the cost: **each instance reads the whole topic**,
  whatever its clients want (Redis pub/sub, by contrast, only delivers subscribed
  channels). Partitioning is the producer's (key-hashed, so one stream stays in order in
  one partition); partitions that appear later are read from their beginning.
* Records this instance wrote itself (header ``instance``) are skipped: its own clients
  got them from its upstream. Two owners at once are de-duplicated by event id, as on the
  Redis bus (:class:`tickhub._ext.batch.Channel`).

Gaps are never silent; the consumer reports ``report_gap`` for the local streams it
serves (not the ones this instance owns) when

* a gap record arrives (header ``gap``: an upstream reconnect at the owner, a takeover, or
  events the owner's producer dropped; see :mod:`tickhub.bus.kafka`), with its reason;
* it falls more than ``kafka_max_lag`` records behind a partition's end, or its position
  is no longer in the log (retention, a broker that lost its data): it skips to the end;
* the consumer failed and was started again at the latest offset.

A broker outage alone is not a gap: the consumer keeps its positions and resumes where it
was once the broker is back (the log kept the events), unless that is beyond the lag
bound. ``status()["healthy"]`` is false while Redis or the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, OffsetOutOfRangeError  # type: ignore[import-untyped]

from .kafka import HEADER_GAP, HEADER_INSTANCE, KafkaLog, topic_for
from .memory import Upstream
from .redis import RedisBus, _backoff, _Stream

if TYPE_CHECKING:
    from ..config import Config
    from ..metrics import HubMetrics
    from ..streams import StreamRegistry

__all__ = ["KafkaBus"]

log = logging.getLogger("tickhub.bus.kafkabus")


class KafkaBus(RedisBus):
    """Redis leases for ownership, the Kafka log for the events (see the module)."""

    kind = "kafka"

    def __init__(
        self,
        config: Config,
        upstreams: dict[str, Upstream],
        registry: StreamRegistry,
        report_gap: Callable[[list[str], str], None],
        *,
        event_log: KafkaLog,
        metrics: HubMetrics | None = None,
    ) -> None:
        super().__init__(config, upstreams, registry, report_gap, metrics=metrics,
                         event_log=event_log)
        self._topics = {topic_for(exchange): exchange for exchange in upstreams}
        self._assigned: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self.records_received = 0
        self.consumer_restarts = 0
        self.lag = 0

    # -- the owner side: the log is the transport -------------------------------------------

    def _queue_batch(self, st: _Stream) -> None:
        # The owner's events are in the Kafka log already (on_upstream_data).
        st.chan.clear()

    def _announce_gap(self, st: _Stream, reason: str) -> None:
        return None  # upstream_gap writes the gap record into the log

    # -- the receiver side -----------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Replaces the Redis pub/sub listener: consume the log, restart on failure."""
        failures = 0
        started_once = False
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.event_log.bootstrap, group_id=None,
                enable_auto_commit=False, auto_offset_reset="none",
                client_id=f"tickhub-{self.instance_id}", request_timeout_ms=5000)
            self._consumer = consumer
            self._assigned = set()
            try:
                async with asyncio.timeout(10.0):
                    await consumer.start()
                if started_once:
                    self.consumer_restarts += 1
                    # Started again at the latest offset: what was published meanwhile
                    # is not read.
                    self._gap_all("kafka consumer restarted")
                started_once = True
                failures = 0
                await self._consume(consumer)
            except (KafkaError, OSError, TimeoutError) as exc:
                failures += 1
                self._set_pubsub_up(False, exc)
            finally:
                self._consumer = None
                try:
                    async with asyncio.timeout(2.0):
                        await consumer.stop()
                except Exception:  # noqa: BLE001 -- a broken consumer may fail to stop any way
                    pass
            await asyncio.sleep(_backoff(failures, self.config.bus_backoff_max))

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        check_every = self._ttl / 3
        next_check = 0.0
        while True:
            now = time.monotonic()
            if now >= next_check:
                next_check = now + check_every
                await self._check_partitions(consumer)
            if not self._assigned:
                await asyncio.sleep(check_every)
                continue
            try:
                batch = await consumer.getmany(timeout_ms=int(check_every * 1000), max_records=5000)
            except OffsetOutOfRangeError as exc:
                lost = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else None
                parts = list(lost or self._assigned)
                await consumer.seek_to_end(*parts)
                self._gap_topics({tp.topic for tp in parts}, "kafka log position lost")
                continue
            for tp, records in batch.items():
                self._on_records(tp.topic, records)

    async def _check_partitions(self, consumer: AIOKafkaConsumer) -> None:
        """Assign new partitions, measure the lag, skip ahead past the bound; health."""
        try:
            async with asyncio.timeout(max(1.0, self._ttl / 3)):
                await consumer.topics()  # refreshes the metadata
                current: set[TopicPartition] = set()
                for topic in self._topics:
                    for p in consumer.partitions_for_topic(topic) or ():
                        current.add(TopicPartition(topic, p))
                new = current - self._assigned
                if new:
                    first = not self._assigned
                    consumer.assign(sorted(current))
                    self._assigned = current
                    if first:
                        await consumer.seek_to_end(*current)
                    else:
                        await consumer.seek_to_beginning(*new)
                if not current:
                    self._set_pubsub_up(True)
                    return
                ends = await consumer.end_offsets(sorted(current))
                behind: set[str] = set()
                lag = 0
                for tp in current:
                    pos = await consumer.position(tp)
                    tp_lag = ends[tp] - pos
                    if tp_lag > self.config.kafka_max_lag or tp_lag < 0:
                        consumer.seek(tp, ends[tp])
                        behind.add(tp.topic)
                    else:
                        lag += tp_lag
                self.lag = lag
        except (KafkaError, OSError, TimeoutError) as exc:
            self._set_pubsub_up(False, exc)
            return
        self._set_pubsub_up(True)
        if behind:
            self._gap_topics(behind, "kafka consumer lag over the bound")

    def _on_records(self, topic: str, records: list[Any]) -> None:
        exchange = self._topics.get(topic)
        by_name = self._by_upstream.get(exchange) if exchange is not None else None
        if not by_name:
            return
        touched: list[_Stream] = []
        for record in records:
            st = by_name.get(record.key)
            if st is None or not st.local or st.chan.topic is None:
                continue
            headers = dict(record.headers)
            if headers.get(HEADER_INSTANCE) == self._me:
                continue  # ours: our clients had it from our upstream
            self.records_received += 1
            st.rx_token = 1  # we are receiving this stream from another owner
            if st.token:
                continue  # we own it now: a slow former owner's record
            gap = headers.get(HEADER_GAP)
            if gap is not None:
                st.chan.forget()
                self._gap([st], gap.decode("utf-8", "replace") or "upstream gap")
                continue
            st.chan.add(record.value)  # de-duplicate and publish to the local clients
            touched.append(st)
        for st in touched:
            st.chan.clear()  # add() also buffered it for a bus batch: not needed here

    def _gap_topics(self, topics: set[str], reason: str) -> None:
        exchanges = {self._topics[t] for t in topics if t in self._topics}
        self._gap([st for st in self._streams.values()
                   if st.ref.exchange in exchanges and st.local and not st.token], reason)

    def _gap_all(self, reason: str) -> None:
        self._gap_topics(set(self._topics), reason)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.pop("redis_pubsub", None)
        out["kafka_consumer"] = self.pubsub_up
        out["kafka_lag"] = self.lag
        out["counters"]["records_received"] = self.records_received
        out["counters"]["consumer_restarts"] = self.consumer_restarts
        return out
