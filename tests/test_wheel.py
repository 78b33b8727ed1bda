"""The built wheel: carries the compiled modules (no generated C), installs in a fresh venv,
and runs the compiled hot path there."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import sys
import tickhub, tickhub._ext as ext
assert ext.IMPLEMENTATION == "compiled", ext.COMPILED_IMPORT_ERROR
for name in ("frames", "envelope", "fanout", "listener", "batch"):
    mod = getattr(ext, name)
    assert mod.__file__.endswith(".so") and "site-packages" in mod.__file__, mod.__file__
from tickhub._ext.frames import build_frame
assert build_frame(b"x") == b"\x81\x01x"
print("ok", sys.version_info[:2])
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_compiled(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(dist)],
        check=True, cwd=tmp_path,
    )
    (wheel,) = dist.glob("tickhub-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith(".c")], "generated C must not ship"
    for mod in ("frames", "envelope", "fanout", "listener", "batch"):
        assert any(n.startswith(f"tickhub/_ext/{mod}.") and n.endswith(".so") for n in names)
    assert "tickhub/py.typed" in names
    for mod in ("frames", "envelope", "fanout", "listener", "batch"):
        assert f"tickhub/_ext/{mod}.pyi" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, cwd=tmp_path)
    out = subprocess.run([str(py), "-c", CHECK], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.startswith("ok")
    cli = subprocess.run([str(env_dir / "bin" / "tickhub"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and "tickhub serve" in cli.stdout
