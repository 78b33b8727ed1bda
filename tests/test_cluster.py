"""A cluster of hubs on one real Redis: one upstream per stream, same events everywhere,
owner failover (kill -9 of a real process) and Redis restarts reported as gaps."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any, AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
import websockets

from conftest import wait_for
from servers import RedisServer, free_port, running_redis

TTL = 0.6  # lease ttl of the in-process hubs: takeover within ~0.8 s + upstream connect


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    with running_redis() as server:
        yield server


def cluster_config(redis_server: RedisServer, name: str) -> dict[str, Any]:
    return dict(bus="redis", redis_url=redis_server.url, instance_id=name,
                bus_lease_ttl=TTL, bus_linger=0.2, bus_backoff_max=0.3)


async def recv_events(ws: Any, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(orjson.loads(await ws.recv()))
    return out


async def owner_of(url: str, key: str) -> str | None:
    client = aioredis.Redis.from_url(url)
    try:
        value = await client.get(f"tickhub:owner:{key}")
    finally:
        await client.aclose()
    return value.decode().split()[0] if value else None


async def test_three_instances_share_one_upstream_and_the_same_events(make_hub, sim, redis_server):
    hubs = [await make_hub(**cluster_config(redis_server, f"hub-{i}")) for i in range(3)]
    clients = [await websockets.connect(f"{h.url}/ws/btcusdt@trade") for h in hubs]
    try:
        batches = await asyncio.gather(*(recv_events(ws, 25) for ws in clients))
        assert sim.subscriptions() == {"btcusdt@trade": 1}  # one upstream for the cluster
        owner = await owner_of(redis_server.url, "btcusdt@trade")
        assert owner in {"hub-0", "hub-1", "hub-2"}
        owners = [h for h in hubs if h.bus.status()["owned"] == ["btcusdt@trade"]]
        assert len(owners) == 1 and owners[0].bus.instance_id == owner
        seqs = [[m["t"] for m in b] for b in batches]
        for ids in seqs:
            assert all(m["e"] == "trade" for b in batches for m in b)
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # in order, no gap, no dup
        # Same stream of events everywhere: the overlap of any two clients is identical.
        lo, hi = max(s[0] for s in seqs), min(s[-1] for s in seqs)
        assert lo <= hi
        overlap = [[t for t in s if lo <= t <= hi] for s in seqs]
        assert overlap[0] == overlap[1] == overlap[2]
        # The non-owners received batches over Redis, not from an upstream of their own.
        assert sum(h.bus.status()["counters"]["batches_received"] > 0 for h in hubs) == 2
    finally:
        for ws in clients:
            await ws.close()


async def test_demand_follows_clients_and_the_last_one_releases_the_upstream(make_hub, sim, redis_server):
    a = await make_hub(**cluster_config(redis_server, "hub-a"))
    b = await make_hub(**cluster_config(redis_server, "hub-b"))
    async with websockets.connect(f"{a.url}/ws/ethusdt@trade") as wa:
        await recv_events(wa, 3)
        async with websockets.connect(f"{b.url}/ws/ethusdt@trade") as wb:
            await recv_events(wb, 3)
            assert sim.subscriptions() == {"ethusdt@trade": 1}
    # Nobody wants it: the owner deletes its lease and releases the upstream.
    await wait_for(lambda: not sim.subscriptions(), timeout=5.0, what="upstream released")
    assert await owner_of(redis_server.url, "ethusdt@trade") is None


async def test_redis_restart_is_reported_as_a_gap_and_service_resumes(make_hub, sim, redis_server):
    a = await make_hub(**cluster_config(redis_server, "hub-a"))
    # max_queue=None: this client is not read to the end; unbounded, its close is not stuck
    # behind unread frames.
    async with websockets.connect(f"{a.url}/ws/btcusdt@trade", max_queue=None) as wa:
        await recv_events(wa, 2)  # hub-a owns the stream
        b = await make_hub(**cluster_config(redis_server, "hub-b"))
        async with websockets.connect(f"{b.url}/ws/btcusdt@trade") as wb:
            await recv_events(wb, 3)
            redis_server.stop()
            await wait_for(lambda: not b.bus.status()["healthy"], timeout=5.0, what="outage seen")
            status, body = await asyncio.to_thread(_http_get, b.port, "/readyz")
            assert status == 200 and orjson.loads(body)["bus"] == {"kind": "redis", "healthy": False}
            await recv_events(wa, 3)  # the owner keeps serving its own clients meanwhile
            redis_server.start()  # same port, empty data set
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(10.0):
                while not (seen and seen[-1].get("e") == "trade" and
                           any(m.get("e") == "streamGap" for m in seen)):
                    seen.append(orjson.loads(await wb.recv()))
            gap = next(m for m in seen if m.get("e") == "streamGap")
            assert gap["stream"] == "btcusdt@trade" and gap["reason"]
            await wait_for(lambda: b.bus.status()["healthy"], timeout=3.0, what="bus healthy again")
            assert sim.subscriptions() == {"btcusdt@trade": 1}


def _http_get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_kill_9_of_the_owner_process_fails_over_within_the_lease_bound(make_hub, sim, redis_server,
                                                                            tmp_path):
    ttl = 1.0
    port = free_port()
    env = dict(os.environ, TICKHUB_LISTEN_URL=f"ws://127.0.0.1:{port}", REDIS_URL=redis_server.url,
               BINANCE_WS_URL=sim.url, TICKHUB_INSTANCE_ID="owner-proc",
               TICKHUB_BUS_LEASE_TTL=str(ttl), TICKHUB_LOG_LEVEL="WARNING")
    env.pop("HUB_JWT_SECRET", None)
    errors = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115 -- closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "tickhub", "serve"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=errors)
    try:
        async with asyncio.timeout(15.0):
            while True:
                try:
                    owner_ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/bnbusdt@trade")
                    break
                except OSError:
                    assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
                    await asyncio.sleep(0.1)
        await recv_events(owner_ws, 2)
        assert await owner_of(redis_server.url, "bnbusdt@trade") == "owner-proc"

        survivor = await make_hub(**cluster_config(redis_server, "survivor") | {"bus_lease_ttl": ttl})
        async with websockets.connect(f"{survivor.url}/ws/bnbusdt@trade") as ws:
            before = await recv_events(ws, 3)
            assert sim.subscriptions() == {"bnbusdt@trade": 1}
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            killed = time.monotonic()
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(ttl * 4 / 3 + 3.0):
                while not (seen and seen[-1].get("e") == "trade" and
                           any(m.get("e") == "streamGap" for m in seen)):
                    seen.append(orjson.loads(await ws.recv()))
            resumed = time.monotonic() - killed
            assert resumed < ttl * 4 / 3 + 2.0, resumed
            assert await owner_of(redis_server.url, "bnbusdt@trade") == "survivor"
            trades = [m["t"] for m in before + seen if m.get("e") == "trade"]
            assert trades == sorted(set(trades))  # no duplicate, no reordering across the takeover
            await wait_for(lambda: sim.subscriptions() == {"bnbusdt@trade": 1}, timeout=3.0,
                           what="one upstream after the takeover")
        await owner_ws.close()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        errors.close()


async def test_an_upstream_drop_at_the_owner_reaches_clients_of_other_instances(make_hub, sim, redis_server):
    owner = await make_hub(**cluster_config(redis_server, "hub-owner"))
    other = await make_hub(**cluster_config(redis_server, "hub-other"))
    async with websockets.connect(f"{owner.url}/ws/btcusdt@trade") as wo:
        await recv_events(wo, 2)  # hub-owner took the lease and the upstream
        async with websockets.connect(f"{other.url}/ws/btcusdt@trade") as wb:
            before = await recv_events(wb, 3)
            assert other.bus.status()["owned"] == []
            assert sim.drop_connections() == 1  # the owner's exchange connection only
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(10.0):
                while not (seen and seen[-1].get("e") == "trade" and
                           any(m.get("e") == "streamGap" for m in seen)):
                    seen.append(orjson.loads(await wb.recv()))
            gaps = [m for m in seen if m.get("e") == "streamGap"]
            # The owner's upstream reason, not a bus fault: the receiver was told, not guessing.
            assert [(g["stream"], g["reason"]) for g in gaps] == [("btcusdt@trade", "reconnect")]
            trades = [m["t"] for m in before + seen if m.get("e") == "trade"]
            assert trades == sorted(set(trades))
            assert other.bus.status()["counters"]["gaps"] == 1
