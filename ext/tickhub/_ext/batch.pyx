"""Compiled twin of tickhub._ext.batch_py: bus batches. Semantics and wire format: see the twin.

Per event, ``Channel.add`` and ``Channel.deliver`` cost one ``event_id_c`` scan, one
``Fanout._publish`` into the local topic and (``add``) one ``memcpy`` into the batch — no
Python objects, so a bus message of 100 events costs about as much Python work as one of
a single event.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from tickhub._ext.envelope cimport event_id_c
from tickhub._ext.fanout cimport Fanout, Topic

import struct

__all__ = ["MAGIC", "Channel", "header", "parse_header"]

MAGIC = b"TB1"
_HEAD = struct.Struct("<QQ")
_COUNT = struct.Struct("<I")


cdef inline uint32_t _load_u32(const char* p) noexcept nogil:
    cdef const unsigned char* u = <const unsigned char*>p
    return <uint32_t>u[0] | (<uint32_t>u[1] << 8) | (<uint32_t>u[2] << 16) | (<uint32_t>u[3] << 24)


cdef inline void _store_u32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v & 0xFF)
    p[1] = <char>((v >> 8) & 0xFF)
    p[2] = <char>((v >> 16) & 0xFF)
    p[3] = <char>((v >> 24) & 0xFF)


def header(bytes owner not None, token, seq):
    """The bytes before ``count`` in a bus message."""
    if len(owner) > 255:
        raise ValueError("owner id longer than 255 bytes")
    return MAGIC + bytes((len(owner),)) + owner + _HEAD.pack(token, seq)


def parse_header(bytes msg not None):
    """``(owner, token, seq, count, offset)``; raises ValueError for a non-bus message."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(msg)
    cdef const char* p = PyBytes_AS_STRING(msg)
    if n < 4 or p[0] != b'T' or p[1] != b'B' or p[2] != b'1':
        raise ValueError("not a tickhub bus message")
    cdef Py_ssize_t end = 4 + <unsigned char>p[3]
    if n < end + 20:
        raise ValueError("truncated bus message header")
    token, seq = _HEAD.unpack_from(msg, end)
    return msg[4:end], token, seq, _load_u32(p + end + 16), end + 20


cdef class Channel:
    """One stream on the bus: outgoing batch and the de-duplication cursor."""

    def __cinit__(self):
        self.buf = NULL
        self.size = 0
        self.cap = 0

    def __init__(self, Fanout fanout not None, topic=None):
        self.fanout = fanout
        self.topic = topic
        self.last_id = -1
        self.pending = 0
        self.delivered = 0
        self.duplicates = 0
        self.malformed = 0

    def __dealloc__(self):
        free(self.buf)

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t want = self.size + extra
        cdef Py_ssize_t cap
        cdef char* grown
        if want <= self.cap:
            return 0
        cap = self.cap * 2 if self.cap else 4096
        while cap < want:
            cap *= 2
        grown = <char*>realloc(self.buf, cap)
        if grown == NULL:
            raise MemoryError()
        self.buf = grown
        self.cap = cap
        return 0

    cdef bint _fresh(self, const char* data, Py_ssize_t n) noexcept:
        cdef long long eid = event_id_c(data, n)
        if eid < 0:
            return True
        if eid <= self.last_id:
            self.duplicates += 1
            return False
        self.last_id = eid
        return True

    def add(self, bytes payload not None):
        """An owned upstream's event; True when it starts this turn's batch (schedule a flush)."""
        cdef const char* data = PyBytes_AS_STRING(payload)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        if n > 0xFFFFFFFF:
            raise ValueError("payload too large for a bus record")
        if not self._fresh(data, n):
            return False
        self.delivered += 1
        if self.topic is not None:
            self.fanout._publish(<Topic?>self.topic, data, n)
        self._reserve(4 + n)
        _store_u32(self.buf + self.size, <uint32_t>n)
        memcpy(self.buf + self.size + 4, data, n)
        self.size += 4 + n
        self.pending += 1
        return self.pending == 1

    def take(self, bytes head not None):
        """This turn's batch as one bus message behind ``head``."""
        cdef Py_ssize_t hn = PyBytes_GET_SIZE(head)
        cdef bytes msg = PyBytes_FromStringAndSize(NULL, hn + 4 + self.size)
        cdef char* out = PyBytes_AS_STRING(msg)
        memcpy(out, PyBytes_AS_STRING(head), hn)
        _store_u32(out + hn, <uint32_t>self.pending)
        if self.size:
            memcpy(out + hn + 4, self.buf, self.size)
        self.clear()
        return msg

    def clear(self):
        """Drop this turn's batch (it cannot be sent)."""
        self.size = 0
        self.pending = 0

    def forget(self):
        """Forget the de-duplication cursor (the stream starts over)."""
        self.last_id = -1

    def deliver(self, bytes msg not None, Py_ssize_t offset, Py_ssize_t count):
        """Publish the ``count`` records of ``msg`` from ``offset``; new ones, or -1 if malformed."""
        cdef const char* p = PyBytes_AS_STRING(msg)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(msg)
        cdef Py_ssize_t pos = offset, i, n
        cdef Py_ssize_t fresh = 0
        if offset < 0 or offset > size or count < 0:
            self.malformed += 1
            return -1
        # Validate the whole message first: a damaged one delivers nothing.
        for i in range(count):
            if size - pos < 4:
                self.malformed += 1
                return -1
            n = _load_u32(p + pos)
            pos += 4
            if size - pos < n:
                self.malformed += 1
                return -1
            pos += n
        if pos != size:
            self.malformed += 1
            return -1
        pos = offset
        cdef Topic topic = <Topic?>self.topic if self.topic is not None else None
        for i in range(count):
            n = _load_u32(p + pos)
            pos += 4
            if self._fresh(p + pos, n):
                fresh += 1
                if topic is not None:
                    self.fanout._publish(topic, p + pos, n)
            pos += n
        self.delivered += fresh
        return fresh
