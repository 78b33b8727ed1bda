"""Pacing for the upstream side: reconnect backoff and sliding-window rate limits.

Two exchange rules shape how often the hub may talk to Binance (reference:
exchange-protocols.md §1.5):

* at most 5 incoming messages per second per connection (control messages, pings and
  pongs all count; over the limit the connection is cut and repeat offenders are banned);
* at most 300 connection attempts per 5 minutes per IP.

Both are "at most N events in any window of W seconds", so both use
:class:`SlidingWindowLimiter`, which is exact for that rule (a token bucket with capacity N
and rate N/W allows up to 2N-1 in one window). Reconnect delays use
:class:`Backoff`: exponential with *full jitter* (a uniform draw in ``[0, cap]``), which
spreads a fleet's reconnects after a shared outage instead of synchronising them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Backoff", "SlidingWindowLimiter"]


class Backoff:
    """Exponential backoff with full jitter: attempt *n* waits ``uniform(0, min(max, initial·2ⁿ))``.

    :meth:`throttled` is for an explicit "slow down" from the server (HTTP 429): it waits
    at least half the cap (and at least ``Retry-After`` when the server gave one), because
    retrying a rate-limited IP early is what turns a limit into a ban.
    """

    def __init__(
        self, initial: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        """Delay before the next attempt after an ordinary failure; advances the attempt count."""
        cap = min(self.maximum, self.initial * (2.0 ** min(self.attempt, 62)))
        self.attempt += 1
        return self._rng() * cap

    def throttled(self, retry_after: float | None = None) -> float:
        """Delay after the server said "too many requests"; advances the attempt count."""
        self.attempt += 1
        delay = self.maximum * (0.5 + 0.5 * self._rng())
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay

    def reset(self) -> None:
        """Forget past failures (called once a connection has proved it works)."""
        self.attempt = 0


class SlidingWindowLimiter:
    """At most ``limit`` events in any ``window`` seconds.

    Callers ask :meth:`delay` how long to wait, and call :meth:`record` when they act;
    :meth:`acquire` does both for coroutines. Memory is bounded by ``limit`` timestamps.
    """

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("rate limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: deque[float] = deque()

    def delay(self) -> float:
        """Seconds until one more event fits in the window (0.0 if it fits now)."""
        now = self._clock()
        events = self._events
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        # A small epsilon so the wake-up lands after the oldest event has left the window.
        return events[0] + self.window - now + 1e-4

    def record(self) -> None:
        """Count one event now."""
        self._events.append(self._clock())

    async def acquire(self) -> float:
        """Wait until an event fits, record it, and return how long it waited."""
        waited = 0.0
        while (wait := self.delay()) > 0:
            await asyncio.sleep(wait)
            waited += wait
        self.record()
        return waited
