"""One client connection: the Binance-compatible control protocol on top of the fan-out.

The compiled listener (tickhub._ext.listener) handles every frame; it calls this object for
connection events and complete text messages only. Per-message data never passes here:
data goes from the upstream through the registry to the compiled Fanout.

Answers to bad input (documented in the README, "Client protocol"):

* invalid JSON, unknown method, bad params, invalid stream  -> Binance-shaped error reply,
  connection stays open;
* a stream the token does not allow                         -> error code 4, stays open;
* more than ``max_streams_per_connection`` streams          -> error code 2, stays open;
* text that is not UTF-8                                     -> close 1007;
* binary frame                                               -> close 1003;
* frame or message over ``max_frame_size``                   -> close 1009;
* more than ``max_incoming_per_second`` frames in a second   -> close 4029;
* no pong within ``pong_timeout``                            -> close 4010;
* token expired while connected                              -> close 4001;
* queue over ``max_queued_bytes`` (slow consumer)            -> close 4008.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import orjson

from ._ext import fanout as _fanout
from .errors import CloseCode, ProtocolError
from .metrics import ABNORMAL_CLOSURE
from .names import StreamRef, in_time_unit
from .protocol import Request, encode_error, encode_result, parse_request

if TYPE_CHECKING:
    from .auth import Principal
    from .server import Gateway

__all__ = ["Session", "ERR_FORBIDDEN", "ERR_TOO_MANY_STREAMS"]

log = logging.getLogger("tickhub.session")

#: Error code for a stream the client's token does not allow (not a Binance code: Binance
#: has no per-stream authorisation).
ERR_FORBIDDEN = 4
#: Too many streams on one connection: Binance's "invalid request" code.
ERR_TOO_MANY_STREAMS = 2

#: Seconds a closing connection gets to flush its close frame before it is aborted (a
#: stalled peer would otherwise hold the socket and its buffer forever).
CLOSE_GRACE = 3.0

_ids = itertools.count(1)


class Session:
    """Per-connection state: subscriptions (in order), the ``combined`` property, identity."""

    # One per client connection: slots keep the idle footprint small (README, memory).
    __slots__ = (
        "id", "gateway", "principal", "combined", "peer", "streams", "_topics", "_initial",
        "_replay", "_replaying", "time_unit", "transport", "sub", "listener", "closing",
        "_expiry_timer", "_abort_timer",
    )

    def __init__(
        self,
        gateway: Gateway,
        principal: Principal,
        initial: list[StreamRef],
        combined: bool,
        peer: str,
        *,
        replay: float | None = None,
        time_unit: str = "MILLISECOND",
    ) -> None:
        self.id = next(_ids)
        self.gateway = gateway
        self.principal = principal
        self.combined = combined
        self.peer = peer
        self.streams: dict[str, StreamRef] = {}  # key -> ref, in subscription order
        self._topics: dict[str, Any] = {}
        self._initial = initial
        self.transport: Any = None
        self.sub: Any = None
        self.listener: Any = None
        self.closing = False
        self._expiry_timer: Any = None
        self._abort_timer: Any = None
        self._replay = replay
        #: the URL's timeUnit: streams subscribed later are served in the same unit
        self.time_unit = time_unit
        #: stream key -> its replay task; the key joins the live topic when it is done
        self._replaying: dict[str, Any] = {}

    # -- listener callbacks ---------------------------------------------------------------

    def on_connected(self, transport: Any) -> None:
        self.transport = transport
        self.sub = _fanout.Subscriber(transport, self)
        # Ask the transport to pause us as soon as it holds any byte: the fan-out then
        # knows without asking that a direct send() keeps the byte order (on_backlog).
        transport.underlying_transport.set_write_buffer_limits(high=0, low=0)
        self.sub.tracks_backlog = True
        self.gateway.session_opened(self)
        exp = self.principal.expires_at
        if exp is not None:
            delay = max(0.0, exp - self.gateway.wall_clock())
            self._expiry_timer = self.gateway.loop.call_later(delay, self._expired)
        if self._initial:
            if self._replay is not None:
                for ref in self._initial:
                    self._replaying[ref.key] = None
            self._add(self._initial)
            if self._replay is not None:
                for ref in self._initial:
                    self._replaying[ref.key] = self.gateway.start_replay(self, ref, self._replay)
        self._initial = []

    def on_backlog(self, backlogged: bool) -> None:
        """The transport's buffer became non-empty (True) or drained (False)."""
        if self.sub is not None:
            self.sub.backlogged = backlogged

    def on_disconnected(self) -> None:
        if not self.closing:
            # Not closed by the hub's own close(): picows closed it on a protocol error
            # (oversized frame, bad framing), or the peer vanished without a close frame.
            self.closing = True
            self.gateway.metrics.disconnects_total.labels(code=self._unsolicited_close_code()).inc()
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        for task in self._replaying.values():
            if task is not None:
                task.cancel()
        self._replaying.clear()
        if self.sub is not None:
            self.gateway.fanout.remove(self.sub)
        for ref in self.streams.values():
            self.gateway.registry.release(ref)
        self.gateway.metrics.subscriptions.dec(len(self.streams))
        self.streams.clear()
        self._topics.clear()
        self.gateway.session_closed(self)

    def _unsolicited_close_code(self) -> str:
        """The disconnect's label: the close code picows sent, else ABNORMAL_CLOSURE."""
        handshake = getattr(self.transport, "close_handshake", None)
        sent = handshake.sent if handshake is not None else None
        if sent is not None:
            try:
                return CloseCode(int(sent.code)).name
            except ValueError:
                return str(int(sent.code))
        return ABNORMAL_CLOSURE

    def on_text(self, payload: bytes) -> None:
        if self.closing:
            return
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            self.close(CloseCode.INVALID_PAYLOAD, "text frame is not valid UTF-8")
            return
        try:
            reply = self._handle(parse_request(payload))
        except ProtocolError as exc:
            self.gateway.metrics.client_errors_total.labels(code=str(exc.code)).inc()
            reply = encode_error(exc.id_raw, exc.code, exc.msg)
        self.send_text(reply)

    def on_binary(self) -> None:
        self.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")

    def on_rate_limited(self) -> None:
        self.close(CloseCode.RATE_LIMITED, "too many messages per second")

    def on_too_big(self) -> None:
        self.close(CloseCode.MESSAGE_TOO_BIG, "message too big")

    def on_protocol_error(self, reason: str) -> None:
        self.close(CloseCode.PROTOCOL_ERROR, reason)

    def on_close_frame(self, code: int) -> None:
        # The client closes: echo its close and drop the connection (RFC 6455 §5.5.1).
        self.close(CloseCode.NORMAL, "")

    # -- methods --------------------------------------------------------------------------

    def _handle(self, req: Request) -> bytes:
        method, id_raw = req.method, req.id_raw
        refs = [in_time_unit(r, self.time_unit) for r in req.streams]
        if method == "SUBSCRIBE":
            for ref in refs:
                if not self.principal.may_subscribe(ref.public):
                    raise ProtocolError(ERR_FORBIDDEN, f"Forbidden: stream not allowed by token: {ref.public}", id_raw)
            new = [r for r in refs if r.key not in self.streams]
            limit = self.gateway.config.max_streams_per_connection
            if limit and len(self.streams) + len(new) > limit:
                raise ProtocolError(
                    ERR_TOO_MANY_STREAMS,
                    f"Invalid request: too many streams (at most {limit} per connection)",
                    id_raw,
                )
            self._add(new)
            return encode_result(id_raw, None)
        if method == "UNSUBSCRIBE":
            self._remove([r for r in refs if r.key in self.streams])
            return encode_result(id_raw, None)
        if method == "LIST_SUBSCRIPTIONS":
            return encode_result(id_raw, [r.public for r in self.streams.values()])
        if method == "SET_PROPERTY":
            self.combined = req.property_value  # the only property: "combined"
            self._apply()
            return encode_result(id_raw, None)
        # GET_PROPERTY: parse_request admits only the five methods
        return encode_result(id_raw, self.combined)

    def _add(self, refs: list[StreamRef]) -> None:
        if not refs:
            return
        registry = self.gateway.registry
        for ref in refs:
            if ref.key in self.streams:
                continue
            self.streams[ref.key] = ref
            self._topics[ref.key] = registry.acquire(ref)
            self.gateway.metrics.subscriptions.inc()
        self._apply()

    def _remove(self, refs: list[StreamRef]) -> None:
        if not refs:
            return
        registry = self.gateway.registry
        for ref in refs:
            if self.streams.pop(ref.key, None) is not None:
                del self._topics[ref.key]
                registry.release(ref)
                self.gateway.metrics.subscriptions.dec()
        self._apply()

    def drop_stream(self, key: str, code: int, msg: str) -> None:
        """The exchange rejected ``key``: tell the client and stop subscribing it."""
        ref = self.streams.get(key)
        if ref is None:
            return
        self._remove([ref])
        self.send_text(encode_error(b"null", code, f"{msg} ({ref.name})"))

    def _apply(self) -> None:
        if self.sub is not None and not self.closing:
            # A stream still replaying joins its live topic when the replay is done.
            topics = [t for k, t in self._topics.items() if k not in self._replaying]
            self.gateway.fanout.set_subscriptions(self.sub, topics, self.combined)

    def replay_done(self, ref: StreamRef) -> None:
        """The replay of ``ref`` reached the live stream: join it, in this loop turn."""
        if self._replaying.pop(ref.key, None) is not None:
            self._apply()

    def send_event(self, ref: StreamRef, payload: bytes) -> None:
        """One replayed event, wrapped as the live stream would be on this connection."""
        if ref.key not in self.streams:
            return  # unsubscribed meanwhile
        if self.combined:
            payload = b'{"stream":' + orjson.dumps(ref.name) + b',"data":' + payload + b"}"
        self.send_text(payload)

    # -- output and closing ------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.send(1, payload)  # WSMsgType.TEXT

    def close(self, code: CloseCode, reason: str) -> None:
        """Stop data, send a close frame, and make sure the socket goes away."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.gateway.metrics.disconnects_total.labels(code=code.name).inc()
        if self.sub is not None:
            self.gateway.fanout.remove(self.sub)
        log.info("closing client %d (%s): %d %s", self.id, self.peer, int(code), reason)
        try:
            self.transport.send_close(int(code), reason.encode())
            self.transport.disconnect(True)
        except Exception:  # the transport may already be gone
            log.debug("close of client %d failed", self.id, exc_info=True)
        self._abort_timer = self.gateway.loop.call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.underlying_transport.abort()

    def _expired(self) -> None:
        self._expiry_timer = None
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def snapshot(self) -> dict[str, Any]:
        sub = self.sub
        return {
            "id": self.id,
            "peer": self.peer,
            "subject": self.principal.subject,
            "combined": self.combined,
            "streams": list(self.streams),
            "messages_out": sub.messages_out if sub is not None else 0,
            "bytes_out": sub.bytes_out if sub is not None else 0,
        }
