"""Type stubs for the compiled tickhub._ext.listener (twin: tickhub._ext.listener_py)."""

from typing import Any

from picows import WSFrame, WSListener, WSTransport

def monotonic() -> float: ...

class ClientListener(WSListener):
    session: Any
    transport: WSTransport | None
    max_per_second: int
    max_message_size: int
    last_pong: float
    def __init__(self, session: Any, max_per_second: int = 5, max_message_size: int = 65536) -> None: ...
    def on_ws_connected(self, transport: WSTransport) -> None: ...
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...
    def on_ws_disconnected(self, transport: WSTransport) -> None: ...
