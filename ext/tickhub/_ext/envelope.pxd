# cython: language_level=3
"""C-level face of tickhub._ext.envelope, for other Cython modules (``cimport``).

Contract of the C functions (the Python-level ``parse`` / ``event_id`` are thin wrappers):

``parse_c(buf, n, &key_start, &key_end, &start, &end)`` reads ``buf[0:n]`` and nothing
outside it, holds no Python object and never fails; it returns one of the ``KIND_*``
values. For ``KIND_DATA``, ``buf[key_start:key_end]`` is the stream name as it is on the
wire, between its quotes, JSON escapes *not* decoded (``key_bytes`` decodes them;
``memchr(buf + key_start, '\\', key_end - key_start) == NULL`` means the raw slice is the
name). For ``KIND_RESULT`` / ``KIND_ERROR`` it is the raw ``id`` value (``1``, ``"abc"``,
``null``). ``buf[start:end]`` is the ``data`` / ``result`` / ``error`` value, byte for
byte. For ``KIND_NONE`` all four offsets are 0.

``event_id_c(buf, n)`` returns the de-duplication id of one event payload, or -1 (see
``event_id`` in the module docstring).

``key_bytes(buf, key_start, key_end)`` returns the decoded stream name as ``bytes``; the
offsets must come from a ``parse_c`` call on the same buffer that returned ``KIND_DATA``.
"""

cpdef enum:
    KIND_NONE = 0
    KIND_DATA = 1
    KIND_RESULT = 2
    KIND_ERROR = 3

cdef int parse_c(const char* buf, Py_ssize_t n, Py_ssize_t* key_start, Py_ssize_t* key_end,
                 Py_ssize_t* start, Py_ssize_t* end) noexcept nogil
cdef long long event_id_c(const char* buf, Py_ssize_t n) noexcept nogil
cdef bytes key_bytes(const char* buf, Py_ssize_t key_start, Py_ssize_t key_end)
