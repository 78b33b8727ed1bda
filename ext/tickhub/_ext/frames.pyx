# cython: language_level=3
"""Compiled twin of tickhub._ext.frames_py: server-to-client WebSocket frames, built once.

A message fanned out to N clients is framed once per wire variant (raw ``/ws`` payload,
or the combined ``{"stream":..,"data":..}`` wrapper) and the same bytes object is
appended to every subscriber's buffer. Each builder here makes exactly one allocation:
the result ``bytes`` is created empty at its final size and filled in place.

Frames are RFC 6455 server frames: FIN set, no mask, no extensions; text
(:data:`OP_TEXT`) or binary (:data:`OP_BINARY`). Bad arguments raise ``ValueError``
(negative length, other opcode, a stream name that would need JSON escaping),
``OverflowError`` (length above 2**63-1) or ``TypeError`` (not ``bytes``).

Cython users: ``frames.pxd`` has ``write_header`` / ``header_size`` (inline, nogil) and
``frame_from_ptr`` / ``combined_frame_from_ptr`` for payloads that are a slice of a
larger buffer (no intermediate ``bytes`` for the slice).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

__all__ = [
    "OP_TEXT",
    "OP_BINARY",
    "frame_header",
    "build_frame",
    "combined_payload",
    "combined_prefix",
    "build_combined_frame",
]

cdef bytes _STREAM_OPEN = b'{"stream":"'
cdef bytes _DATA_OPEN = b'","data":'
# Length of the fixed parts of '{"stream":"' + name + '","data":' + data + '}'.
cdef Py_ssize_t _WRAPPER_LEN = 11 + 9 + 1


cdef inline int _check_opcode(int opcode) except -1:
    if opcode != OP_TEXT and opcode != OP_BINARY:
        raise ValueError(f"opcode must be OP_TEXT (1) or OP_BINARY (2), not {opcode}")
    return 0


cdef inline int _check_stream_name(bytes stream) except -1:
    # The name is inserted verbatim between JSON quotes; refuse what would need escaping
    # rather than emit invalid JSON to every subscriber. ~20 bytes: a few ns.
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(stream)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(stream)
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if c == 0x22 or c == 0x5C or c < 0x20:
            raise ValueError(
                f"stream name {stream!r} contains a quote, backslash or control byte")
    return 0


cdef bytes frame_from_ptr(const char* payload, Py_ssize_t payload_len, int opcode):
    """One frame, header + ``payload[0:payload_len]``, in one allocation (no checks)."""
    cdef Py_ssize_t hlen = header_size(payload_len)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + payload_len)
    cdef unsigned char* dst = <unsigned char*>PyBytes_AS_STRING(out)
    write_header(dst, payload_len, opcode)
    memcpy(dst + hlen, payload, payload_len)
    return out


cdef bytes combined_frame_from_ptr(const char* prefix, Py_ssize_t prefix_len,
                                   const char* data, Py_ssize_t data_len, int opcode):
    """One frame, header + prefix + data + ``}``, in one allocation (no checks)."""
    cdef Py_ssize_t body = prefix_len + data_len + 1
    cdef Py_ssize_t hlen = header_size(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + body)
    cdef unsigned char* dst = <unsigned char*>PyBytes_AS_STRING(out)
    write_header(dst, body, opcode)
    dst += hlen
    memcpy(dst, prefix, prefix_len)
    memcpy(dst + prefix_len, data, data_len)
    dst[prefix_len + data_len] = 0x7D  # '}'
    return out


def frame_header(Py_ssize_t payload_len, int opcode=OP_TEXT) -> bytes:
    """The header alone, for a caller that writes header and payload separately."""
    cdef unsigned char buf[MAX_HEADER_SIZE]
    if payload_len < 0:
        raise ValueError(f"payload length must be >= 0, not {payload_len}")
    _check_opcode(opcode)
    return PyBytes_FromStringAndSize(<char*>buf, write_header(buf, payload_len, opcode))


def build_frame(bytes payload not None, int opcode=OP_TEXT) -> bytes:
    """A complete frame: header + payload in one allocation."""
    _check_opcode(opcode)
    return frame_from_ptr(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), opcode)


def combined_payload(bytes stream not None, bytes data not None) -> bytes:
    """``{"stream":"<stream>","data":<data>}`` from bytes, without a JSON round trip.

    ``data`` must already be one JSON value (it is copied as is). ``stream`` is inserted
    verbatim: pass a validated stream name; a quote, backslash or control byte in it
    raises ``ValueError`` instead of producing invalid JSON.
    """
    _check_stream_name(stream)
    cdef Py_ssize_t slen = PyBytes_GET_SIZE(stream)
    cdef Py_ssize_t dlen = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _WRAPPER_LEN + slen + dlen)
    cdef char* dst = PyBytes_AS_STRING(out)
    memcpy(dst, PyBytes_AS_STRING(_STREAM_OPEN), 11)
    memcpy(dst + 11, PyBytes_AS_STRING(stream), slen)
    memcpy(dst + 11 + slen, PyBytes_AS_STRING(_DATA_OPEN), 9)
    memcpy(dst + 20 + slen, PyBytes_AS_STRING(data), dlen)
    dst[20 + slen + dlen] = b'}'
    return out


def combined_prefix(bytes stream not None) -> bytes:
    """``{"stream":"<stream>","data":`` — computed once per topic, reused per message.

    Same stream-name rule as :func:`combined_payload`.
    """
    _check_stream_name(stream)
    return _STREAM_OPEN + stream + _DATA_OPEN


def build_combined_frame(bytes prefix not None, bytes data not None,
                         int opcode=OP_TEXT) -> bytes:
    """A complete combined frame: header + prefix + data + ``}`` in one allocation.

    ``prefix`` comes from :func:`combined_prefix`; it is not re-checked per message.
    """
    _check_opcode(opcode)
    return combined_frame_from_ptr(PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix),
                                   PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), opcode)
