"""Configuration of the Binance-compatible exchange simulator.

One frozen object, validated once when it is built, so a bad value fails at start with a
message that names the field instead of misbehaving later on the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["SimConfig"]

_SYMBOL_RE = re.compile(r"^[a-z0-9]{2,32}$")


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes what the simulator emits and how strictly it polices clients.

    Fields (default in parentheses):

    symbols (``("btcusdt", "ethusdt", "bnbusdt")``)
        Lowercase symbols the simulator lists; stream names for any other symbol are
        answered with ``invalid stream``. A list is accepted and stored as a tuple.
    rate (``10.0``)
        Events per second per real-time stream (``trade``, ``aggTrade``) and order-book
        changes per second per symbol (each change is one ``depth`` diff event and one
        ``bookTicker`` event). ``0`` makes the real-time streams silent; periodic streams
        (kline, tickers, partial depth) are unaffected.
    seed (``1``)
        Seed of every generator. The same seed gives the same sequence of events per
        stream (ids, prices, quantities); only the time fields differ between runs.
    ping_interval (``20.0`` s)
        Period of the server PING frame on every connection (Binance: 20 s). ``0``
        disables server pings and therefore the pong check.
    pong_timeout (``60.0`` s)
        A connection that has not answered a server ping with a matching PONG within this
        time is closed with 1008 ``Pong timeout`` (Binance: 1 minute).
    max_streams_per_connection (``1024``)
        Upper bound of streams one connection may hold. A SUBSCRIBE that would exceed it is
        refused as a whole with error code 2; a URL that names more is refused with HTTP
        400. ``0`` means unlimited.
    max_incoming_per_second (``5``)
        Incoming PING, PONG, text and binary frames allowed in any one-second window;
        the next one closes the connection with 1008 ``Too many requests`` (Binance
        disconnects in the same situation). ``0`` means unlimited.
    max_connection_age (``86400.0`` s)
        A connection older than this is closed with 1001 ``Connection lifetime
        exceeded`` (Binance: 24 h). ``0`` means no limit.
    tick_interval (``0.01`` s)
        Period of the generator timer. Each tick generates everything that is due and
        writes it with one socket write per connection (libuv timers have 1 ms
        resolution, so values below 0.001 behave like 0.001).
    burst (``0``)
        ``0``: each tick emits whatever the rate made due. ``N > 0``: real-time events
        are emitted in groups of exactly ``N`` per socket write (the remainder waits for
        a later tick), so a benchmark can decide how many messages one write carries.
    max_send_buffer (``64 MiB``)
        A connection whose unsent data exceeds this many bytes is a slow consumer and is
        aborted, as Binance drops clients that do not read. ``0`` means unbounded.
    """

    symbols: tuple[str, ...] = ("btcusdt", "ethusdt", "bnbusdt")
    rate: float = 10.0
    seed: int = 1
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    max_streams_per_connection: int = 1024
    max_incoming_per_second: int = 5
    max_connection_age: float = 24 * 3600.0
    tick_interval: float = 0.01
    burst: int = 0
    max_send_buffer: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        symbols: Any = self.symbols
        if isinstance(symbols, str):
            symbols = tuple(s for s in symbols.split(",") if s)
        symbols = tuple(symbols)
        if not symbols:
            raise ValueError("symbols: at least one symbol is required")
        for symbol in symbols:
            if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
                raise ValueError(
                    f"symbols: {symbol!r} is not a lowercase alphanumeric symbol such as 'btcusdt'")
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols: duplicates are not allowed")
        object.__setattr__(self, "symbols", symbols)
        _require(self.rate >= 0, "rate must be >= 0")
        _require(isinstance(self.seed, int), "seed must be an integer")
        _require(self.ping_interval >= 0, "ping_interval must be >= 0")
        _require(self.pong_timeout > 0, "pong_timeout must be > 0")
        _require(self.max_streams_per_connection >= 0, "max_streams_per_connection must be >= 0")
        _require(self.max_incoming_per_second >= 0, "max_incoming_per_second must be >= 0")
        _require(self.max_connection_age >= 0, "max_connection_age must be >= 0")
        _require(0 < self.tick_interval <= 1.0, "tick_interval must be in (0, 1] seconds")
        _require(self.burst >= 0, "burst must be >= 0")
        _require(self.max_send_buffer >= 0, "max_send_buffer must be >= 0")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
