"""Prometheus metrics: every family is exposed, sources are read at scrape time."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tickhub.errors import CloseCode
from tickhub.metrics import HubMetrics

FAMILIES = {
    "tickhub_info": "gauge",   # an Info is a gauge of 1 in the classic text format
    "tickhub_connections": "gauge",
    "tickhub_connections_accepted": "counter",
    "tickhub_rejected_upgrades": "counter",
    "tickhub_client_errors": "counter",
    "tickhub_disconnects": "counter",
    "tickhub_subscriptions": "gauge",
    "tickhub_slow_consumer_disconnects": "counter",
    "tickhub_upstream_connections": "gauge",
    "tickhub_upstream_reconnects": "counter",
    "tickhub_upstream_rotations": "counter",
    "tickhub_fanout_latency_seconds": "histogram",
}


def scrape(metrics: HubMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Parse the exposition with prometheus_client's own parser: sample name → labels → value."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return samples


def families(metrics: HubMetrics) -> dict[str, str]:
    body, _ = metrics.render()
    return {f.name: f.type for f in text_string_to_metric_families(body.decode())}


def test_every_family_is_exposed_with_its_type() -> None:
    metrics = HubMetrics("compiled")
    metrics.upstream_connections.labels(exchange="binance").set(2)
    metrics.upstream_reconnects_total.labels(exchange="binance").inc()
    metrics.upstream_rotations_total.labels(exchange="binance").inc()
    metrics.rejected_upgrades_total.labels(reason="missing token").inc()
    exposed = families(metrics)
    for name, kind in FAMILIES.items():
        assert exposed.get(name) == kind, name
    assert "process_resident_memory_bytes" in exposed


def test_values_reach_the_scrape() -> None:
    metrics = HubMetrics("python")
    metrics.connections.inc(3)
    metrics.connections_total.inc(5)
    metrics.disconnects_total.labels(code=CloseCode.SLOW_CONSUMER.name).inc()
    metrics.slow_consumer_disconnects_total.inc()
    metrics.fanout_latency_seconds.observe(42e-6)
    samples = scrape(metrics)
    assert samples["tickhub_info"] == {(("impl", "python"), ("version", "0.1.0")): 1.0}
    assert samples["tickhub_connections"][()] == 3
    assert samples["tickhub_connections_accepted_total"][()] == 5
    assert samples["tickhub_disconnects_total"][(("code", "SLOW_CONSUMER"),)] == 1
    assert samples["tickhub_slow_consumer_disconnects_total"][()] == 1
    buckets = samples["tickhub_fanout_latency_seconds_bucket"]
    assert buckets[(("le", "1e-05"),)] == 0 and buckets[(("le", "5e-05"),)] == 1
    assert buckets[(("le", "1.0"),)] == 1


def test_close_codes_and_error_codes_start_at_zero() -> None:
    samples = scrape(HubMetrics("python"))
    disconnects = samples["tickhub_disconnects_total"]
    assert {dict(k)["code"] for k in disconnects} == {c.name for c in CloseCode} | {"ABNORMAL_CLOSURE"}
    assert set(disconnects.values()) == {0.0}
    assert {dict(k)["code"] for k in samples["tickhub_client_errors_total"]} == {"0", "1", "2", "3"}


def test_sources_are_read_at_scrape_time() -> None:
    metrics = HubMetrics("compiled")
    sent = [10]
    metrics.add_counter_source("frames_sent", "Frames written to clients", lambda: sent[0])
    metrics.add_gauge_source("tickhub_pending_bytes", "Bytes pending", lambda: sent[0] * 2.5)
    assert scrape(metrics)["tickhub_frames_sent_total"][()] == 10
    sent[0] = 25
    samples = scrape(metrics)
    assert samples["tickhub_frames_sent_total"][()] == 25
    assert samples["tickhub_pending_bytes"][()] == 62.5
    assert families(metrics)["tickhub_frames_sent"] == "counter"
    assert families(metrics)["tickhub_pending_bytes"] == "gauge"


def test_a_failing_source_is_left_out_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    metrics = HubMetrics("compiled")
    metrics.add_gauge_source("broken", "Always fails", lambda: 1 / 0)
    metrics.connections.set(1)
    samples = scrape(metrics)
    assert "tickhub_broken" not in samples and samples["tickhub_connections"][()] == 1
    scrape(metrics)
    assert sum("tickhub_broken" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_duplicate_source_name_is_refused() -> None:
    metrics = HubMetrics("compiled")
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.add_counter_source("connections", "clashes with the gauge", lambda: 1)


def test_registries_are_independent() -> None:
    first, second = HubMetrics("compiled"), HubMetrics("compiled")
    first.connections.set(7)
    assert scrape(second)["tickhub_connections"][()] == 0


def test_openmetrics_on_request() -> None:
    body, content_type = HubMetrics("compiled").render("application/openmetrics-text; "
                                                       "version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_bad_implementation_name() -> None:
    with pytest.raises(ValueError, match="implementation"):
        HubMetrics("cython")
