"""The stream registry: stream key -> Topic, with local reference counts.

A topic exists while at least one local client subscribes to it. The first subscriber
subscribes the stream on the bus (which, in one process, acquires it from the exchange's
upstream: one subscription for the whole hub); the last one unsubscribes (the upstream
lingers before it unsubscribes upstream, so a client that reconnects at once does not
cause an UNSUBSCRIBE/SUBSCRIBE pair).

Events enter through :meth:`StreamRegistry.on_data`: one dictionary lookup, then the
compiled ``Fanout.publish`` — constant Python work per upstream message, whatever the
number of subscribers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._ext import fanout as _fanout
from .names import StreamRef

if TYPE_CHECKING:
    from .bus import Bus

__all__ = ["StreamRegistry"]

log = logging.getLogger("tickhub.streams")


class StreamRegistry:
    """Local topics by stream key, reference-counted, subscribed on the bus."""

    def __init__(self, fanout: Any, bus: Bus | None = None) -> None:
        self.fanout = fanout
        self.bus: Bus = bus  # type: ignore[assignment]  # set by the gateway before use
        self.topics: dict[bytes, Any] = {}  # key bytes -> Topic (the hot-path lookup)
        self._refs: dict[bytes, int] = {}

    def acquire(self, ref: StreamRef) -> Any:
        """Count one more local subscriber of ``ref``; return its Topic."""
        key = ref.key.encode()
        topic = self.topics.get(key)
        if topic is None:
            # The combined wrapper carries the exchange's own stream name.
            topic = _fanout.Topic(ref.name.encode())
            self.topics[key] = topic
            self._refs[key] = 0
            self.bus.subscribe(ref)
        self._refs[key] += 1
        return topic

    def release(self, ref: StreamRef) -> None:
        """Count one local subscriber of ``ref`` less; the last one releases the upstream."""
        key = ref.key.encode()
        n = self._refs.get(key, 0) - 1
        if n > 0:
            self._refs[key] = n
            return
        if key not in self._refs:
            return
        del self._refs[key]
        del self.topics[key]
        self.bus.unsubscribe(ref)

    def on_data(self, key: bytes, payload: bytes) -> None:
        """Upstream event for stream ``key``: publish it to the local subscribers."""
        topic = self.topics.get(key)
        if topic is not None:
            self.fanout.publish(topic, payload)

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "stream": key.decode(),
                "subscribers": self._refs[key],
                "messages_in": topic.messages_in,
            }
            for key, topic in sorted(self.topics.items())
        ]
