"""Type stubs for the compiled tickhub._ext.fanout (semantics: tickhub._ext.fanout_py)."""

import asyncio
from typing import Any, Callable, Iterable

class Topic:
    name: bytes
    prefix: bytes
    groups: list[Group]
    messages_in: int
    def __init__(self, name: bytes) -> None: ...
    @property
    def subscriber_count(self) -> int: ...

class Group:
    key: Any
    topics: tuple[Topic, ...]
    combined: bool
    members: list[Subscriber]
    @property
    def pending(self) -> bytes: ...

class Subscriber:
    transport: Any
    session: Any
    group: Group | None
    messages_out: int
    bytes_out: int
    closed: bool
    tracks_backlog: bool
    backlogged: bool
    def __init__(self, transport: Any, session: Any = None) -> None: ...

class Fanout:
    loop: asyncio.AbstractEventLoop
    max_queued_bytes: int
    on_slow_consumer: Callable[[Subscriber], None] | None
    share_buffers: bool
    groups: dict[Any, Group]
    first_pending_ns: int
    last_flush_latency_ns: int
    messages_in: int
    messages_out: int
    bytes_out: int
    writes: int
    slow_consumers: int
    flushes: int
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_queued_bytes: int = ...,
        on_slow_consumer: Callable[[Subscriber], None] | None = None,
        share_buffers: bool = True,
    ) -> None: ...
    def set_subscriptions(self, sub: Subscriber, topics: Iterable[Topic], combined: bool) -> None: ...
    def remove(self, sub: Subscriber) -> None: ...
    def publish(self, topic: Topic, payload: bytes) -> None: ...
    def flush(self) -> None: ...
