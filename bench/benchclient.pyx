# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A cheap load client: one process, N picows connections, every frame counted in C.

Why compiled: at millions of delivered frames per second a Python ``on_ws_frame`` would
saturate the client core long before the server under test, and the benchmark would
measure the client. Here each frame costs a vtable call, a short byte scan and a compare.

Every payload carries a per-stream sequence number as ``"t":<int>`` (Binance's trade id).
Each connection checks that consecutive frames carry consecutive numbers: a loss, a
reorder or a duplicate counts as an error and marks the run failed. With
``increasing=True`` (the multi-stream mix, where ``"t"`` is a global publish number and a
connection receives only its streams' share) the numbers need only increase strictly:
reorders and duplicates are still errors, gaps are expected, and loss is found by the
harness comparing delivered counts with the published sequence. With ``latency=True``
the payload's ``"T":<int>`` is read as a ``CLOCK_MONOTONIC`` nanosecond send timestamp
(the bench feeder writes it) and ``now - T`` goes into a 1 µs-bucket histogram.

Driven from ``bench/client.py``; see bench/README.md.
"""

from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from picows.picows cimport WSListener, WSTransport, WSFrame, WSMsgType

cdef enum:
    HIST_BUCKETS = 200000  # 1 µs buckets up to 200 ms; slower frames land in the last one


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int64_t _find_int(const char* p, Py_ssize_t n, char key) noexcept nogil:
    """Value of the first ``"<key>":<digits>`` in ``p[:n]``; -1 when absent."""
    cdef Py_ssize_t i = 0
    cdef int64_t v
    while i + 4 < n:
        if p[i] == c'"' and p[i + 1] == key and p[i + 2] == c'"' and p[i + 3] == c':':
            i += 4
            v = 0
            if i >= n or p[i] < c'0' or p[i] > c'9':
                return -1
            while i < n and p[i] >= c'0' and p[i] <= c'9':
                v = v * 10 + (p[i] - c'0')
                i += 1
            return v
        i += 1
    return -1


cdef inline int64_t _int_at(const char* p, Py_ssize_t n, Py_ssize_t* at, char key) noexcept nogil:
    """``_find_int`` that first tries the offset where ``key`` was found in the previous
    frame (``at[0]``, updated): frames of one stream share a layout, so this is one
    4-byte compare instead of a scan from byte 0 — the scan was a fifth of the client's
    CPU at millions of frames per second."""
    cdef Py_ssize_t i = at[0]
    cdef int64_t v
    if i >= 4 and i < n and p[i - 4] == c'"' and p[i - 3] == key and p[i - 2] == c'"' \
            and p[i - 1] == c':' and p[i] >= c'0' and p[i] <= c'9':
        v = 0
        while i < n and p[i] >= c'0' and p[i] <= c'9':
            v = v * 10 + (p[i] - c'0')
            i += 1
        return v
    i = 0
    while i + 4 < n:
        if p[i] == c'"' and p[i + 1] == key and p[i + 2] == c'"' and p[i + 3] == c':':
            at[0] = i + 4
            return _find_int(p + i, n - i, key)
        i += 1
    return -1


cdef class Stats:
    """State shared by all connections of the process: window flag and latency histogram."""

    cdef public bint counting
    cdef public bint latency
    cdef public bint increasing
    cdef uint64_t* hist
    cdef public uint64_t lat_count
    cdef public int64_t lat_max_ns

    def __cinit__(self):
        self.hist = <uint64_t*>calloc(HIST_BUCKETS, sizeof(uint64_t))
        if self.hist == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.hist)

    def reset_latency(self):
        memset(self.hist, 0, HIST_BUCKETS * sizeof(uint64_t))
        self.lat_count = 0
        self.lat_max_ns = 0

    def histogram(self):
        """The latency histogram's non-empty 1 µs buckets as ``[[us, count], ...]``, so
        several client processes' windows can be merged (bench/cluster.py)."""
        cdef Py_ssize_t i
        return [[i + 1, self.hist[i]] for i in range(HIST_BUCKETS) if self.hist[i]]

    def percentiles_us(self, qs):
        """Latency percentiles in µs (bucket upper bounds) for each q in ``qs`` (0..1)."""
        cdef Py_ssize_t i
        cdef uint64_t acc = 0
        if self.lat_count == 0:
            return [None for _ in qs]
        targets = sorted((q, k) for k, q in enumerate(qs))
        res = [0] * len(qs)
        t = 0
        for i in range(HIST_BUCKETS):
            acc += self.hist[i]
            while t < len(targets) and acc >= targets[t][0] * self.lat_count:
                res[targets[t][1]] = i + 1
                t += 1
            if t == len(targets):
                break
        return res


cdef class CountingListener(WSListener):
    """One connection: counts text frames, checks the sequence, optionally timestamps."""

    cdef Stats stats
    cdef public int64_t frames        # text frames ever received
    cdef public int64_t window_frames # text frames received while stats.counting
    cdef public int64_t errors        # sequence breaks (loss, reorder, duplicate, no "t")
    cdef public int64_t expected      # next sequence number; -1 before the first frame
    cdef public int64_t first_bad_got
    cdef public int64_t first_bad_expected
    cdef public bint connected
    cdef public bint disconnected
    cdef public int close_code
    cdef public WSTransport transport
    cdef Py_ssize_t t_at              # where "t"'s digits were in the previous frame
    cdef Py_ssize_t T_at              # where "T"'s digits were

    def __init__(self, Stats stats):
        self.stats = stats
        self.expected = -1
        self.first_bad_got = -1
        self.first_bad_expected = -1

    cpdef on_ws_connected(self, WSTransport transport):
        self.transport = transport
        self.connected = True

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.disconnected = True

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef int64_t seq, sent, lat
        cdef Stats stats
        if frame.msg_type == WSMsgType.TEXT:
            self.frames += 1
            stats = self.stats
            seq = _int_at(frame.payload_ptr, frame.payload_size, &self.t_at, c't')
            if seq < 0 or (self.expected >= 0 and (
                    seq < self.expected if stats.increasing else seq != self.expected)):
                if self.errors == 0:
                    self.first_bad_got = seq
                    self.first_bad_expected = self.expected
                self.errors += 1
            if seq >= 0:
                self.expected = seq + 1
            if stats.counting:
                self.window_frames += 1
                if stats.latency:
                    sent = _int_at(frame.payload_ptr, frame.payload_size, &self.T_at, c'T')
                    if sent > 0:
                        lat = (_now_ns() - sent) // 1000
                        if lat < 0:
                            lat = 0
                        if lat >= HIST_BUCKETS:
                            lat = HIST_BUCKETS - 1
                        stats.hist[lat] += 1
                        stats.lat_count += 1
                        if lat * 1000 > stats.lat_max_ns:
                            stats.lat_max_ns = lat * 1000
        elif frame.msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()
            transport.send_close(frame.get_close_code())
            transport.disconnect()
