# cython: language_level=3
"""C-level face of tickhub._ext.batch (twin: tickhub._ext.batch_py): see the module docstring."""

from tickhub._ext.fanout cimport Fanout


cdef class Channel:
    cdef readonly Fanout fanout
    cdef public object topic              # fanout Topic of the local subscribers, or None
    cdef readonly long long last_id       # highest event id delivered locally, -1: none yet
    cdef char* buf                        # this turn's outgoing records (u32 length + payload)
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef readonly Py_ssize_t pending      # records in buf
    cdef readonly unsigned long long delivered
    cdef readonly unsigned long long duplicates
    cdef readonly unsigned long long malformed

    cdef int _reserve(self, Py_ssize_t extra) except -1
    cdef bint _fresh(self, const char* data, Py_ssize_t n) noexcept
