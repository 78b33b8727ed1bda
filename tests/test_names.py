"""Stream-name grammar: Binance Spot names, client quirks, exchange prefixes."""

from __future__ import annotations

import pytest

from tickhub import names
from tickhub.errors import InvalidStream, ProtocolError
from tickhub.names import StreamRef, parse_stream

VALID = [
    "btcusdt@trade",
    "btcusdt@aggTrade",
    "btcusdt@blockTrade",
    "btcusdt@referencePrice",
    "btcusdt@bookTicker",
    "btcusdt@avgPrice",
    "btcusdt@miniTicker",
    "btcusdt@ticker",
    "btcusdt@ticker_1h",
    "btcusdt@ticker_4h",
    "btcusdt@ticker_1d",
    "btcusdt@depth",
    "btcusdt@depth@100ms",
    "btcusdt@depth5",
    "btcusdt@depth10@100ms",
    "btcusdt@depth20",
    "btcusdt@depth20@100ms",
    "!miniTicker@arr",
    "!ticker@arr",
    "!ticker_1h@arr",
    "!ticker_4h@arr",
    "!ticker_1d@arr",
    "1000satsusdt@trade",
    "币安人生usdt@aggTrade",   # non-ASCII symbols are listed since 2025-12
] + [f"bnbbtc@kline_{i}" for i in
     "1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M".split()] + [
    "bnbbtc@kline_1m@+08:00",
    "bnbbtc@kline_1M@+08:00",
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_are_their_own_canonical_form(name: str) -> None:
    ref = parse_stream(name)
    assert ref == StreamRef("binance", name)
    assert ref.key == name == str(ref)


@pytest.mark.parametrize(("alias", "canonical"), [
    ("btcusdt@depth@1000ms", "btcusdt@depth"),            # cryptofeed
    ("btcusdt@depth5@1000ms", "btcusdt@depth5"),
    ("btcusdt@depth20@1000ms", "btcusdt@depth20"),
    ("!miniTicker@arr@1000ms", "!miniTicker@arr"),        # python-binance miniticker_socket
    ("!ticker_1h@arr@1000ms", "!ticker_1h@arr"),
    ("BTCUSDT@trade", "btcusdt@trade"),                   # uppercase symbol lowercased
    ("BnbBtc@kline_1M", "bnbbtc@kline_1M"),               # interval case kept: 1M is months
    ("binance:ethbtc@bookTicker", "ethbtc@bookTicker"),   # explicit default prefix
])
def test_tolerated_aliases_canonicalise(alias: str, canonical: str) -> None:
    ref = parse_stream(alias)
    assert ref.exchange == "binance" and ref.key == canonical


INVALID = [
    "",
    "btcusdt",                      # no type
    "@trade",                       # no symbol
    "btcusdt@",                     # no type
    "btcusdt@aggtrade",             # type is case-sensitive
    "btcusdt@Trade",
    "btcusdt@trades",
    "btcusdt@kline",                # no interval
    "btcusdt@kline_2m",             # not an interval
    "btcusdt@kline_1m@+09:00",      # only UTC+8 exists
    "btcusdt@kline_1m@1000ms",
    "btcusdt@ticker_2h",
    "btcusdt@depth15",
    "btcusdt@depth@500ms",
    "btcusdt@depth@100ms@1000ms",
    "btcusdt@depth@1000ms@1000ms",
    "btcusdt@trade@1000ms",         # the alias exists only for depth and @arr streams
    "btcusdt@bookTicker@100ms",
    "btc usdt@trade",
    "btc/usdt@trade",
    "btc-usdt@trade",
    "btcusdt@trade ",
    " btcusdt@trade",
    "a" * 33 + "@trade",            # symbol too long
    "!bookTicker",                  # removed 2022
    "!bookTicker@arr",
    "!serverShutdown",              # an event name, not a stream
    "!miniTicker",
    "!miniTicker@arr@100ms",
    "!avgPrice@arr",
    "btcusdt@miniTicker@arr",
    "x" * 500,
]


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidStream) as info:
        parse_stream(name)
    err = info.value
    assert isinstance(err, ProtocolError)
    assert (err.code, err.msg, err.id_raw) == (2, "Invalid request: invalid stream", b"null")
    assert err.detail


@pytest.mark.parametrize("name", ["bybit:publicTrade.BTCUSDT", "okx:trades:BTC-USDT",
                                  "coinbase:BTC-USD", "kraken:trade"])
def test_other_exchanges_are_unsupported_for_now(name: str) -> None:
    with pytest.raises(InvalidStream, match="unsupported exchange"):
        parse_stream(name)


def test_non_string_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidStream):
        parse_stream(5)  # type: ignore[arg-type]


def test_an_exchange_adds_its_own_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    def validate_bybit(name: str) -> str:
        if not name.startswith("publicTrade."):
            raise InvalidStream(name, "bybit: unknown topic")
        return name

    monkeypatch.setitem(names.VALIDATORS, "bybit", validate_bybit)
    ref = parse_stream("bybit:publicTrade.BTCUSDT")
    assert ref == StreamRef("bybit", "publicTrade.BTCUSDT")
    assert ref.key == "bybit:publicTrade.BTCUSDT"
    with pytest.raises(InvalidStream) as info:
        parse_stream("bybit:orderbook.50.BTCUSDT")
    assert info.value.stream == "bybit:orderbook.50.BTCUSDT"   # the name as the client sent it
    assert info.value.detail == "bybit: unknown topic"


def test_kline_timezone_colon_is_not_an_exchange_prefix() -> None:
    assert parse_stream("ethbtc@kline_5m@+08:00").exchange == "binance"
