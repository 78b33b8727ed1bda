"""``python -m tickhub`` as a user runs it: a real subprocess, its output, exit code and
signals. Every subprocess is killed by pid in a ``finally``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tickhub.auth import Authenticator
from tickhub.config import Config

SECRET = "s3cret-" + "z" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(sim_url: str = "ws://127.0.0.1:9", port: int = 0, **extra: str) -> dict[str, str]:
    """The parent's environment without tickhub settings, plus the given ones."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HUB_", "TICKHUB_", "NODE_ENV", "NEXT_PUBLIC_", "BINANCE_", "REDIS_", "KAFKA_"))}
    env.update(NEXT_PUBLIC_HUB_WS_URL=f"ws://127.0.0.1:{port or _free_port()}", BINANCE_WS_URL=sim_url)
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tickhub", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=20)


def _status(port: int, path: str) -> int | None:
    """HTTP status of GET path, or None when nothing accepts the connection."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_check_config_prints_json_with_the_secret_hidden(tmp_path):
    result = _run(["check-config"], _env(HUB_JWT_SECRET=SECRET, TICKHUB_MAX_STREAMS="12"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and SECRET not in result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["jwt_secret"] == "***set***"
    assert shown["auth_required"] is True
    assert shown["max_streams_per_connection"] == 12


def test_production_without_secret_exits_2_with_a_clear_message(tmp_path):
    result = _run(["check-config"], _env(NODE_ENV="production"), tmp_path)
    assert result.returncode == 2
    assert "NODE_ENV=production requires HUB_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
    result = _run(["serve"], _env(NODE_ENV="production"), tmp_path)
    assert result.returncode == 2 and "HUB_JWT_SECRET" in result.stderr


def test_bad_value_and_unknown_command_exit_2(tmp_path):
    result = _run(["check-config"], _env(TICKHUB_MAX_STREAMS="lots"), tmp_path)
    assert result.returncode == 2 and "TICKHUB_MAX_STREAMS" in result.stderr
    result = _run(["frobnicate"], _env(), tmp_path)
    assert result.returncode == 2 and "unknown command" in result.stderr


def test_token_prints_a_jwt_the_hub_accepts(tmp_path):
    result = _run(["token", "--subject", "carol", "--streams", "btcusdt@*"], _env(HUB_JWT_SECRET=SECRET), tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    principal = Authenticator(Config(jwt_secret=SECRET)).authenticate(
        f"/ws?token={token}".encode(), {})
    assert principal.subject == "carol"
    assert principal.may_subscribe("btcusdt@trade") and not principal.may_subscribe("ethusdt@trade")
    assert principal.expires_at is not None and principal.expires_at > time.time() + 3000


def test_token_without_a_secret_exits_2(tmp_path):
    result = _run(["token"], _env(), tmp_path)
    assert result.returncode == 2 and "HUB_JWT_SECRET" in result.stderr


def test_env_local_in_the_working_directory_is_read(tmp_path):
    (tmp_path / ".env.local").write_text(f"HUB_JWT_SECRET={SECRET}\nTICKHUB_MAX_STREAMS=7\n")
    result = _run(["check-config"], _env(), tmp_path)
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["auth_required"] is True and shown["max_streams_per_connection"] == 7
    # the environment wins over the file
    result = _run(["check-config"], _env(TICKHUB_MAX_STREAMS="9"), tmp_path)
    assert orjson.loads(result.stdout)["max_streams_per_connection"] == 9
    # and the file feeds `token` too
    result = _run(["token"], _env(), tmp_path)
    assert result.returncode == 0 and result.stdout.count(".") == 2


async def _wait_status(port: int, path: str, want: Any, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        status = await asyncio.to_thread(_status, port, path)
        if want(status) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def test_serve_drains_on_sigterm(tmp_path, sim):
    port = _free_port()
    env = _env(sim.url, port, TICKHUB_DRAIN_SECONDS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tickhub", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert await _wait_status(port, "/readyz", lambda s: s == 200, 10) == 200
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/btcusdt@trade") as ws:
            async with asyncio.timeout(5):
                assert orjson.loads(await ws.recv())["e"] == "trade"
            proc.send_signal(signal.SIGTERM)
            # readiness goes away at once: 503, or the port no longer accepts connections
            assert await _wait_status(port, "/readyz", lambda s: s != 200, 2) in (503, None)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(4):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 8:
            await asyncio.sleep(0.05)
        stderr = proc.stderr.read() if proc.stderr else ""
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr and "tickhub stopped" in stderr
        assert await asyncio.to_thread(_status, port, "/healthz") is None
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
