"""Pure-Python twin of tickhub._ext.listener: the per-connection picows listener for clients.

See the compiled module's docstring for the session interface and the rate-limit rule.
"""

from __future__ import annotations

import time
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport

__all__ = ["ClientListener", "monotonic"]

monotonic = time.monotonic


class ClientListener(WSListener):
    """One client connection's frame handler (pure Python)."""

    def __init__(self, session: Any, max_per_second: int = 5, max_message_size: int = 65536) -> None:
        super().__init__()
        self.session = session
        self.transport: WSTransport | None = None
        self.max_per_second = max_per_second
        self.max_message_size = max_message_size
        self.last_pong = monotonic()
        self._window_start = 0.0
        self._window_count = 0
        self._fragments: bytearray | None = None
        self._limited = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.last_pong = monotonic()
        self.session.on_connected(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.session.on_disconnected()

    def pause_writing(self) -> None:
        self.session.on_backlog(True)

    def resume_writing(self) -> None:
        self.session.on_backlog(False)

    def _admit(self) -> bool:
        if self.max_per_second <= 0:
            return True
        now = monotonic()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._window_count = 0
        self._window_count += 1
        return self._window_count <= self.max_per_second

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self._limited:
            return
        if not self._admit():
            self._limited = True
            self.session.on_rate_limited()
            return
        t = frame.msg_type
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
            self.last_pong = monotonic()
        elif t == WSMsgType.BINARY:
            self.session.on_binary()
        elif t == WSMsgType.CLOSE:
            self.session.on_close_frame(frame.get_close_code().value)

    def _check_fragments(self) -> bool:
        assert self._fragments is not None
        if len(self._fragments) > self.max_message_size:
            self._fragments = None
            self.session.on_too_big()
            return False
        return True
