"""Replay: the last N seconds of a stream, from the Kafka log, to one client, then live.

Client switch (a tickhub extension; Binance has no such parameter, so Binance clients never
send it): a ``replay=SECONDS`` query parameter on the connection URL, for the streams
named in the URL::

    /ws/btcusdt@trade?replay=30
    /stream?streams=btcusdt@trade/ethusdt@depth&replay=30

Refused at the upgrade with HTTP 400 and a one-line reason when it is not a number > 0,
when it is over ``replay_max_seconds`` (``0`` turns replay off), or when no Kafka log is
configured (``KAFKA_BROKER_URL``); with HTTP 503 while ``max_replays`` replays (one per
stream, each its own consumer) are running. Streams added later with ``SUBSCRIBE`` are
live only.

What the client gets, per stream: the events the log holds from ``now - SECONDS`` (found
with Kafka's offsets-for-times; at most ``replay_max_messages``, the newest ones), in
order, in the connection's wire variant (raw or combined), then the live stream — with no
duplicate and no hole at the seam. The seam is found by event id
(:func:`tickhub._ext.envelope.event_id`): the replay reads the log until it has passed
the last event the live stream delivered on this instance (``bus.live_last_id``), sends
what it read up to that event, and attaches the client to the live topic in the same
loop turn, so every later live event is new to it. Live events are not queued meanwhile
for this client; its subscription on the bus is active (demand counts) from the start.
Gap records found in the log are delivered as ``streamGap`` events in place.

If the seam cannot be found within ``SEAM_TIMEOUT`` seconds (the log is behind or down,
or the stream has no live events yet), the client gets what was read, then a
``streamGap`` event with reason ``"replay incomplete"``, then the live stream: never a
silent hole. Events without an id (``event_id`` -1) are sent in log order and do not
take part in the seam.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from .. import _ext
from ..names import StreamRef
from .kafka import HEADER_GAP, topic_for

__all__ = ["replay_stream", "SEAM_TIMEOUT", "gap_notice"]

log = logging.getLogger("tickhub.bus.replay")

#: Seconds a replay may take to reach the live stream before it gives up with a gap notice.
SEAM_TIMEOUT = 10.0


def gap_notice(key: str, reason: str) -> bytes:
    """The ``streamGap`` event, as :meth:`tickhub.server.Gateway.report_gap` shapes it."""
    return orjson.dumps({"e": "streamGap", "E": int(time.time() * 1000), "stream": key,
                         "reason": reason})


async def replay_stream(
    bootstrap: str,
    ref: StreamRef,
    seconds: float,
    max_messages: int,
    live_last_id: Callable[[], int],
    send: Callable[[bytes], None],
    attach: Callable[[], None],
) -> int:
    """Send ``ref``'s last ``seconds`` from the log through ``send``, then ``attach`` it live.

    ``attach`` is always called, also when the log fails (after a gap notice through
    ``send``). Returns the number of events sent from the log.
    """
    event_id = _ext.envelope.event_id
    name = ref.name.encode()
    # (event id, payload) read from the log, the newest max_messages
    pending: deque[tuple[int, bytes]] = deque(maxlen=max_messages)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="latest",
                                request_timeout_ms=5000)
    sent = 0
    try:
        async with asyncio.timeout(SEAM_TIMEOUT):
            await consumer.start()
            topic = topic_for(ref.exchange)
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not parts:
                raise KafkaError(f"topic {topic} has no partitions")
            consumer.assign(parts)
            since_ms = int((time.time() - seconds) * 1000)
            found = await consumer.offsets_for_times({tp: since_ms for tp in parts})
            for tp in parts:
                hit = found.get(tp)
                if hit is None or hit.timestamp < 0:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, hit.offset)
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                for records in batch.values():
                    for r in records:
                        if r.key != name or r.timestamp < since_ms:
                            continue
                        headers = dict(r.headers)
                        if HEADER_GAP in headers:
                            reason = headers[HEADER_GAP].decode("utf-8", "replace")
                            pending.append((-1, gap_notice(ref.key, reason)))
                        else:
                            pending.append((event_id(r.value), r.value))
                # The seam: synchronous from here to attach().
                live = live_last_id()
                newest = max((eid for eid, _ in pending), default=-1)
                if live >= 0 and newest >= live:
                    for eid, payload in pending:
                        if eid <= live:
                            send(payload)
                            sent += 1
                    attach()
                    return sent
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("replay of %s incomplete: %r", ref.key, exc)
        live = live_last_id()
        for eid, payload in pending:
            if live < 0 or eid <= live:  # the live stream brings the rest
                send(payload)
                sent += 1
        send(gap_notice(ref.key, "replay incomplete"))
        attach()
        return sent
    finally:
        try:
            async with asyncio.timeout(2.0):
                await consumer.stop()
        except Exception:  # noqa: BLE001 -- a broken consumer may fail to stop any way
            pass
