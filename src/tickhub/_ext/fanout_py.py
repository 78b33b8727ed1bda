"""Pure-Python twin of tickhub._ext.fanout: topics, subscribers and the per-turn flush.

This module is the readable statement of the fan-out semantics and the oracle for the
parity tests; the compiled module implements exactly the same behaviour in C loops.

Model
-----
* A :class:`Topic` is one stream (``b"btcusdt@trade"``). Publishing to it appends the frame
  to every :class:`Group` subscribed to it.
* A :class:`Group` is the set of subscribers whose subscription set and wire variant
  (raw or combined) are identical. They receive byte-identical output, so the group owns
  ONE pending buffer per loop turn, shared by all of them. A client with a unique set is a
  group of one.
* A :class:`Subscriber` is one client connection: its picows transport, its group and its
  counters.
* :class:`Fanout` owns the groups, schedules one flush per event-loop turn, and writes each
  dirty group's pending bytes to each member with a single transport write.

Semantics (both implementations)
--------------------------------
* Ordering: per client, frames leave in the order :meth:`Fanout.publish` was called,
  across all of the client's streams (upstream order per stream is kept because the
  upstream reader publishes in arrival order).
* Joining mid-turn: a subscriber that joins a group does not receive what the group
  queued earlier in the same turn (it was not subscribed when it was published). Leaving
  mid-turn: what the old group queued for it this turn is written to it before it leaves,
  so a change of subscriptions never loses or duplicates a frame of a stream it keeps.
* Backpressure: after its write, a subscriber whose transport holds more than
  ``max_queued_bytes`` unsent bytes is a slow consumer. It is removed from its group at
  once (nothing more is queued for it, so memory stays bounded by the limit plus one
  turn's output) and handed to ``on_slow_consumer(subscriber)`` after the flush loop; the
  hub closes it with a documented close code. Nothing is dropped silently for a client
  that stays connected: a client either receives every frame of its streams or is
  disconnected.
* A slow client never delays the others: writes never block; a client whose socket is
  full gets its bytes copied into its transport buffer, bounded as above.
* Counters: per subscriber ``messages_out`` / ``bytes_out``; per fan-out
  ``messages_in`` (publish calls), ``messages_out`` (frames delivered to clients),
  ``bytes_out``, ``writes`` (transport writes), ``slow_consumers``, ``flushes``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable

from .frames_py import OP_TEXT, combined_prefix, frame_header

__all__ = ["Topic", "Subscriber", "Group", "Fanout"]


class Topic:
    """One stream: its name, its combined-wrapper prefix and the groups subscribed to it."""

    __slots__ = ("name", "prefix", "groups", "messages_in", "__weakref__")

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.prefix = combined_prefix(name)
        self.groups: list[Group] = []
        self.messages_in = 0

    @property
    def subscriber_count(self) -> int:
        return sum(len(g.members) for g in self.groups)

    def __repr__(self) -> str:
        return f"<Topic {self.name.decode()} groups={len(self.groups)}>"


class Subscriber:
    """A client connection as the fan-out sees it.

    ``transport`` is the picows ``WSTransport``; ``session`` is free for the control plane.
    """

    __slots__ = (
        "transport", "session", "group", "index", "skip_bytes", "skip_msgs",
        "messages_out", "bytes_out", "closed", "tracks_backlog", "backlogged", "__weakref__",
    )

    def __init__(self, transport: Any, session: Any = None) -> None:
        self.transport = transport
        self.session = session
        self.group: Group | None = None
        self.index = -1
        self.skip_bytes = 0
        self.skip_msgs = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.closed = False
        # Kept for the compiled twin's fast path; this twin always asks the transport.
        self.tracks_backlog = False
        self.backlogged = False


class Group:
    """Subscribers with one subscription set and wire variant, sharing a pending buffer."""

    __slots__ = ("key", "topics", "combined", "members", "pending", "pending_msgs", "dirty")

    def __init__(self, key: tuple[bool, frozenset[Topic]], topics: tuple[Topic, ...], combined: bool) -> None:
        self.key = key
        self.topics = topics
        self.combined = combined
        self.members: list[Subscriber] = []
        self.pending = bytearray()
        self.pending_msgs = 0
        self.dirty = False


class Fanout:
    """Per-event-loop fan-out engine. See the module docstring for the semantics."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_queued_bytes: int = 4 * 1024 * 1024,
        on_slow_consumer: Callable[[Subscriber], None] | None = None,
        share_buffers: bool = True,
    ) -> None:
        self.loop = loop if loop is not None else asyncio.get_event_loop()
        self.max_queued_bytes = max_queued_bytes
        self.on_slow_consumer = on_slow_consumer
        # share_buffers=False gives every subscriber its own group (for measurement).
        self.share_buffers = share_buffers
        self.groups: dict[Any, Group] = {}
        self._dirty: list[Group] = []
        self._scheduled = False
        self.first_pending_ns = 0
        self.last_flush_latency_ns = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.writes = 0
        self.slow_consumers = 0
        self.flushes = 0

    # -- membership (per subscription change: Python speed is fine) ---------------------

    def set_subscriptions(self, sub: Subscriber, topics: Iterable[Topic], combined: bool) -> None:
        """Make ``sub`` receive exactly ``topics`` in the given wire variant."""
        if sub.closed:
            return
        topics = tuple(topics)
        self._leave(sub)
        if sub.closed or not topics:  # _leave may have found it slow
            return
        # Topics by identity, not by name: two topics may carry the same exchange name
        # (e.g. one stream in milliseconds and in microseconds) and must not share a buffer.
        members = frozenset(topics)
        key: Any = (combined, members) if self.share_buffers else (combined, members, id(sub))
        group = self.groups.get(key)
        if group is None:
            group = Group(key, topics, combined)
            self.groups[key] = group
            for t in topics:
                t.groups.append(group)
        sub.group = group
        sub.index = len(group.members)
        group.members.append(sub)
        # Not subscribed when this turn's pending bytes were published: skip them.
        sub.skip_bytes = len(group.pending)
        sub.skip_msgs = group.pending_msgs

    def remove(self, sub: Subscriber) -> None:
        """Forget ``sub`` (connection closed). Its unsent share of this turn is dropped
        with the connection."""
        self._detach(sub)
        sub.closed = True

    def _leave(self, sub: Subscriber) -> None:
        group = sub.group
        if group is None:
            return
        if len(group.pending) > sub.skip_bytes:
            # Deliver what was queued for it this turn before it changes groups.
            self._write(sub, group, None)
        self._detach(sub)

    def _detach(self, sub: Subscriber) -> None:
        group = sub.group
        if group is None:
            return
        last = group.members.pop()
        if last is not sub:
            group.members[sub.index] = last
            last.index = sub.index
        sub.group = None
        sub.index = -1
        if not group.members:
            del self.groups[group.key]
            for t in group.topics:
                t.groups.remove(group)
            group.pending.clear()
            group.pending_msgs = 0

    # -- hot path -----------------------------------------------------------------------

    def publish(self, topic: Topic, payload: bytes) -> None:
        """Queue one message (a complete JSON text payload) for every subscriber of ``topic``."""
        topic.messages_in += 1
        self.messages_in += 1
        groups = topic.groups
        if not groups:
            return
        raw: bytes | None = None
        wrapped: bytes | None = None
        for group in groups:
            if group.combined:
                if wrapped is None:
                    body = topic.prefix + payload + b"}"
                    wrapped = frame_header(len(body), OP_TEXT) + body
                group.pending += wrapped
            else:
                if raw is None:
                    raw = frame_header(len(payload), OP_TEXT) + payload
                group.pending += raw
            group.pending_msgs += 1
            if not group.dirty:
                group.dirty = True
                self._dirty.append(group)
        if not self._scheduled:
            self._scheduled = True
            self.first_pending_ns = time.monotonic_ns()
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every dirty group's pending bytes to each member: one write per client."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        slow: list[Subscriber] = []
        for group in dirty:
            group.dirty = False
            members = group.members
            for sub in members:
                self._write(sub, group, slow)
            group.pending.clear()
            group.pending_msgs = 0
            for sub in members:
                sub.skip_bytes = 0
                sub.skip_msgs = 0
        self.flushes += 1
        if self.first_pending_ns:
            self.last_flush_latency_ns = time.monotonic_ns() - self.first_pending_ns
            self.first_pending_ns = 0
        for sub in slow:
            self._detach(sub)
        if self.on_slow_consumer is not None:
            for sub in slow:
                self.on_slow_consumer(sub)

    def _write(self, sub: Subscriber, group: Group, slow: list[Subscriber] | None) -> None:
        data = group.pending[sub.skip_bytes:] if sub.skip_bytes else group.pending
        nmsgs = group.pending_msgs - sub.skip_msgs
        sub.skip_bytes = len(group.pending)
        sub.skip_msgs = group.pending_msgs
        if not data or sub.closed or sub.transport.is_disconnected:
            return
        tr = sub.transport.underlying_transport
        tr.write(bytes(data))
        self.writes += 1
        sub.messages_out += nmsgs
        sub.bytes_out += len(data)
        self.messages_out += nmsgs
        self.bytes_out += len(data)
        if tr.get_write_buffer_size() > self.max_queued_bytes:
            self.slow_consumers += 1
            sub.closed = True
            if slow is None:  # outside a flush: hand it over at once
                self._detach(sub)
                if self.on_slow_consumer is not None:
                    self.on_slow_consumer(sub)
            else:
                slow.append(sub)
