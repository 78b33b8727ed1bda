"""Pure-Python twin of tickhub._ext.frames: server-to-client WebSocket frames, built once.

A message fanned out to N clients is framed once per wire variant (raw ``/ws`` payload,
or the combined ``{"stream":..,"data":..}`` wrapper) and the same bytes object is
appended to every subscriber's buffer.

Frames are RFC 6455 server frames: FIN set, no mask, no extensions; text
(:data:`OP_TEXT`) or binary (:data:`OP_BINARY`). Bad arguments raise ``ValueError``
(negative length, other opcode, a stream name that would need JSON escaping),
``OverflowError`` (length above 2**63-1) or ``TypeError`` (not ``bytes``) — the same
answers as the compiled module.
"""

from __future__ import annotations

import operator
import re
import struct

__all__ = [
    "OP_TEXT",
    "OP_BINARY",
    "frame_header",
    "build_frame",
    "combined_payload",
    "combined_prefix",
    "build_combined_frame",
]

OP_TEXT = 1
OP_BINARY = 2

_MAX_PAYLOAD = 2**63 - 1
_FIN = 0x80
_NEEDS_ESCAPING = re.compile(rb'[\x00-\x1f"\\]')


def _check_opcode(opcode: int) -> None:
    if opcode != OP_TEXT and opcode != OP_BINARY:
        raise ValueError(f"opcode must be OP_TEXT (1) or OP_BINARY (2), not {opcode}")


def _check_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _check_stream_name(stream: bytes) -> None:
    # The name is inserted verbatim between JSON quotes; refuse what would need escaping
    # rather than emit invalid JSON to every subscriber.
    _check_bytes("stream", stream)
    if _NEEDS_ESCAPING.search(stream):
        raise ValueError(f"stream name {stream!r} contains a quote, backslash or control byte")


def frame_header(payload_len: int, opcode: int = OP_TEXT) -> bytes:
    """The header alone, for a caller that writes header and payload separately."""
    length = operator.index(payload_len)
    if length > _MAX_PAYLOAD:
        raise OverflowError(f"payload length {length} is above 2**63-1")
    if length < 0:
        raise ValueError(f"payload length must be >= 0, not {length}")
    _check_opcode(opcode)
    first = _FIN | opcode
    if length < 126:
        return bytes((first, length))
    if length <= 0xFFFF:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def build_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A complete frame: header + payload."""
    _check_bytes("payload", payload)
    return frame_header(len(payload), opcode) + payload


def combined_payload(stream: bytes, data: bytes) -> bytes:
    """``{"stream":"<stream>","data":<data>}`` from bytes, without a JSON round trip.

    ``data`` must already be one JSON value (it is copied as is). ``stream`` is inserted
    verbatim: pass a validated stream name; a quote, backslash or control byte in it
    raises ``ValueError`` instead of producing invalid JSON.
    """
    _check_stream_name(stream)
    _check_bytes("data", data)
    return b"".join((b'{"stream":"', stream, b'","data":', data, b"}"))


def combined_prefix(stream: bytes) -> bytes:
    """``{"stream":"<stream>","data":`` — computed once per topic, reused per message.

    Same stream-name rule as :func:`combined_payload`.
    """
    _check_stream_name(stream)
    return b'{"stream":"' + stream + b'","data":'


def build_combined_frame(prefix: bytes, data: bytes, opcode: int = OP_TEXT) -> bytes:
    """A complete combined frame: header + prefix + data + ``}``.

    ``prefix`` comes from :func:`combined_prefix`; it is not re-checked per message.
    """
    _check_bytes("prefix", prefix)
    _check_bytes("data", data)
    return b"".join((frame_header(len(prefix) + len(data) + 1, opcode), prefix, data, b"}"))
