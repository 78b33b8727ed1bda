"""Type stubs for the compiled tickhub._ext.frames (twin: tickhub._ext.frames_py)."""

from typing import Final

__all__ = [
    "OP_TEXT",
    "OP_BINARY",
    "frame_header",
    "build_frame",
    "combined_payload",
    "combined_prefix",
    "build_combined_frame",
]

OP_TEXT: Final[int]
OP_BINARY: Final[int]

def frame_header(payload_len: int, opcode: int = ...) -> bytes: ...
def build_frame(payload: bytes, opcode: int = ...) -> bytes: ...
def combined_payload(stream: bytes, data: bytes) -> bytes: ...
def combined_prefix(stream: bytes) -> bytes: ...
def build_combined_frame(prefix: bytes, data: bytes, opcode: int = ...) -> bytes: ...
