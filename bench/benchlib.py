"""Shared plumbing of the standalone benchmarks: build, pinned subprocesses, /proc readings.

The benchmarks are separate processes on purpose: the server under test and the load
client each get one of the two cores (``taskset -c 0`` / ``-c 1``) so neither steals the
other's CPU, and the parent only reads ``/proc`` and pipes. Every subprocess is started
here and stopped by its pid.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

#: Pause publishing while any client's transport holds more than this many unsent bytes.
FLOW_LIMIT = 256 * 1024
#: Check the flow-control rule every this many publishing turns.
FLOW_CHECK_TURNS = 10


def trade_payload(seq: int, sent_ns: int = 1723456789122) -> bytes:
    """A Binance trade event (~120 bytes) whose ``t`` is ``seq`` and ``T`` is ``sent_ns``."""
    return (
        b'{"e":"trade","E":1723456789123,"s":"BTCUSDT","t":%d,"p":"61234.56000000",'
        b'"q":"0.00125000","T":%d,"m":true,"M":true}' % (seq, sent_ns)
    )


def ensure_benchclient() -> None:
    """Compile bench/benchclient.pyx in place when its .so is missing or older than the source."""
    src = BENCH / "benchclient.pyx"
    built = sorted(BENCH.glob("benchclient.cpython-*.so"))
    if built and built[-1].stat().st_mtime >= src.stat().st_mtime:
        return
    cythonize = Path(PYTHON).with_name("cythonize")
    cmd = [str(cythonize), "-3", "-q", "-i", "-X", "boundscheck=False", "-X", "wraparound=False", str(src)]
    env = dict(os.environ, CFLAGS=os.environ.get("CFLAGS", "") + " -O3")
    print("building benchclient:", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=BENCH, env=env, stdout=subprocess.DEVNULL)


def versions() -> dict[str, str]:
    """Versions of everything that decides the numbers (first line of every report)."""
    import picows
    import uvloop
    import websockets

    sys.path.insert(0, str(ROOT / "src"))
    from tickhub import _ext

    return {
        "python": platform.python_version(),
        "picows": getattr(picows, "__version__", "?"),
        "uvloop": uvloop.__version__,
        "websockets": websockets.__version__,
        "tickhub_impl": _ext.IMPLEMENTATION,
        "cpus": str(os.cpu_count()),
    }


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Proc:
    """A pinned child speaking JSON lines on stdout (and taking commands on stdin)."""

    def __init__(self, argv: Sequence[str], core: int | None, env: dict[str, str] | None = None,
                 stderr: Any = None) -> None:
        cmd = list(argv)
        if core is not None:
            cmd = ["taskset", "-c", str(core)] + cmd
        full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH), str(ROOT / "src")]))
        full_env.update(env or {})
        # taskset execs the program, so the pid below is the program's own pid.
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            env=full_env, cwd=ROOT, text=True, bufsize=1,
        )
        self.pid = self.popen.pid

    def read_event(self, timeout: float, want: str | None = None) -> dict[str, Any]:
        """Next JSON line from stdout (skipping others until ``want`` if given)."""
        import select

        deadline = time.monotonic() + timeout
        assert self.popen.stdout is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pid {self.pid}: no {want or 'event'} within {timeout:.0f} s")
            ready, _, _ = select.select([self.popen.stdout], [], [], left)
            if not ready:
                continue
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"pid {self.pid} exited (rc={self.popen.poll()}) before {want or 'an event'}")
            line = line.strip()
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if want is None or event.get("event") == want:
                return event

    def command(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by pid, then SIGKILL by pid if it does not exit."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
            except ProcessLookupError:
                pass
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def client_argv(url: str, connections: int, warmup: float, duration: float,
                latency: bool = False, idle: bool = False) -> list[str]:
    argv = [PYTHON, str(BENCH / "client.py"), "--url", url, "--connections", str(connections),
            "--warmup", str(warmup), "--duration", str(duration)]
    if latency:
        argv.append("--latency")
    if idle:
        argv.append("--idle")
    return argv


def merged_percentiles_us(histograms: Sequence[Sequence[Sequence[int]] | None],
                          qs: Sequence[float]) -> list[int | None]:
    """Percentiles (µs, bucket upper bounds, as ``Stats.percentiles_us`` reads them) of the
    client processes' latency histograms (``latency_histogram`` in their results) merged:
    the distribution over every frame of every process, not a worst-of per process."""
    counts: dict[int, int] = defaultdict(int)
    for hist in histograms:
        for us, n in hist or ():
            counts[us] += n
    total = sum(counts.values())
    if not total:
        return [None for _ in qs]
    out: list[int | None] = []
    for q in qs:
        acc = 0
        for us in sorted(counts):
            acc += counts[us]
            if acc >= q * total:
                out.append(us)
                break
    return out


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
