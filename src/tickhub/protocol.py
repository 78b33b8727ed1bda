"""Client control messages, Sans-I/O: text in, :class:`Request` or :class:`ProtocolError` out.

The hub speaks Binance's live-subscription protocol (reference §1.4) so Binance clients
work unchanged::

    {"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":1}   → {"result":null,"id":1}
    {"method":"LIST_SUBSCRIPTIONS","id":3}                        → {"result":[...],"id":3}
    {"method":"SET_PROPERTY","params":["combined",true],"id":5}   → {"result":null,"id":5}
    {"method":"GET_PROPERTY","params":["combined"],"id":2}        → {"result":true,"id":2}
    anything invalid                                              → {"error":{"code":2,"msg":"..."},"id":2}

Nothing here touches a socket: :func:`parse_request` validates one text frame completely
(including every stream name, so a SUBSCRIBE is accepted or refused as a whole) and the
``encode_*`` functions build reply bytes. Errors carry Binance's code and text and the id
to echo; a message refused before its id is known (invalid JSON, a bad id) echoes
``null``.

Error texts. Binance's parser appends `` at line L column C`` to some messages (e.g.
``missing field `method` at line 1 column 73``); tickhub gives the position only for
invalid JSON, where it helps, and omits it elsewhere. For a bad id tickhub answers with the
text Binance documents, ``request ID must be an unsigned integer``, although Binance (and
tickhub) also accept signed 64-bit integers, strings and ``null``: clients may match on it.
Texts Binance does not document are tickhub's, in the same style (``Invalid request: ...``).

Ids. An id is a signed 64-bit integer, a string of at most 36 letters, digits or ``-``
(Binance says "alphanumeric"; ``-`` admits UUIDs, the obvious 36-character id), or
``null``. A missing id counts as ``null``. Unknown top-level keys are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import InvalidStream, ProtocolError
from .names import StreamRef, parse_stream

__all__ = [
    "Request",
    "parse_request",
    "encode_result",
    "encode_error",
    "encode_exception",
    "METHODS",
    "PROPERTIES",
]

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
#: Connection properties a client may get and set; ``combined`` is Binance's only one.
PROPERTIES = frozenset({"combined"})

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_STRING_ID = re.compile(r"[A-Za-z0-9-]{0,36}")
_METHOD_LIST = ", ".join(f"`{m}`" for m in METHODS)

_MSG_BAD_ID = "Invalid request: request ID must be an unsigned integer"
_MSG_NOT_OBJECT = "Invalid request: expected a JSON object"
_MSG_MISSING_METHOD = "Invalid request: missing field `method`"
_MSG_MISSING_PARAMS = "Invalid request: missing field `params`"
_MSG_PARAMS_NOT_ARRAY = "Invalid request: params must be an array"
_MSG_TOO_MANY = "Invalid request: too many parameters"
_MSG_PROPERTY_NAME = "Invalid request: property name must be a string"
_MSG_UNKNOWN_PROPERTY = "Unknown property"
_MSG_NOT_BOOLEAN = "Invalid value type: expected Boolean"


@dataclass(frozen=True, slots=True)
class Request:
    """One valid control message.

    ``params`` is the list as sent (``[]`` when absent). ``streams`` holds the validated,
    canonical, de-duplicated streams of SUBSCRIBE / UNSUBSCRIBE in request order (empty for
    other methods). ``id_raw`` is the id's JSON encoding, ready to echo: ``b'1'``,
    ``b'"abc"'``, ``b'null'``.
    """

    method: str
    params: list[Any]
    id_raw: bytes
    streams: tuple[StreamRef, ...] = ()

    @property
    def property_name(self) -> str:
        """For SET_PROPERTY / GET_PROPERTY: the (validated) property name."""
        name: str = self.params[0]
        return name

    @property
    def property_value(self) -> bool:
        """For SET_PROPERTY: the (validated) boolean value."""
        value: bool = self.params[1]
        return value


def parse_request(text: bytes | str) -> Request:
    """Parse and validate one client text frame; raise :class:`ProtocolError` if invalid.

    The error's ``id_raw`` is the request's id when it was valid, else ``b"null"``.
    """
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(
            3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError(2, _MSG_NOT_OBJECT)

    id_raw = _encode_id(message.get("id"))

    def fail(code: int, msg: str) -> ProtocolError:
        return ProtocolError(code, msg, id_raw)

    if "method" not in message:
        raise fail(2, _MSG_MISSING_METHOD)
    method = message["method"]
    if not isinstance(method, str) or method not in METHODS:
        shown = method if isinstance(method, str) else orjson.dumps(method).decode()
        raise fail(2, f"Invalid request: unknown variant `{shown}`, expected one of "
                      f"{_METHOD_LIST}")

    params = message.get("params")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if params is None:
            raise fail(2, _MSG_MISSING_PARAMS)
    elif params is None:
        params = []
    if not isinstance(params, list):
        raise fail(2, _MSG_PARAMS_NOT_ARRAY)

    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return Request(method, params, id_raw, _parse_streams(params, id_raw))
    if method == "LIST_SUBSCRIPTIONS":
        if params:
            raise fail(2, _MSG_TOO_MANY)
    elif method == "GET_PROPERTY":
        if len(params) > 1:
            raise fail(2, _MSG_TOO_MANY)
        _check_property_name(params, fail)
    else:  # SET_PROPERTY
        if len(params) > 2:
            raise fail(2, _MSG_TOO_MANY)
        _check_property_name(params, fail)
        if len(params) < 2 or not isinstance(params[1], bool):
            raise fail(1, _MSG_NOT_BOOLEAN)
    return Request(method, params, id_raw)


def _encode_id(value: Any) -> bytes:
    """The JSON encoding of a valid id, or ProtocolError (with id null) for an invalid one."""
    if value is None:
        return b"null"
    if isinstance(value, bool):  # JSON true/false are not ids (bool is an int in Python)
        raise ProtocolError(2, _MSG_BAD_ID)
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return orjson.dumps(value)
        raise ProtocolError(2, _MSG_BAD_ID)
    if isinstance(value, str) and _STRING_ID.fullmatch(value):
        return orjson.dumps(value)
    raise ProtocolError(2, _MSG_BAD_ID)


def _check_property_name(params: list[Any], fail: Callable[[int, str], ProtocolError]) -> None:
    if not params or not isinstance(params[0], str):
        raise fail(2, _MSG_PROPERTY_NAME)
    if params[0] not in PROPERTIES:
        raise fail(0, _MSG_UNKNOWN_PROPERTY)


def _parse_streams(params: list[Any], id_raw: bytes) -> tuple[StreamRef, ...]:
    """Every param as a canonical stream, duplicates dropped; the first bad one refuses all."""
    seen: dict[str, StreamRef] = {}
    for param in params:
        try:
            ref = parse_stream(param)
        except InvalidStream as exc:
            raise InvalidStream(exc.stream, exc.detail, id_raw) from None
        seen.setdefault(ref.key, ref)
    return tuple(seen.values())


def encode_result(id_raw: bytes, value: Any = None) -> bytes:
    """``{"result":<value>,"id":<id>}``, keys in Binance's order."""
    return b'{"result":' + orjson.dumps(value) + b',"id":' + id_raw + b"}"


def encode_error(id_raw: bytes, code: int, msg: str) -> bytes:
    """``{"error":{"code":<code>,"msg":"<msg>"},"id":<id>}``, keys in Binance's order."""
    return (b'{"error":{"code":' + str(int(code)).encode() + b',"msg":' + orjson.dumps(msg)
            + b'},"id":' + id_raw + b"}")


def encode_exception(exc: ProtocolError) -> bytes:
    """The error reply for ``exc`` (its code, text and id)."""
    return encode_error(exc.id_raw, exc.code, exc.msg)
