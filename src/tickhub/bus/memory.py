"""The in-process bus: a single hub instance, no broker."""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..names import StreamRef

__all__ = ["Bus", "MemoryBus", "Deliver", "ReportGap"]

#: ``deliver(key, payload)``: hand one upstream event (hub-wide stream key as bytes, the
#: payload exactly as the exchange sent it) to the local registry.
Deliver = Callable[[bytes, bytes], None]
#: ``report_gap(keys, reason)``: events of these hub-wide stream keys may have been missed
#: (:meth:`tickhub.server.Gateway.report_gap`).
ReportGap = Callable[[list[str], str], None]


class Upstream(Protocol):
    def acquire(self, stream: str) -> None: ...
    def release(self, stream: str) -> None: ...


class Bus(Protocol):
    """What the registry and the gateway need from a bus."""

    def subscribe(self, ref: StreamRef) -> None:
        """The first local subscriber of ``ref`` appeared."""

    def unsubscribe(self, ref: StreamRef) -> None:
        """The last local subscriber of ``ref`` left."""

    def on_upstream_data(self, exchange: str, stream: bytes, payload: bytes) -> None:
        """An upstream this instance runs received an event."""

    def upstream_gap(self, keys: list[str], reason: str) -> None:
        """An upstream this instance runs may have missed events of ``keys`` (hub-wide
        stream keys): every instance with clients of them must tell them, not only this one."""

    def live_last_id(self, key: str) -> int:
        """The event id of the last live event of ``key`` delivered here, -1 if unknown
        (the seam of a replay: :mod:`tickhub.bus.replay`)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """For /readyz and /admin/state: at least ``{"kind": str, "healthy": bool}``."""


class MemoryBus:
    """Local demand acquires the exchange stream; its events are delivered at once."""

    kind = "memory"

    def __init__(self, upstreams: dict[str, Upstream], deliver: Deliver, report_gap: ReportGap) -> None:
        self.upstreams = upstreams
        self.deliver = deliver
        self.report_gap = report_gap

    def subscribe(self, ref: StreamRef) -> None:
        self.upstreams[ref.exchange].acquire(ref.name)

    def unsubscribe(self, ref: StreamRef) -> None:
        self.upstreams[ref.exchange].release(ref.name)

    def on_upstream_data(self, exchange: str, stream: bytes, payload: bytes) -> None:
        # Binance streams are keyed by their own name; other exchanges by "<exchange>:<name>".
        self.deliver(stream if exchange == "binance" else exchange.encode() + b":" + stream, payload)

    def upstream_gap(self, keys: list[str], reason: str) -> None:
        self.report_gap(keys, reason)  # one process: its clients are all there are

    def live_last_id(self, key: str) -> int:
        return -1  # not tracked: replay needs the Kafka log (LoggedBus)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "healthy": True}
