"""Micro benchmarks of envelope parsing and event ids, compiled vs pure Python.

Run: ``.venv/bin/pytest bench/bench_envelope.py --benchmark-only``. ``parse`` reads the
combined message as the upstream connection receives it; ``event_id`` reads the payload
slice ``parse`` found.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
from payloads import SAMPLES

IMPLEMENTATIONS = {"compiled": "tickhub._ext.envelope", "python": "tickhub._ext.envelope_py"}


@pytest.fixture(params=list(IMPLEMENTATIONS), scope="module")
def envelope(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(IMPLEMENTATIONS[request.param])


@pytest.mark.parametrize("name", list(SAMPLES))
def test_parse(benchmark, envelope: ModuleType, name: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"parse {name}"
    sample = SAMPLES[name]
    kind, key, start, end = benchmark(envelope.parse, sample.combined)
    assert (kind, key, sample.combined[start:end]) == (envelope.KIND_DATA, sample.stream, sample.payload)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_event_id(benchmark, envelope: ModuleType, name: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"event_id {name}"
    sample = SAMPLES[name]
    assert benchmark(envelope.event_id, sample.payload) == sample.event_id


def test_parse_result(benchmark, envelope: ModuleType) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "parse result"
    assert benchmark(envelope.parse, b'{"result":null,"id":1}')[0] == envelope.KIND_RESULT
