"""The simulator's server: Binance-compatible WebSocket market streams and REST on picows.

Routes (one port; plain HTTP GETs are answered without an upgrade):

=====================================  ===================================================
``/ws``, ``/ws/<s1>/<s2>...``          raw payloads; digit-only segments (ccxt's ``/ws/0``)
                                       are connection labels and ignored
``/stream``, ``/stream?streams=a/b``   combined ``{"stream":<name>,"data":<payload>}``
``?timeUnit=MICROSECOND``              (any case of MICROSECOND/MILLISECOND) time fields in
                                       µs; a second ``?`` (python-binance) is tolerated
``/api/v3/ping``                       ``{}``
``/api/v3/time``                       ``{"serverTime":<ms>}``
``/api/v3/depth?symbol=BTCUSDT``       ``{"lastUpdateId","bids","asks"}``; ``limit`` 1..5000
                                       (default 100, larger values are capped at 5000)
anything else                          HTTP 404
=====================================  ===================================================

A URL naming an unknown stream, more than ``max_streams_per_connection`` streams or a bad
``timeUnit`` is refused with HTTP 400 and a JSON body ``{"code":2,"msg":...}``.

Close codes the simulator sends:

====  ===========================================================================
1000  echo of a client-initiated close
1001  ``Connection lifetime exceeded`` (max_connection_age) / ``Simulator stopping``
1003  ``Fragmented messages are not supported``
1008  ``Too many requests`` (over max_incoming_per_second) / ``Pong timeout``
1012  ``Server shutdown`` (after :meth:`Simulator.send_server_shutdown` with close_after)
====  ===========================================================================

Fault injection (:meth:`Simulator.drop_connections` aborts sockets without a close frame,
:meth:`Simulator.stall` freezes existing connections, :meth:`Simulator.refuse_handshakes`
answers upgrades with 429/503) exists for the hub's reconnect and watchdog tests.

Fan-out: every event is generated once per stream per tick and rendered once per wire
variant in use (raw/combined × ms/µs); the resulting WebSocket frames (server frames are
unmasked, so they are the same bytes for every connection) are concatenated and written
with one ``transport.write`` per connection per tick. A connection whose unsent data
exceeds ``max_send_buffer`` is aborted as a slow consumer; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from tickhub.sim.config import SimConfig
from tickhub.sim.market import (
    AggTradeGenerator,
    Event,
    Instrument,
    KlineGenerator,
    OrderBook,
    Renderer,
    StreamSpec,
    TickerGenerator,
    TradeGenerator,
    parse_stream,
)
from tickhub.sim.protocol import (
    INVALID_STREAM,
    ControlError,
    ControlRequest,
    parse_request,
    result_reply,
)

__all__ = ["Simulator"]

log = logging.getLogger("tickhub.sim")

_COMBINED = 1  # variant bit: wrap as {"stream":..,"data":..}
_MICRO = 2     # variant bit: time fields in microseconds
_TIME_MULTIPLIER = (1, 1, 1000, 1000)
_CLOSE_GRACE = 1.0          # seconds to wait for the client's close frame before dropping
_MAX_BACKLOG_SECONDS = 0.25  # a loop stalled longer than this skips events instead of bursting
_REST_DEPTH_MAX = 5000
_JSON_HEADERS = {"Content-Type": "application/json;charset=UTF-8"}

Dirty = dict["_Connection", list[bytes]]

_SMALL_HEADERS = tuple(bytes((0x81, n)) for n in range(126))


def _text_frame_header(length: int) -> bytes:
    """Header of an unmasked, final text frame carrying ``length`` payload bytes."""
    if length < 126:
        return _SMALL_HEADERS[length]
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------
# Streams and what produces them

class _Stream:
    """One stream name: its subscribers and how to render its events."""

    __slots__ = ("name", "spec", "render", "subscribers", "source", "periodic",
                 "_combined_prefix")

    def __init__(self, spec: StreamSpec, render: Renderer) -> None:
        self.name = spec.name
        self.spec = spec
        self.render = render
        self.subscribers: dict[_Connection, None] = {}
        self.source: _Source | None = None
        self.periodic: _Periodic | None = None
        self._combined_prefix = b'{"stream":' + orjson.dumps(spec.name) + b',"data":'

    def frames(self, events: list[Event], variant: int) -> bytes:
        """All events of one tick as concatenated WebSocket frames of one wire variant."""
        render = self.render
        mult = _TIME_MULTIPLIER[variant]
        parts: list[bytes] = []
        append = parts.append
        if variant & _COMBINED:
            prefix = self._combined_prefix
            for event in events:
                body = prefix + render(event, mult) + b"}"
                append(_text_frame_header(len(body)))
                append(body)
        else:
            for event in events:
                body = render(event, mult)
                append(_text_frame_header(len(body)))
                append(body)
        return b"".join(parts)

    def publish(self, events: list[Event], dirty: Dirty) -> int:
        """Queue this tick's frames for every subscriber; return frames delivered."""
        built: dict[int, bytes] = {}
        receivers = 0
        for conn in self.subscribers:
            if conn.stalled:
                continue
            variant = conn.variant
            data = built.get(variant)
            if data is None:
                data = built[variant] = self.frames(events, variant)
            pending = dirty.get(conn)
            if pending is None:
                dirty[conn] = [data]
            else:
                pending.append(data)
            receivers += 1
        return receivers * len(events)


class _Source:
    """A real-time generator paced at ``rate`` while any stream that needs it is subscribed.

    Pacing counts events owed since activation (``rate * elapsed``) rather than adding
    per tick, so timer jitter never changes the long-run rate; if the loop was blocked for
    more than _MAX_BACKLOG_SECONDS the excess is skipped (not generated), so a stall does
    not end in a burst that a client could mistake for market activity.
    """

    def __init__(self) -> None:
        self.users = 0
        self.started_at = 0.0
        self.owed_base = 0

    def start(self, now: float) -> None:
        self.started_at = now
        self.owed_base = 0

    def take_due(self, now: float, rate: float, multiple: int) -> int:
        owed = int((now - self.started_at) * rate) - self.owed_base
        cap = max(multiple, int(rate * _MAX_BACKLOG_SECONDS))
        if owed > cap:
            self.owed_base += owed - cap
            owed = cap
        owed -= owed % multiple
        self.owed_base += owed
        return owed

    def produce(self, n: int, now_ms: int, dirty: Dirty) -> int:
        raise NotImplementedError


class _TradeSource(_Source):
    def __init__(self, generator: TradeGenerator | AggTradeGenerator) -> None:
        super().__init__()
        self.generator = generator
        self.stream: _Stream | None = None

    def produce(self, n: int, now_ms: int, dirty: Dirty) -> int:
        assert self.stream is not None
        return self.stream.publish(self.generator.generate(n, now_ms), dirty)


class _BookSource(_Source):
    """Order-book changes of one symbol, feeding its diff and bookTicker streams.

    Partial-depth streams also keep it running (they show the book moving) but read the
    book on their own period.
    """

    def __init__(self, book: OrderBook) -> None:
        super().__init__()
        self.book = book
        self.diff_streams: list[_Stream] = []
        self.ticker_streams: list[_Stream] = []

    def produce(self, n: int, now_ms: int, dirty: Dirty) -> int:
        want_diffs = any(s.subscribers for s in self.diff_streams)
        want_tops = any(s.subscribers for s in self.ticker_streams)
        diffs, tops = self.book.generate(n, now_ms, want_diffs, want_tops)
        sent = 0
        if want_diffs:
            for stream in self.diff_streams:
                if stream.subscribers:
                    sent += stream.publish(diffs, dirty)
        if want_tops:
            for stream in self.ticker_streams:
                if stream.subscribers:
                    sent += stream.publish(tops, dirty)
        return sent


class _Periodic:
    """A stream pushed every ``period`` seconds; the first push is on the next tick."""

    __slots__ = ("stream", "period", "produce", "next_due")

    def __init__(self, stream: _Stream, period: float, produce: Callable[[int], Event]) -> None:
        self.stream = stream
        self.period = period
        self.produce = produce
        self.next_due = 0.0


# --------------------------------------------------------------------------------------
# Connections

class _Connection(WSListener):
    """One client connection: its subscriptions, properties and policing."""

    def __init__(self, sim: Simulator, initial_streams: list[str], combined: bool,
                 micro: bool) -> None:
        super().__init__()
        self.sim = sim
        self.initial_streams = initial_streams
        self.combined = combined
        self.variant = (_COMBINED if combined else 0) | (_MICRO if micro else 0)
        self.streams: dict[str, _Stream] = {}
        self.stalled = False
        self.closing = False
        self.transport: WSTransport | None = None
        self._raw: Any = None
        limit = sim.config.max_incoming_per_second
        self._incoming: collections.deque[float] | None = (
            collections.deque(maxlen=limit) if limit else None)
        self._outstanding_pings: set[bytes] = set()
        self._ping_handle: asyncio.TimerHandle | None = None
        self._pong_deadline: asyncio.TimerHandle | None = None
        self._age_handle: asyncio.TimerHandle | None = None
        self._disconnect_handle: asyncio.TimerHandle | None = None

    # picows callbacks ------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._raw = transport.underlying_transport
        sim = self.sim
        loop = sim.loop
        sim.connections[self] = None
        for name in self.initial_streams:
            sim.attach(self, name)
        if sim.config.ping_interval > 0:
            self._ping_handle = loop.call_later(sim.config.ping_interval, self._ping)
        if sim.config.max_connection_age > 0:
            self._age_handle = loop.call_later(
                sim.config.max_connection_age, self.close,
                WSCloseCode.GOING_AWAY, "Connection lifetime exceeded")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.CLOSE:
            self._on_close_frame(frame)
            return
        if self.closing or self.stalled:
            return
        incoming = self._incoming
        if incoming is not None:
            now = self.sim.loop.time()
            if len(incoming) == incoming.maxlen and now - incoming[0] < 1.0:
                log.info("closing connection over %d incoming messages/s",
                         incoming.maxlen)
                self.close(WSCloseCode.POLICY_VIOLATION, "Too many requests")
                return
            incoming.append(now)
        if not frame.fin or msg_type == WSMsgType.CONTINUATION:
            self.close(WSCloseCode.UNSUPPORTED_DATA, "Fragmented messages are not supported")
        elif msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif msg_type == WSMsgType.PONG:
            if frame.get_payload_as_bytes() in self._outstanding_pings:
                self._outstanding_pings.clear()
                if self._pong_deadline is not None:
                    self._pong_deadline.cancel()
                    self._pong_deadline = None
        else:
            self.sim.control_messages += 1
            transport.send(WSMsgType.TEXT, self.sim.handle_control(self, frame.get_payload_as_bytes()))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for handle in (self._ping_handle, self._pong_deadline, self._age_handle,
                       self._disconnect_handle):
            if handle is not None:
                handle.cancel()
        self.closing = True
        self.sim.detach_all(self)
        self.sim.connections.pop(self, None)

    # ------------------------------------------------------------------------------------

    def set_combined(self, combined: bool) -> None:
        self.combined = combined
        self.variant = (self.variant & ~_COMBINED) | (_COMBINED if combined else 0)

    def write(self, data: bytes) -> None:
        raw = self._raw
        limit = self.sim.config.max_send_buffer
        if limit and raw.get_write_buffer_size() > limit:
            log.warning("aborting slow consumer: more than %d bytes unsent", limit)
            self.abort()
            return
        raw.write(data)

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.closing and not self.stalled:
            self.transport.send(WSMsgType.TEXT, payload)

    def close(self, code: WSCloseCode, reason: str) -> None:
        """Send a close frame and drop the socket if the client does not answer in time."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.sim.detach_all(self)
        self.transport.send_close(code, reason.encode())
        self._disconnect_handle = self.sim.loop.call_later(_CLOSE_GRACE, self.transport.disconnect)

    def abort(self) -> None:
        """Reset the TCP connection without a close frame."""
        self.closing = True
        self.sim.detach_all(self)
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    def stall(self, stalled: bool) -> None:
        self.stalled = stalled
        if stalled:
            self._outstanding_pings.clear()
            if self._pong_deadline is not None:
                self._pong_deadline.cancel()
                self._pong_deadline = None

    def _on_close_frame(self, frame: WSFrame) -> None:
        assert self.transport is not None
        if not self.closing:
            self.closing = True
            self.sim.detach_all(self)
            try:
                self.transport.send_close(frame.get_close_code())
            except (ValueError, TypeError):
                self.transport.send_close(WSCloseCode.OK)
        self.transport.disconnect()

    def _ping(self) -> None:
        sim = self.sim
        if self.closing:
            return
        if not self.stalled and self.transport is not None:
            payload = b"%d" % _now_ms()
            self._outstanding_pings.add(payload)
            self.transport.send_ping(payload)
            if self._pong_deadline is None:
                self._pong_deadline = sim.loop.call_later(
                    sim.config.pong_timeout, self._on_pong_timeout)
        self._ping_handle = sim.loop.call_later(sim.config.ping_interval, self._ping)

    def _on_pong_timeout(self) -> None:
        self._pong_deadline = None
        if not self.stalled:
            log.info("closing connection: no pong within %.1f s", self.sim.config.pong_timeout)
            self.close(WSCloseCode.POLICY_VIOLATION, "Pong timeout")


# --------------------------------------------------------------------------------------
# The simulator

class Simulator:
    """A Binance-compatible exchange simulator on one port (see the module docstring).

    Counters for tests: :attr:`handshakes` (WebSocket upgrade requests, accepted or
    refused; REST requests are not counted), :attr:`control_messages` (JSON requests
    received, valid or not), :attr:`events_sent` (market-data frames written, summed over
    connections; control replies, pings and serverShutdown are not counted).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.handshakes = 0
        self.control_messages = 0
        self.events_sent = 0
        self.connections: dict[_Connection, None] = {}
        self._symbols = frozenset(self.config.symbols)
        self._instruments = {s: Instrument(s, self.config.seed) for s in self.config.symbols}
        self._streams: dict[str, _Stream] = {}
        self._books: dict[str, _BookSource] = {}
        self._active_sources: dict[_Source, None] = {}
        self._active_periodic: dict[_Periodic, None] = {}
        self._tick_handle: asyncio.Handle | None = None
        self._refuse_status: int | None = None
        self._refuse_remaining: int | None = None
        self._shutdown_handles: list[asyncio.TimerHandle] = []
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host = ""
        self._port = 0
        self._stopped = False

    # lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 picks a free port; read it back from :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._loop = asyncio.get_running_loop()
        self._server = await ws_create_server(
            self._route, host, port,
            enable_auto_pong=False,         # pings count toward the incoming rate limit
            websocket_handshake_timeout=5,
            max_frame_size=1024 * 1024,
            logger_name=logging.getLogger("tickhub.sim.picows"),
        )
        self._host = host
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("simulator listening on %s (symbols=%s, rate=%s/s, seed=%d)",
                 self.url, ",".join(self.config.symbols), self.config.rate, self.config.seed)

    async def stop(self) -> None:
        """Close every connection (1001) and the listening socket; safe to call twice."""
        if self._stopped or self._server is None:
            self._stopped = True
            return
        self._stopped = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for handle in self._shutdown_handles:
            handle.cancel()
        self._server.close()
        for conn in list(self.connections):
            conn.close(WSCloseCode.GOING_AWAY, "Simulator stopping")
            if conn.transport is not None:
                conn.transport.disconnect()
        try:
            await asyncio.wait_for(self._server.wait_closed(), _CLOSE_GRACE)
        except asyncio.TimeoutError:
            for conn in list(self.connections):
                conn.abort()
        log.info("simulator on %s stopped", self.url)

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("simulator not started")
        return self._loop

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self._port}"

    # observation -----------------------------------------------------------------------

    def subscriptions(self) -> dict[str, int]:
        """Stream name -> number of open connections subscribed to it now (zero omitted)."""
        return {name: len(s.subscribers) for name, s in self._streams.items() if s.subscribers}

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    # fault injection ---------------------------------------------------------------------

    def drop_connections(self) -> int:
        """Abort every open connection (TCP reset, no close frame); return how many."""
        conns = list(self.connections)
        for conn in conns:
            conn.abort()
        log.info("fault: dropped %d connections", len(conns))
        return len(conns)

    def stall(self, stalled: bool = True) -> None:
        """Freeze (or thaw) the connections open now; connections opened later are normal.

        A stalled connection keeps its socket but sends nothing at all: no data, no pings,
        no pongs, no replies; what it receives is read and ignored (so it is not rate
        limited and has no pong deadline). Generation goes on, so after a thaw the ids
        jump by what was generated meanwhile, as after a real upstream freeze.
        """
        for conn in self.connections:
            conn.stall(stalled)
        log.info("fault: stall %s on %d connections", stalled, len(self.connections))

    def refuse_handshakes(self, status: int = 503, count: int | None = None) -> None:
        """Answer the next ``count`` upgrades (None: all, until cleared) with ``status``."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (4xx/5xx), not {status}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        self._refuse_status = status
        self._refuse_remaining = count

    def clear_faults(self) -> None:
        """Stop refusing handshakes and thaw stalled connections."""
        self._refuse_status = None
        self._refuse_remaining = None
        self.stall(False)

    async def send_server_shutdown(self, close_after: float | None = None) -> int:
        """Send ``serverShutdown`` to every connection; close them later if asked.

        Raw connections get ``{"e":"serverShutdown","E":<ms>}``, combined ones
        ``{"stream":"!serverShutdown","data":{...}}``. With ``close_after`` the same
        connections are closed with 1012 after that many seconds. Returns the number of
        connections notified (stalled ones are skipped: they send nothing).
        """
        now_ms = _now_ms()
        notified: list[_Connection] = []
        for conn in list(self.connections):
            if conn.closing or conn.stalled:
                continue
            payload = b'{"e":"serverShutdown","E":%d}' % (now_ms * _TIME_MULTIPLIER[conn.variant])
            if conn.combined:
                payload = b'{"stream":"!serverShutdown","data":' + payload + b"}"
            conn.send_text(payload)
            notified.append(conn)
        if close_after is not None:
            self._shutdown_handles.append(self.loop.call_later(
                close_after, self._close_after_shutdown, notified))
        log.info("fault: serverShutdown sent to %d connections", len(notified))
        await asyncio.sleep(0)
        return len(notified)

    def _close_after_shutdown(self, conns: list[_Connection]) -> None:
        for conn in conns:
            conn.close(WSCloseCode.SERVICE_RESTART, "Server shutdown")

    # streams -------------------------------------------------------------------------------

    def stream_spec(self, name: str) -> StreamSpec | None:
        stream = self._streams.get(name)
        if stream is not None:
            return stream.spec
        return parse_stream(name, self._symbols)

    def _book(self, symbol: str) -> _BookSource:
        source = self._books.get(symbol)
        if source is None:
            source = self._books[symbol] = _BookSource(
                OrderBook(self._instruments[symbol], self.config.seed))
        return source

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is not None:
            return stream
        spec = parse_stream(name, self._symbols)
        if spec is None:
            raise KeyError(name)
        stream = self._streams[name] = self._build_stream(spec)
        return stream

    def _build_stream(self, spec: StreamSpec) -> _Stream:
        seed = self.config.seed
        kind = spec.kind
        if kind == "miniTickerArr":
            gens = [TickerGenerator(inst, seed, "miniTickerArr")
                    for inst in self._instruments.values()]
            renders = [g.mini_renderer() for g in gens]

            def render_arr(ev: Event, mult: int) -> bytes:
                return b"[" + b",".join([r(e, mult) for r, e in zip(renders, ev)]) + b"]"

            stream = _Stream(spec, render_arr)
            stream.periodic = _Periodic(
                stream, spec.period, lambda now_ms: tuple(g.generate_mini(now_ms) for g in gens))
            return stream
        inst = self._instruments[spec.symbol]
        if kind in ("trade", "aggTrade"):
            gen: TradeGenerator | AggTradeGenerator = (
                TradeGenerator(inst, seed) if kind == "trade" else AggTradeGenerator(inst, seed))
            source = _TradeSource(gen)
            stream = _Stream(spec, gen.renderer())
            stream.source = source
            source.stream = stream
            return stream
        if kind in ("depthUpdate", "bookTicker", "depthPartial"):
            book_source = self._book(spec.symbol)
            book = book_source.book
            if kind == "depthUpdate":
                stream = _Stream(spec, book.diff_renderer())
                book_source.diff_streams.append(stream)
            elif kind == "bookTicker":
                stream = _Stream(spec, book.book_ticker_renderer())
                book_source.ticker_streams.append(stream)
            else:
                levels = spec.levels
                stream = _Stream(spec, OrderBook.partial_renderer())
                stream.periodic = _Periodic(stream, spec.period,
                                            lambda now_ms: book.partial_event(levels))
            stream.source = book_source
            return stream
        if kind == "kline":
            kline = KlineGenerator(inst, spec.interval, seed)
            stream = _Stream(spec, kline.renderer())
            stream.periodic = _Periodic(stream, spec.period, kline.generate)
            return stream
        ticker = TickerGenerator(inst, seed, kind)
        if kind == "miniTicker":
            stream = _Stream(spec, ticker.mini_renderer())
            stream.periodic = _Periodic(stream, spec.period, ticker.generate_mini)
        else:
            stream = _Stream(spec, ticker.full_renderer())
            stream.periodic = _Periodic(stream, spec.period, ticker.generate_full)
        return stream

    def attach(self, conn: _Connection, name: str) -> None:
        """Subscribe conn to a valid stream name (idempotent)."""
        if name in conn.streams:
            return
        stream = self._stream(name)
        conn.streams[name] = stream
        stream.subscribers[conn] = None
        if len(stream.subscribers) == 1:
            self._activate(stream)

    def detach(self, conn: _Connection, name: str) -> None:
        stream = conn.streams.pop(name, None)
        if stream is None:
            return
        del stream.subscribers[conn]
        if not stream.subscribers:
            self._deactivate(stream)

    def detach_all(self, conn: _Connection) -> None:
        for name in list(conn.streams):
            self.detach(conn, name)

    def _activate(self, stream: _Stream) -> None:
        now = self.loop.time()
        source = stream.source
        if source is not None:
            source.users += 1
            if source.users == 1:
                source.start(now)
                self._active_sources[source] = None
        if stream.periodic is not None:
            stream.periodic.next_due = now
            self._active_periodic[stream.periodic] = None
        if self._tick_handle is None and not self._stopped:
            self._tick_handle = self.loop.call_soon(self._tick)

    def _deactivate(self, stream: _Stream) -> None:
        source = stream.source
        if source is not None:
            source.users -= 1
            if source.users == 0:
                self._active_sources.pop(source, None)
        if stream.periodic is not None:
            self._active_periodic.pop(stream.periodic, None)

    # the generator timer -----------------------------------------------------------------

    def _tick(self) -> None:
        """Generate everything due, then write it: one socket write per connection per round.

        With ``burst == 0`` there is one round per tick. With ``burst == N`` each round
        takes exactly N events from every real-time source that has N due, so each write
        carries N events per stream and the remainder waits for a later tick.
        """
        self._tick_handle = None
        if not self._active_sources and not self._active_periodic:
            return
        loop = self.loop
        now = loop.time()
        now_ms = _now_ms()
        config = self.config
        dirty: Dirty = {}
        sent = 0
        for periodic in list(self._active_periodic):
            if now >= periodic.next_due:
                periodic.next_due += periodic.period
                if periodic.next_due <= now:  # the loop fell behind: keep the period, skip
                    periodic.next_due = now + periodic.period
                sent += periodic.stream.publish([periodic.produce(now_ms)], dirty)
        burst = config.burst
        if burst == 0:
            for source in list(self._active_sources):
                n = source.take_due(now, config.rate, 1)
                if n:
                    sent += source.produce(n, now_ms, dirty)
            self._flush(dirty)
        else:
            self._flush(dirty)
            rounds = [(source, source.take_due(now, config.rate, burst) // burst)
                      for source in list(self._active_sources)]
            for round_index in range(max((r for _, r in rounds), default=0)):
                dirty = {}
                for source, count in rounds:
                    if count > round_index:
                        sent += source.produce(burst, now_ms, dirty)
                self._flush(dirty)
        self.events_sent += sent
        if not self._stopped:
            self._tick_handle = loop.call_at(now + config.tick_interval, self._tick)

    @staticmethod
    def _flush(dirty: Dirty) -> None:
        for conn, chunks in dirty.items():
            if not conn.closing:
                conn.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    # control protocol --------------------------------------------------------------------

    def handle_control(self, conn: _Connection, payload: bytes) -> bytes:
        """Answer one JSON request; every outcome is a reply, never an exception."""
        try:
            request = parse_request(payload)
            return self._dispatch(conn, request)
        except ControlError as exc:
            return exc.reply()

    def _dispatch(self, conn: _Connection, req: ControlRequest) -> bytes:
        method = req.method
        params = req.params if req.params is not None else []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if req.params is None:
                raise ControlError(2, "Invalid request: missing field `params`", req.id)
            names: list[str] = []
            for name in params:
                if not isinstance(name, str) or self.stream_spec(name) is None:
                    raise ControlError(2, INVALID_STREAM, req.id)
                names.append(name)
            if method == "UNSUBSCRIBE":
                for name in names:
                    self.detach(conn, name)
                return result_reply(None, req.id)
            new = [n for n in dict.fromkeys(names) if n not in conn.streams]
            limit = self.config.max_streams_per_connection
            if limit and len(conn.streams) + len(new) > limit:
                raise ControlError(
                    2, f"Invalid request: too many streams, at most {limit} per connection",
                    req.id)
            for name in new:
                self.attach(conn, name)
            return result_reply(None, req.id)
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                raise ControlError(2, "Invalid request: too many parameters", req.id)
            return result_reply(list(conn.streams), req.id)
        max_params = 1 if method == "GET_PROPERTY" else 2
        if len(params) > max_params:
            raise ControlError(2, "Invalid request: too many parameters", req.id)
        if not params or not isinstance(params[0], str):
            raise ControlError(2, "Invalid request: property name must be a string", req.id)
        if params[0] != "combined":
            raise ControlError(0, "Unknown property", req.id)
        if method == "GET_PROPERTY":
            return result_reply(conn.combined, req.id)
        if len(params) < 2 or not isinstance(params[1], bool):
            raise ControlError(1, "Invalid value type: expected Boolean", req.id)
        conn.set_combined(params[1])
        return result_reply(None, req.id)

    # HTTP routing --------------------------------------------------------------------------

    def _route(self, request: WSUpgradeRequest) -> Any:
        """picows listener factory: REST answers, refusals, or a connection listener."""
        raw_path = request.path.decode("utf-8", "replace")
        path, _, query = raw_path.partition("?")
        # python-binance appends "?timeUnit=X" after "?streams=...": treat later "?" as "&".
        query = query.replace("?", "&")
        path = unquote(path)
        params = parse_qs(query, keep_blank_values=True)
        if path.startswith("/api/"):
            return self._rest(path, params)
        self.handshakes += 1
        if self._refuse_status is not None:
            status = self._refuse_status
            if self._refuse_remaining is not None:
                self._refuse_remaining -= 1
                if self._refuse_remaining <= 0:
                    self._refuse_status = None
                    self._refuse_remaining = None
            code = -1003 if status == 429 else -1
            body = orjson.dumps({"code": code, "msg": f"{HTTPStatus(status).phrase} (simulated)"})
            return _http(status, body, {"Retry-After": "1"})
        if path in ("/ws", "/ws/"):
            combined, names = False, []
        elif path.startswith("/ws/"):
            combined = False
            names = [seg for seg in path[4:].split("/") if seg and not seg.isdigit()]
        elif path in ("/stream", "/stream/"):
            combined = True
            names = [n for value in params.get("streams", []) for n in value.split("/") if n]
        else:
            return None  # picows answers 404 Not Found
        time_unit = params.get("timeUnit", ["MILLISECOND"])[-1]
        if time_unit not in ("MILLISECOND", "millisecond", "MICROSECOND", "microsecond"):
            return _http(400, orjson.dumps({"code": 2, "msg": f"Invalid timeUnit: {time_unit}"}))
        names = list(dict.fromkeys(names))
        for name in names:
            if self.stream_spec(name) is None:
                return _http(400, orjson.dumps(
                    {"code": 2, "msg": f"{INVALID_STREAM}: {name}"}))
        limit = self.config.max_streams_per_connection
        if limit and len(names) > limit:
            return _http(400, orjson.dumps(
                {"code": 2, "msg": f"Invalid request: too many streams, at most {limit} per connection"}))
        return _Connection(self, names, combined, time_unit.upper() == "MICROSECOND")

    def _rest(self, path: str, params: dict[str, list[str]]) -> WSUpgradeResponseWithListener:
        if path == "/api/v3/ping":
            return _http(200, b"{}")
        if path == "/api/v3/time":
            return _http(200, b'{"serverTime":%d}' % _now_ms())
        if path == "/api/v3/depth":
            symbol = params.get("symbol", [""])[-1]
            if not symbol:
                return _http(400, orjson.dumps({
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."}))
            if symbol.lower() not in self._symbols:
                return _http(400, orjson.dumps({"code": -1121, "msg": "Invalid symbol."}))
            limit_text = params.get("limit", ["100"])[-1]
            if not limit_text.isdigit() or not 0 < int(limit_text) <= 10 ** 9:
                return _http(400, orjson.dumps({
                    "code": -1100,
                    "msg": "Illegal characters found in parameter 'limit'; legal range is '1'-'5000'."}))
            limit = min(int(limit_text), _REST_DEPTH_MAX)
            return _http(200, self._book(symbol.lower()).book.snapshot_json(limit))
        return _http(404, orjson.dumps({"code": -1, "msg": f"Unknown endpoint {path}"}))


def _http(status: int, body: bytes, headers: dict[str, str] | None = None
          ) -> WSUpgradeResponseWithListener:
    """A plain HTTP response; picows sends it with ``Connection: close``."""
    extra = dict(_JSON_HEADERS)
    if headers:
        extra.update(headers)
    if status < 400:
        response = WSUpgradeResponse.create_ok_response(body, extra_headers=extra)
    else:
        response = WSUpgradeResponse.create_error_response(status, body, extra_headers=extra)
    return WSUpgradeResponseWithListener(response, None)
