# Compiled twin of tickhub._ext.fanout_py: declarations shared with other Cython modules.
from picows.picows cimport WSTransport


cdef class Topic:
    cdef readonly bytes name
    cdef readonly bytes prefix           # b'{"stream":"<name>","data":'
    cdef readonly list groups            # [Group]
    cdef readonly unsigned long long messages_in
    cdef object __weakref__


cdef class Fanout


# One message of the turn, framed once per wire variant the subscribers need (-1: not needed).
ctypedef struct Framed:
    Py_ssize_t raw_off      # in Fanout._raw: header + payload
    Py_ssize_t raw_len
    Py_ssize_t comb_off     # in Fanout._comb: header + b'{"stream":...,"data":' + payload + b'}'
    Py_ssize_t comb_len


cdef class Group:
    cdef readonly object key
    cdef readonly tuple topics
    cdef readonly bint combined
    cdef readonly list members           # [Subscriber]; swap-removed by index
    cdef Fanout owner                    # whose turn log ``msgs`` points into
    cdef int* msgs                       # this turn's messages for the group: turn-log indices
    cdef Py_ssize_t nmsgs
    cdef Py_ssize_t msgs_cap
    cdef bint dirty

    cdef int _add(self, int msg) except -1
    cdef inline void _reset(self) noexcept


cdef class Subscriber:
    cdef public WSTransport transport
    cdef public object session
    cdef readonly Group group
    cdef Py_ssize_t index
    cdef Py_ssize_t skip_msgs             # the group's messages this turn from before it joined
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
    # The turn log: every message published since the last flush, framed once per variant
    # into two arenas (``Framed`` offsets), read by each dirty group at flush time.
    cdef Framed* _log
    cdef Py_ssize_t _nlog
    cdef Py_ssize_t _log_cap
    cdef char* _raw
    cdef Py_ssize_t _raw_size
    cdef Py_ssize_t _raw_cap
    cdef char* _comb
    cdef Py_ssize_t _comb_size
    cdef Py_ssize_t _comb_cap
    # A group's frames laid out for sending (when they are not already contiguous in an
    # arena) and where each of its messages starts: reused by every group, so it stays hot.
    cdef char* _scratch
    cdef Py_ssize_t _scratch_cap
    cdef Py_ssize_t* _starts
    cdef Py_ssize_t _starts_cap

    cdef int _publish(self, Topic topic, const char* data, Py_ssize_t n) except -1
    cdef const char* _assemble(self, Group group) except NULL
    cdef int _write(self, Subscriber sub, Group group, const char* frames, bint deferred) except -1
    cdef int _detach(self, Subscriber sub) except -1
