"""The gateway: a picows server on uvloop serving Binance's stream grammar from the hub.

One :class:`Gateway` per process owns the compiled :class:`~tickhub._ext.fanout.Fanout`, the
:class:`~tickhub.streams.StreamRegistry`, the exchange upstreams and the client sessions.

Routes (everything else: 404):

=====================================  ==================================================
``/ws``, ``/ws/<s>[/<s>...]``          raw payloads (``combined`` false); ``/ws/<n>``
                                       with a bare number (ccxt's connection index) is
                                       ``/ws``
``/stream``, ``/stream?streams=a/b``   combined ``{"stream":..,"data":..}`` payloads
``...&replay=SECONDS`` on either        the URL's streams from the Kafka log first, then
                                       live (tickhub extension: :mod:`tickhub.bus.replay`)
``/healthz``                           200 while the process runs (implementation shown)
``/readyz``                            200 while serving, 503 while draining (or while
                                       the bus is down, with
                                       ``TICKHUB_BUS_OUTAGE_UNREADY``); the body shows
                                       the bus health
``/metrics``                           Prometheus text format
``/admin/state``                       JSON: streams, clients, upstream connections
                                       (needs a token with ``"admin": true`` when auth
                                       is on)
=====================================  ==================================================
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
import picows
from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from . import _ext
from .auth import Authenticator
from .config import Config
from .errors import AuthError, CloseCode, InvalidStream
from .metrics import HubMetrics
from .names import BINANCE_MICROSECONDS, DEFAULT_EXCHANGE, StreamRef, in_time_unit, parse_stream
from .bus import Bus, make_bus
from .session import Session
from .streams import StreamRegistry

__all__ = ["Gateway", "parse_route", "Route"]

log = logging.getLogger("tickhub.server")

_TIME_UNITS = {"millisecond": "MILLISECOND", "microsecond": "MICROSECOND"}


class _OncePerSecond(logging.Filter):
    """picows logs each client protocol error (e.g. an oversized frame) at ERROR and each
    connect/disconnect at INFO; a misbehaving client or a connection storm must not be able
    to flood the log, so keep one record a second per level (an INFO line never hides the
    next ERROR)."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[int, float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last.get(record.levelno, -1.0) < 1.0:
            self.suppressed += 1
            return False
        self._last[record.levelno] = now
        return True


# picows logs under this logger (inside the tickhub tree, so TICKHUB_LOG_LEVEL reaches it).
# Handed over as an adapter: given a Logger, picows makes a child Logger per connection
# (~0.6 KB each), and a parent's filter never sees its children's records.
_PICOWS_LOG = logging.getLogger("tickhub.picows")
_PICOWS_LOG.addFilter(_OncePerSecond())
_PICOWS_LOGGER = logging.LoggerAdapter(_PICOWS_LOG)


class Route:
    """A parsed client URL: wire variant and the streams named in it."""

    __slots__ = ("combined", "streams", "replay", "time_unit")

    def __init__(
        self, combined: bool, streams: list[str], replay: float | None = None,
        time_unit: str = "MILLISECOND",
    ) -> None:
        self.combined = combined
        self.streams = streams
        #: ``MILLISECOND`` (Binance's default) or ``MICROSECOND``
        self.time_unit = time_unit
        #: ``?replay=SECONDS``: replay the URL's streams from the Kafka log first
        #: (a tickhub extension, :mod:`tickhub.bus.replay`)
        self.replay = replay


def parse_route(raw_path: str) -> Route | None:
    """Parse a client request path into a :class:`Route`; ``None`` for a non-stream path.

    Tolerates what Binance clients send: URL-encoding, python-binance's second ``?``
    (``/stream?streams=a/b?timeUnit=X``), ccxt's ``/ws/0`` and a trailing slash.
    Raises ValueError for a ``timeUnit`` the hub does not serve, or a ``replay`` that is
    not a number of seconds > 0.
    """
    path, _, query = raw_path.partition("?")
    path = unquote(path).rstrip("/") or "/"
    params: dict[str, str] = {}
    for part in query.split("?"):
        params.update(parse_qsl(part, keep_blank_values=True))
    unit = params.get("timeUnit")
    time_unit = "MILLISECOND" if unit is None else _TIME_UNITS.get(unit.lower())
    if time_unit is None:
        raise ValueError(f"timeUnit={unit} is not one of MILLISECOND, MICROSECOND")
    replay = _replay_seconds(params.get("replay"))
    if path == "/ws" or path.startswith("/ws/"):
        names = [n for n in path[4:].split("/") if n]
        if len(names) == 1 and names[0].isdigit():
            names = []
        return Route(False, names, replay, time_unit)
    if path == "/stream":
        streams = params.get("streams", "")
        return Route(True, [n for n in unquote(streams).split("/") if n], replay, time_unit)
    return None


def _replay_seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"replay={raw} must be a number of seconds > 0")
    return seconds


class Gateway:
    """The hub process: client server, fan-out, registry and upstreams."""

    def __init__(
        self,
        config: Config,
        *,
        upstreams: dict[str, Any] | None = None,
        metrics: HubMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or HubMetrics()
        self.authenticator = Authenticator(config)
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.fanout: Any = None
        self.registry: StreamRegistry = None  # type: ignore[assignment]
        self.bus: Bus = None  # type: ignore[assignment]
        self._upstreams = upstreams
        self.upstreams: dict[str, Any] = {}
        self.sessions: dict[int, Session] = {}
        #: replay tasks running now (capped by config.max_replays)
        self.replays_running = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.draining = False
        self.started = False
        self._keepalive_task: asyncio.Task[None] | None = None
        self._listener_cls = _ext.listener.ClientListener
        self.wall_clock = time.time

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if _ext.IMPLEMENTATION != "compiled":
            msg = "the compiled hot path is not available (%s); running the pure-Python twins"
            if not cfg.allow_pure_python:
                raise RuntimeError(
                    "refusing to serve on the pure-Python fan-out: "
                    f"{_ext.COMPILED_IMPORT_ERROR or 'TICKHUB_IMPL=python'}; "
                    "build the extensions or pass --allow-pure-python"
                )
            log.warning(msg, _ext.COMPILED_IMPORT_ERROR)
        if not self.authenticator.required:
            log.warning("HUB_JWT_SECRET is not set: clients connect without authentication")
        self.loop = asyncio.get_running_loop()
        self.fanout = _ext.fanout.Fanout(
            self.loop, max_queued_bytes=cfg.max_queued_bytes, on_slow_consumer=self._slow_consumer
        )
        if self._upstreams is None:
            # Two Binance adapters: milliseconds (the default) and timeUnit=MICROSECOND. An
            # adapter opens no connection until one of its streams is acquired.
            self.upstreams = {
                DEFAULT_EXCHANGE: self._binance_upstream(DEFAULT_EXCHANGE, None),
                BINANCE_MICROSECONDS: self._binance_upstream(BINANCE_MICROSECONDS, "MICROSECOND"),
            }
        else:
            self.upstreams = dict(self._upstreams)
        self.registry = StreamRegistry(self.fanout)
        self.bus = self._make_bus()
        self.registry.bus = self.bus
        self._bind_metrics()
        await self.bus.start()
        for up in self.upstreams.values():
            if hasattr(up, "start"):
                await up.start()
        ssl_ctx = None
        if cfg.tls:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            assert cfg.tls_cert_file is not None  # Config requires both with wss://
            ssl_ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        self.server = await picows.ws_create_server(
            self._route,
            cfg.listen_host,
            cfg.listen_port,
            ssl=ssl_ctx,
            websocket_handshake_timeout=5,
            enable_auto_pong=False,  # the listener answers pings itself and counts them
            max_frame_size=cfg.max_frame_size,
            read_buffer_init_size=2048,  # control messages are small; keeps RSS per client low
            use_aiofastnet=cfg.aiofastnet,
            logger_name=_PICOWS_LOGGER,
            # asyncio's default backlog of 100 overflowed in a storm of 5,000 connects in 2 s
            # (p99 connect 1.1 s: SYN retries); the kernel caps it at somaxconn.
            backlog=4096,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        if cfg.ping_interval > 0:
            self._keepalive_task = self.loop.create_task(self._keepalive())
        self.started = True
        log.info(
            "tickhub listening on %s://%s:%d (hot path: %s)",
            "wss" if cfg.tls else "ws", cfg.listen_host, self.port, _ext.IMPLEMENTATION,
        )

    def _make_bus(self) -> Bus:
        """The bus named by the config (``memory`` unless Redis or Kafka is configured)."""
        return make_bus(self.config, self.upstreams, self.registry, self.report_gap, self.metrics)

    def _binance_upstream(self, exchange: str, time_unit: str | None) -> Any:
        from .upstream.binance import BinanceUpstream, UpstreamSettings

        cfg = self.config
        settings = UpstreamSettings(
            base_url=cfg.binance_ws_url,
            streams_per_connection=cfg.upstream_streams_per_connection,
            control_per_second=cfg.upstream_control_per_second,
            linger=cfg.upstream_linger,
            # The config's 0 means "never"; the adapter wants a positive time for both.
            max_age=cfg.upstream_max_age or math.inf,
            stall_timeout=cfg.upstream_stall_timeout or math.inf,
            backoff_initial=cfg.upstream_backoff_initial,
            backoff_max=cfg.upstream_backoff_max,
            connect_budget=cfg.upstream_connect_budget,
            connect_window=cfg.upstream_connect_window,
            time_unit=time_unit,
        )
        return BinanceUpstream(
            settings,
            on_data=lambda stream, payload: self.bus.on_upstream_data(exchange, stream, payload),
            on_stream_error=lambda stream, code, msg: self._on_stream_error(exchange, stream, code, msg),
            on_status=lambda event, info: self._on_upstream_status(exchange, event, info),
            name=exchange,
        )

    def _on_stream_error(self, exchange: str, stream: str, code: int, msg: str) -> None:
        key = StreamRef(exchange, stream).key
        log.warning("exchange %s rejected stream %s: %s", exchange, stream, msg)
        for session in list(self.sessions.values()):
            session.drop_stream(key, code, msg)

    def _on_upstream_status(self, exchange: str, event: str, info: dict[str, Any]) -> None:
        if event == "connected":
            self.metrics.upstream_connections.labels(exchange=exchange).inc()
        elif event == "disconnected":
            self.metrics.upstream_connections.labels(exchange=exchange).dec()
            self.metrics.upstream_reconnects_total.labels(exchange=exchange).inc()
        elif event == "rotated":
            self.metrics.upstream_rotations_total.labels(exchange=exchange).inc()
        elif event == "gap":
            prefix = "" if exchange == "binance" else f"{exchange}:"
            # Through the bus: clients of these streams on other instances must hear it too.
            self.bus.upstream_gap([prefix + s for s in info.get("streams", ())],
                                  info.get("reason", "upstream reconnect"))

    def report_gap(self, keys: list[str], reason: str) -> None:
        """Events of ``keys`` may have been missed (upstream or bus outage): never silent.

        ``gap_policy=notice`` (default): a ``streamGap`` event goes into each affected
        stream, in order with its data, so clients stay connected and know to resync (the
        shape follows Binance's own out-of-band ``serverShutdown`` event)::

            raw:       {"e":"streamGap","E":<ms>,"stream":"btcusdt@depth","reason":"..."}
            combined:  {"stream":"btcusdt@depth","data":{"e":"streamGap",...}}

        ``gap_policy=close``: every client of an affected stream is closed with 4011.
        """
        wanted = [k for k in keys if k.encode() in self.registry.topics]
        if not wanted:
            return
        log.warning("gap on %d stream(s) (%s): %s", len(wanted), reason, self.config.gap_policy)
        if self.config.gap_policy == "close":
            keyset = set(wanted)
            for session in list(self.sessions.values()):
                if not keyset.isdisjoint(session.streams):
                    session.close(CloseCode.STREAM_GAP, "stream gap: reconnect and resync")
            return
        now_ms = int(self.wall_clock() * 1000)
        for key in wanted:
            name = self.registry.topics[key.encode()].name.decode()  # as the exchange names it
            notice = orjson.dumps({"e": "streamGap", "E": now_ms, "stream": name, "reason": reason})
            self.registry.on_data(key.encode(), notice)

    async def stop(self) -> None:
        """Drain, then stop the upstreams and the bus.

        The listening socket stays open during the drain so that ``/readyz`` answers 503
        (load balancers and probes see "not ready" rather than "connection refused");
        every new WebSocket upgrade gets 503 too. Clients are closed with 1001 in up to 50
        waves spread over ``drain_seconds``, so they do not all reconnect to the other
        instances at the same moment.
        """
        if self.draining:
            return
        self.draining = True
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        sessions = list(self.sessions.values())
        window = self.config.drain_seconds
        steps = min(len(sessions), 50)
        for i in range(steps):
            for s in sessions[i::steps]:
                s.close(CloseCode.GOING_AWAY, "server shutting down")
            if window > 0 and i < steps - 1:
                await asyncio.sleep(window / steps)
        try:
            # Session.close aborts a peer that does not finish the close within its grace.
            async with asyncio.timeout(max(5.0, window)):
                while self.sessions:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.warning("%d client(s) still open after the drain; stopping anyway", len(self.sessions))
        if self.server is not None:
            self.server.close()
        for up in self.upstreams.values():
            if hasattr(up, "stop"):
                await up.stop()
        await self.bus.stop()
        log.info("tickhub stopped")

    # -- routing (one call per HTTP request, before the upgrade) ----------------------------

    def _route(self, request: WSUpgradeRequest) -> Any:
        raw_path = request.path.decode("latin-1")
        path = raw_path.partition("?")[0]
        if path in ("/healthz", "/readyz", "/metrics") or path.startswith("/admin"):
            return self._http(path, request)
        try:
            route = parse_route(raw_path)
        except ValueError as exc:
            return self._reject(400, str(exc), "bad_request")
        if route is None:
            return self._reject(404, "not found", "not_found")
        if route.replay is not None:
            refusal = self._replay_refusal(route.replay)
            if refusal is not None:
                return self._reject(400, refusal, "replay")
        if self.draining:
            return self._reject(503, "server is shutting down", "draining")
        limit = self.config.max_connections
        if limit and len(self.sessions) >= limit:
            return self._reject(503, "too many connections", "max_connections")
        try:
            principal = self.authenticator.authenticate(request.path, request.headers)
        except AuthError as exc:
            return self._reject(exc.status, exc.reason, "auth")
        refs: list[StreamRef] = []
        try:
            for name in route.streams:
                ref = in_time_unit(parse_stream(name), route.time_unit)
                if not principal.may_subscribe(ref.public):
                    return self._reject(403, f"stream not allowed by token: {name}", "forbidden_stream")
                refs.append(ref)
        except InvalidStream as exc:
            return self._reject(400, f"invalid stream: {exc.stream}", "invalid_stream")
        unique = {r.key: r for r in refs}
        maxs = self.config.max_streams_per_connection
        if maxs and len(unique) > maxs:
            return self._reject(400, f"too many streams (at most {maxs} per connection)", "too_many_streams")
        max_replays = self.config.max_replays
        if route.replay is not None and max_replays and self.replays_running + len(unique) > max_replays:
            # Each replay is a Kafka consumer of its own: a burst of them must not exhaust
            # the hub or the broker. The session starts them in this same callback (picows
            # calls on_ws_connected right after the handshake), so the count cannot race.
            return self._reject(503, f"too many replays in progress (at most {max_replays}); "
                                     "try again later", "replay_busy")
        peer = request.headers.get("X-Forwarded-For", "")
        session = Session(self, principal, list(unique.values()), route.combined, peer,
                          replay=route.replay, time_unit=route.time_unit)
        listener = self._listener_cls(
            session, self.config.max_incoming_per_second, self.config.max_frame_size
        )
        session.listener = listener
        return listener

    def _replay_refusal(self, seconds: float) -> str | None:
        """Why ``?replay=seconds`` cannot be served here, or None."""
        cfg = self.config
        if cfg.kafka_broker_url is None:
            return "replay needs the Kafka event log, which this hub does not have (KAFKA_BROKER_URL)"
        if cfg.replay_max_seconds <= 0:
            return "replay is turned off on this hub"
        if seconds > cfg.replay_max_seconds:
            return f"replay={seconds:g} is over the limit of {cfg.replay_max_seconds:g} seconds"
        return None

    def start_replay(self, session: Session, ref: StreamRef, seconds: float) -> asyncio.Task[int]:
        """Replay ``ref`` from the Kafka log to ``session``, then join it to the live stream."""
        from .bus.replay import replay_stream

        assert self.config.kafka_broker_url is not None
        task = self.loop.create_task(replay_stream(
            self.config.kafka_broker_url, ref, seconds, self.config.replay_max_messages,
            lambda: self.bus.live_last_id(ref.key),
            lambda payload: session.send_event(ref, payload),
            lambda: session.replay_done(ref),
        ), name=f"tickhub-replay-{ref.key}")
        self.replays_running += 1
        task.add_done_callback(self._replay_finished)
        return task

    def _replay_finished(self, _task: asyncio.Task[int]) -> None:
        self.replays_running -= 1

    def _reject(self, status: int, body: str, reason: str) -> Any:
        self.metrics.rejected_upgrades_total.labels(reason=reason).inc()
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_error_response(status, body.encode() + b"\n"), None
        )

    def _http(self, path: str, request: WSUpgradeRequest) -> Any:
        if path == "/healthz":
            body = orjson.dumps({"status": "ok", "implementation": _ext.IMPLEMENTATION})
            return _ok(body, "application/json")
        if path == "/readyz":
            if self.draining or not self.started:
                return WSUpgradeResponseWithListener(
                    WSUpgradeResponse.create_error_response(503, b'{"status":"draining"}\n'), None
                )
            bus = self.bus.status()
            if not bus["healthy"] and self.config.bus_outage_unready:
                return WSUpgradeResponseWithListener(
                    WSUpgradeResponse.create_error_response(503, b'{"status":"bus down"}\n'), None
                )
            # A bus outage alone keeps the hub ready: it still serves its own upstreams.
            ready = {"status": "ready", "bus": {"kind": bus["kind"], "healthy": bus["healthy"]}}
            return _ok(orjson.dumps(ready), "application/json")
        if path == "/metrics":
            body, ctype = self.metrics.render()
            return _ok(body, ctype)
        if path == "/admin/state":
            if self.authenticator.required:
                try:
                    principal = self.authenticator.authenticate(request.path, request.headers)
                except AuthError as exc:
                    return self._reject(exc.status, exc.reason, "auth")
                if not principal.admin:
                    return self._reject(403, "admin token required", "forbidden_admin")
            return _ok(orjson.dumps(self.snapshot(), option=orjson.OPT_INDENT_2), "application/json")
        return self._reject(404, "not found", "not_found")

    # -- sessions ---------------------------------------------------------------------------

    def session_opened(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()

    def session_closed(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.connections.dec()

    def _slow_consumer(self, sub: Any) -> None:
        self.metrics.slow_consumer_disconnects_total.inc()
        session: Session = sub.session
        session.close(CloseCode.SLOW_CONSUMER, "slow consumer: queue over the limit")

    async def _keepalive(self) -> None:
        """Ping every client each ping_interval; close those silent past pong_timeout."""
        interval = self.config.ping_interval
        timeout = self.config.pong_timeout
        clock = _ext.listener.monotonic
        while True:
            await asyncio.sleep(interval)
            now = clock()
            for session in list(self.sessions.values()):
                if session.closing or session.transport is None:
                    continue
                if timeout and now - session.listener.last_pong > timeout:
                    session.close(CloseCode.PONG_TIMEOUT, "no pong")
                else:
                    session.transport.send_ping()

    # -- observability ----------------------------------------------------------------------

    def _bind_metrics(self) -> None:
        m, fo = self.metrics, self.fanout
        m.add_counter_source("fanout_messages_in", "Messages published into the fan-out", lambda: fo.messages_in)
        m.add_counter_source("messages_out", "Messages delivered to clients", lambda: fo.messages_out)
        m.add_counter_source("bytes_out", "Bytes written to clients", lambda: fo.bytes_out)
        m.add_counter_source("fanout_writes", "Transport writes to clients", lambda: fo.writes)
        m.add_gauge_source("streams", "Streams with local subscribers", lambda: len(self.registry.topics))
        m.add_gauge_source("replays_running", "Replays from the Kafka log running now",
                           lambda: self.replays_running)
        m.add_gauge_source(
            "fanout_last_flush_latency_seconds",
            "Time from the first publish of the last loop turn to the end of its flush",
            lambda: fo.last_flush_latency_ns / 1e9,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "implementation": _ext.IMPLEMENTATION,
            "draining": self.draining,
            "connections": len(self.sessions),
            "replays_running": self.replays_running,
            "streams": self.registry.snapshot(),
            "clients": [s.snapshot() for s in list(self.sessions.values())[:1000]],
            "upstream": {name: up.snapshot() for name, up in self.upstreams.items() if hasattr(up, "snapshot")},
            "bus": self.bus.status(),
            "fanout": {
                "messages_in": self.fanout.messages_in,
                "messages_out": self.fanout.messages_out,
                "bytes_out": self.fanout.bytes_out,
                "writes": self.fanout.writes,
                "slow_consumers": self.fanout.slow_consumers,
            },
        }


def _ok(body: bytes, ctype: str) -> Any:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_ok_response(body, extra_headers={"Content-Type": ctype}), None
    )
