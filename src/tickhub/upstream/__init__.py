"""Exchange adapters: the hub's upstream connections.

Each adapter keeps one exchange subscription per stream for the whole hub, shards streams
over connections within the exchange's limits, heals its connections (backoff, stall
watchdog, make-before-break rotation) and de-duplicates what a rotation overlap delivers
twice. Binance spot is :class:`BinanceUpstream`.
"""

from .binance import BinanceUpstream, UpstreamSettings

__all__ = ["BinanceUpstream", "UpstreamSettings"]
