"""Pure-Python twin of tickhub._ext.envelope: recognise upstream messages without a JSON decode.

The same algorithm as the compiled module, step for step (see its docstring for the full
contract); strings and numbers are matched with regular expressions instead of byte
loops, and UTF-8 / surrogate / float-overflow checks use Python's own codecs and
``float``, so this twin is also a second opinion on those rules.

:func:`parse` returns ``(kind, key, start, end)``:

* ``KIND_DATA``: ``{"stream":<string>,"data":<value>}`` — key is the stream name with
  JSON escapes decoded, ``buf[start:end]`` the ``data`` value byte for byte;
* ``KIND_RESULT``: ``{"result":<value>,"id":<value>}`` — key is the raw ``id`` bytes;
* ``KIND_ERROR``: ``{"error":<object>,"id":<value>}`` — key is the raw ``id`` bytes;
* ``KIND_NONE``: ``(0, None, 0, 0)`` for anything else: invalid JSON as orjson sees it
  (including invalid UTF-8, lone surrogate escapes, infinite numbers, nesting deeper than
  1024), extra or repeated top-level keys, ``stream`` not a string, ``error`` not an
  object.

:func:`event_id` returns the de-duplication id of one event payload, or -1: ``trade`` →
``t``, ``aggTrade`` → ``a``, ``depthUpdate`` → ``u``; no ``e``: ``u``, else
``lastUpdateId``, else ``E``; any other ``e`` → ``E``; top-level keys only; the field
must be an integer in 0..2**63-1. It stops reading once the answer is decided.
"""

from __future__ import annotations

import json
import math
import re

__all__ = ["KIND_NONE", "KIND_DATA", "KIND_RESULT", "KIND_ERROR", "parse", "event_id"]

KIND_NONE = 0
KIND_DATA = 1
KIND_RESULT = 2
KIND_ERROR = 3

# orjson refuses a document nested deeper than this (the outermost container is 1).
_DEPTH_LIMIT = 1024
_MAX_ID = 2**63 - 1

_NONE_RESULT: tuple[int, bytes | None, int, int] = (KIND_NONE, None, 0, 0)

_QUOTE, _BACKSLASH, _COMMA, _COLON = 0x22, 0x5C, 0x2C, 0x3A
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_MINUS = 0x2D
_DIGITS = frozenset(b"0123456789")

_WS = re.compile(rb"[ \t\n\r]*+")
# A string body up to and including its closing quote. Possessive quantifiers: an
# unterminated string fails in linear time instead of backtracking.
_STRING_BODY = re.compile(rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*+)(?:(\.)[0-9]++)?+(?:([eE])[+-]?+[0-9]++)?+")
_INTEGER = re.compile(rb"-?[0-9]+")

# Top-level envelope keys, as bits of a "seen" mask.
_KEY_STREAM, _KEY_DATA, _KEY_RESULT, _KEY_ERROR, _KEY_ID = 1, 2, 4, 8, 16
_ENVELOPE_KEYS = {
    b"stream": _KEY_STREAM,
    b"data": _KEY_DATA,
    b"result": _KEY_RESULT,
    b"error": _KEY_ERROR,
    b"id": _KEY_ID,
}

# Event types and the top-level payload keys event_id looks at.
_EV_ABSENT, _EV_TRADE, _EV_AGG_TRADE, _EV_DEPTH_UPDATE, _EV_OTHER = range(5)
_EVENT_TYPES = {b"trade": _EV_TRADE, b"aggTrade": _EV_AGG_TRADE, b"depthUpdate": _EV_DEPTH_UPDATE}
_F_TYPE, _F_TRADE, _F_AGG, _F_UPDATE, _F_LAST, _F_TIME = 1, 2, 4, 8, 16, 32
_EVENT_KEYS = {
    b"e": _F_TYPE,
    b"t": _F_TRADE,
    b"a": _F_AGG,
    b"u": _F_UPDATE,
    b"lastUpdateId": _F_LAST,
    b"E": _F_TIME,
}


# Every scanner takes (buf, pos) and returns the position just past what it read, or -1.


def _skip_ws(buf: bytes, pos: int) -> int:
    match = _WS.match(buf, pos)
    assert match is not None  # matches the empty string
    return match.end()


def _decode_string(body: bytes) -> bytes | None:
    """The UTF-8 bytes a string body (between its quotes, grammar checked) stands for,
    or None when it is invalid UTF-8 or has a lone surrogate escape."""
    if body.isascii() and _BACKSLASH not in body:
        return body
    try:
        text = body.decode("utf-8")
        return json.loads('"' + text + '"').encode("utf-8") if "\\" in text else body
    except (UnicodeError, ValueError):  # encode() fails on a lone surrogate
        return None


def _scan_string(buf: bytes, pos: int) -> int:
    """A string body: pos is just past the opening quote; returns just past the closing one."""
    match = _STRING_BODY.match(buf, pos)
    if match is None or _decode_string(buf[pos : match.end() - 1]) is None:
        return -1
    return match.end()


def _scan_number(buf: bytes, pos: int) -> int:
    match = _NUMBER.match(buf, pos)
    if match is None:
        return -1
    if (match.group(2) or match.end() - pos > 308) and math.isinf(float(match.group())):
        return -1  # orjson refuses a number that is infinite as a double
    return match.end()


def _member_key(buf: bytes, pos: int) -> int:
    """``"key" :`` and the whitespace after it, inside an object being skipped."""
    if pos >= len(buf) or buf[pos] != _QUOTE:
        return -1
    pos = _scan_string(buf, pos + 1)
    if pos < 0:
        return -1
    pos = _skip_ws(buf, pos)
    if pos >= len(buf) or buf[pos] != _COLON:
        return -1
    return _skip_ws(buf, pos + 1)


def _skip_value(buf: bytes, pos: int, depth: int) -> int:
    """Validate and skip one JSON value starting at pos (no leading whitespace).

    ``depth`` is the number of containers already open around it.
    """
    size = len(buf)
    closers: list[int] = []  # the closing byte of each open container
    while True:
        # A value starts at pos.
        if pos >= size:
            return -1
        char = buf[pos]
        if char == _LBRACE or char == _LBRACKET:
            if depth + len(closers) >= _DEPTH_LIMIT:
                return -1
            close = _RBRACE if char == _LBRACE else _RBRACKET
            closers.append(close)
            pos = _skip_ws(buf, pos + 1)
            if pos >= size:
                return -1
            if buf[pos] == close:
                pos += 1
                closers.pop()
            else:
                if char == _LBRACE:
                    pos = _member_key(buf, pos)
                    if pos < 0:
                        return -1
                continue
        elif char == _QUOTE:
            pos = _scan_string(buf, pos + 1)
        elif char == _MINUS or char in _DIGITS:
            pos = _scan_number(buf, pos)
        elif char == 0x74:
            pos = pos + 4 if buf.startswith(b"true", pos) else -1
        elif char == 0x66:
            pos = pos + 5 if buf.startswith(b"false", pos) else -1
        elif char == 0x6E:
            pos = pos + 4 if buf.startswith(b"null", pos) else -1
        else:
            return -1
        if pos < 0:
            return -1
        # After a value: close containers until one continues with a comma.
        while True:
            if not closers:
                return pos
            pos = _skip_ws(buf, pos)
            if pos >= size:
                return -1
            char = buf[pos]
            if char == _COMMA:
                pos = _skip_ws(buf, pos + 1)
                if closers[-1] == _RBRACE:
                    pos = _member_key(buf, pos)
                    if pos < 0:
                        return -1
                break
            if char != closers[-1]:
                return -1
            pos += 1
            closers.pop()


def parse(buf: bytes) -> tuple[int, bytes | None, int, int]:
    """Classify one upstream message: ``(kind, key, start, end)``; see the module doc."""
    if not isinstance(buf, bytes):
        raise TypeError(f"buf must be bytes, not {type(buf).__name__}")
    size = len(buf)
    seen = 0
    name = id_value = b""
    value_start = value_end = 0
    pos = _skip_ws(buf, 0)
    if pos >= size or buf[pos] != _LBRACE:
        return _NONE_RESULT
    pos = _skip_ws(buf, pos + 1)
    while True:
        if pos >= size or buf[pos] != _QUOTE:
            return _NONE_RESULT
        body = pos + 1
        pos = _scan_string(buf, body)
        if pos < 0:
            return _NONE_RESULT
        key = _ENVELOPE_KEYS.get(_decode_string(buf[body : pos - 1]) or b"", 0)
        if key == 0 or seen & key:
            return _NONE_RESULT  # unknown or repeated key: the answer is NONE
        seen |= key
        if seen & (_KEY_STREAM | _KEY_DATA) and seen & (_KEY_RESULT | _KEY_ERROR | _KEY_ID):
            return _NONE_RESULT
        if seen & _KEY_RESULT and seen & _KEY_ERROR:
            return _NONE_RESULT
        pos = _skip_ws(buf, pos)
        if pos >= size or buf[pos] != _COLON:
            return _NONE_RESULT
        pos = _skip_ws(buf, pos + 1)
        if pos >= size:
            return _NONE_RESULT
        value = pos
        if key == _KEY_STREAM:
            if buf[pos] != _QUOTE:
                return _NONE_RESULT
            pos = _scan_string(buf, pos + 1)
            if pos < 0:
                return _NONE_RESULT
            name = _decode_string(buf[value + 1 : pos - 1]) or b""
        else:
            if key == _KEY_ERROR and buf[pos] != _LBRACE:
                return _NONE_RESULT
            pos = _skip_value(buf, pos, 1)
            if pos < 0:
                return _NONE_RESULT
            if key == _KEY_ID:
                id_value = buf[value:pos]
            else:
                value_start, value_end = value, pos
        pos = _skip_ws(buf, pos)
        if pos >= size:
            return _NONE_RESULT
        if buf[pos] == _COMMA:
            pos = _skip_ws(buf, pos + 1)
            continue
        if buf[pos] != _RBRACE:
            return _NONE_RESULT
        break
    if _skip_ws(buf, pos + 1) != size:
        return _NONE_RESULT
    if seen == _KEY_STREAM | _KEY_DATA:
        return (KIND_DATA, name, value_start, value_end)
    if seen == _KEY_RESULT | _KEY_ID:
        return (KIND_RESULT, id_value, value_start, value_end)
    if seen == _KEY_ERROR | _KEY_ID:
        return (KIND_ERROR, id_value, value_start, value_end)
    return _NONE_RESULT


def _integer_id(value: bytes) -> int:
    """A validated JSON value as an id: an integer in 0..2**63-1, else -1."""
    # 20 bytes hold "-" and 19 digits; anything longer is beyond 2**63-1 anyway (and
    # int() refuses very long digit strings).
    if len(value) > 20 or not _INTEGER.fullmatch(value):
        return -1
    number = int(value)
    return number if 0 <= number <= _MAX_ID else -1


def event_id(payload: bytes) -> int:
    """The de-duplication id of one event payload, or -1; see the module doc."""
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    size = len(payload)
    seen = 0
    event_type = _EV_ABSENT
    ids = {_F_TRADE: -1, _F_AGG: -1, _F_UPDATE: -1, _F_LAST: -1, _F_TIME: -1}
    pos = _skip_ws(payload, 0)
    if pos >= size or payload[pos] != _LBRACE:
        return -1
    pos = _skip_ws(payload, pos + 1)
    if pos < size and payload[pos] == _RBRACE:
        return -1
    while True:
        if pos >= size or payload[pos] != _QUOTE:
            return -1
        body = pos + 1
        pos = _scan_string(payload, body)
        if pos < 0:
            return -1
        key = _EVENT_KEYS.get(_decode_string(payload[body : pos - 1]) or b"", 0)
        if seen & key:
            return -1
        seen |= key
        pos = _skip_ws(payload, pos)
        if pos >= size or payload[pos] != _COLON:
            return -1
        pos = _skip_ws(payload, pos + 1)
        if pos >= size:
            return -1
        value = pos
        if key == _F_TYPE and payload[pos] == _QUOTE:
            pos = _scan_string(payload, pos + 1)
            if pos < 0:
                return -1
            name = _decode_string(payload[value + 1 : pos - 1]) or b""
            event_type = _EVENT_TYPES.get(name, _EV_OTHER)
        else:
            pos = _skip_value(payload, pos, 1)
            if pos < 0:
                return -1
            if key == _F_TYPE:
                event_type = _EV_OTHER  # "e" that is not a string names no known type
            elif key:
                ids[key] = _integer_id(payload[value:pos])
        # Binance puts "e" first and the id right after: stop as soon as it is decided.
        if event_type == _EV_TRADE and seen & _F_TRADE:
            return ids[_F_TRADE]
        if event_type == _EV_AGG_TRADE and seen & _F_AGG:
            return ids[_F_AGG]
        if event_type == _EV_DEPTH_UPDATE and seen & _F_UPDATE:
            return ids[_F_UPDATE]
        if event_type == _EV_OTHER and seen & _F_TIME:
            return ids[_F_TIME]
        pos = _skip_ws(payload, pos)
        if pos >= size:
            return -1
        if payload[pos] == _COMMA:
            pos = _skip_ws(payload, pos + 1)
            continue
        if payload[pos] != _RBRACE:
            return -1
        break
    if event_type != _EV_ABSENT:
        return -1  # a known type without its id field, or another type without "E"
    if seen & _F_UPDATE:
        return ids[_F_UPDATE]
    if seen & _F_LAST:
        return ids[_F_LAST]
    return ids[_F_TIME]
