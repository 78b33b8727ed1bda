"""Compiled twin of tickhub._ext.fanout_py: topics, subscribers and the per-turn flush.

The semantics (ordering, mid-turn joins and leaves, backpressure, counters) are written
once, on tickhub._ext.fanout_py; this module implements the same behaviour with C loops:

* ``publish`` frames a message once per wire variant its subscribers use, into the turn
  log (two arenas), and appends its index to each subscribed *group* (subscribers with
  identical subscription sets) — no copy per group or per subscriber;
* ``flush`` runs once per event-loop turn: per dirty group it lays the group's frames out
  once (none at all when they already sit contiguously in an arena, as for a group on
  every stream of the turn) into one reused, cache-hot scratch buffer, and makes one
  ``send()`` per member straight on the socket when the transport's buffer is empty (as
  picows's own ``_fast_write`` does), else hands a copy to the transport. Building each
  group's frames just before its sends, from a log that stays in cache, replaced copying
  every message into every group's own buffer at publish time, which the kernel then read
  back cold (perf on the Zipf mix: ``memmove`` and ``_copy_from_iter``).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from picows.picows cimport WSTransport
from tickhub._ext.frames cimport write_header

import asyncio


cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    int MSG_NOSIGNAL
    int MSG_DONTWAIT


cdef inline long long _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int _reserve(char** buf, Py_ssize_t* cap, Py_ssize_t need) except -1:
    """Grow ``*buf`` (by doubling, from 4 KiB) to hold ``need`` bytes."""
    cdef Py_ssize_t c = cap[0]
    cdef char* p
    if need <= c:
        return 0
    c = c * 2 if c else 4096
    while c < need:
        c *= 2
    p = <char*>realloc(buf[0], c)
    if p == NULL:
        raise MemoryError()
    buf[0] = p
    cap[0] = c
    return 0


cdef int _grow(void** arr, Py_ssize_t* cap, size_t item, Py_ssize_t need) except -1:
    """Grow the array ``*arr`` of ``item``-sized entries (by doubling) to ``need`` entries."""
    cdef Py_ssize_t c = cap[0] * 2 if cap[0] else 64
    cdef void* p
    while c < need:
        c *= 2
    p = realloc(arr[0], c * item)
    if p == NULL:
        raise MemoryError()
    arr[0] = p
    cap[0] = c
    return 0


cdef inline void _release(char** buf, Py_ssize_t* cap) noexcept:
    free(buf[0])
    buf[0] = NULL
    cap[0] = 0


cdef class Topic:
    """One stream: its name, its combined-wrapper prefix and the groups subscribed to it."""

    def __init__(self, bytes name not None):
        self.name = name
        self.prefix = b'{"stream":"' + name + b'","data":'
        self.groups = []
        self.messages_in = 0

    @property
    def subscriber_count(self):
        cdef Group g
        cdef Py_ssize_t n = 0
        for g in self.groups:
            n += len(g.members)
        return n

    def __repr__(self):
        return f"<Topic {self.name.decode()} groups={len(self.groups)}>"


cdef class Group:
    """Subscribers with one subscription set and wire variant: this turn's messages for
    them, as indices into their Fanout's turn log, framed once at flush for all members."""

    def __cinit__(self):
        self.msgs = NULL
        self.nmsgs = 0
        self.msgs_cap = 0

    def __init__(self, key, tuple topics, bint combined, Fanout owner not None):
        self.key = key
        self.topics = topics
        self.combined = combined
        self.members = []
        self.owner = owner
        self.dirty = False

    def __dealloc__(self):
        free(self.msgs)

    @property
    def pending(self):
        """This turn's queued frames (a copy; for tests and the admin view)."""
        cdef const char* frames
        if not self.nmsgs:
            return b""
        frames = self.owner._assemble(self)
        return PyBytes_FromStringAndSize(frames, self.owner._starts[self.nmsgs])

    cdef int _add(self, int msg) except -1:
        cdef Py_ssize_t cap
        cdef int* p
        if self.nmsgs == self.msgs_cap:
            cap = self.msgs_cap * 2 if self.msgs_cap else 16
            p = <int*>realloc(self.msgs, cap * sizeof(int))
            if p == NULL:
                raise MemoryError()
            self.msgs = p
            self.msgs_cap = cap
        self.msgs[self.nmsgs] = msg
        self.nmsgs += 1
        return 0

    cdef inline void _reset(self) noexcept:
        self.nmsgs = 0
        if self.msgs_cap > 65536:  # a burst grew it: give it back
            free(self.msgs)
            self.msgs = NULL
            self.msgs_cap = 0


cdef class Subscriber:
    """A client connection as the fan-out sees it (``transport``: picows WSTransport)."""

    def __init__(self, WSTransport transport, session=None):
        self.transport = transport
        self.session = session
        self.fd = transport._socket
        self.secure = transport.is_secure
        self.tracks_backlog = False
        self.backlogged = False
        self.group = None
        self.index = -1
        self.skip_msgs = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.closed = False


cdef class Fanout:
    """Per-event-loop fan-out engine. Semantics: see tickhub._ext.fanout_py."""

    def __init__(self, loop=None, *, Py_ssize_t max_queued_bytes=4 * 1024 * 1024,
                 on_slow_consumer=None, bint share_buffers=True):
        self.loop = loop if loop is not None else asyncio.get_event_loop()
        self.max_queued_bytes = max_queued_bytes
        self.on_slow_consumer = on_slow_consumer
        self.share_buffers = share_buffers
        self.groups = {}
        self._dirty = []
        self._scheduled = False
        self._flush_cb = self.flush
        self.first_pending_ns = 0
        self.last_flush_latency_ns = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.writes = 0
        self.slow_consumers = 0
        self.flushes = 0

    def __cinit__(self):
        self._log = NULL
        self._nlog = self._log_cap = 0
        self._raw = self._comb = self._scratch = NULL
        self._raw_size = self._raw_cap = self._comb_size = self._comb_cap = self._scratch_cap = 0
        self._starts = NULL
        self._starts_cap = 0

    def __dealloc__(self):
        free(self._log)
        free(self._raw)
        free(self._comb)
        free(self._scratch)
        free(self._starts)

    # -- membership (per subscription change) -------------------------------------------

    def set_subscriptions(self, Subscriber sub not None, topics, bint combined):
        """Make ``sub`` receive exactly ``topics`` in the given wire variant."""
        cdef Group group
        cdef Topic t
        if sub.closed:
            return
        topics = tuple(topics)
        self._leave(sub)
        if sub.closed or not topics:  # _leave may have found it slow
            return
        # Topics by identity, not by name: two topics may carry the same exchange name
        # (e.g. one stream in milliseconds and in microseconds) and must not share a buffer.
        members = frozenset(topics)
        key = (combined, members) if self.share_buffers else (combined, members, id(sub))
        group = self.groups.get(key)
        if group is None:
            group = Group(key, topics, combined, self)
            self.groups[key] = group
            for t in topics:
                t.groups.append(group)
        sub.group = group
        sub.index = len(group.members)
        group.members.append(sub)
        sub.skip_msgs = group.nmsgs

    def remove(self, Subscriber sub not None):
        """Forget ``sub`` (connection closed)."""
        self._detach(sub)
        sub.closed = True

    def _leave(self, Subscriber sub):
        cdef Group group = sub.group
        if group is None:
            return
        if group.nmsgs > sub.skip_msgs:
            self._write(sub, group, self._assemble(group), False)
        self._detach(sub)

    cdef int _detach(self, Subscriber sub) except -1:
        cdef Group group = sub.group
        cdef Subscriber last
        cdef Topic t
        if group is None:
            return 0
        last = group.members.pop()
        if last is not sub:
            group.members[sub.index] = last
            last.index = sub.index
        sub.group = None
        sub.index = -1
        if not group.members:
            del self.groups[group.key]
            for t in group.topics:
                t.groups.remove(group)
            group._reset()
        return 0

    # -- hot path -----------------------------------------------------------------------

    def publish(self, Topic topic not None, bytes payload not None):
        """Queue one message (a complete JSON text payload) for every subscriber of ``topic``."""
        self._publish(topic, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))

    cdef int _publish(self, Topic topic, const char* data, Py_ssize_t n) except -1:
        cdef list groups = topic.groups
        cdef Py_ssize_t i, ngroups = len(groups), plen, hlen
        cdef bint need_raw = False, need_comb = False
        cdef Group group
        cdef Framed* m
        cdef char* out
        cdef int msg
        topic.messages_in += 1
        self.messages_in += 1
        if ngroups == 0:
            return 0
        if self._nlog == self._log_cap:
            _grow(<void**>&self._log, &self._log_cap, sizeof(Framed), 64)
        msg = <int>self._nlog
        for i in range(ngroups):
            group = <Group>groups[i]
            if group.combined:
                need_comb = True
            else:
                need_raw = True
            group._add(msg)
            if not group.dirty:
                group.dirty = True
                self._dirty.append(group)
        m = &self._log[msg]
        m.raw_off = m.comb_off = -1
        m.raw_len = m.comb_len = 0
        if need_raw:
            _reserve(&self._raw, &self._raw_cap, self._raw_size + 10 + n)
            out = self._raw + self._raw_size
            hlen = write_header(<unsigned char*>out, n, 1)
            memcpy(out + hlen, data, n)
            m.raw_off = self._raw_size
            m.raw_len = hlen + n
            self._raw_size += m.raw_len
        if need_comb:
            plen = PyBytes_GET_SIZE(topic.prefix)
            _reserve(&self._comb, &self._comb_cap, self._comb_size + 10 + plen + n + 1)
            out = self._comb + self._comb_size
            hlen = write_header(<unsigned char*>out, plen + n + 1, 1)
            memcpy(out + hlen, PyBytes_AS_STRING(topic.prefix), plen)
            memcpy(out + hlen + plen, data, n)
            out[hlen + plen + n] = b'}'
            m.comb_off = self._comb_size
            m.comb_len = hlen + plen + n + 1
            self._comb_size += m.comb_len
        self._nlog += 1
        if not self._scheduled:
            self._scheduled = True
            self.first_pending_ns = _now_ns()
            self.loop.call_soon(self._flush_cb)
        return 0

    cdef const char* _assemble(self, Group group) except NULL:
        """The group's frames this turn, in order, and ``_starts[k]`` = where its message
        ``k`` begins (``_starts[nmsgs]`` = the total). Points straight into the arena when
        the group's frames lie there back to back (a group on every stream of the turn);
        else they are copied once into the scratch buffer."""
        cdef Py_ssize_t k, nmsgs = group.nmsgs, total = 0, off, length, first = 0, end = -1
        cdef bint contiguous = True, comb = group.combined
        cdef const char* arena = self._comb if comb else self._raw
        cdef Framed* m
        if nmsgs + 1 > self._starts_cap:
            _grow(<void**>&self._starts, &self._starts_cap, sizeof(Py_ssize_t), nmsgs + 1)
        for k in range(nmsgs):
            m = &self._log[group.msgs[k]]
            off = m.comb_off if comb else m.raw_off
            length = m.comb_len if comb else m.raw_len
            if k == 0:
                first = off
            elif off != end:
                contiguous = False
            end = off + length
            self._starts[k] = total
            total += length
        self._starts[nmsgs] = total
        if contiguous:
            return arena + first
        _reserve(&self._scratch, &self._scratch_cap, total)
        for k in range(nmsgs):
            m = &self._log[group.msgs[k]]
            if comb:
                memcpy(self._scratch + self._starts[k], arena + m.comb_off, m.comb_len)
            else:
                memcpy(self._scratch + self._starts[k], arena + m.raw_off, m.raw_len)
        return self._scratch

    def flush(self):
        """Write every dirty group's frames to each member: one write per client."""
        cdef list dirty = self._dirty
        cdef list slow = None   # slow consumers found in this flush, handed over after it
        cdef Py_ssize_t i, j, ngroups, nmembers
        cdef Group group
        cdef Subscriber sub
        cdef list members
        cdef const char* frames
        self._scheduled = False
        self._dirty = []
        ngroups = len(dirty)
        for i in range(ngroups):
            group = <Group>dirty[i]
            group.dirty = False
            members = group.members
            nmembers = len(members)
            if nmembers and group.nmsgs:
                frames = self._assemble(group)
                for j in range(nmembers):
                    sub = <Subscriber>members[j]
                    if self._write(sub, group, frames, True) == 1:
                        if slow is None:
                            slow = []
                        slow.append(sub)
                    sub.skip_msgs = 0
            group._reset()
        if not self._dirty:
            # No group points into the turn log any more (a publish from a callback during
            # this flush would have made one dirty again): start the next turn empty.
            self._nlog = self._raw_size = self._comb_size = 0
            if self._raw_cap > 4194304 or self._comb_cap > 4194304 or self._scratch_cap > 4194304:
                # a burst grew them: give the memory back, keep small ones for the next turn
                _release(&self._raw, &self._raw_cap)
                _release(&self._comb, &self._comb_cap)
                _release(&self._scratch, &self._scratch_cap)
        self.flushes += 1
        if self.first_pending_ns:
            self.last_flush_latency_ns = _now_ns() - self.first_pending_ns
            self.first_pending_ns = 0
        if slow is not None:
            for sub in slow:
                self._detach(sub)
            if self.on_slow_consumer is not None:
                for sub in slow:
                    self.on_slow_consumer(sub)

    cdef int _write(self, Subscriber sub, Group group, const char* frames, bint deferred) except -1:
        """Write the member's share of the group's ``frames`` (``_assemble``'s layout: it
        skips the messages from before it joined). Returns 1 if it is now a slow consumer
        and ``deferred`` (the flush loop hands it over after iterating)."""
        cdef Py_ssize_t start = self._starts[sub.skip_msgs]
        cdef const char* ptr = frames + start
        cdef Py_ssize_t n = self._starts[group.nmsgs] - start
        cdef Py_ssize_t nmsgs = group.nmsgs - sub.skip_msgs
        cdef Py_ssize_t queued, sent
        cdef WSTransport tr   # taken only off the fast path: touching it costs a cache miss
        sub.skip_msgs = group.nmsgs
        if n <= 0 or sub.closed:
            return 0
        if sub.tracks_backlog and not sub.backlogged and not sub.secure:
            # Fast path: the transport holds nothing (it would have paused us), so a direct
            # send keeps the byte order and nothing else about the transport is touched.
            # Measured on the Zipf mix (1000 clients, unique subscription sets): the
            # transport object's cache misses were the flush's largest user-space cost.
            sent = send(sub.fd, ptr, <size_t>n, MSG_NOSIGNAL | MSG_DONTWAIT)
            if sent < 0:
                sent = 0  # EAGAIN, or an error the transport reports on its own write
            queued = n - sent
            if queued:
                # Queued in the transport, which now calls pause_writing: backlogged.
                tr = sub.transport
                tr._tr_write(PyBytes_FromStringAndSize(ptr + sent, queued))
        elif sub.transport.is_disconnected:
            return 0
        elif sub.secure:
            tr = sub.transport
            tr._tr_write(PyBytes_FromStringAndSize(ptr, n))
            queued = tr._tr_get_write_buffer_size()
        else:
            tr = sub.transport
            queued = tr._tr_get_write_buffer_size()
            if queued == 0:
                # Nothing buffered in the transport, so a direct send keeps the byte order.
                sent = send(sub.fd, ptr, <size_t>n, MSG_NOSIGNAL | MSG_DONTWAIT)
                if sent < 0:
                    # EAGAIN: the socket is full; anything else: let the transport see
                    # the error on its own write and close the connection.
                    sent = 0
                if sent < n:
                    tr._tr_write(PyBytes_FromStringAndSize(ptr + sent, n - sent))
                    queued = n - sent
            else:
                tr._tr_write(PyBytes_FromStringAndSize(ptr, n))
                queued += n
        self.writes += 1
        sub.messages_out += nmsgs
        sub.bytes_out += n
        self.messages_out += nmsgs
        self.bytes_out += n
        if queued > self.max_queued_bytes:
            self.slow_consumers += 1
            sub.closed = True
            if not deferred:
                self._detach(sub)
                if self.on_slow_consumer is not None:
                    self.on_slow_consumer(sub)
                return 0
            return 1
        return 0
