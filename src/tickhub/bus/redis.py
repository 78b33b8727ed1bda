"""The Redis bus: N hub instances share exchange events over Redis pub/sub, one upstream each.

Picture (one stream ``btcusdt@trade``, three instances A, B, C; A owns it)::

    exchange ─▶ A: upstream ─▶ Channel.add ─▶ local clients of A
                                 └─ one PUBLISH per stream per loop turn ─▶ tickhub:ev:btcusdt@trade
    B, C: SUBSCRIBE tickhub:ev:btcusdt@trade ─▶ Channel.deliver (compiled unpack + de-dup) ─▶ clients

Keys (all in one Redis; ``<key>`` is the hub-wide stream key, e.g. ``btcusdt@trade``):

``tickhub:ev:<key>``     pub/sub channel of the stream's batches (format: ``tickhub._ext.batch``)
``tickhub:want:<key>``   sorted set: instance id → expiry (ms, Redis clock) — cluster demand
``tickhub:owner:<key>``  ``"<instance> <token>"`` with a PX lease; ``token`` is the Redis time
                         (ms) the lease was taken, so a later lease has a larger token

Demand and ownership are settled by one Lua script per *tick* (every ``bus_lease_ttl / 3``,
and at once when local demand changes) covering every stream the instance wants or owns,
so the cost is one round trip per tick whatever the number of streams:

* an instance with local subscribers refreshes its entry in ``want`` (expired entries are
  pruned), and removes it once the stream's bus linger has run out;
* the owner renews its lease while any instance wants the stream, and deletes it (then
  releases the upstream) when nobody does;
* a free lease is taken (``SET`` with a new token) by the first instance with local demand
  that ticks: exactly one owner per stream, whatever the number of instances. A dead or
  partitioned owner's lease expires after ``bus_lease_ttl``; another instance takes it at
  its next tick, so a takeover takes at most about ``4/3 × bus_lease_ttl`` plus the time to
  subscribe upstream.

Two owners at once (a slow owner that has not noticed its lease expired) never show
duplicates: every receiver — and the owner's own local path — de-duplicates by
``event_id`` per stream (:class:`tickhub._ext.batch.Channel`).

Gaps are never silent. A receiver reports ``gateway.report_gap`` for a stream when

* a batch carries a larger lease token than the last one (a takeover: events between the
  old owner's last batch and the new owner's upstream subscription are lost), or when this
  instance itself takes over a stream it was receiving from another owner;
* the batch sequence under one token has a hole (bus messages lost, or dropped by a full
  publish buffer: the owner counts its sequence even for batches it drops);
* its pub/sub connection came back after a loss (everything published meanwhile is gone);
  this is reported once resubscribed, so the notice sits in the stream just before the
  resumed events;
* the owner's upstream lost events (its exchange connection dropped and came back:
  :meth:`RedisBus.upstream_gap`). The owner reports the gap to its own clients and
  publishes a *gap marker* on the stream's channel, after the events it already had and
  before the resumed ones::

      b"TG1" | owner_len:u8 | owner | token:u64 | seq:u64 | reason:utf-8

  Every receiver reports the gap with the same reason when the marker arrives, so clients
  of every instance see the same ``streamGap`` at the same place in the stream. The marker
  takes the next batch sequence number: a receiver that misses it (dropped, or lost on
  the way) still sees the hole and reports a gap. Owner and receivers also forget their
  de-duplication cursor then, as the upstream does, since the exchange's ids may restart.

Redis down or unreachable: the instance keeps serving what its own upstreams deliver (an
owner keeps its upstream and its local clients keep their events; its batches are dropped
and counted), reconnects with jittered exponential backoff up to ``bus_backoff_max``,
resubscribes its channels and reports the gaps. ``status()["healthy"]`` is false meanwhile
(shown on ``/readyz``, in metrics as ``tickhub_bus_up`` and logged once per outage). A new
stream cannot get an owner while Redis is down: its clients wait for data.

Not covered: Redis Cluster (the tick script touches keys of many slots; sharded pub/sub),
replay of what was missed (a Kafka log consumer could do it), and a hand-over without a
gap when an owner stops gracefully (it deletes its leases so the takeover is immediate, but
the events in between are reported as a gap).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .. import _ext
from ..names import StreamRef
from .memory import Upstream

if TYPE_CHECKING:
    from ..config import Config
    from ..metrics import HubMetrics
    from ..streams import StreamRegistry

__all__ = ["RedisBus", "default_instance_id", "EVENT_PREFIX", "WANT_PREFIX", "OWNER_PREFIX"]

log = logging.getLogger("tickhub.bus.redis")

EVENT_PREFIX = b"tickhub:ev:"
#: First bytes of a gap marker on a stream channel (batches start with ``batch.MAGIC``).
GAP_MAGIC = b"TG1"
_GAP_HEAD = struct.Struct("<QQ")
WANT_PREFIX = "tickhub:want:"
OWNER_PREFIX = "tickhub:owner:"
#: Subscribed always, so the pub/sub connection exists (and is pinged) with no stream.
CONTROL_CHANNEL = b"tickhub:control"

#: KEYS: owner_1, want_1, owner_2, want_2, ...; ARGV: me, ttl_ms, flag_1, flag_2, ...
#: (flag "1": local demand). Returns per stream: token (> 0) if ``me`` owns it now, 0 if
#: nobody does (or ``me`` just released it), -1 if another instance does.
_TICK_LUA = """
local me = ARGV[1]
local ttl = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS / 2 do
  local okey, wkey = KEYS[2 * i - 1], KEYS[2 * i]
  local wanted = ARGV[2 + i] == '1'
  if wanted then
    redis.call('ZADD', wkey, now + ttl, me)
  else
    redis.call('ZREM', wkey, me)
  end
  redis.call('ZREMRANGEBYSCORE', wkey, '-inf', now)
  local demand = redis.call('ZCARD', wkey)
  if demand > 0 then redis.call('PEXPIRE', wkey, 2 * ttl) end
  local cur = redis.call('GET', okey)
  local result = 0
  if cur then
    local owner, token = string.match(cur, '^(%S+) (%d+)$')
    if owner == me then
      if demand > 0 then
        redis.call('PEXPIRE', okey, ttl)
        result = tonumber(token)
      else
        redis.call('DEL', okey)
      end
    else
      result = -1
    end
  elseif wanted then
    redis.call('SET', okey, me .. ' ' .. now, 'PX', ttl)
    result = now
  end
  out[i] = result
end
return out
"""

#: KEYS: owner keys; ARGV: me. Deletes the leases ``me`` holds (graceful stop).
_RELEASE_LUA = """
local n = 0
for i = 1, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if cur and string.match(cur, '^(%S+) ') == ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
"""

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def default_instance_id() -> str:
    """``<hostname>-<pid>-<random>``: unique per process, readable in ``/admin/state``."""
    host = _ID_UNSAFE.sub("-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class _Stream:
    """One stream as this instance's bus sees it."""

    __slots__ = ("ref", "key", "channel_name", "chan", "local", "linger", "token", "seq",
                 "rx_token", "rx_seq", "subscribed")

    def __init__(self, ref: StreamRef, chan: Any) -> None:
        self.ref = ref
        self.key = ref.key
        self.channel_name = EVENT_PREFIX + ref.key.encode()
        self.chan = chan
        self.local = False  # local demand, including the bus linger after the last client
        self.linger: asyncio.TimerHandle | None = None
        self.token = 0  # our lease token while we own the upstream, else 0
        self.seq = 0  # batches published under ``token``
        self.rx_token = 0  # the lease token of the batches we last received
        self.rx_seq = 0
        self.subscribed = False  # the pub/sub channel is subscribed on Redis


class RedisBus:
    """The cluster bus over Redis pub/sub, with one upstream owner per stream (see module)."""

    kind = "redis"

    def __init__(
        self,
        config: Config,
        upstreams: dict[str, Upstream],
        registry: StreamRegistry,
        report_gap: Callable[[list[str], str], None],
        *,
        metrics: HubMetrics | None = None,
        event_log: Any = None,
    ) -> None:
        assert config.redis_url is not None
        self.config = config
        self.upstreams = upstreams
        self.registry = registry
        self.report_gap = report_gap
        self.metrics = metrics
        self.event_log = event_log
        self.instance_id = config.instance_id or default_instance_id()
        self._me = self.instance_id.encode()
        if event_log is not None:
            event_log.instance = self._me
        self._ttl = config.bus_lease_ttl
        self._streams: dict[str, _Stream] = {}
        self._by_upstream: dict[str, dict[bytes, _Stream]] = {}
        self._by_channel: dict[bytes, _Stream] = {}
        self._dirty: list[_Stream] = []
        self._flush_scheduled = False
        self._outbox: deque[tuple[bytes, bytes]] = deque()
        self._outbox_bytes = 0
        self._send_wake = asyncio.Event()
        self._tick_wake = asyncio.Event()
        self._sub_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._cmd: aioredis.Redis | None = None
        self._subcli: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commands_up = False
        self.pubsub_up = False
        self._outage_since: float | None = None
        self._lost_subscription = False
        # counters (status()["counters"], metrics)
        self.batches_published = 0
        self.events_published = 0
        self.batches_received = 0
        self.batches_dropped = 0
        self.unowned_events = 0
        self.malformed = 0
        self.gaps = 0
        self.takeovers = 0
        self.reconnects = 0
        self.ticks = 0
        self.tick_errors = 0

    # -- Bus protocol ---------------------------------------------------------------------

    def subscribe(self, ref: StreamRef) -> None:
        st = self._streams.get(ref.key)
        if st is None:
            st = _Stream(ref, _ext.batch.Channel(self.registry.fanout))
            self._streams[ref.key] = st
            self._by_upstream.setdefault(ref.exchange, {})[ref.name.encode()] = st
            self._by_channel[st.channel_name] = st
        st.chan.topic = self.registry.topics.get(ref.key.encode())
        if st.linger is not None:
            st.linger.cancel()
            st.linger = None
        if not st.local:
            st.local = True
            self._sub_wake.set()
            self._tick_wake.set()

    def unsubscribe(self, ref: StreamRef) -> None:
        st = self._streams.get(ref.key)
        if st is None:
            return
        st.chan.topic = None  # the registry dropped the topic; nothing to publish into
        if self.config.bus_linger > 0 and self._loop is not None:
            st.linger = self._loop.call_later(self.config.bus_linger, self._linger_expired, st)
        else:
            self._linger_expired(st)

    def on_upstream_data(self, exchange: str, stream: bytes, payload: bytes) -> None:
        """Hot path: an event of an upstream this instance runs (constant Python work)."""
        by_name = self._by_upstream.get(exchange)
        st = by_name.get(stream) if by_name is not None else None
        if st is None or not st.token:
            # A lingering upstream of a stream we no longer own: the owner publishes it.
            self.unowned_events += 1
            return
        if st.chan.add(payload):
            self._dirty.append(st)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                assert self._loop is not None
                self._loop.call_soon(self._flush)
        if self.event_log is not None:
            self.event_log.append(exchange, stream, payload)

    def upstream_gap(self, keys: list[str], reason: str) -> None:
        """Our upstream may have missed events of ``keys``: tell local clients, and every
        receiver through a gap marker (see the module). Streams we do not own are left
        alone: their clients get the owner's events, which have no hole."""
        owned = [st for st in map(self._streams.get, keys) if st is not None and st.token]
        if not owned:
            return
        self._gap(owned, reason)
        for st in owned:
            st.chan.forget()
            self._announce_gap(st, reason)
            if self.event_log is not None:
                self.event_log.append_gap(st.ref.exchange, st.ref.name.encode(), reason)

    def _announce_gap(self, st: _Stream, reason: str) -> None:
        """Publish a gap marker for an owned stream after this turn's events."""
        self._queue_batch(st)
        st.seq += 1
        if not self.commands_up:
            self.batches_dropped += 1
            return
        marker = (GAP_MAGIC + bytes((len(self._me),)) + self._me
                  + _GAP_HEAD.pack(st.token, st.seq) + reason.encode()[:1000])
        self._outbox.append((st.channel_name, marker))
        self._outbox_bytes += len(marker)
        self._send_wake.set()

    def live_last_id(self, key: str) -> int:
        st = self._streams.get(key)
        return st.chan.last_id if st is not None else -1

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        url = self.config.redis_url
        assert url is not None
        timeout = max(0.5, self._ttl / 3)
        common: dict[str, Any] = dict(
            socket_connect_timeout=timeout,
            # No hidden retries or reconnects: a lost connection must surface here, so the
            # bus can report the gap and resubscribe itself.
            retry=Retry(NoBackoff(), 0),
        )
        self._cmd = aioredis.Redis.from_url(url, socket_timeout=timeout, **common)
        self._subcli = aioredis.Redis.from_url(url, **common)
        self._tick_script = self._cmd.register_script(_TICK_LUA)
        self._release_script = self._cmd.register_script(_RELEASE_LUA)
        try:
            await self._cmd.ping()
            self._set_commands_up(True)
        except (RedisError, OSError) as exc:
            # Not fatal: the hub serves what it can and keeps trying.
            self._set_commands_up(False, exc)
        loop = self._loop
        self._tasks = [
            loop.create_task(self._tick_loop(), name="tickhub-bus-tick"),
            loop.create_task(self._listen_loop(), name="tickhub-bus-listen"),
            loop.create_task(self._send_loop(), name="tickhub-bus-send"),
        ]
        if self.metrics is not None:
            self._bind_metrics(self.metrics)
        if self.event_log is not None:
            await self.event_log.start()
        log.info("redis bus: instance %s, lease ttl %.3gs", self.instance_id, self._ttl)

    async def stop(self) -> None:
        self._stopping = True
        for st in self._streams.values():
            if st.linger is not None:
                st.linger.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        owned = [OWNER_PREFIX + st.key for st in self._streams.values() if st.token]
        if owned and self._cmd is not None:
            try:
                # Let another instance take over at its next tick instead of after the ttl.
                async with asyncio.timeout(1.0):
                    await self._release_script(keys=owned, args=[self.instance_id])
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis bus: could not release leases on stop: %r", exc)
        for st in self._streams.values():
            if st.token:
                st.token = 0
                self.upstreams[st.ref.exchange].release(st.ref.name)
        if self._pubsub is not None:
            await _quietly(self._pubsub.aclose())
        for client in (self._cmd, self._subcli):
            if client is not None:
                await _quietly(client.aclose())
        if self.event_log is not None:
            await self.event_log.stop()

    def status(self) -> dict[str, Any]:
        healthy = self.commands_up and self.pubsub_up
        out: dict[str, Any] = {
            "kind": self.kind,
            "healthy": healthy,
            "instance": self.instance_id,
            "redis_commands": self.commands_up,
            "redis_pubsub": self.pubsub_up,
            "outage_seconds": (round(time.monotonic() - self._outage_since, 3)
                               if self._outage_since is not None else 0.0),
            "streams": len(self._streams),
            "owned": sorted(st.key for st in self._streams.values() if st.token),
            "counters": {
                "batches_published": self.batches_published,
                "events_published": self.events_published,
                "batches_received": self.batches_received,
                "batches_dropped": self.batches_dropped,
                "duplicates_dropped": sum(st.chan.duplicates for st in self._streams.values()),
                "unowned_events": self.unowned_events,
                "malformed": self.malformed,
                "gaps": self.gaps,
                "takeovers": self.takeovers,
                "reconnects": self.reconnects,
                "tick_errors": self.tick_errors,
            },
        }
        if self.event_log is not None:
            out["kafka"] = self.event_log.status()
        return out

    # -- local demand ---------------------------------------------------------------------

    def _linger_expired(self, st: _Stream) -> None:
        st.linger = None
        if st.chan.topic is not None:
            return  # a client came back
        st.local = False
        self._sub_wake.set()
        self._tick_wake.set()

    def _forget(self, st: _Stream) -> None:
        del self._streams[st.key]
        self._by_upstream[st.ref.exchange].pop(st.ref.name.encode(), None)
        self._by_channel.pop(st.channel_name, None)

    # -- publishing -------------------------------------------------------------------------

    def _flush(self) -> None:
        """Once per loop turn: one bus message per stream that got events this turn."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for st in dirty:
            self._queue_batch(st)
        if self._outbox:
            self._send_wake.set()

    def _queue_batch(self, st: _Stream) -> None:
        """Move the stream's pending events, as one batch, to the outbox."""
        if not st.chan.pending:
            return
        # Counted even when dropped: receivers see the hole and report the gap.
        st.seq += 1
        if not st.token or not self.commands_up:
            st.chan.clear()
            self.batches_dropped += 1
            return
        self.events_published += st.chan.pending
        msg = st.chan.take(_ext.batch.header(self._me, st.token, st.seq))
        if self._outbox_bytes + len(msg) > self.config.bus_max_pending_bytes:
            self.batches_dropped += 1
            return
        self._outbox.append((st.channel_name, msg))
        self._outbox_bytes += len(msg)

    async def _send_loop(self) -> None:
        """Publish queued batches, all of one wake in one pipeline (one round trip)."""
        while True:
            await self._send_wake.wait()
            self._send_wake.clear()
            while self._outbox:
                items = list(self._outbox)
                self._outbox.clear()
                self._outbox_bytes = 0
                assert self._cmd is not None
                pipe = self._cmd.pipeline(transaction=False)
                for channel, msg in items:
                    pipe.publish(channel, msg)
                try:
                    await pipe.execute()
                except (RedisError, OSError) as exc:
                    self.batches_dropped += len(items)
                    self._set_commands_up(False, exc)
                    break
                self.batches_published += len(items)

    # -- leases and demand -----------------------------------------------------------------

    async def _tick_loop(self) -> None:
        interval = self._ttl / 3
        failures = 0
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._tick_wake.wait()
            except TimeoutError:
                pass
            self._tick_wake.clear()
            try:
                async with asyncio.timeout(max(interval, 0.5)):
                    await self._tick()
                failures = 0
            except (RedisError, OSError, TimeoutError) as exc:
                self.tick_errors += 1
                failures += 1
                self._set_commands_up(False, exc)
                await asyncio.sleep(_backoff(failures, self.config.bus_backoff_max))

    async def _tick(self) -> None:
        streams = list(self._streams.values())
        if not streams:
            await self._cmd.ping()  # type: ignore[union-attr]
            self._set_commands_up(True)
            return
        keys: list[str] = []
        args: list[Any] = [self.instance_id, int(self._ttl * 1000)]
        for st in streams:
            keys += (OWNER_PREFIX + st.key, WANT_PREFIX + st.key)
            args.append("1" if st.local else "0")
        results = await self._tick_script(keys=keys, args=args)
        self.ticks += 1
        self._set_commands_up(True)
        for st, token in zip(streams, results):
            token = int(token)
            if token > 0:
                if not st.token:
                    self._took(st, token)
                elif token != st.token:
                    st.token, st.seq = token, 0  # re-taken after a Redis restart
            elif st.token:
                self._lost(st, "nobody wants it" if token == 0 else "lease taken by another instance")
            if not st.local and not st.token and st.linger is None and not st.subscribed:
                self._forget(st)

    def _took(self, st: _Stream, token: int) -> None:
        st.token, st.seq = token, 0
        self.upstreams[st.ref.exchange].acquire(st.ref.name)
        if st.rx_token:
            # We were receiving from another owner that is gone: events between its last
            # batch and our upstream subscription are lost.
            self.takeovers += 1
            self._gap([st], "bus owner changed")
            if self.event_log is not None:
                self.event_log.append_gap(st.ref.exchange, st.ref.name.encode(), "bus owner changed")
        log.info("redis bus: %s owns %s now (token %d)", self.instance_id, st.key, token)

    def _lost(self, st: _Stream, why: str) -> None:
        st.token = 0
        st.chan.clear()
        self.upstreams[st.ref.exchange].release(st.ref.name)
        log.info("redis bus: %s released %s: %s", self.instance_id, st.key, why)

    # -- receiving --------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
            except (RedisError, OSError, TimeoutError) as exc:
                failures += 1
                self._set_pubsub_up(False, exc)
            if self._pubsub is not None:
                await _quietly(self._pubsub.aclose())
                self._pubsub = None
            for st in self._streams.values():
                st.subscribed = False
            await asyncio.sleep(_backoff(failures, self.config.bus_backoff_max))

    async def _listen(self) -> None:
        assert self._subcli is not None
        pubsub = self._subcli.pubsub()
        self._pubsub = pubsub
        wanted = [st for st in self._streams.values() if st.local]
        await pubsub.subscribe(CONTROL_CHANNEL, *(st.channel_name for st in wanted))
        for st in wanted:
            st.subscribed = True
            st.rx_token = st.rx_seq = 0
        if self._lost_subscription:
            self.reconnects += 1
            # Everything published while we were not subscribed is gone. Streams this
            # instance owned kept flowing locally; the others have a hole.
            self._gap([st for st in wanted if not st.token], "bus reconnect")
        self._lost_subscription = True  # from now on a loss means a gap
        self._set_pubsub_up(True)
        changes = asyncio.get_running_loop().create_task(self._apply_subscriptions(pubsub))
        ping_every = self._ttl / 3
        last_ping = last_pong = time.monotonic()
        try:
            while True:
                msg = await pubsub.get_message(timeout=ping_every)
                now = time.monotonic()
                if msg is not None:
                    kind = msg["type"]
                    if kind == "message":
                        self._on_bus_message(msg["channel"], msg["data"])
                    elif kind == "pong":
                        last_pong = now
                    continue
                if changes.done():
                    changes.result()  # surfaces its connection error
                if now - last_pong > self._ttl + ping_every:
                    raise TimeoutError("no pong on the pub/sub connection")
                if now - last_ping >= ping_every:
                    last_ping = now
                    await pubsub.ping()
        finally:
            changes.cancel()
            await asyncio.gather(changes, return_exceptions=True)

    async def _apply_subscriptions(self, pubsub: Any) -> None:
        """Follow local demand: SUBSCRIBE/UNSUBSCRIBE stream channels as it changes."""
        while True:
            await self._sub_wake.wait()
            self._sub_wake.clear()
            add = [st for st in self._streams.values() if st.local and not st.subscribed]
            drop = [st for st in self._streams.values() if not st.local and st.subscribed]
            if add:
                for st in add:
                    st.subscribed = True
                    st.rx_token = st.rx_seq = 0
                await pubsub.subscribe(*(st.channel_name for st in add))
            if drop:
                for st in drop:
                    st.subscribed = False
                await pubsub.unsubscribe(*(st.channel_name for st in drop))

    def _on_bus_message(self, channel: bytes, data: bytes) -> None:
        """One batch from the bus: header checks in Python, the events in compiled code."""
        st = self._by_channel.get(channel)
        if st is None or not st.subscribed:
            return
        if data.startswith(GAP_MAGIC):
            self._on_gap_marker(st, data)
            return
        try:
            owner, token, seq, count, offset = _ext.batch.parse_header(data)
        except ValueError:
            self.malformed += 1
            return
        if owner == self._me:
            return  # our own batch, already delivered locally
        self.batches_received += 1
        self._check_sequence(st, token, seq)
        # An older token: a slow former owner; de-duplication keeps what is new.
        if st.chan.deliver(data, offset, count) < 0:
            self.malformed += 1

    def _on_gap_marker(self, st: _Stream, data: bytes) -> None:
        """The owner's upstream lost events of ``st``: our clients must hear it too."""
        end = 4 + data[3] if len(data) > 3 else len(data) + 1
        if len(data) < end + _GAP_HEAD.size:
            self.malformed += 1
            return
        if data[4:end] == self._me:
            return  # our own marker, reported locally already
        token, seq = _GAP_HEAD.unpack_from(data, end)
        self._check_sequence(st, token, seq)
        if st.token:
            return  # we own the stream now; our own upstream is what our clients get
        st.chan.forget()
        reason = data[end + _GAP_HEAD.size:].decode("utf-8", "replace") or "upstream gap"
        self._gap([st], reason)

    def _check_sequence(self, st: _Stream, token: int, seq: int) -> None:
        """Follow the owner's (token, seq) of a received bus message; report holes."""
        if token > st.rx_token:
            if st.rx_token and not st.token:
                self.takeovers += 1
                self._gap([st], "bus owner changed")
            st.rx_token, st.rx_seq = token, seq
        elif token == st.rx_token:
            if seq != st.rx_seq + 1 and not st.token:
                self._gap([st], "bus messages lost")
            st.rx_seq = seq

    # -- health -----------------------------------------------------------------------------

    def _gap(self, streams: list[_Stream], reason: str) -> None:
        keys = [st.key for st in streams if st.chan.topic is not None]
        if keys:
            self.gaps += len(keys)
            self.report_gap(keys, reason)

    def _set_commands_up(self, up: bool, exc: BaseException | None = None) -> None:
        was = self.commands_up and self.pubsub_up
        self.commands_up = up
        self._health_changed(was, exc)

    def _set_pubsub_up(self, up: bool, exc: BaseException | None = None) -> None:
        was = self.commands_up and self.pubsub_up
        self.pubsub_up = up
        self._health_changed(was, exc)

    def _health_changed(self, was: bool, exc: BaseException | None) -> None:
        now = self.commands_up and self.pubsub_up
        if not now and exc is not None:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning("redis bus: Redis unreachable (%r); serving local upstreams only, "
                            "reconnecting", exc)
        elif now and not was and self._outage_since is not None:
            log.warning("redis bus: Redis is back after %.1fs",
                        time.monotonic() - self._outage_since)
            self._outage_since = None

    def _bind_metrics(self, m: HubMetrics) -> None:
        m.add_gauge_source("bus_up", "1 while the cluster bus (Redis) is reachable",
                           lambda: float(self.commands_up and self.pubsub_up))
        m.add_gauge_source("bus_owned_streams", "Upstream streams this instance owns for the cluster",
                           lambda: sum(1 for st in self._streams.values() if st.token))
        m.add_counter_source("bus_batches_published", "Batches published on the bus",
                             lambda: self.batches_published)
        m.add_counter_source("bus_batches_received", "Batches received from other instances",
                             lambda: self.batches_received)
        m.add_counter_source("bus_batches_dropped", "Batches not published (bus down or buffer full)",
                             lambda: self.batches_dropped)
        m.add_counter_source("bus_duplicates_dropped", "Events dropped as duplicates by event id",
                             lambda: sum(st.chan.duplicates for st in self._streams.values()))
        m.add_counter_source("bus_gaps", "Stream gaps reported because of the bus",
                             lambda: self.gaps)
        m.add_counter_source("bus_reconnects", "Pub/sub reconnects after a lost connection",
                             lambda: self.reconnects)


def _backoff(failures: int, cap: float) -> float:
    """Full-jitter exponential backoff: 0.1 s doubled per failure, capped."""
    return random.uniform(0.5, 1.0) * min(cap, 0.1 * 2.0 ** min(failures, 16))


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except Exception:  # noqa: BLE001 -- closing a broken connection may fail any way
        pass
