"""Binance spot adapter: the hub's connections to the exchange's combined market streams.

:class:`BinanceUpstream` keeps **one** exchange subscription per stream for the whole hub
and hands every event to ``on_data`` exactly once, with the payload bytes exactly as the
exchange sent them. Around that promise it handles the exchange's rules (reference:
exchange-protocols.md §1.1, §1.4–§1.6):

* **Reference counts and linger.** :meth:`~BinanceUpstream.acquire` /
  :meth:`~BinanceUpstream.release` count users per stream. The first acquire subscribes;
  the last release starts a ``linger`` timer and only its expiry sends UNSUBSCRIBE, so a
  client that reconnects (or a page reload) does not churn the exchange. An empty
  connection is closed after a further ``linger``.
* **Sharding.** At most ``streams_per_connection`` streams per connection (Binance: 1024);
  new streams fill the oldest connection with room, and more connections open as needed.
* **Batched control messages.** SUBSCRIBE/UNSUBSCRIBE requests made within
  ``batch_window`` are coalesced into one message of up to ``params_per_message`` params,
  and each connection sends at most ``control_per_second - 1`` of them in any second: the
  exchange counts pongs towards the same 5 messages/s, so one slot is left for them.
* **Bad streams.** An error reply to a SUBSCRIBE batch is bisected (each half retried as
  its own request, within the rate limit) until the single rejected streams are found;
  each is reported once via ``on_stream_error`` and dropped — it is no longer wanted, and
  later :meth:`~BinanceUpstream.release` calls for it are ignored.
* **Reconnects.** Exponential backoff with full jitter; HTTP 429 on the handshake waits at
  least half of ``backoff_max`` (or ``Retry-After``). All connection attempts of the
  adapter share a budget of ``connect_budget`` per ``connect_window`` (Binance: 300 per
  5 min per IP). After a reconnect every stream of the connection is resubscribed and a
  ``"gap"`` status names them: events may have been missed.
* **Keepalive and stall watchdog.** Binance pings every 20 s and drops a connection that
  does not pong within a minute; the adapter answers pings itself (picows' auto-pong is
  off so that pings count as signs of life). It sends no pings of its own: they would
  spend the 5 messages/s budget, and a dead link is already noticed when neither data nor
  the server's pings arrive for ``stall_timeout`` (so keep ``stall_timeout`` above the
  server's ping interval). A stalled connection is aborted and reconnected.
* **Make-before-break rotation.** Before the exchange's 24 h cut (``max_age``) or on
  ``serverShutdown``, a successor connection subscribes to the same streams; each stream
  switches to the successor once the two have overlapped, then the old connection closes.

De-duplication across a rotation, per stream, by ``envelope.event_id`` (trade ``t``,
aggTrade ``a``, depth/bookTicker ``u``, partial depth ``lastUpdateId``, else ``E``):

* The old connection stays the stream's *source* until the switch. Its events are
  delivered unless their id is ``<=`` the last delivered id.
* The successor's events are held back (dropped and counted: the old connection delivers
  them) while it is a *candidate*; the adapter remembers the highest id it has seen.
* The stream switches as soon as the old connection has delivered an id ``>=`` the highest
  id the successor has seen: from then on the successor has every later event, and
  nothing the old connection delivered is repeated (ids ``<=`` the last are dropped).
* Events without a usable id (``event_id == -1``) are taken from the old connection
  before the switch and from the successor after it; such a stream switches at the
  successor's first event, so one event in flight on the old connection may be lost or
  repeated — the only case where the rotation cannot promise exactness.
* A stream the successor has not seen an event of within ``rotation_timeout`` of its acks
  switches anyway (nothing can be missed on a quiet stream). If the successor has seen
  events the old connection never caught up with, or the old connection dies before the
  switch, the stream is switched and reported in a ``"gap"`` status.

Outside rotations the same check drops an event whose id is not above the last delivered
one on its stream; after a reconnect that could have lost events, the last id is
forgotten so a stream whose ids restarted is not silenced.

Status events (``on_status(event, info)``): ``"connected"``, ``"disconnected"``,
``"gap"`` (``info["streams"]`` lists the affected streams), ``"rotating"``,
``"rotated"``, ``"stalled"``, ``"handshake_failed"``. Exceptions raised by the callbacks
are logged (the first ``on_data`` one with its traceback, later ones only counted) and
never stop the adapter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import orjson
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from tickhub._ext import envelope as _envelope

from .backoff import Backoff, SlidingWindowLimiter

__all__ = ["BinanceUpstream", "UpstreamSettings", "DataCallback", "StreamErrorCallback", "StatusCallback"]

log = logging.getLogger("tickhub.upstream")
_picows_log = logging.getLogger("tickhub.upstream.ws")

DataCallback = Callable[[bytes, bytes], None]
StreamErrorCallback = Callable[[str, int, str], None]
StatusCallback = Callable[[str, dict[str, Any]], None]

# Bound once: the per-frame path reads module globals, not attributes of other modules.
_parse = _envelope.parse
_event_id = _envelope.event_id
_KIND_DATA: int = _envelope.KIND_DATA
_KIND_RESULT: int = _envelope.KIND_RESULT
_KIND_ERROR: int = _envelope.KIND_ERROR
_TEXT = WSMsgType.TEXT
_CONTINUATION = WSMsgType.CONTINUATION
_PING = WSMsgType.PING
_CLOSE = WSMsgType.CLOSE

_NO_CANDIDATE_EVENT = -2  # candidate_max before the successor has delivered anything
_SHUTDOWN_MARK = b'"serverShutdown"'


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Tuning of one Binance adapter. Times are seconds; every field has Binance's default.

    ``linger`` 0 unsubscribes on the next loop turn after the last release.
    """

    base_url: str = "wss://stream.binance.com:9443"
    """Exchange base URL; the adapter connects to ``<base_url>/stream`` (combined mode)."""
    time_unit: str | None = None
    """``MICROSECOND``: connect with ``?timeUnit=MICROSECOND`` (timestamps in µs)."""
    streams_per_connection: int = 1024
    """Binance's per-connection stream cap."""
    control_per_second: int = 5
    """Binance's incoming-message limit per connection; the adapter sends at most one less."""
    linger: float = 5.0
    """Delay between the last release and UNSUBSCRIBE (and between empty and closed)."""
    max_age: float = 23.5 * 3600
    """Rotate a connection at this age, before Binance's 24 h cut."""
    stall_timeout: float = 30.0
    """Abort a connection with streams after this long without any frame (server pings are every 20 s)."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    connect_budget: int = 300
    """Connection attempts allowed per ``connect_window`` across the adapter (Binance: 300 / 5 min / IP)."""
    connect_window: float = 300.0
    connect_timeout: float = 10.0
    """TCP + TLS + WebSocket handshake must finish within this."""
    subscribe_timeout: float = 10.0
    """A SUBSCRIBE/UNSUBSCRIBE without a reply for this long means the connection is broken: reconnect."""
    batch_window: float = 0.02
    """Requests within this window share one control message."""
    params_per_message: int = 200
    """Streams per SUBSCRIBE/UNSUBSCRIBE message (keeps messages far below size limits)."""
    rotation_timeout: float = 10.0
    """Longest overlap of a rotation after the successor's acks (see the module docstring)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("ws://", "wss://")):
            raise ValueError(f"base_url must start with ws:// or wss://, not {self.base_url!r}")
        for name in ("streams_per_connection", "connect_budget", "params_per_message"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.control_per_second < 2:
            raise ValueError("control_per_second must be >= 2 (one slot is kept for pongs)")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and value < 0:
                raise ValueError(f"{f.name} must not be negative")
        for name in ("max_age", "stall_timeout", "backoff_initial", "connect_window",
                     "connect_timeout", "subscribe_timeout", "rotation_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")


class _StreamState:
    """Per-stream delivery state read by the per-frame path (plain slots, no properties)."""

    __slots__ = ("name", "last_id", "source", "candidate", "candidate_max")

    def __init__(self, name: str, source: _Connection) -> None:
        self.name = name
        self.last_id = -1
        self.source: _Connection = source
        self.candidate: _Connection | None = None
        self.candidate_max = _NO_CANDIDATE_EVENT


class _Request:
    __slots__ = ("method", "params", "sent_at")

    def __init__(self, method: str, params: list[str], sent_at: float) -> None:
        self.method = method
        self.params = params
        self.sent_at = sent_at


class _Connection(WSListener):
    """One exchange connection: its streams, its control queue, its frame handler.

    The object outlives its transports: reconnects reuse it (the listener factory returns
    ``self``), so a stream's ``source`` identity survives a reconnect.
    """

    def __init__(self, manager: BinanceUpstream, conn_id: int) -> None:
        super().__init__()
        self.id = conn_id
        self.manager = manager
        settings = manager.settings
        # read by the per-frame path
        self.states = manager._states
        self.on_data = manager._on_data
        self.frames = 0
        self.duplicates = 0
        # control plane
        self.streams: set[str] = set()
        self.acked: set[str] = set()
        self.to_subscribe: dict[str, None] = {}
        self.to_unsubscribe: dict[str, None] = {}
        self.probes: deque[list[str]] = deque()
        self.inflight: dict[int, _Request] = {}
        self.state = "new"
        self.transport: WSTransport | None = None
        self.connected_at = 0.0
        self.connects = 0
        self.progress_frames = -1
        self.progress_at = time.monotonic()
        self.limiter = SlidingWindowLimiter(settings.control_per_second - 1, 1.0)
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self.flush_handle: asyncio.TimerHandle | None = None
        self.empty_handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.lost_unclean = False
        self.rotate_pending: str | None = None
        # rotation: an old connection has a successor; the successor points back
        self.successor: _Connection | None = None
        self.rotating_from: _Connection | None = None
        self.unswitched = 0
        self.rotation_started = 0.0
        self.rotation_acked_at = 0.0
        self._fragments: bytearray | None = None

    # ------------------------------------------------------------------ per-frame path
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.state = "disconnected"

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.frames += 1
        if frame.msg_type == _TEXT and frame.fin:
            self.on_message(frame.get_payload_as_bytes())
        else:
            self._on_other_frame(transport, frame)

    def on_message(self, buf: bytes) -> None:
        """Route one complete text message; the hot path for DATA, kept to local/attribute work."""
        kind, key, start, end = _parse(buf)
        if kind != _KIND_DATA:
            self.manager._on_control(self, kind, key, buf, start, end)
            return
        state = self.states.get(key)
        if state is None:
            self.manager._on_unrouted(self, buf[start:end])
            return
        payload = buf[start:end]
        event_id = _event_id(payload)
        if state.source is self:
            if event_id >= 0:
                if event_id <= state.last_id:
                    self.duplicates += 1
                    return
                state.last_id = event_id
            try:
                self.on_data(key, payload)
            except Exception as exc:  # the callback's bug must not cut the exchange link
                self.manager._on_data_error(exc)
            candidate_max = state.candidate_max
            if candidate_max >= 0 and state.last_id >= candidate_max:
                self.manager._switch(state)
        elif state.candidate is self:
            if event_id > state.candidate_max:
                state.candidate_max = event_id
            if event_id >= 0:
                # Held back while the old connection has not caught up: it delivers it.
                self.duplicates += 1
                if state.candidate_max <= state.last_id:
                    self.manager._switch(state)
                return
            self.manager._switch(state)
            try:
                self.on_data(key, payload)
            except Exception as exc:
                self.manager._on_data_error(exc)
        else:
            # A retired connection's last frames after the switch.
            self.duplicates += 1

    def _on_other_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == _PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif msg_type == _TEXT:  # first fragment of a fragmented message
            self._fragments = bytearray(frame.get_payload_as_bytes())
        elif msg_type == _CONTINUATION and self._fragments is not None:
            self._fragments += frame.get_payload_as_bytes()
            if frame.fin:
                buf = bytes(self._fragments)
                self._fragments = None
                self.on_message(buf)
        elif msg_type == _CLOSE:
            log.info("upstream %d: exchange closed the connection: %s %s", self.id,
                     frame.get_close_code(), frame.get_close_reason())
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    # ------------------------------------------------------------------ streams and control queue
    def add_stream(self, stream: str) -> None:
        self.streams.add(stream)
        if self.empty_handle is not None:
            self.empty_handle.cancel()
            self.empty_handle = None
        if stream in self.to_unsubscribe:
            del self.to_unsubscribe[stream]  # never left the exchange: still subscribed
        else:
            self.to_subscribe[stream] = None
            self.schedule_flush()

    def remove_stream(self, stream: str) -> None:
        self.streams.discard(stream)
        if stream in self.to_subscribe:
            del self.to_subscribe[stream]
        else:
            self.to_unsubscribe[stream] = None
            self.schedule_flush()
        if not self.streams:
            self.manager._schedule_empty_close(self)

    def forget_stream(self, stream: str) -> None:
        """Drop a stream the exchange rejected (nothing to unsubscribe)."""
        self.streams.discard(stream)
        self.acked.discard(stream)
        self.to_subscribe.pop(stream, None)
        if not self.streams:
            self.manager._schedule_empty_close(self)

    def schedule_flush(self, delay: float | None = None) -> None:
        if self.flush_handle is None and self.state == "open":
            wait = self.manager.settings.batch_window if delay is None else delay
            self.flush_handle = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        """Send queued requests, as few messages as possible, never beyond the rate limit."""
        self.flush_handle = None
        if self.state != "open" or self.transport is None:
            return
        chunk = self.manager.settings.params_per_message
        while self.probes or self.to_subscribe or self.to_unsubscribe:
            wait = self.limiter.delay()
            if wait > 0:
                self.schedule_flush(wait)
                return
            if self.probes:
                params = [s for s in self.probes.popleft() if s in self.streams and s not in self.acked]
                if not params:
                    continue
                method = "SUBSCRIBE"
            elif self.to_subscribe:
                params = list(self.to_subscribe)[:chunk]
                for s in params:
                    del self.to_subscribe[s]
                method = "SUBSCRIBE"
            else:
                params = list(self.to_unsubscribe)[:chunk]
                for s in params:
                    del self.to_unsubscribe[s]
                    self.acked.discard(s)
                method = "UNSUBSCRIBE"
            self._send_request(method, params)

    def _send_request(self, method: str, params: list[str]) -> None:
        assert self.transport is not None
        manager = self.manager
        manager._request_id += 1
        request_id = manager._request_id
        message = orjson.dumps({"method": method, "params": params, "id": request_id})
        self.transport.send(_TEXT, message)
        self.limiter.record()
        self.inflight[request_id] = _Request(method, params, time.monotonic())
        manager.control_messages += 1

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Connect, serve, and reconnect until closed."""
        manager = self.manager
        settings = manager.settings
        delay = 0.0
        while not self.closing:
            if delay > 0:
                self.state = "backoff"
                await asyncio.sleep(delay)
                if self.closing:
                    break
            self.state = "connecting"
            await manager._connect_budget.acquire()
            if self.closing:
                break
            manager.connect_attempts += 1
            try:
                transport, _ = await asyncio.wait_for(
                    ws_connect(
                        lambda: self,
                        manager.url,
                        enable_auto_pong=False,
                        disconnect_on_exception=False,
                        websocket_handshake_timeout=settings.connect_timeout,
                        logger_name=_picows_log,
                    ),
                    settings.connect_timeout,
                )
            except WSInvalidStatusError as exc:
                status = int(exc.response.status) if exc.response is not None else 0
                if status == 429:
                    delay = self.backoff.throttled(_retry_after(exc))
                else:
                    delay = self.backoff.next_delay()
                manager.handshake_failures += 1
                log.warning("upstream %d: handshake refused with HTTP %d, retry in %.2fs",
                            self.id, status, delay)
                manager._emit("handshake_failed", {"connection": self.id, "status": status,
                                                   "retry_in": delay})
                continue
            except (OSError, asyncio.TimeoutError, WSError) as exc:
                delay = self.backoff.next_delay()
                manager.handshake_failures += 1
                log.warning("upstream %d: connect to %s failed (%s), retry in %.2fs",
                            self.id, manager.url, str(exc) or type(exc).__name__, delay)
                manager._emit("handshake_failed", {"connection": self.id, "status": 0,
                                                   "retry_in": delay})
                continue
            if self.closing:
                transport.disconnect()
                break
            self._opened(transport)
            try:
                await transport.wait_disconnected()
            except Exception as exc:  # picows re-raises callback errors here
                log.warning("upstream %d: connection ended with %r", self.id, exc)
            self._closed()
            delay = self.backoff.next_delay()
        self.state = "closed"

    def _opened(self, transport: WSTransport) -> None:
        manager = self.manager
        now = time.monotonic()
        self.transport = transport
        self.state = "open"
        self.connected_at = now
        self.progress_at = now
        self.progress_frames = self.frames
        self.connects += 1
        reconnect = self.connects > 1
        if reconnect:
            manager.reconnects += 1
        gap = []
        for stream in self.streams:
            state = manager._states.get(stream.encode())
            if state is None:
                continue
            if state.source is self:
                gap.append(stream)
                state.last_id = -1  # no overlap: nothing can repeat; ids may have restarted
            elif state.candidate is self:
                state.candidate_max = _NO_CANDIDATE_EVENT
        self.to_unsubscribe.clear()
        self.probes.clear()
        self.to_subscribe = dict.fromkeys(sorted(self.streams))
        log.info("upstream %d: connected to %s (%s, %d streams)", self.id, manager.url,
                 "reconnect" if reconnect else "new", len(self.streams))
        manager._emit("connected", {"connection": self.id, "url": manager.url,
                                    "streams": len(self.streams), "reconnect": reconnect})
        if reconnect and self.lost_unclean and gap:
            gap.sort()
            manager.gaps += 1
            log.warning("upstream %d: %d streams may have missed events while disconnected",
                        self.id, len(gap))
            manager._emit("gap", {"connection": self.id, "streams": gap, "reason": "reconnect"})
        self.lost_unclean = False
        self.schedule_flush(0.0)

    def _closed(self) -> None:
        manager = self.manager
        self.state = "disconnected"
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self.acked.clear()
        self.inflight.clear()
        self.rotation_acked_at = 0.0
        self.transport = None
        self._fragments = None
        if self.closing:
            log.info("upstream %d: closed", self.id)
            return
        self.lost_unclean = True
        log.warning("upstream %d: disconnected (%d streams), reconnecting", self.id, len(self.streams))
        manager._emit("disconnected", {"connection": self.id, "streams": len(self.streams)})
        if self.successor is not None:
            manager._finish_rotation(self, died=True)

    def close(self) -> None:
        """Stop for good: no reconnect; the transport is closed with 1000."""
        self.closing = True
        for handle in (self.flush_handle, self.empty_handle):
            if handle is not None:
                handle.cancel()
        self.flush_handle = self.empty_handle = None
        if self.transport is not None and self.state == "open":
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()
        elif self.task is not None and self.state != "open":
            self.task.cancel()  # sleeping in backoff or connecting: nothing to close

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.manager.url,
            "state": "retiring" if self.successor is not None else self.state,
            "age": round(now - self.connected_at, 3) if self.state == "open" else None,
            "streams": sorted(self.streams),
            "acked": len(self.acked),
            "last_message_ago": round(now - self.progress_at, 3),
            "frames": self.frames,
            "duplicates_dropped": self.duplicates,
            "pending": {"subscribe": len(self.to_subscribe) + sum(map(len, self.probes)),
                        "unsubscribe": len(self.to_unsubscribe),
                        "inflight": len(self.inflight)},
            "rotating_from": self.rotating_from.id if self.rotating_from is not None else None,
        }


def _retry_after(exc: WSInvalidStatusError) -> float | None:
    if exc.response is None:
        return None
    value = exc.response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class BinanceUpstream:
    """The hub's side of Binance: reference-counted streams over sharded, self-healing connections.

    Call :meth:`acquire`/:meth:`release` from the event loop thread. Acquiring before
    :meth:`start` is allowed; connections open at start. An empty stream name raises
    ``ValueError``; any other name is sent to the exchange, which decides (a rejected one
    comes back through ``on_stream_error``).
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        on_data: DataCallback,
        on_stream_error: StreamErrorCallback | None = None,
        on_status: StatusCallback | None = None,
        name: str = "binance",
    ) -> None:
        self.settings = settings
        self.name = name
        self.url = settings.base_url.rstrip("/") + "/stream"
        if settings.time_unit is not None:
            self.url += f"?timeUnit={settings.time_unit}"
        self._on_data = on_data
        self._on_stream_error = on_stream_error
        self._on_status = on_status
        self._refs: dict[str, int] = {}
        self._assigned: dict[str, _Connection] = {}
        self._states: dict[bytes, _StreamState] = {}
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._connections: list[_Connection] = []
        self._connect_budget = SlidingWindowLimiter(settings.connect_budget, settings.connect_window)
        self._next_conn_id = 0
        self._request_id = 0
        self._started = False
        self._stopping = False
        self._watchdog: asyncio.Task[None] | None = None
        self._retired_frames = 0
        self._retired_duplicates = 0
        self._data_errors = 0
        # counters (snapshot()["counters"])
        self.reconnects = 0
        self.rotations = 0
        self.subscribe_errors = 0
        self.streams_rejected = 0
        self.control_messages = 0
        self.connect_attempts = 0
        self.handshake_failures = 0
        self.stalls = 0
        self.gaps = 0
        self.unrouted = 0

    # ------------------------------------------------------------------ public API
    async def start(self) -> None:
        """Open the connections the acquired streams need and start the watchdog."""
        if self._stopping:
            raise RuntimeError("a stopped upstream cannot be restarted; create a new one")
        if self._started:
            return
        self._started = True
        self._stopping = False
        for conn in self._connections:
            self._launch(conn)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        log.info("upstream %s: started (%s)", self.name, self.url)

    async def stop(self) -> None:
        """Close every connection and cancel pending timers (final: no restart)."""
        self._stopping = True
        self._started = False
        if self._watchdog is not None:
            self._watchdog.cancel()
        for handle in self._lingering.values():
            handle.cancel()
        self._lingering.clear()
        tasks = [t for t in (c.task for c in self._connections) if t is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        for conn in self._connections:
            conn.close()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.settings.connect_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._watchdog = None
        log.info("upstream %s: stopped", self.name)

    def acquire(self, stream: str) -> None:
        """Add one user of ``stream``; the first one subscribes it upstream."""
        if not stream:
            raise ValueError("stream name must not be empty")
        count = self._refs.get(stream, 0)
        self._refs[stream] = count + 1
        if count:
            return
        handle = self._lingering.pop(stream, None)
        if handle is not None:
            handle.cancel()  # still subscribed: the linger just ends
            return
        if stream not in self._assigned:
            self._assign(stream)

    def release(self, stream: str) -> None:
        """Remove one user of ``stream``; after the last, UNSUBSCRIBE follows ``linger`` later.

        Releasing a stream that is not acquired (or that the exchange rejected) does nothing.
        """
        count = self._refs.get(stream)
        if count is None:
            return
        if count > 1:
            self._refs[stream] = count - 1
            return
        del self._refs[stream]
        if stream in self._assigned:
            loop = asyncio.get_running_loop()
            self._lingering[stream] = loop.call_later(self.settings.linger, self._linger_expired, stream)

    def refcount(self, stream: str) -> int:
        """Current number of users of ``stream``."""
        return self._refs.get(stream, 0)

    def snapshot(self) -> dict[str, Any]:
        """State for the admin JSON view (plain JSON-serialisable types)."""
        now = time.monotonic()
        conns = list(self._connections)
        return {
            "name": self.name,
            "url": self.url,
            "streams": len(self._assigned),
            "lingering": sorted(self._lingering),
            "connections": [c.snapshot(now) for c in conns],
            "pending": {
                "subscribe": sum(len(c.to_subscribe) + sum(map(len, c.probes)) for c in conns),
                "unsubscribe": sum(len(c.to_unsubscribe) for c in conns),
                "inflight": sum(len(c.inflight) for c in conns),
            },
            "counters": {
                "messages": self._retired_frames + sum(c.frames for c in conns),
                "duplicates_dropped": self._retired_duplicates + sum(c.duplicates for c in conns),
                "reconnects": self.reconnects,
                "rotations": self.rotations,
                "subscribe_errors": self.subscribe_errors,
                "streams_rejected": self.streams_rejected,
                "control_messages": self.control_messages,
                "connect_attempts": self.connect_attempts,
                "handshake_failures": self.handshake_failures,
                "stalls": self.stalls,
                "gaps": self.gaps,
                "unrouted": self.unrouted,
                "callback_errors": self._data_errors,
            },
        }

    # ------------------------------------------------------------------ assignment
    def _assign(self, stream: str) -> None:
        conn = self._connection_unsubscribing(stream) or self._pick_connection()
        self._assigned[stream] = conn
        self._states[stream.encode()] = _StreamState(stream, conn)
        conn.add_stream(stream)

    def _connection_unsubscribing(self, stream: str) -> _Connection | None:
        """A connection whose UNSUBSCRIBE for ``stream`` has not left yet: reuse it."""
        for conn in self._connections:
            if stream in conn.to_unsubscribe and self._accepts(conn):
                return conn
        return None

    def _accepts(self, conn: _Connection) -> bool:
        return (not conn.closing and conn.successor is None
                and len(conn.streams) < self.settings.streams_per_connection)

    def _pick_connection(self) -> _Connection:
        for conn in self._connections:
            if self._accepts(conn):
                return conn
        return self._new_connection()

    def _new_connection(self) -> _Connection:
        self._next_conn_id += 1
        conn = _Connection(self, self._next_conn_id)
        self._connections.append(conn)
        if self._started:
            self._launch(conn)
        return conn

    def _launch(self, conn: _Connection) -> None:
        if conn.task is None:
            conn.task = asyncio.get_running_loop().create_task(
                conn.run(), name=f"tickhub-upstream-{self.name}-{conn.id}")

    def _retire(self, conn: _Connection) -> None:
        conn.close()
        if conn in self._connections:
            self._connections.remove(conn)
            self._retired_frames += conn.frames
            self._retired_duplicates += conn.duplicates
            conn.frames = conn.duplicates = 0

    def _linger_expired(self, stream: str) -> None:
        self._lingering.pop(stream, None)
        if stream in self._refs:
            return
        conn = self._assigned.pop(stream, None)
        if conn is None:
            return
        self._drop_state(stream)
        conn.remove_stream(stream)

    def _schedule_empty_close(self, conn: _Connection) -> None:
        if conn.empty_handle is None and not conn.closing and conn.successor is None:
            conn.empty_handle = asyncio.get_running_loop().call_later(
                self.settings.linger, self._close_if_empty, conn)

    def _close_if_empty(self, conn: _Connection) -> None:
        conn.empty_handle = None
        if conn.streams or conn.closing:
            return
        log.info("upstream %d: no streams left, closing", conn.id)
        if conn.rotating_from is not None:
            self._finish_rotation(conn.rotating_from, died=False)
        self._retire(conn)

    def _drop_state(self, stream: str) -> None:
        state = self._states.pop(stream.encode(), None)
        if state is not None and state.candidate is not None:
            self._count_switched(state.source)

    # ------------------------------------------------------------------ control replies
    def _on_control(self, conn: _Connection, kind: int, key: bytes | None, buf: bytes,
                    start: int, end: int) -> None:
        if kind == _KIND_RESULT or kind == _KIND_ERROR:
            request = None
            if key is not None:
                try:
                    request = conn.inflight.pop(int(key), None)
                except ValueError:
                    request = None
            if request is None:
                log.warning("upstream %d: reply to an unknown request id %r", conn.id, key)
                return
            if not conn.inflight:
                conn.backoff.reset()  # the exchange answers: this connection works
            if kind == _KIND_RESULT:
                if request.method == "SUBSCRIBE":
                    conn.acked.update(s for s in request.params if s in conn.streams)
                return
            self._on_request_error(conn, request, buf[start:end])
        elif _SHUTDOWN_MARK in buf:
            self._on_server_shutdown(conn)
        else:
            self.unrouted += 1

    def _on_unrouted(self, conn: _Connection, payload: bytes) -> None:
        if _SHUTDOWN_MARK in payload:
            self._on_server_shutdown(conn)
        else:
            self.unrouted += 1  # events still in flight after an UNSUBSCRIBE

    def _on_request_error(self, conn: _Connection, request: _Request, error: bytes) -> None:
        code, msg = _error_fields(error)
        self.subscribe_errors += 1
        if request.method != "SUBSCRIBE":
            log.warning("upstream %d: %s of %d streams failed: %d %s", conn.id, request.method,
                        len(request.params), code, msg)
            return
        wanted = [s for s in request.params if s in conn.streams]
        if len(wanted) == 1:
            self._reject(conn, wanted[0], code, msg)
        elif wanted:
            half = len(wanted) // 2
            conn.probes.append(wanted[:half])
            conn.probes.append(wanted[half:])
            log.info("upstream %d: SUBSCRIBE of %d streams refused (%d %s), bisecting",
                     conn.id, len(wanted), code, msg)
            conn.schedule_flush(0.0)

    def _reject(self, conn: _Connection, stream: str, code: int, msg: str) -> None:
        log.warning("upstream %d: exchange rejected stream %r: %d %s", conn.id, stream, code, msg)
        self.streams_rejected += 1
        conn.forget_stream(stream)
        self._assigned.pop(stream, None)
        self._refs.pop(stream, None)
        handle = self._lingering.pop(stream, None)
        if handle is not None:
            handle.cancel()
        self._drop_state(stream)
        if self._on_stream_error is not None:
            try:
                self._on_stream_error(stream, code, msg)
            except Exception:
                log.exception("upstream %s: on_stream_error callback failed", self.name)

    def _on_data_error(self, exc: Exception) -> None:
        self._data_errors += 1
        if self._data_errors == 1:
            log.error("upstream %s: on_data callback failed (further failures are only counted)",
                      self.name, exc_info=exc)

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        if self._on_status is None:
            return
        try:
            self._on_status(event, info)
        except Exception:
            log.exception("upstream %s: on_status callback failed for %r", self.name, event)

    # ------------------------------------------------------------------ rotation
    def _on_server_shutdown(self, conn: _Connection) -> None:
        log.info("upstream %d: exchange announced serverShutdown", conn.id)
        self._rotate(conn, "serverShutdown")

    def _rotate(self, old: _Connection, reason: str) -> None:
        """Make-before-break: a successor takes ``old``'s streams; ``old`` closes after the switch."""
        if self._stopping or old.closing or old.successor is not None:
            return
        if old.rotating_from is not None:
            old.rotate_pending = reason  # rotate again once the current rotation is done
            return
        if not old.streams:
            self._retire(old)
            return
        self._next_conn_id += 1
        new = _Connection(self, self._next_conn_id)
        self._connections.append(new)
        new.rotating_from = old
        old.successor = new
        old.rotation_started = time.monotonic()
        if old.flush_handle is not None:
            old.flush_handle.cancel()
            old.flush_handle = None
        old.to_subscribe.clear()
        old.to_unsubscribe.clear()
        old.probes.clear()
        switching = 0
        for stream in old.streams:
            self._assigned[stream] = new
            new.streams.add(stream)
            state = self._states.get(stream.encode())
            if state is None:
                continue
            if stream in old.acked:
                state.candidate = new
                state.candidate_max = _NO_CANDIDATE_EVENT
                switching += 1
            else:
                state.source = new  # never delivered on old: nothing to overlap
        old.unswitched = switching
        log.info("upstream %d: rotating to upstream %d (%s, %d streams)", old.id, new.id,
                 reason, len(new.streams))
        self._emit("rotating", {"old": old.id, "new": new.id, "reason": reason,
                                "streams": len(new.streams)})
        if self._started:
            self._launch(new)
        if not switching:
            self._finish_rotation(old, died=False)

    def _switch(self, state: _StreamState) -> None:
        """Make the candidate the stream's source (called from the per-frame path, rarely)."""
        old = state.source
        candidate = state.candidate
        if candidate is None:
            return
        state.source = candidate
        state.candidate = None
        state.candidate_max = _NO_CANDIDATE_EVENT
        self._count_switched(old)

    def _count_switched(self, old: _Connection) -> None:
        old.unswitched -= 1
        if old.unswitched <= 0 and old.successor is not None:
            asyncio.get_running_loop().call_soon(self._finish_rotation, old, False)

    def _finish_rotation(self, old: _Connection, died: bool, timed_out: bool = False) -> None:
        new = old.successor
        if new is None:
            return
        gap: list[str] = []
        for state in self._states.values():
            if state.source is old and state.candidate is new:
                if died or (timed_out and state.candidate_max != _NO_CANDIDATE_EVENT):
                    gap.append(state.name)
                state.source = new
                state.candidate = None
                state.candidate_max = _NO_CANDIDATE_EVENT
        old.successor = None
        old.unswitched = 0
        new.rotating_from = None
        self._retire(old)
        self.rotations += 1
        if new.rotate_pending is not None:
            asyncio.get_running_loop().call_soon(self._rotate, new, new.rotate_pending)
            new.rotate_pending = None
        overlap = time.monotonic() - old.rotation_started
        log.info("upstream %d: rotated to upstream %d after %.2fs overlap%s", old.id, new.id,
                 overlap, f", {len(gap)} streams with a possible gap" if gap else "")
        self._emit("rotated", {"old": old.id, "new": new.id, "overlap": overlap,
                               "streams": len(new.streams), "gap": len(gap)})
        if gap:
            gap.sort()
            self.gaps += 1
            self._emit("gap", {"connection": new.id, "streams": gap,
                               "reason": "old connection lost" if died else "rotation timeout"})

    # ------------------------------------------------------------------ watchdog
    async def _watch(self) -> None:
        """Once per tick: stall detection, request timeouts, rotation by age and timeout."""
        s = self.settings
        tick = max(0.02, min(1.0, s.stall_timeout / 4, s.subscribe_timeout / 4,
                             s.rotation_timeout / 4, s.max_age / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                self._check(time.monotonic())
            except Exception:
                log.exception("upstream %s: watchdog check failed", self.name)

    def _check(self, now: float) -> None:
        s = self.settings
        for conn in list(self._connections):
            if conn.frames != conn.progress_frames:
                conn.progress_frames = conn.frames
                conn.progress_at = now
            if conn.state != "open" or conn.closing or conn.transport is None:
                continue
            if conn.streams and now - conn.progress_at > s.stall_timeout:
                self.stalls += 1
                log.warning("upstream %d: nothing received for %.1fs, reconnecting", conn.id,
                            now - conn.progress_at)
                self._emit("stalled", {"connection": conn.id, "silent_for": now - conn.progress_at})
                conn.transport.disconnect(graceful=False)
                continue
            oldest = min((r.sent_at for r in conn.inflight.values()), default=now)
            if now - oldest > s.subscribe_timeout:
                log.warning("upstream %d: no reply to a control request for %.1fs, reconnecting",
                            conn.id, now - oldest)
                conn.transport.disconnect(graceful=False)
                continue
            if conn.successor is not None:
                new = conn.successor
                if not new.rotation_acked_at:
                    if new.state == "open" and new.streams <= new.acked:
                        new.rotation_acked_at = now
                elif now - new.rotation_acked_at > s.rotation_timeout:
                    self._finish_rotation(conn, died=False, timed_out=True)
            elif conn.rotating_from is None and now - conn.connected_at >= s.max_age:
                self._rotate(conn, "max_age")


def _error_fields(error: bytes) -> tuple[int, str]:
    """``code`` and ``msg`` of an exchange error object; odd shapes still give an answer."""
    try:
        obj = orjson.loads(error)
    except orjson.JSONDecodeError:
        return -1, error.decode("utf-8", "replace")
    if not isinstance(obj, dict):
        return -1, str(obj)
    code = obj.get("code", -1)
    return (code if isinstance(code, int) else -1), str(obj.get("msg", ""))
