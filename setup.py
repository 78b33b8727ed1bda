"""Build the compiled hot path (tickhub._ext.*) with Cython.

Everything else about the package is in pyproject.toml. Build flags (environment):
  TICKHUB_DEBUG=1      -O0 -g, bounds checks and Cython assertions on (slow; for debugging)
  TICKHUB_CFLAGS="..." extra C compiler flags, appended (e.g. "-march=native")
  TICKHUB_ANNOTATE=1   write Cython HTML annotation next to the generated C in build/cython
"""
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("TICKHUB_DEBUG") == "1"
MODULES = sorted(p.stem for p in Path("ext/tickhub/_ext").glob("*.pyx"))

cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
cflags += os.environ.get("TICKHUB_CFLAGS", "").split()

extensions = [
    Extension(
        f"tickhub._ext.{name}",
        # The source tree mirrors the package path so Cython finds each .pxd by its
        # dotted name (a flat ext/frames.pyx would silently ignore frames.pxd).
        [f"ext/tickhub/_ext/{name}.pyx"],
        extra_compile_args=cflags,
        define_macros=[("CYTHON_TRACE", "0")],
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        build_dir="build/cython",  # generated C stays out of src/ and out of the wheel
        annotate=os.environ.get("TICKHUB_ANNOTATE") == "1",
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "initializedcheck": DEBUG,
            "cdivision": True,
        },
    ),
)
