"""The hub end to end: simulator -> hub -> real clients, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson
import pytest
import websockets

from conftest import wait_for


async def _recv_json(ws, n: int, timeout: float = 5.0) -> list:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(orjson.loads(await ws.recv()))
    return out


async def test_raw_stream_delivers_exchange_payloads(make_hub, sim):
    hub = await make_hub()
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade") as ws:
        msgs = await _recv_json(ws, 5)
    assert all(m["e"] == "trade" and m["s"] == "BTCUSDT" for m in msgs)
    ids = [m["t"] for m in msgs]
    assert ids == list(range(ids[0], ids[0] + 5))  # in order, no gap


async def test_payload_bytes_are_forwarded_untouched(make_hub, sim):
    hub = await make_hub()
    async with websockets.connect(f"{sim.url}/ws/ethusdt@aggTrade") as direct, \
            websockets.connect(f"{hub.url}/ws/ethusdt@aggTrade") as via_hub:
        hub_msgs = [await asyncio.wait_for(via_hub.recv(decode=False), 5) for _ in range(5)]
        direct_msgs = set()
        async with asyncio.timeout(5):
            while not set(hub_msgs) <= direct_msgs:
                direct_msgs.add(await direct.recv(decode=False))


async def test_combined_stream_and_live_methods(make_hub):
    hub = await make_hub()
    async with websockets.connect(f"{hub.url}/stream?streams=btcusdt@trade/ethusdt@bookTicker") as ws:
        seen = set()
        async with asyncio.timeout(5):
            while len(seen) < 2:
                m = orjson.loads(await ws.recv())
                if "stream" in m:
                    seen.add(m["stream"])
        assert seen == {"btcusdt@trade", "ethusdt@bookTicker"}
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":3}')
        await ws.send('{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":"u1"}')
        await ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":4}')
        replies = {}
        async with asyncio.timeout(5):
            while len(replies) < 3:
                m = orjson.loads(await ws.recv())
                if "id" in m:
                    replies[m["id"]] = m
        assert replies[3] == {"result": ["btcusdt@trade", "ethusdt@bookTicker"], "id": 3}
        assert replies["u1"] == {"result": None, "id": "u1"}
        assert replies[4] == {"result": True, "id": 4}


async def test_subscribe_on_bare_ws_then_switch_to_combined(make_hub):
    hub = await make_hub(max_incoming_per_second=50)
    async with websockets.connect(f"{hub.url}/ws") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["bnbusdt@trade"],"id":1}')
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first == {"result": None, "id": 1}
        m = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert m["e"] == "trade" and m["s"] == "BNBUSDT"
        await ws.send('{"method":"SET_PROPERTY","params":["combined",true],"id":2}')
        async with asyncio.timeout(5):
            while orjson.loads(await ws.recv()) != {"result": None, "id": 2}:
                pass
        m = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert m["stream"] == "bnbusdt@trade" and m["data"]["e"] == "trade"


async def test_hundred_clients_share_one_upstream_subscription(make_hub, sim):
    hub = await make_hub()
    clients = [await websockets.connect(f"{hub.url}/ws/btcusdt@trade") for _ in range(100)]
    try:
        await asyncio.gather(*(_recv_json(ws, 2) for ws in clients))
        assert sim.subscriptions().get("btcusdt@trade") == 1
        assert sim.connection_count == 1
    finally:
        for ws in clients:
            await ws.close()
    # the last client left: after the linger the hub unsubscribes upstream
    await wait_for(lambda: sim.subscriptions().get("btcusdt@trade", 0) == 0, 5)


async def test_health_ready_metrics_admin(make_hub):
    hub = await make_hub()
    base = f"http://127.0.0.1:{hub.port}"
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade") as ws:
        await _recv_json(ws, 1)

        def get(path):
            with urllib.request.urlopen(base + path, timeout=5) as r:
                return r.status, r.read()

        status, body = await asyncio.to_thread(get, "/healthz")
        assert status == 200 and orjson.loads(body)["implementation"] == "compiled"
        status, _ = await asyncio.to_thread(get, "/readyz")
        assert status == 200
        status, body = await asyncio.to_thread(get, "/metrics")
        assert b"tickhub_messages_out_total" in body and b"tickhub_connections 1.0" in body
        status, body = await asyncio.to_thread(get, "/admin/state")
        state = orjson.loads(body)
        assert state["streams"][0]["stream"] == "btcusdt@trade"
        assert state["clients"][0]["streams"] == ["btcusdt@trade"]
        with pytest.raises(urllib.error.HTTPError) as err:
            await asyncio.to_thread(get, "/nope")
        assert err.value.code == 404


async def test_upstream_gap_is_reported_in_band(make_hub, sim):
    hub = await make_hub()
    async with websockets.connect(f"{hub.url}/stream?streams=btcusdt@trade") as ws:
        await _recv_json(ws, 1)
        sim.drop_connections()  # the hub reconnects upstream: events may have been missed
        async with asyncio.timeout(10):
            while True:
                m = orjson.loads(await ws.recv())
                if m["data"].get("e") == "streamGap":
                    break
        assert m["stream"] == "btcusdt@trade" and m["data"]["stream"] == "btcusdt@trade"
        after = await _recv_json(ws, 2)  # and data resumes on the same connection
        assert all(x["data"]["e"] == "trade" for x in after)


async def test_gap_policy_close_ends_affected_clients_with_4011(make_hub, sim):
    hub = await make_hub(gap_policy="close")
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade") as ws:
        await _recv_json(ws, 1)
        sim.drop_connections()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        assert closed.value.rcvd.code == 4011


async def test_drain_answers_503_and_closes_clients_with_1001(make_hub):
    hub = await make_hub(drain_seconds=1.0)
    clients = [await websockets.connect(f"{hub.url}/ws/btcusdt@trade") for _ in range(2)]
    await asyncio.gather(*(_recv_json(ws, 1) for ws in clients))
    stopping = asyncio.create_task(hub.stop())
    await asyncio.sleep(0.1)  # first wave closed, second due after half the window

    def status(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{hub.port}{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(status, "/readyz") == 503
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{hub.url}/ws/btcusdt@trade")
    assert refused.value.response.status_code == 503
    codes = []
    for ws in clients:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        codes.append(closed.value.rcvd.code)
    assert codes == [1001, 1001]
    await asyncio.wait_for(stopping, 10)


async def test_time_unit_microsecond_gets_its_own_upstream(make_hub, sim):
    hub = await make_hub(max_incoming_per_second=50)
    # python-binance's form of the URL (a second "?") and a bare /ws with SUBSCRIBE later
    async with websockets.connect(f"{hub.url}/stream?streams=btcusdt@trade?timeUnit=MICROSECOND") as us, \
            websockets.connect(f"{hub.url}/ws/btcusdt@trade") as ms, \
            websockets.connect(f"{hub.url}/ws?timeUnit=microsecond") as later:
        await later.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}')
        await later.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
        us_msg = (await _recv_json(us, 1))[0]
        ms_msg = (await _recv_json(ms, 1))[0]
        later_msgs = await _recv_json(later, 4)
    assert us_msg["stream"] == "btcusdt@trade"
    assert us_msg["data"]["E"] > 10**15 and ms_msg["E"] < 10**13  # µs vs ms since the epoch
    assert {"result": ["btcusdt@trade"], "id": 2} in later_msgs  # listed as the client named it
    assert any(m.get("e") == "trade" and m["E"] > 10**15 for m in later_msgs), later_msgs
    # one upstream subscription per (stream, time unit): two connections to the exchange
    assert sim.subscriptions().get("btcusdt@trade") == 2 and sim.connection_count == 2


async def test_unknown_time_unit_is_refused_with_400(make_hub):
    hub = await make_hub()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{hub.url}/ws/btcusdt@trade?timeUnit=SECOND")
    assert refused.value.response.status_code == 400
