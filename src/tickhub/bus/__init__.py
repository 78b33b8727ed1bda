"""Buses: how upstream events reach the hub instances that have subscribers for them.

A bus sits between the stream registry and the exchange upstreams:

    registry ──subscribe(ref)/unsubscribe(ref)──▶ bus ──acquire/release──▶ upstream(s)
    registry ◀──deliver(key, payload)─────────── bus ◀──on_upstream_data─── upstream(s)

* :class:`~tickhub.bus.memory.MemoryBus` (default): one process; local demand drives the
  upstreams directly and their events are delivered at once.
* :class:`~tickhub.bus.redis.RedisBus` (``TICKHUB_BUS=redis``): instances share events over
  Redis pub/sub, and one instance of the cluster owns each upstream stream by a lease.
* :class:`~tickhub.bus.kafka.KafkaLog` (``KAFKA_BROKER_URL``): the upstream owner also
  appends every event to Kafka.
* :class:`~tickhub.bus.kafkabus.KafkaBus` (``TICKHUB_BUS=kafka``): instances receive
  events from that log instead of Redis pub/sub; ownership is still by Redis lease.

:func:`make_bus` picks one from the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .memory import Bus, MemoryBus

if TYPE_CHECKING:
    from ..config import Config
    from ..metrics import HubMetrics
    from ..streams import StreamRegistry

__all__ = ["Bus", "MemoryBus", "make_bus"]


def make_bus(
    config: Config,
    upstreams: dict[str, Any],
    registry: StreamRegistry,
    report_gap: Callable[[list[str], str], None],
    metrics: HubMetrics | None = None,
) -> Bus:
    """The bus named by ``config.bus``, with the Kafka log when ``kafka_broker_url`` is set."""
    event_log = None
    if config.kafka_broker_url is not None:
        from .kafka import KafkaLog

        event_log = KafkaLog(config.kafka_broker_url, config.kafka_max_buffered,
                             backoff_max=config.bus_backoff_max)
    if config.bus == "kafka":
        from .kafkabus import KafkaBus

        assert event_log is not None  # the config refuses bus=kafka without a broker
        return KafkaBus(config, upstreams, registry, report_gap, metrics=metrics,
                        event_log=event_log)
    if config.bus == "redis":
        from .redis import RedisBus

        return RedisBus(config, upstreams, registry, report_gap, metrics=metrics,
                        event_log=event_log)
    memory = MemoryBus(upstreams, registry.on_data, report_gap)
    if event_log is None:
        return memory
    from .kafka import LoggedBus

    return LoggedBus(memory, event_log)
