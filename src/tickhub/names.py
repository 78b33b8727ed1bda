"""Stream names: parse a client's stream name into a canonical, hub-wide :class:`StreamRef`.

A name without an exchange prefix is Binance Spot (``btcusdt@trade``), as on Binance, so
Binance programs work by changing only the base URL. Other exchanges are named with a
prefix (``bybit:publicTrade.BTCUSDT``); each exchange validates its own names through
:data:`VALIDATORS` (exchange → function returning the canonical name). Only Binance is
registered so far; another prefix is refused as an unsupported exchange. ``binance:`` is
accepted as an explicit prefix and means the same as no prefix.

Binance Spot grammar (reference §1.2)::

    <symbol>@trade | aggTrade | blockTrade | referencePrice | bookTicker | avgPrice
    <symbol>@miniTicker | ticker | ticker_<1h|4h|1d>
    <symbol>@kline_<interval>[@+08:00]     interval: 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h
                                                     1d 3d 1w 1M
    <symbol>@depth[@100ms]
    <symbol>@depth<5|10|20>[@100ms]
    !miniTicker@arr | !ticker@arr | !ticker_<1h|4h|1d>@arr

Decisions, for names Binance's documentation does not settle:

- **Symbol case.** Binance documents lowercase symbols. tickhub lowercases the symbol
  (``BTCUSDT@trade`` is ``btcusdt@trade``) instead of refusing it, because a client that
  sends uppercase clearly means that market and Binance's own handling of it is not
  documented. The stream *type* stays case-sensitive (``aggTrade``, not ``aggtrade``).
- **Symbol characters.** Letters and digits of any script (Binance lists non-ASCII
  symbols since 2025-12), 1 to 32 characters. Percent-decoding the URL is the caller's job.
- **Client quirks** (reference §1.1): cryptofeed's ``…@depth@1000ms`` (also
  ``@depth<N>@1000ms``) and python-binance's ``!miniTicker@arr@1000ms`` are accepted and
  canonicalised by dropping ``@1000ms``, the default speed. The canonical name is what the
  hub uses everywhere after that: in the combined wrapper's ``"stream"``, in
  ``LIST_SUBSCRIPTIONS`` and upstream. So a client that subscribed with a quirky alias sees
  the canonical name in wrappers.
- ``<symbol>@ticker`` and ``!ticker@arr`` are accepted although Binance deprecated them
  (2025-11); whether upstream still serves them is the upstream's answer.
- ``!serverShutdown`` names an event, not a subscribable stream, and ``!bookTicker`` was
  removed in 2022: both are invalid.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InvalidStream

__all__ = [
    "StreamRef", "parse_stream", "in_time_unit", "validate_binance", "VALIDATORS",
    "DEFAULT_EXCHANGE", "BINANCE_MICROSECONDS", "MAX_NAME_LENGTH",
]

DEFAULT_EXCHANGE = "binance"
#: Binance with ``timeUnit=MICROSECOND``: the same streams, timestamps in µs. Payloads are
#: forwarded untouched, so these are upstream subscriptions (and topics) of their own.
#: Internal: a client never writes this prefix; it asks with ``?timeUnit=MICROSECOND``.
BINANCE_MICROSECONDS = "binance-us-time"
#: Longest stream name accepted before any parsing, so a hostile name costs nothing.
MAX_NAME_LENGTH = 200


@dataclass(frozen=True, slots=True)
class StreamRef:
    """A validated stream: its exchange and its canonical name on that exchange."""

    exchange: str
    name: str

    @property
    def key(self) -> str:
        """The hub-wide name: ``name`` for Binance, ``"<exchange>:<name>"`` otherwise."""
        return self.name if self.exchange == DEFAULT_EXCHANGE else f"{self.exchange}:{self.name}"

    @property
    def public(self) -> str:
        """The name as the client spells it (LIST_SUBSCRIPTIONS, the ``streams`` claim):
        the key, except that the time-unit variant of Binance carries no prefix."""
        return self.name if self.exchange == BINANCE_MICROSECONDS else self.key

    def __str__(self) -> str:
        return self.key


def in_time_unit(ref: StreamRef, time_unit: str) -> StreamRef:
    """``ref`` as served to a connection that asked for ``time_unit`` (``MILLISECOND``,
    Binance's default, or ``MICROSECOND``)."""
    if time_unit == "MICROSECOND" and ref.exchange == DEFAULT_EXCHANGE:
        return StreamRef(BINANCE_MICROSECONDS, ref.name)
    return ref


# --- Binance Spot -------------------------------------------------------------------------

_KLINE_INTERVALS = "1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M"
_WINDOWS = "1h|4h|1d"
#: The part after ``<symbol>@``, canonical forms only.
_BINANCE_SYMBOL_STREAM = re.compile(
    r"trade|aggTrade|blockTrade|referencePrice|bookTicker|avgPrice|miniTicker|ticker"
    rf"|ticker_(?:{_WINDOWS})"
    rf"|kline_(?:{_KLINE_INTERVALS})(?:@\+08:00)?"
    r"|depth(?:5|10|20)?(?:@100ms)?"
)
_BINANCE_ALL_MARKET = re.compile(rf"!(?:miniTicker|ticker|ticker_(?:{_WINDOWS}))@arr")
#: Client aliases of the default 1000 ms speed; dropped to get the canonical name.
_BINANCE_DEFAULT_SPEED = re.compile(r"(?:@depth(?:5|10|20)?|@arr)@1000ms$")
_MAX_SYMBOL_LENGTH = 32


def validate_binance(name: str) -> str:
    """Return the canonical Binance Spot name for ``name`` or raise :class:`InvalidStream`."""
    if _BINANCE_DEFAULT_SPEED.search(name):
        name = name[: -len("@1000ms")]
    if name.startswith("!"):
        if not _BINANCE_ALL_MARKET.fullmatch(name):
            raise InvalidStream(name, "unknown all-market stream")
        return name
    symbol, sep, stream_type = name.partition("@")
    if not sep:
        raise InvalidStream(name, "expected <symbol>@<type>")
    if not symbol or len(symbol) > _MAX_SYMBOL_LENGTH or not symbol.isalnum():
        raise InvalidStream(name, f"symbol must be 1-{_MAX_SYMBOL_LENGTH} letters or digits")
    if not _BINANCE_SYMBOL_STREAM.fullmatch(stream_type):
        raise InvalidStream(name, f"unknown stream type {stream_type!r}")
    return f"{symbol.lower()}@{stream_type}"


#: Exchange prefix → validator returning the canonical name on that exchange. An exchange
#: adapter registers its validator here.
VALIDATORS: dict[str, Callable[[str], str]] = {DEFAULT_EXCHANGE: validate_binance}

#: ``<exchange>:`` at the start; the exchange part never contains ``@`` so Binance names
#: with a ``@+08:00`` suffix are not mistaken for prefixed names.
_PREFIX = re.compile(r"([a-z][a-z0-9_-]*):")


def parse_stream(raw: str) -> StreamRef:
    """Validate a client's stream name; return its canonical :class:`StreamRef`.

    Raises :class:`InvalidStream` (Binance's code 2 ``Invalid request: invalid stream``)
    with a ``detail`` for logs. The exception's ``id_raw`` is ``b"null"``: a caller
    answering a request echoes the request's own id.
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidStream(str(raw), "stream name must be a non-empty string")
    if len(raw) > MAX_NAME_LENGTH:
        raise InvalidStream(raw[:MAX_NAME_LENGTH], f"longer than {MAX_NAME_LENGTH} characters")
    prefix = _PREFIX.match(raw)
    exchange, name = (prefix.group(1), raw[prefix.end():]) if prefix else (DEFAULT_EXCHANGE, raw)
    validator = VALIDATORS.get(exchange)
    if validator is None:
        raise InvalidStream(raw, f"unsupported exchange {exchange!r}")
    try:
        return StreamRef(exchange, validator(name))
    except InvalidStream as exc:
        raise InvalidStream(raw, exc.detail) from None
