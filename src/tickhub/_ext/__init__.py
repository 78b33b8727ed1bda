"""Selector for the hot path: the compiled Cython modules or their pure-Python twins.

Modules: ``frames`` (server frame and combined-wrapper building), ``envelope`` (upstream
message recognition without a JSON decode), ``fanout`` (topics, subscribers, the
per-loop-turn flush) and ``listener`` (the per-connection frame handler for clients) and ``batch`` (cluster-bus
batches: many upstream events per bus message). Each has a twin ``<name>_py`` written in plain Python; it is the
oracle in parity tests and the fallback when the extensions are not built.

Which one runs is never silent: :data:`IMPLEMENTATION` is ``"compiled"`` or ``"python"``,
the server logs it at start, reports it on ``/healthz`` and in metrics, and refuses to
serve on the python path unless told to (``--allow-pure-python``).

``TICKHUB_IMPL=python`` forces the twins; ``TICKHUB_IMPL=compiled`` makes a missing
extension an import error instead of a fallback.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["IMPLEMENTATION", "COMPILED_IMPORT_ERROR", "frames", "envelope", "fanout", "listener", "batch", "load"]

_MODULES = ("frames", "envelope", "fanout", "listener", "batch")


def load(impl: str) -> dict[str, ModuleType]:
    """Import one implementation's modules by name: ``"compiled"`` or ``"python"``."""
    suffix = {"compiled": "", "python": "_py"}[impl]
    return {name: importlib.import_module(f"{__name__}.{name}{suffix}") for name in _MODULES}


COMPILED_IMPORT_ERROR: str | None = None
_wanted = os.environ.get("TICKHUB_IMPL", "").strip().lower() or "auto"
if _wanted not in ("auto", "compiled", "python"):
    raise ImportError(f"TICKHUB_IMPL must be 'compiled' or 'python', not {_wanted!r}")

if _wanted == "python":
    _mods = load("python")
    IMPLEMENTATION = "python"
else:
    try:
        _mods = load("compiled")
        IMPLEMENTATION = "compiled"
    except ImportError as exc:
        if _wanted == "compiled":
            raise
        COMPILED_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
        _mods = load("python")
        IMPLEMENTATION = "python"

frames: ModuleType = _mods["frames"]
envelope: ModuleType = _mods["envelope"]
fanout: ModuleType = _mods["fanout"]
listener: ModuleType = _mods["listener"]
batch: ModuleType = _mods["batch"]
