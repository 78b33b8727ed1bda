"""Buses: how upstream events reach the hub instances that have subscribers for them.

A bus sits between the stream registry and the exchange upstreams:

    registry ──subscribe(ref)/unsubscribe(ref)──▶ bus ──acquire/release──▶ upstream(s)
    registry ◀──deliver(key, payload)─────────── bus ◀──on_upstream_data─── upstream(s)

* :class:`~tickhub.bus.memory.MemoryBus` (default): one process; local demand drives the
  upstreams directly and their events are delivered at once.
* :class:`~tickhub.bus.redis.RedisBus` (``TICKHUB_BUS=redis``): instances share events over
  Redis pub/sub, and one instance of the cluster owns each upstream stream by a lease.
* :class:`~tickhub.bus.kafka.KafkaLog` (``KAFKA_BROKER_URL``): the upstream owner also
  appends every event to Kafka; with ``TICKHUB_BUS=kafka`` a single node runs the memory
  bus with the log (Kafka as the bus between instances is not implemented).

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
    if config.bus == "redis":
        from .redis import RedisBus

        return RedisBus(config, upstreams, registry, report_gap, metrics=metrics,
                        event_log=event_log)
    memory = MemoryBus(upstreams, registry.on_data, report_gap)
    if event_log is None:
        return memory
    from .kafka import LoggedBus

    return LoggedBus(memory, event_log)
