# Compiled twin of tickhub._ext.fanout_py: declarations shared with other Cython modules.
from picows.picows cimport WSTransport


cdef class Topic:
    cdef readonly bytes name
    cdef readonly bytes prefix           # b'{"stream":"<name>","data":'
    cdef readonly list groups            # [Group]
    cdef readonly unsigned long long messages_in
    cdef object __weakref__


cdef class Group:
    cdef readonly object key
    cdef readonly tuple topics
    cdef readonly bint combined
    cdef readonly list members           # [Subscriber]; swap-removed by index
    cdef char* buf                       # this turn's pending frames, shared by members
    cdef Py_ssize_t size
    cdef Py_ssize_t cap
    cdef Py_ssize_t pending_msgs
    cdef bint dirty

    cdef int _reserve(self, Py_ssize_t extra) except -1
    cdef inline void _reset(self) noexcept


cdef class Subscriber:
    cdef public WSTransport transport
    cdef public object session
    cdef readonly Group group
    cdef Py_ssize_t index
    cdef Py_ssize_t skip_bytes
    cdef Py_ssize_t skip_msgs
    cdef readonly unsigned long long messages_out
    cdef readonly unsigned long long bytes_out
    cdef public bint closed
    # Snapshotted at construction so the flush does not touch the transport per client.
    cdef int fd
    cdef bint secure
    # True once the owner made the transport report backlog (pause_writing at a high-water
    # mark of 0) and keeps ``backlogged`` up to date; only then may the flush skip asking
    # the transport for its buffer size.
    cdef public bint tracks_backlog
    cdef public bint backlogged
    cdef object __weakref__


cdef class Fanout:
    cdef readonly object loop
    cdef public Py_ssize_t max_queued_bytes
    cdef public object on_slow_consumer
    cdef readonly bint share_buffers
    cdef readonly dict groups
    cdef list _dirty
    cdef bint _scheduled
    cdef object _flush_cb
    cdef readonly long long first_pending_ns
    cdef readonly long long last_flush_latency_ns
    cdef readonly unsigned long long messages_in
    cdef readonly unsigned long long messages_out
    cdef readonly unsigned long long bytes_out
    cdef readonly unsigned long long writes
    cdef readonly unsigned long long slow_consumers
    cdef readonly unsigned long long flushes

    cdef int _publish(self, Topic topic, const char* data, Py_ssize_t n) except -1
    cdef int _write(self, Subscriber sub, Group group, bint deferred) except -1
    cdef int _detach(self, Subscriber sub) except -1
