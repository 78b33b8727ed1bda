"""Prometheus metrics of one hub process, served on ``/metrics``.

Two kinds of numbers:

- **Python-side instruments** (attributes of :class:`HubMetrics`), updated by the control
  plane per connection, per subscription or per upstream event; never per message.
- **Sources**: counters that the compiled hot path keeps as plain C integers (messages
  fanned out, bytes written, frames conflated...). Incrementing a Prometheus counter per
  message would put Python work on the hot path, so those are read only when Prometheus
  scrapes: :meth:`HubMetrics.add_counter_source` / :meth:`HubMetrics.add_gauge_source`
  register a function that returns the current value.

Each :class:`HubMetrics` owns its own :class:`~prometheus_client.CollectorRegistry` (so
several hubs, or several tests, live in one process without clashing) with the process
and GC collectors added. Every tickhub metric name starts with ``tickhub_``.

======================================  =========  =========  =================================
metric                                  type       labels     meaning
======================================  =========  =========  =================================
tickhub_info                            info       impl,      ``impl`` is ``compiled`` or
                                                   version    ``python`` (the hot path in use)
tickhub_connections                     gauge                 client connections open now
tickhub_connections_accepted_total      counter               upgrades accepted
tickhub_rejected_upgrades_total         counter    reason     upgrades refused (401, 403,
                                                              limits...), by short reason
tickhub_client_errors_total             counter    code       error replies sent, by Binance code
tickhub_disconnects_total               counter    code       connections closed, by close code
                                                              name (``SLOW_CONSUMER``...);
                                                              ``ABNORMAL_CLOSURE``: the peer
                                                              left without a close frame
tickhub_subscriptions                   gauge                 client subscriptions held now
tickhub_slow_consumer_disconnects_total counter               clients dropped for falling behind
tickhub_upstream_connections            gauge      exchange   upstream connections open now
tickhub_upstream_reconnects_total       counter    exchange   upstream reconnects after a failure
tickhub_upstream_rotations_total        counter    exchange   planned make-before-break rotations
tickhub_fanout_latency_seconds          histogram             upstream receive → client write
======================================  =========  =========  =================================

The gauge of open connections is ``tickhub_connections`` and the counter of accepted
ones ``tickhub_connections_accepted_total``: Prometheus would refuse a counter named
``tickhub_connections_total`` next to a gauge ``tickhub_connections`` (a counter owns its
name without the ``_total``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from . import __version__
from .errors import CloseCode

__all__ = ["HubMetrics", "PREFIX", "FANOUT_LATENCY_BUCKETS"]

log = logging.getLogger("tickhub.metrics")

PREFIX = "tickhub_"
#: 10 µs to 1 s: a fan-out on loopback takes tens of µs; a second means a stuck loop.
FANOUT_LATENCY_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
#: Binance's error codes (protocol errors), created at zero so rate() works from the start.
_CLIENT_ERROR_CODES = ("0", "1", "2", "3")
#: disconnects_total's label when the connection ended without a close frame from the hub
#: (the peer vanished): 1006's name; that code is only reported, never sent (RFC 6455 §7.4.1)
ABNORMAL_CLOSURE = "ABNORMAL_CLOSURE"


class _SourceCollector(Collector):
    """One metric whose value is read from a function at scrape time.

    A failing source is left out of that scrape (and logged once) rather than failing the
    whole ``/metrics`` response.
    """

    def __init__(self, kind: str, name: str, doc: str, read: Callable[[], float]) -> None:
        self._kind = kind
        self._name = name
        self._doc = doc
        self._read = read
        self._failed = False

    def _family(self, value: float | None) -> Metric:
        if self._kind == "counter":
            return CounterMetricFamily(self._name, self._doc, value=value)
        return GaugeMetricFamily(self._name, self._doc, value=value)

    def describe(self) -> Iterable[Metric]:
        # Lets the registry refuse a duplicate name when the source is added.
        return [self._family(None)]

    def collect(self) -> Iterable[Metric]:
        try:
            value = float(self._read())
        except Exception as exc:  # noqa: BLE001 -- a broken source must not break /metrics
            if not self._failed:
                self._failed = True
                log.warning("metric source %s failed and is left out: %r", self._name, exc)
            return []
        self._failed = False
        return [self._family(value)]


class HubMetrics:
    """All metrics of one hub process, in a registry of their own."""

    def __init__(self, implementation: str | None = None) -> None:
        """``implementation`` is ``"compiled"`` or ``"python"``; ``None`` asks the selector
        (:data:`tickhub._ext.IMPLEMENTATION`)."""
        if implementation is None:
            from ._ext import IMPLEMENTATION as implementation
        if implementation not in ("compiled", "python"):
            raise ValueError(f"implementation must be 'compiled' or 'python', "
                             f"not {implementation!r}")
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        GCCollector(registry=reg)

        self.implementation = Info("tickhub", "Which hot path runs, and the tickhub version",
                                   registry=reg)
        self.implementation.info({"impl": implementation, "version": __version__})

        self.connections = Gauge("tickhub_connections", "Client connections open now",
                                 registry=reg)
        self.connections_total = Counter("tickhub_connections_accepted_total",
                                         "Client upgrades accepted", registry=reg)
        self.rejected_upgrades_total = Counter(
            "tickhub_rejected_upgrades_total", "Client upgrades refused, by short reason",
            ["reason"], registry=reg)
        self.client_errors_total = Counter(
            "tickhub_client_errors_total", "Error replies sent to clients, by Binance code",
            ["code"], registry=reg)
        self.disconnects_total = Counter(
            "tickhub_disconnects_total", "Client connections closed, by close code name",
            ["code"], registry=reg)
        self.subscriptions = Gauge("tickhub_subscriptions", "Client subscriptions held now",
                                   registry=reg)
        self.slow_consumer_disconnects_total = Counter(
            "tickhub_slow_consumer_disconnects_total",
            "Clients disconnected because their queue went over the limit", registry=reg)
        self.upstream_connections = Gauge(
            "tickhub_upstream_connections", "Upstream exchange connections open now",
            ["exchange"], registry=reg)
        self.upstream_reconnects_total = Counter(
            "tickhub_upstream_reconnects_total", "Upstream reconnects after a failure",
            ["exchange"], registry=reg)
        self.upstream_rotations_total = Counter(
            "tickhub_upstream_rotations_total",
            "Planned make-before-break upstream rotations (age limit, serverShutdown)",
            ["exchange"], registry=reg)
        self.fanout_latency_seconds = Histogram(
            "tickhub_fanout_latency_seconds",
            "Seconds from receiving an upstream message to writing it to clients",
            buckets=FANOUT_LATENCY_BUCKETS, registry=reg)

        for code in CloseCode:
            self.disconnects_total.labels(code=code.name)
        self.disconnects_total.labels(code=ABNORMAL_CLOSURE)
        for error_code in _CLIENT_ERROR_CODES:
            self.client_errors_total.labels(code=error_code)

    def add_counter_source(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        """Export ``fn()`` as a counter, read at every scrape.

        ``name`` gets the ``tickhub_`` prefix if it lacks it; a ``_total`` suffix is added
        in the exposition as Prometheus requires. ``fn`` must be cheap, must not block and
        must only grow (a counter that goes down looks like a restart). A duplicate name
        raises :class:`ValueError`.
        """
        self.registry.register(_SourceCollector("counter", _prefixed(name), doc, fn))

    def add_gauge_source(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        """Export ``fn()`` as a gauge, read at every scrape (same rules as counters)."""
        self.registry.register(_SourceCollector("gauge", _prefixed(name), doc, fn))

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type.

        ``accept`` is the scraper's ``Accept`` header: OpenMetrics when it asks for it,
        otherwise the classic text format (``text/plain; version=0.0.4``) every Prometheus
        understands.
        """
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def _prefixed(name: str) -> str:
    return name if name.startswith(PREFIX) else PREFIX + name
