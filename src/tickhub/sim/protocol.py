"""Binance's live-subscription protocol: request parsing and reply shapes.

Sans-I/O: bytes in, a validated request or a :class:`ControlError` out, reply bytes back.
Replies follow the wire shapes Binance sends::

    {"result":null,"id":1}                                         success of a non-query
    {"result":["btcusdt@trade"],"id":3}                            LIST_SUBSCRIPTIONS
    {"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}

Error codes and texts are Binance's (spot ``web-socket-streams.md``): 0 unknown property,
1 bad value type, 2 invalid request, 3 invalid JSON. Binance produces the "at line L
column C" suffixes with serde; for the single-line requests clients send, the column of a
missing field is the end of the object and that of an unknown method the end of its
string, which is what is reproduced here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "METHODS",
    "ControlError",
    "ControlRequest",
    "parse_request",
    "result_reply",
    "error_reply",
    "INVALID_STREAM",
]

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_METHODS_TEXT = ", ".join(f"`{m}`" for m in METHODS)
_ID_STRING_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_INT64_MIN = -(2 ** 63)
_INT64_MAX = 2 ** 63 - 1

INVALID_STREAM = "Invalid request: invalid stream"

RequestId = int | str | None


class ControlError(Exception):
    """A request Binance would answer with ``{"error":{"code","msg"},"id"}``."""

    def __init__(self, code: int, msg: str, request_id: RequestId = None) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg
        self.request_id = request_id

    def reply(self) -> bytes:
        return error_reply(self.code, self.msg, self.request_id)


@dataclass(frozen=True)
class ControlRequest:
    method: str
    params: list[Any] | None
    id: RequestId


def result_reply(result: Any, request_id: RequestId) -> bytes:
    return orjson.dumps({"result": result, "id": request_id})


def error_reply(code: int, msg: str, request_id: RequestId) -> bytes:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": request_id})


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, str) and _ID_STRING_RE.match(value) is not None


def parse_request(payload: bytes | str) -> ControlRequest:
    """Validate one JSON text frame; raise ControlError with Binance's code and text.

    ``id`` may be a signed 64-bit integer, a string of at most 36 letters, digits, ``-``
    or ``_``, or null (Binance since 2023-12); a missing ``id`` is treated as null.
    ``params`` must be a JSON array when present.
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ControlError(
            3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}") from None
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    if not isinstance(doc, dict):
        raise ControlError(2, "Invalid request: expected a JSON object")
    raw_id = doc.get("id")
    request_id: RequestId = raw_id if _valid_id(raw_id) else None
    if "method" not in doc:
        raise ControlError(
            2, f"Invalid request: missing field `method` at line 1 column {len(text.rstrip())}",
            request_id)
    method = doc["method"]
    if not isinstance(method, str):
        raise ControlError(2, "Invalid request: method must be a string", request_id)
    if method not in METHODS:
        raise ControlError(
            2, f"Invalid request: unknown variant `{method}`, expected one of {_METHODS_TEXT}"
               f" at line 1 column {_end_of_string(text, method)}", request_id)
    if not _valid_id(raw_id):
        raise ControlError(2, "Invalid request: request ID must be an unsigned integer")
    params = doc.get("params")
    if params is not None and not isinstance(params, list):
        raise ControlError(2, "Invalid request: params must be an array", request_id)
    return ControlRequest(method, params, request_id)


def _end_of_string(text: str, value: str) -> int:
    """Column just after the JSON string ``value`` that follows ``"method"`` in ``text``."""
    key = text.find('"method"')
    encoded = orjson.dumps(value).decode()
    start = text.find(encoded, key + 8 if key >= 0 else 0)
    return start + len(encoded) if start >= 0 else len(text)
