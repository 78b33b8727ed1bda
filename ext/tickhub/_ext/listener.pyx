"""Compiled twin of tickhub._ext.listener_py: the per-connection picows listener for clients.

Every inbound frame passes through here. Pings, pongs, the incoming-message rate limit and
frame-type dispatch cost no Python; only complete text messages (control requests such as
SUBSCRIBE) and connection events go up to the session object, which implements:

    on_connected(transport)        on_text(payload: bytes)      on_binary()
    on_rate_limited()              on_close_frame(code: int)    on_disconnected()
    on_backlog(flag: bool)         (the transport's pause_writing / resume_writing)
"""

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


def monotonic():
    """The clock ``last_pong`` is measured on (CLOCK_MONOTONIC, seconds)."""
    return _monotonic()


cdef class ClientListener(WSListener):
    """One client connection's frame handler.

    ``max_per_second`` counts every inbound frame (data, ping, pong, close), as Binance
    counts pings, pongs and control messages toward its 5 per second; 0 disables the limit.
    Fragmented text messages are reassembled up to ``max_message_size`` bytes.
    """

    cdef public object session
    cdef readonly WSTransport transport
    cdef public int max_per_second
    cdef public Py_ssize_t max_message_size
    cdef public double last_pong
    cdef double _window_start
    cdef int _window_count
    cdef bytearray _fragments
    cdef bint _limited

    def __init__(self, session, int max_per_second=5, Py_ssize_t max_message_size=65536):
        self.session = session
        self.max_per_second = max_per_second
        self.max_message_size = max_message_size
        self.last_pong = _monotonic()
        self._window_start = 0.0
        self._window_count = 0
        self._fragments = None
        self._limited = False

    cpdef on_ws_connected(self, WSTransport transport):
        self.transport = transport
        self.last_pong = _monotonic()
        # The parsed upgrade request and response (header multidicts) are not needed once
        # the session exists; dropping them saves ~1 KB per idle connection.
        transport.request = None
        transport.response = None
        self.session.on_connected(transport)

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.session.on_disconnected()

    cpdef pause_writing(self):
        self.session.on_backlog(True)

    cpdef resume_writing(self):
        self.session.on_backlog(False)

    cdef inline bint _admit(self) noexcept:
        cdef double now
        if self.max_per_second <= 0:
            return True
        now = _monotonic()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._window_count = 0
        self._window_count += 1
        return self._window_count <= self.max_per_second

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType t = frame.msg_type
        if self._limited:
            return
        if not self._admit():
            self._limited = True
            self.session.on_rate_limited()
            return
        if t == WSMsgType.TEXT:
            if frame.fin:
                self.session.on_text(frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
                self._check_fragments()
        elif t == WSMsgType.CONTINUATION:
            if self._fragments is None:
                self.session.on_protocol_error("continuation frame without a message")
                return
            self._fragments += frame.get_payload_as_memoryview()
            if self._check_fragments() and frame.fin:
                payload = bytes(self._fragments)
                self._fragments = None
                self.session.on_text(payload)
        elif t == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif t == WSMsgType.PONG:
            self.last_pong = _monotonic()
        elif t == WSMsgType.BINARY:
            self.session.on_binary()
        elif t == WSMsgType.CLOSE:
            self.session.on_close_frame(<int>frame.get_close_code())

    cdef bint _check_fragments(self):
        if len(self._fragments) > self.max_message_size:
            self._fragments = None
            self.session.on_too_big()
            return False
        return True
