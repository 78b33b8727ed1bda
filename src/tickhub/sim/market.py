"""Deterministic market-event generators and the stream-name grammar of the simulator.

Nothing here touches sockets or the event loop: a generator turns "give me n events at
wall time E" into tuples, and a renderer turns one tuple into the exact payload bytes
Binance would send (field letters of the spot docs, prices and quantities as decimal
strings with 8 decimals, ids and times as integers).

Why tuples + ``bytes %`` templates instead of dicts + a JSON encoder: the simulator has to
feed benchmarks at ~100k events/s from one Python thread; a template per stream and
symbol with the time fields as ``%d`` costs about a microsecond per event and lets the
microsecond variant (``timeUnit=MICROSECOND``) be rendered from the same tuple by
multiplying the time fields.

Determinism: each generator owns a ``random.Random`` seeded from ``(seed, key)``, so the
n-th event of ``btcusdt@trade`` is the same in every run with the same seed, whatever
else is subscribed. The order book is the one deliberate exception: it is shared by all
book streams of a symbol (diffs, partial depth, bookTicker) because Binance gives them one
update-id space, so its sequence depends only on how many book changes have happened.
"""

from __future__ import annotations

import calendar
import datetime
import heapq
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KLINE_INTERVALS",
    "Instrument",
    "StreamSpec",
    "parse_stream",
    "TradeGenerator",
    "AggTradeGenerator",
    "OrderBook",
    "KlineGenerator",
    "TickerGenerator",
    "Renderer",
    "kline_open_time",
    "kline_close_time",
]

Event = tuple[Any, ...]
Renderer = Callable[[Event, int], bytes]
"""``render(event, time_multiplier) -> payload``; the multiplier is 1 (ms) or 1000 (µs)."""

KLINE_INTERVALS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
    "1d", "3d", "1w", "1M",
)
_DAY_MS = 86_400_000
_INTERVAL_MS: dict[str, int] = {
    "1s": 1000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
    "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000,
    "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": _DAY_MS,
    "3d": 3 * _DAY_MS, "1w": 7 * _DAY_MS,
}
_MONDAY_OFFSET_MS = 4 * _DAY_MS  # 1970-01-01 was a Thursday; weekly candles open on Monday

# Quantities are integers in units of 1e-5 of the base asset.
_QTY_SCALE = 100_000

# Starting prices (in the symbol's smallest price unit) and price decimals of well-known
# symbols, so the demo shows plausible numbers; any other symbol gets a seeded price.
_KNOWN_PRICES: dict[str, tuple[float, int]] = {
    "btcusdt": (60_000.0, 2), "ethusdt": (3_000.0, 2), "bnbusdt": (600.0, 2),
    "solusdt": (150.0, 2), "xrpusdt": (0.5, 4), "dogeusdt": (0.1, 5),
    "adausdt": (0.4, 4), "ethbtc": (0.05, 5), "bnbbtc": (0.01, 6),
}


# --------------------------------------------------------------------------------------
# Stream names

@dataclass(frozen=True)
class StreamSpec:
    """What a valid stream name means.

    kind is one of ``trade``, ``aggTrade``, ``bookTicker``, ``depthUpdate`` (diffs),
    ``depthPartial``, ``kline``, ``miniTicker``, ``ticker``, ``miniTickerArr``.
    period is the push period in seconds for periodic streams, 0 for real-time ones.
    """

    name: str
    kind: str
    symbol: str = ""
    period: float = 0.0
    levels: int = 0
    interval: str = ""


_STREAM_RE = re.compile(
    r"^(?P<symbol>[a-z0-9]+)@(?:"
    r"(?P<simple>trade|aggTrade|bookTicker|miniTicker|ticker)"
    r"|depth(?P<levels>5|10|20)?(?P<speed>@100ms|@1000ms)?"
    r"|kline_(?P<interval>1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)"
    r")$"
)
_MINI_ARR_NAMES = ("!miniTicker@arr", "!miniTicker@arr@1000ms")


def parse_stream(name: str, symbols: frozenset[str] | set[str]) -> StreamSpec | None:
    """Return the meaning of ``name``, or None if it is not a stream this simulator serves.

    Names are case-sensitive like Binance's (lowercase symbol, camel-case kind). The
    aliases ``@depth@1000ms`` / ``@depth<N>@1000ms`` (sent by cryptofeed) and
    ``!miniTicker@arr@1000ms`` (python-binance) are served as streams of their own that
    behave exactly like the undecorated name.
    """
    if name in _MINI_ARR_NAMES:
        return StreamSpec(name, "miniTickerArr", period=1.0)
    match = _STREAM_RE.match(name)
    if match is None or match["symbol"] not in symbols:
        return None
    symbol = match["symbol"]
    simple = match["simple"]
    if simple is not None:
        if simple in ("miniTicker", "ticker"):
            return StreamSpec(name, simple, symbol, period=1.0)
        return StreamSpec(name, simple, symbol)
    interval = match["interval"]
    if interval is not None:
        return StreamSpec(name, "kline", symbol, period=1.0 if interval == "1s" else 2.0,
                          interval=interval)
    fast = match["speed"] == "@100ms"
    if match["levels"] is not None:
        return StreamSpec(name, "depthPartial", symbol, period=0.1 if fast else 1.0,
                          levels=int(match["levels"]))
    return StreamSpec(name, "depthUpdate", symbol)


# --------------------------------------------------------------------------------------
# Instruments and number formatting

class Instrument:
    """A symbol with its price grid and preformatted byte fragments."""

    __slots__ = ("symbol", "upper", "base_ticks", "scale", "_px_format", "_px_cache")

    # Prices stay within a few hundred ticks of each other, so formatting each one once
    # and looking it up afterwards cuts the book generator's cost by about a third.
    _PX_CACHE_SIZE = 20_000

    def __init__(self, symbol: str, seed: int) -> None:
        self.symbol: str = symbol
        self.upper: bytes = symbol.upper().encode()
        price, decimals = _KNOWN_PRICES.get(symbol, (0.0, 4))
        if price == 0.0:
            price = 1.0 + random.Random(f"{seed}:{symbol}:price").random() * 999.0
        self.scale: int = 10 ** decimals
        self.base_ticks: int = max(int(price * self.scale), 1000)
        self._px_format = b"%d.%0" + str(decimals).encode() + b"d" + b"0" * (8 - decimals)
        self._px_cache: dict[int, bytes] = {}

    def px(self, ticks: int) -> bytes:
        """Price in ticks -> decimal string bytes with 8 decimals, e.g. b'60000.01000000'."""
        text = self._px_cache.get(ticks)
        if text is None:
            if ticks < 0:
                text = b"-" + self._px_format % divmod(-ticks, self.scale)
            else:
                text = self._px_format % divmod(ticks, self.scale)
            if len(self._px_cache) >= self._PX_CACHE_SIZE:
                self._px_cache.clear()
            self._px_cache[ticks] = text
        return text

    def price(self, ticks: int) -> float:
        return ticks / self.scale


def qty(units: int) -> bytes:
    """Quantity in 1e-5 units -> decimal string bytes with 8 decimals."""
    return b"%d.%05d000" % divmod(units, _QTY_SCALE)


# Book and trade quantities are drawn from a table of preformatted strings, log-spread
# over 0.00001 .. ~5: drawing an index is one random() call and formatting is free, which
# halves the cost of a book change (the generator is on the benchmarks' critical path).
_QTY_POOL_SIZE = 4096
_QTY_POOL: tuple[bytes, ...] = tuple(
    qty(max(1, int(10 ** (5.7 * i / _QTY_POOL_SIZE)))) for i in range(_QTY_POOL_SIZE))
_ZERO_QTY = qty(0)


def _amount(value: float) -> bytes:
    return b"%.8f" % value


def _walk(price: int, base: int, r: Callable[[], float]) -> int:
    """One step of a random walk of -2..+2 ticks that is pulled back inside ±2 % of base."""
    step = int(r() * 5.0) - 2
    band = base // 50
    if price > base + band:
        step -= 1
    elif price < base - band:
        step += 1
    new = price + step
    return new if new > 0 else price


def _random_qty(r: Callable[[], float]) -> bytes:
    return _QTY_POOL[int(r() * _QTY_POOL_SIZE)]


def _rng(seed: int, key: str) -> random.Random:
    # A str seed is hashed with SHA-512 by random.Random, so it is stable across runs
    # (unlike hash(), which is salted per process).
    return random.Random(f"{seed}:{key}")


# --------------------------------------------------------------------------------------
# Real-time generators

class TradeGenerator:
    """``<symbol>@trade``: ``t`` increases by exactly 1 per event."""

    def __init__(self, inst: Instrument, seed: int) -> None:
        self.inst = inst
        self._rng = _rng(seed, f"{inst.symbol}:trade")
        self.next_id = 100_000_000 + self._rng.randrange(900_000_000)
        self.price = inst.base_ticks

    def generate(self, n: int, now_ms: int) -> list[Event]:
        r = self._rng.random
        px = self.inst.px
        base = self.inst.base_ticks
        pool = _QTY_POOL
        pool_size = float(_QTY_POOL_SIZE)
        price = self.price
        tid = self.next_id
        out: list[Event] = []
        append = out.append
        for _ in range(n):
            price = _walk(price, base, r)
            append((now_ms, tid, px(price), pool[int(r() * pool_size)], now_ms,
                    b"true" if r() < 0.5 else b"false"))
            tid += 1
        self.price = price
        self.next_id = tid
        return out

    def renderer(self) -> Renderer:
        template = (b'{"e":"trade","E":%d,"s":"' + self.inst.upper
                    + b'","t":%d,"p":"%b","q":"%b","T":%d,"m":%b,"M":true}')

        def render(ev: Event, mult: int) -> bytes:
            return template % (ev[0] * mult, ev[1], ev[2], ev[3], ev[4] * mult, ev[5])
        return render


class AggTradeGenerator:
    """``<symbol>@aggTrade``: ``a`` increases by 1 per event; ``f``..``l`` are contiguous."""

    def __init__(self, inst: Instrument, seed: int) -> None:
        self.inst = inst
        self._rng = _rng(seed, f"{inst.symbol}:aggTrade")
        self.next_id = 10_000_000 + self._rng.randrange(90_000_000)
        self.next_trade_id = 100_000_000 + self._rng.randrange(900_000_000)
        self.price = inst.base_ticks

    def generate(self, n: int, now_ms: int) -> list[Event]:
        r = self._rng.random
        px = self.inst.px
        base = self.inst.base_ticks
        pool = _QTY_POOL
        pool_size = float(_QTY_POOL_SIZE)
        price = self.price
        aid = self.next_id
        first = self.next_trade_id
        out: list[Event] = []
        append = out.append
        for _ in range(n):
            price = _walk(price, base, r)
            last = first + int(r() * 3.0)
            append((now_ms, aid, px(price), pool[int(r() * pool_size)], first, last, now_ms,
                    b"true" if r() < 0.5 else b"false"))
            aid += 1
            first = last + 1
        self.price = price
        self.next_id = aid
        self.next_trade_id = first
        return out

    def renderer(self) -> Renderer:
        template = (b'{"e":"aggTrade","E":%d,"s":"' + self.inst.upper
                    + b'","a":%d,"p":"%b","q":"%b","f":%d,"l":%d,"T":%d,"m":%b,"M":true}')

        def render(ev: Event, mult: int) -> bytes:
            return template % (ev[0] * mult, ev[1], ev[2], ev[3], ev[4], ev[5], ev[6] * mult,
                               ev[7])
        return render


class OrderBook:
    """The order book of one symbol and its single update-id counter.

    Every level change advances ``update_id`` by one. A book change (1–3 level changes)
    becomes one diff event covering ``[U, u]``, so consecutive diffs satisfy
    ``U == previous u + 1``; ``bookTicker.u``, the partial-depth ``lastUpdateId`` and the
    REST snapshot's ``lastUpdateId`` are read from the same counter. Because changes are
    generated and published in the same callback, a REST snapshot taken between ticks
    carries the ``u`` of the last diff that was sent, which is what python-binance's
    DepthCacheManager requires (next ``U == lastUpdateId + 1``).
    """

    _INITIAL_LEVELS = 1000
    _MAX_LEVELS = 2000   # above this many levels per side the far end is pruned
    _MIN_LEVELS = 50     # never delete the best level of a side thinner than this

    def __init__(self, inst: Instrument, seed: int) -> None:
        self.inst = inst
        self._rng = _rng(seed, f"{inst.symbol}:book")
        rnd = self._rng.random
        self.update_id = 1_000_000_000 + self._rng.randrange(9_000_000_000)
        self.best_ask = inst.base_ticks
        self.best_bid = inst.base_ticks - 1
        self.bids: dict[int, bytes] = {
            self.best_bid - i: _random_qty(rnd) for i in range(self._INITIAL_LEVELS)}
        self.asks: dict[int, bytes] = {
            self.best_ask + i: _random_qty(rnd) for i in range(self._INITIAL_LEVELS)}

    def _change_bid(self, r: Callable[[], float], out: dict[int, bytes]) -> None:
        bids = self.bids
        x = r()
        if x < 0.15 and self.best_ask - self.best_bid > 1:
            price = self.best_bid + 1
            bids[price] = out[price] = _QTY_POOL[int(r() * _QTY_POOL_SIZE)]
            self.best_bid = price
        elif x < 0.25 and len(bids) > self._MIN_LEVELS:
            price = self.best_bid
            del bids[price]
            out[price] = _ZERO_QTY
            price -= 1
            while price not in bids:
                price -= 1
            self.best_bid = price
        else:
            price = self.best_bid - 1 - int(r() * r() * 20.0)
            if x < 0.3 and price in bids:
                del bids[price]
                out[price] = _ZERO_QTY
            else:
                bids[price] = out[price] = _QTY_POOL[int(r() * _QTY_POOL_SIZE)]

    def _change_ask(self, r: Callable[[], float], out: dict[int, bytes]) -> None:
        asks = self.asks
        x = r()
        if x < 0.15 and self.best_ask - self.best_bid > 1:
            price = self.best_ask - 1
            asks[price] = out[price] = _QTY_POOL[int(r() * _QTY_POOL_SIZE)]
            self.best_ask = price
        elif x < 0.25 and len(asks) > self._MIN_LEVELS:
            price = self.best_ask
            del asks[price]
            out[price] = _ZERO_QTY
            price += 1
            while price not in asks:
                price += 1
            self.best_ask = price
        else:
            price = self.best_ask + 1 + int(r() * r() * 20.0)
            if x < 0.3 and price in asks:
                del asks[price]
                out[price] = _ZERO_QTY
            else:
                asks[price] = out[price] = _QTY_POOL[int(r() * _QTY_POOL_SIZE)]

    def _prune(self, bid_out: dict[int, bytes], ask_out: dict[int, bytes]) -> None:
        """Drop the far end of a side that grew past _MAX_LEVELS, reporting it as deletions."""
        if len(self.bids) > self._MAX_LEVELS:
            for price in sorted(self.bids)[: len(self.bids) - self._INITIAL_LEVELS]:
                del self.bids[price]
                bid_out[price] = _ZERO_QTY
        if len(self.asks) > self._MAX_LEVELS:
            for price in sorted(self.asks, reverse=True)[: len(self.asks) - self._INITIAL_LEVELS]:
                del self.asks[price]
                ask_out[price] = _ZERO_QTY

    def generate(self, n: int, now_ms: int, want_diffs: bool, want_tops: bool
                 ) -> tuple[list[Event], list[Event]]:
        """Apply n book changes; return (diff events, bookTicker events) as asked for."""
        r = self._rng.random
        px = self.inst.px
        diffs: list[Event] = []
        tops: list[Event] = []
        uid = self.update_id
        for _ in range(n):
            bid_out: dict[int, bytes] = {}
            ask_out: dict[int, bytes] = {}
            changes = 1 + int(r() * 3.0)
            for _ in range(changes):
                if r() < 0.5:
                    self._change_bid(r, bid_out)
                else:
                    self._change_ask(r, ask_out)
            if len(self.bids) > self._MAX_LEVELS or len(self.asks) > self._MAX_LEVELS:
                self._prune(bid_out, ask_out)
                changes = max(changes, len(bid_out) + len(ask_out))
            first = uid + 1
            uid += changes
            if want_diffs:
                diffs.append((
                    now_ms, first, uid,
                    b",".join([b'["%b","%b"]' % (px(p), q) for p, q in bid_out.items()]),
                    b",".join([b'["%b","%b"]' % (px(p), q) for p, q in ask_out.items()]),
                ))
            if want_tops:
                bb = self.best_bid
                ba = self.best_ask
                tops.append((uid, px(bb), self.bids[bb], px(ba), self.asks[ba]))
        self.update_id = uid
        return diffs, tops

    def levels_bytes(self, limit: int) -> tuple[bytes, bytes]:
        """The best ``limit`` bids (descending) and asks (ascending) as JSON array bodies."""
        px = self.inst.px
        bids = self.bids
        asks = self.asks
        bid_body = b",".join([b'["%b","%b"]' % (px(p), bids[p])
                              for p in heapq.nlargest(limit, bids)])
        ask_body = b",".join([b'["%b","%b"]' % (px(p), asks[p])
                              for p in heapq.nsmallest(limit, asks)])
        return bid_body, ask_body

    def snapshot_json(self, limit: int) -> bytes:
        """REST ``/api/v3/depth`` body."""
        bid_body, ask_body = self.levels_bytes(limit)
        return b'{"lastUpdateId":%d,"bids":[%b],"asks":[%b]}' % (
            self.update_id, bid_body, ask_body)

    def partial_event(self, levels: int) -> Event:
        bid_body, ask_body = self.levels_bytes(levels)
        return (self.update_id, bid_body, ask_body)

    def diff_renderer(self) -> Renderer:
        template = (b'{"e":"depthUpdate","E":%d,"s":"' + self.inst.upper
                    + b'","U":%d,"u":%d,"b":[%b],"a":[%b]}')

        def render(ev: Event, mult: int) -> bytes:
            return template % (ev[0] * mult, ev[1], ev[2], ev[3], ev[4])
        return render

    def book_ticker_renderer(self) -> Renderer:
        template = b'{"u":%d,"s":"' + self.inst.upper + b'","b":"%b","B":"%b","a":"%b","A":"%b"}'

        def render(ev: Event, mult: int) -> bytes:
            return template % ev
        return render

    @staticmethod
    def partial_renderer() -> Renderer:
        def render(ev: Event, mult: int) -> bytes:
            return b'{"lastUpdateId":%d,"bids":[%b],"asks":[%b]}' % ev
        return render


# --------------------------------------------------------------------------------------
# Periodic generators

def kline_open_time(interval: str, ms: int) -> int:
    """Open time of the candle of ``interval`` that contains UTC time ``ms``."""
    if interval == "1M":
        dt = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
        return calendar.timegm((dt.year, dt.month, 1, 0, 0, 0)) * 1000
    width = _INTERVAL_MS[interval]
    if interval == "1w":
        return (ms - _MONDAY_OFFSET_MS) // width * width + _MONDAY_OFFSET_MS
    return ms - ms % width


def kline_close_time(interval: str, open_ms: int) -> int:
    """Close time (last millisecond) of the candle opening at ``open_ms``."""
    if interval == "1M":
        dt = datetime.datetime.fromtimestamp(open_ms / 1000, tz=datetime.timezone.utc)
        year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000 - 1
    return open_ms + _INTERVAL_MS[interval] - 1


class KlineGenerator:
    """``<symbol>@kline_<interval>``: the current candle, pushed every 1 s / 2 s.

    Every push adds a few simulated trades to the candle. The first push after the
    candle's close time carries the finished candle with ``x: true`` and starts the candle
    that contains the current time (so ``kline_1s``, pushed every second, is mostly
    closed candles).
    """

    def __init__(self, inst: Instrument, interval: str, seed: int) -> None:
        self.inst = inst
        self.interval = interval
        self._interval_b = interval.encode()
        self._rng = _rng(seed, f"{inst.symbol}:kline_{interval}")
        self.price = inst.base_ticks
        self.next_trade_id = 100_000_000 + self._rng.randrange(900_000_000)
        self.open_ms = -1
        self.close_ms = -1

    def _start(self, now_ms: int) -> None:
        self.open_ms = kline_open_time(self.interval, now_ms)
        self.close_ms = kline_close_time(self.interval, self.open_ms)
        self.o = self.h = self.l = self.price
        self.first_id = self.next_trade_id
        self.n = 0
        self.v = 0
        self.q = 0.0
        self.taker_v = 0
        self.taker_q = 0.0

    def generate(self, now_ms: int) -> Event:
        if self.open_ms < 0:
            self._start(now_ms)
        self._add_trades()
        if now_ms > self.close_ms:
            event = self._event(now_ms, closed=True)
            self._start(now_ms)
            return event
        return self._event(now_ms, closed=False)

    def _add_trades(self) -> None:
        r = self._rng.random
        base = self.inst.base_ticks
        for _ in range(1 + int(r() * 10.0)):
            self.price = _walk(self.price, base, r)
            units = 1 + int(r() * 200_000)
            quote = units / _QTY_SCALE * self.inst.price(self.price)
            self.v += units
            self.q += quote
            if r() < 0.5:
                self.taker_v += units
                self.taker_q += quote
            self.n += 1
            self.next_trade_id += 1
            if self.price > self.h:
                self.h = self.price
            if self.price < self.l:
                self.l = self.price

    def _event(self, now_ms: int, closed: bool) -> Event:
        px = self.inst.px
        first, last = (self.first_id, self.next_trade_id - 1) if self.n else (-1, -1)
        return (now_ms, self.open_ms, self.close_ms, self._interval_b, first, last,
                px(self.o), px(self.price), px(self.h), px(self.l), qty(self.v), self.n,
                b"true" if closed else b"false", _amount(self.q), qty(self.taker_v),
                _amount(self.taker_q))

    def renderer(self) -> Renderer:
        s = self.inst.upper
        template = (b'{"e":"kline","E":%d,"s":"' + s + b'","k":{"t":%d,"T":%d,"s":"' + s
                    + b'","i":"%b","f":%d,"L":%d,"o":"%b","c":"%b","h":"%b","l":"%b",'
                    b'"v":"%b","n":%d,"x":%b,"q":"%b","V":"%b","Q":"%b","B":"0"}}')

        def render(ev: Event, mult: int) -> bytes:
            return template % ((ev[0] * mult, ev[1] * mult, ev[2] * mult) + ev[3:])
        return render


class TickerGenerator:
    """``<symbol>@ticker`` / ``@miniTicker``: rolling 24 h statistics, pushed every second."""

    def __init__(self, inst: Instrument, seed: int, key: str) -> None:
        self.inst = inst
        self._rng = _rng(seed, f"{inst.symbol}:{key}")
        r = self._rng.random
        base = inst.base_ticks
        self.open = base + int((r() - 0.5) * base * 0.04)
        self.price = base
        self.prev_price = base
        self.high = max(self.open, base) + int(r() * base * 0.01)
        self.low = min(self.open, base) - int(r() * base * 0.01)
        self.volume = 1_000.0 + r() * 100_000.0
        self.quote = self.volume * inst.price(base)
        self.last_qty = 1
        self.first_id = 100_000_000 + self._rng.randrange(900_000_000)
        self.last_id = self.first_id + 500_000 + self._rng.randrange(500_000)

    def _advance(self) -> None:
        r = self._rng.random
        base = self.inst.base_ticks
        for _ in range(1 + int(r() * 10.0)):
            self.prev_price = self.price
            self.price = _walk(self.price, base, r)
            self.last_qty = 1 + int(r() * 200_000)
            amount = self.last_qty / _QTY_SCALE
            self.volume += amount
            self.quote += amount * self.inst.price(self.price)
            self.last_id += 1
            self.first_id += int(r() * 2.0)
            self.high = max(self.high, self.price)
            self.low = min(self.low, self.price)

    def generate_mini(self, now_ms: int) -> Event:
        self._advance()
        px = self.inst.px
        return (now_ms, px(self.price), px(self.open), px(self.high), px(self.low),
                _amount(self.volume), _amount(self.quote))

    def generate_full(self, now_ms: int) -> Event:
        self._advance()
        px = self.inst.px
        change = self.price - self.open
        return (now_ms, px(change), b"%.3f" % (change * 100.0 / self.open),
                _amount(self.quote / self.volume), px(self.prev_price), px(self.price),
                qty(self.last_qty), px(self.price - 1), qty(1 + self.last_id % 400_000),
                px(self.price + 1), qty(1 + self.first_id % 400_000), px(self.open),
                px(self.high), px(self.low), _amount(self.volume), _amount(self.quote),
                now_ms - _DAY_MS, now_ms, self.first_id, self.last_id,
                self.last_id - self.first_id + 1)

    def mini_renderer(self) -> Renderer:
        template = (b'{"e":"24hrMiniTicker","E":%d,"s":"' + self.inst.upper
                    + b'","c":"%b","o":"%b","h":"%b","l":"%b","v":"%b","q":"%b"}')

        def render(ev: Event, mult: int) -> bytes:
            return template % ((ev[0] * mult,) + ev[1:])
        return render

    def full_renderer(self) -> Renderer:
        template = (b'{"e":"24hrTicker","E":%d,"s":"' + self.inst.upper
                    + b'","p":"%b","P":"%b","w":"%b","x":"%b","c":"%b","Q":"%b","b":"%b",'
                    b'"B":"%b","a":"%b","A":"%b","o":"%b","h":"%b","l":"%b","v":"%b",'
                    b'"q":"%b","O":%d,"C":%d,"F":%d,"L":%d,"n":%d}')

        def render(ev: Event, mult: int) -> bytes:
            return template % ((ev[0] * mult,) + ev[1:16]
                               + (ev[16] * mult, ev[17] * mult) + ev[18:])
        return render
