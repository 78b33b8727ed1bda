"""Micro benchmarks of frame building, compiled vs pure Python, per Binance payload type.

Run: ``.venv/bin/pytest bench/bench_frames.py --benchmark-only``. Each group holds one
operation on one payload for both implementations, so the table shows the ratio.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
from payloads import SAMPLES

IMPLEMENTATIONS = {"compiled": "tickhub._ext.frames", "python": "tickhub._ext.frames_py"}


@pytest.fixture(params=list(IMPLEMENTATIONS), scope="module")
def frames(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(IMPLEMENTATIONS[request.param])


@pytest.mark.parametrize("name", list(SAMPLES))
def test_build_frame(benchmark, frames: ModuleType, name: str) -> None:  # type: ignore[no-untyped-def]
    """The raw ``/ws`` frame: built once per message, shared by every raw subscriber."""
    benchmark.group = f"build_frame {name}"
    payload = SAMPLES[name].payload
    frame = benchmark(frames.build_frame, payload, frames.OP_TEXT)
    assert frame.endswith(payload)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_build_combined_frame(benchmark, frames: ModuleType, name: str) -> None:  # type: ignore[no-untyped-def]
    """The ``/stream`` frame from a per-topic prefix: header + prefix + data + ``}``."""
    benchmark.group = f"build_combined_frame {name}"
    sample = SAMPLES[name]
    prefix = frames.combined_prefix(sample.stream)
    frame = benchmark(frames.build_combined_frame, prefix, sample.payload, frames.OP_TEXT)
    assert frame.endswith(sample.combined)


def test_frame_header(benchmark, frames: ModuleType) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "frame_header"
    assert len(benchmark(frames.frame_header, 1375, frames.OP_TEXT)) == 4
