"""Binance-shaped sample messages for the hot-path tests and benchmarks.

Each payload has the exact field letters, order and compact formatting Binance Spot uses
(see exchange-protocols.md §1.3): prices and quantities are decimal strings, ids and times
integers, no whitespace. ``SAMPLES`` maps a short name to ``Sample(stream, payload,
event_id)``; ``Sample.combined`` is the message as a ``/stream?streams=...`` connection
receives it, ``{"stream":"<stream>","data":<payload>}``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sample", "SAMPLES", "combined"]


def combined(stream: bytes, payload: bytes) -> bytes:
    """The combined-stream wrapper exactly as Binance writes it."""
    return b'{"stream":"' + stream + b'","data":' + payload + b"}"


@dataclass(frozen=True)
class Sample:
    """One upstream event: its stream name, raw payload and de-duplication id."""

    stream: bytes
    payload: bytes
    event_id: int

    @property
    def combined(self) -> bytes:
        return combined(self.stream, self.payload)


def _levels(mid: float, step: float, count: int, side: int) -> bytes:
    """``[["price","qty"],...]`` with Binance's 8-decimal strings, deterministic."""
    rows = []
    for i in range(count):
        price = mid + side * step * (i + 1)
        qty = 0.0 if i % 7 == 3 else 0.05 + (i * 37 % 11) * 0.731
        rows.append(b'["%.8f","%.8f"]' % (price, qty))
    return b"[" + b",".join(rows) + b"]"


TRADE = (
    b'{"e":"trade","E":1723456789123,"s":"BTCUSDT","t":3715238921,"p":"61234.56000000",'
    b'"q":"0.00125000","T":1723456789122,"m":true,"M":true}'
)
AGG_TRADE = (
    b'{"e":"aggTrade","E":1723456789123,"s":"BTCUSDT","a":3108374221,"p":"61234.56000000",'
    b'"q":"0.00125000","f":3715238915,"l":3715238921,"T":1723456789122,"m":false,"M":true}'
)
BOOK_TICKER = (
    b'{"u":52187266342,"s":"BTCUSDT","b":"61234.55000000","B":"1.93712000",'
    b'"a":"61234.56000000","A":"0.40218000"}'
)
DEPTH_UPDATE = (
    b'{"e":"depthUpdate","E":1723456789200,"s":"BTCUSDT","U":52187266343,"u":52187266401,'
    b'"b":' + _levels(61234.55, 0.01, 20, -1) + b',"a":' + _levels(61234.55, 0.01, 20, 1) + b"}"
)
DEPTH20 = (
    b'{"lastUpdateId":52187266401,"bids":' + _levels(61234.55, 0.01, 20, -1)
    + b',"asks":' + _levels(61234.55, 0.01, 20, 1) + b"}"
)
KLINE = (
    b'{"e":"kline","E":1723456789300,"s":"BTCUSDT","k":{"t":1723456740000,"T":1723456799999,'
    b'"s":"BTCUSDT","i":"1m","f":3715237001,"L":3715238921,"o":"61210.01000000",'
    b'"c":"61234.56000000","h":"61250.00000000","l":"61201.10000000","v":"12.84512000",'
    b'"n":1921,"x":false,"q":"786321.45128730","V":"6.10211000","Q":"373555.19873210","B":"0"}}'
)

SAMPLES: dict[str, Sample] = {
    "trade": Sample(b"btcusdt@trade", TRADE, 3715238921),
    "aggTrade": Sample(b"btcusdt@aggTrade", AGG_TRADE, 3108374221),
    "bookTicker": Sample(b"btcusdt@bookTicker", BOOK_TICKER, 52187266342),
    "depthUpdate": Sample(b"btcusdt@depth@100ms", DEPTH_UPDATE, 52187266401),
    "depth20": Sample(b"btcusdt@depth20@100ms", DEPTH20, 52187266401),
    "kline": Sample(b"btcusdt@kline_1m", KLINE, 1723456789300),
}
