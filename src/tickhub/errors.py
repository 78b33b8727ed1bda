"""Exceptions and WebSocket close codes of tickhub.

Every error tickhub raises on purpose derives from one base, so a caller can catch
"anything tickhub refused" without catching programming errors::

    TickhubError
     ├── ConfigError          bad configuration; raised once at start-up, the process exits
     ├── AuthError            rejected HTTP upgrade: .status is 401 or 403, .reason a short text
     └── ProtocolError        a client control message the hub answers with a Binance-shaped
          │                   error reply ({"error":{"code":..,"msg":..},"id":..}); the
          │                   connection stays open
          └── InvalidStream   a stream name outside the grammar (code 2, "Invalid request:
                              invalid stream")

Bad client input never becomes a traceback: an :class:`AuthError` becomes an HTTP status
with a short body, a :class:`ProtocolError` an error reply, and a misbehaving connection is
closed with one of the :class:`CloseCode` values below.

Close codes (1000–1015 are RFC 6455; 4000–4999 are tickhub's own, numbered after the HTTP
status they resemble):

======================  =====  =========  ===================================================
name                    code   reconnect  meaning
======================  =====  =========  ===================================================
NORMAL                  1000   no         normal closure (the client asked, or the hub ended it
                                          on purpose and has nothing more to say)
GOING_AWAY              1001   yes        server draining / shutting down; reconnect, another
                                          instance (or this one after restart) will serve
PROTOCOL_ERROR          1002   no         WebSocket protocol violation by the client
UNSUPPORTED_DATA        1003   no         binary frame from a client (the protocol is JSON text)
INVALID_PAYLOAD         1007   no         text frame that is not valid UTF-8
POLICY_VIOLATION        1008   no         generic policy violation not covered by a finer code
MESSAGE_TOO_BIG         1009   no         incoming frame over the configured maximum size
INTERNAL_ERROR          1011   yes        unexpected server failure; reconnect with backoff
TRY_AGAIN_LATER         1013   yes        server overloaded (connection limit); back off, retry
TOKEN_EXPIRED           4001   yes        the JWT's ``exp`` passed; reconnect with a fresh token
SLOW_CONSUMER           4008   yes        client fell behind (queued bytes over the limit);
                                          reconnect and resync (order books from a snapshot)
PONG_TIMEOUT            4010   yes        no pong within the timeout after a server ping
STREAM_GAP              4011   yes        upstream data gap the hub could not hide; reconnect
                                          and resync order books
RATE_LIMITED            4029   yes        more incoming messages per second than allowed;
                                          reconnect after a pause, send fewer messages
======================  =====  =========  ===================================================

"Too many streams" is not a close: it is an error reply to the SUBSCRIBE that asked for
them, and the connection keeps the streams it already had.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "TickhubError",
    "ConfigError",
    "AuthError",
    "ProtocolError",
    "InvalidStream",
    "CloseCode",
]


class TickhubError(Exception):
    """Base of every error tickhub raises on purpose."""


class ConfigError(TickhubError):
    """The configuration is invalid; the message is one line naming the variable."""


class AuthError(TickhubError):
    """An HTTP upgrade was refused.

    ``status`` is the HTTP status to answer with (401: no valid credentials, 403: valid
    token but not for this hub); ``reason`` is the short response body. The reason never
    contains the token itself.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class ProtocolError(TickhubError):
    """A client control message the hub answers with a Binance-shaped error reply.

    ``code`` and ``msg`` are Binance's error code and text; ``id_raw`` is the JSON
    encoding of the request's ``id`` to echo back (``b"null"`` when the id was not known
    yet, e.g. for invalid JSON).
    """

    def __init__(self, code: int, msg: str, id_raw: bytes = b"null") -> None:
        super().__init__(code, msg, id_raw)
        self.code = code
        self.msg = msg
        self.id_raw = id_raw

    def __str__(self) -> str:
        return f"code {self.code}: {self.msg}"


class InvalidStream(ProtocolError):
    """A stream name outside the grammar of its exchange (or of an unsupported exchange).

    The reply text is Binance's ``Invalid request: invalid stream`` (code 2) so Binance
    clients recognise it; ``detail`` says what exactly was wrong, for logs.
    """

    MSG = "Invalid request: invalid stream"

    def __init__(self, stream: str, detail: str, id_raw: bytes = b"null") -> None:
        super().__init__(2, self.MSG, id_raw)
        self.stream = stream
        self.detail = detail

    def __str__(self) -> str:
        return f"invalid stream {self.stream!r}: {self.detail}"


class CloseCode(IntEnum):
    """WebSocket close codes the hub sends; see the module docstring for the table."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    TOKEN_EXPIRED = 4001
    SLOW_CONSUMER = 4008
    PONG_TIMEOUT = 4010
    STREAM_GAP = 4011
    RATE_LIMITED = 4029

    @property
    def reconnect(self) -> bool:
        """Whether a well-behaved client should reconnect (with backoff) after this close."""
        return _CLOSE_INFO[self][0]

    @property
    def description(self) -> str:
        """One-line meaning; also a fine close reason (all are under the 123-byte cap)."""
        return _CLOSE_INFO[self][1]


_CLOSE_INFO: dict[CloseCode, tuple[bool, str]] = {
    CloseCode.NORMAL: (False, "normal closure"),
    CloseCode.GOING_AWAY: (True, "server shutting down; reconnect"),
    CloseCode.PROTOCOL_ERROR: (False, "websocket protocol error"),
    CloseCode.UNSUPPORTED_DATA: (False, "binary frames are not supported"),
    CloseCode.INVALID_PAYLOAD: (False, "text frame is not valid UTF-8"),
    CloseCode.POLICY_VIOLATION: (False, "policy violation"),
    CloseCode.MESSAGE_TOO_BIG: (False, "message too big"),
    CloseCode.INTERNAL_ERROR: (True, "internal server error"),
    CloseCode.TRY_AGAIN_LATER: (True, "server busy; try again later"),
    CloseCode.TOKEN_EXPIRED: (True, "token expired; reconnect with a fresh token"),
    CloseCode.SLOW_CONSUMER: (True, "slow consumer: send queue over limit; reconnect and resync"),
    CloseCode.PONG_TIMEOUT: (True, "no pong within the timeout"),
    CloseCode.STREAM_GAP: (True, "upstream data gap; reconnect and resync order books"),
    CloseCode.RATE_LIMITED: (True, "too many incoming messages per second"),
}
