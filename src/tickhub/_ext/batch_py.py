"""Pure-Python twin of tickhub._ext.batch: bus batches (many upstream events, one bus message).

The cluster bus carries **one message per stream per loop turn**, not one per upstream
event, so the cost of a bus message (a Redis ``PUBLISH``, a pub/sub delivery, a Python
callback on the receiver) is paid once per turn however busy the stream is. The
per-event work on both sides is this module's, and in the compiled twin it is C.

Wire format of one bus message (integers little-endian)::

    b"TB1" | owner_len:u8 | owner:bytes | token:u64 | seq:u64 | count:u32
           | count × (length:u32 | payload:bytes)

``owner`` is the publishing instance (receivers skip their own messages), ``token`` the
owner's lease token for the stream (grows with every new lease, so a receiver sees a
takeover), ``seq`` the owner's batch number under that token (starts at 1; a hole means
bus messages were lost). Payloads are the exchange's bytes, unchanged.

:class:`Channel` is one stream as the bus sees it on one instance:

* :meth:`Channel.add` — an event from an upstream this instance owns: de-duplicated,
  published to the local topic (if any) at once, and appended to this turn's batch;
* :meth:`Channel.take` — the batch as one bus message, and a fresh batch;
* :meth:`Channel.deliver` — unpack a received bus message into the local topic.

De-duplication (both paths share it): an event whose ``event_id`` is ``<=`` the highest
id already delivered on this channel is dropped and counted; ``-1`` (no id) always
passes. That makes two owners at once (a lease takeover while the old owner still
publishes) invisible to clients for every stream with ids. Ids come from the exchange
and only grow, so the cursor is kept across owners.

A malformed message (bad magic, lengths past the end) is refused whole before anything is
delivered: ``parse_header`` raises ``ValueError``, :meth:`Channel.deliver` returns -1 and
counts it.
"""

from __future__ import annotations

import struct
from typing import Any

from .envelope_py import event_id

__all__ = ["MAGIC", "Channel", "header", "parse_header"]

MAGIC = b"TB1"
_HEAD = struct.Struct("<QQ")
_COUNT = struct.Struct("<I")
_LEN = struct.Struct("<I")
#: Largest payload one record can carry (the length field is u32).
MAX_RECORD = 0xFFFFFFFF


def header(owner: bytes, token: int, seq: int) -> bytes:
    """The bytes before ``count`` in a bus message (see the module docstring)."""
    if len(owner) > 255:
        raise ValueError("owner id longer than 255 bytes")
    return MAGIC + bytes((len(owner),)) + owner + _HEAD.pack(token, seq)


def parse_header(msg: bytes) -> tuple[bytes, int, int, int, int]:
    """``(owner, token, seq, count, offset)``; records start at ``msg[offset:]``.

    Raises ValueError when ``msg`` is not a bus message.
    """
    if len(msg) < 4 or msg[:3] != MAGIC:
        raise ValueError("not a tickhub bus message")
    olen = msg[3]
    end = 4 + olen
    if len(msg) < end + _HEAD.size + _COUNT.size:
        raise ValueError("truncated bus message header")
    token, seq = _HEAD.unpack_from(msg, end)
    (count,) = _COUNT.unpack_from(msg, end + _HEAD.size)
    return msg[4:end], token, seq, count, end + _HEAD.size + _COUNT.size


class Channel:
    """One stream on the bus: outgoing batch and the de-duplication cursor."""

    __slots__ = ("fanout", "topic", "last_id", "_records", "pending", "delivered",
                 "duplicates", "malformed")

    def __init__(self, fanout: Any, topic: Any = None) -> None:
        self.fanout = fanout
        self.topic = topic
        self.last_id = -1
        self._records: list[bytes] = []
        self.pending = 0
        self.delivered = 0
        self.duplicates = 0
        self.malformed = 0

    def _fresh(self, payload: bytes) -> bool:
        eid = event_id(payload)
        if eid < 0:
            return True
        if eid <= self.last_id:
            self.duplicates += 1
            return False
        self.last_id = eid
        return True

    def add(self, payload: bytes) -> bool:
        """An owned upstream's event; True when it starts this turn's batch (schedule a flush)."""
        if not self._fresh(payload):
            return False
        self.delivered += 1
        if self.topic is not None:
            self.fanout.publish(self.topic, payload)
        self._records.append(_LEN.pack(len(payload)) + payload)
        self.pending += 1
        return self.pending == 1

    def take(self, head: bytes) -> bytes:
        """This turn's batch as one bus message behind ``head`` (from :func:`header`)."""
        msg = b"".join([head, _COUNT.pack(self.pending), *self._records])
        self.clear()
        return msg

    def clear(self) -> None:
        """Drop this turn's batch (it cannot be sent)."""
        self._records = []
        self.pending = 0

    def forget(self) -> None:
        """Forget the de-duplication cursor (the stream starts over)."""
        self.last_id = -1

    def deliver(self, msg: bytes, offset: int, count: int) -> int:
        """Publish the ``count`` records of ``msg`` from ``offset`` to the local topic.

        Returns how many were new (published), or -1 for a malformed message (nothing
        published).
        """
        spans = []
        pos, size = offset, len(msg)
        for _ in range(count):
            if pos + 4 > size:
                self.malformed += 1
                return -1
            (n,) = _LEN.unpack_from(msg, pos)
            pos += 4
            if pos + n > size:
                self.malformed += 1
                return -1
            spans.append((pos, pos + n))
            pos += n
        if pos != size:
            self.malformed += 1
            return -1
        fresh = 0
        for start, end in spans:
            payload = msg[start:end]
            if not self._fresh(payload):
                continue
            fresh += 1
            if self.topic is not None:
                self.fanout.publish(self.topic, payload)
        self.delivered += fresh
        return fresh
