"""Buses: how upstream events reach the hub instances that have subscribers for them.

A bus sits between the stream registry and the exchange upstreams:

    registry ──subscribe(ref)/unsubscribe(ref)──▶ bus ──acquire/release──▶ upstream(s)
    registry ◀──deliver(key, payload)─────────── bus ◀──on_upstream_data─── upstream(s)

* :class:`~tickhub.bus.memory.MemoryBus` (default): one process; local demand drives the
  upstreams directly and their events are delivered at once.
* ``redis`` / ``kafka`` buses share events between instances (see their modules).
"""

from .memory import Bus, MemoryBus

__all__ = ["Bus", "MemoryBus"]
