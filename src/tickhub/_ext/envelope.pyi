"""Type stubs for the compiled tickhub._ext.envelope (twin: tickhub._ext.envelope_py)."""

from typing import Final

__all__ = ["KIND_NONE", "KIND_DATA", "KIND_RESULT", "KIND_ERROR", "parse", "event_id"]

KIND_NONE: Final[int]
KIND_DATA: Final[int]
KIND_RESULT: Final[int]
KIND_ERROR: Final[int]

def parse(buf: bytes) -> tuple[int, bytes | None, int, int]: ...
def event_id(payload: bytes) -> int: ...
