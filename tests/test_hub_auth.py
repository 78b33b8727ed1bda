"""JWT authentication of a real hub, seen by real clients: HTTP status at the upgrade,
error replies for forbidden streams, and close 4001 when a token expires mid-connection."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tickhub.auth import mint_token

SECRET = "x" * 32

# The "other algorithm" case signs HS512 with the hub's 32-byte HS256 secret on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def _token(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


async def _refused(url: str, **kwargs: Any) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(3):
            await websockets.connect(url, **kwargs)
    response = refused.value.response
    return int(response.status_code), bytes(response.body or b"")


async def _trade(ws: Any, timeout: float = 3.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            m = orjson.loads(await ws.recv())
            if m.get("e") == "trade":
                return m


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


async def test_missing_token_is_401(make_hub):
    hub = await make_hub(jwt_secret=SECRET)
    status, body = await _refused(f"{hub.url}/ws/btcusdt@trade")
    assert (status, body.strip()) == (401, b"missing token")


@pytest.mark.parametrize(
    "make_token, reason",
    [
        (lambda now: _token({"sub": "a", "exp": now + 60}, secret="y" * 32), b"invalid token"),
        (lambda now: _token({"sub": "a", "exp": now - 10}), b"token expired"),
        (lambda now: _token({"sub": "a", "nbf": now + 60}), b"token not yet valid"),
        (lambda now: _token({"sub": "a"}, secret="", algorithm="none"), b"invalid token"),
        (lambda now: _token({"sub": "a"}, algorithm="HS512"), b"invalid token"),
        (lambda now: "not.a.jwt", b"invalid token"),
    ],
    ids=["bad-signature", "expired", "nbf-in-future", "alg-none", "other-alg", "garbage"],
)
async def test_bad_tokens_are_401(make_hub, make_token, reason):
    hub = await make_hub(jwt_secret=SECRET)
    token = make_token(int(time.time()))
    status, body = await _refused(f"{hub.url}/ws/btcusdt@trade?token={token}")
    assert (status, body.strip()) == (401, reason)
    status, body = await _refused(
        f"{hub.url}/ws/btcusdt@trade", additional_headers={"Authorization": f"Bearer {token}"})
    assert (status, body.strip()) == (401, reason)
    assert not hub.sessions


async def test_alg_none_with_empty_signature_is_401(make_hub):
    hub = await make_hub(jwt_secret=SECRET)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    unsigned = b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(b'{"sub":"mallory"}') + "."
    status, _ = await _refused(f"{hub.url}/ws/btcusdt@trade?token={unsigned}")
    assert status == 401


async def test_wrong_audience_or_issuer_is_403(make_hub):
    hub = await make_hub(jwt_secret=SECRET, jwt_audience="tickhub", jwt_issuer="auth.example")
    wrong_aud = mint_token(SECRET, audience="other", issuer="auth.example")
    wrong_iss = mint_token(SECRET, audience="tickhub", issuer="evil.example")
    assert await _refused(f"{hub.url}/ws/btcusdt@trade?token={wrong_aud}") == (403, b"wrong audience\n")
    assert await _refused(f"{hub.url}/ws/btcusdt@trade?token={wrong_iss}") == (403, b"wrong issuer\n")
    good = mint_token(SECRET, audience="tickhub", issuer="auth.example")
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade?token={good}") as ws:
        assert (await _trade(ws))["s"] == "BTCUSDT"


async def test_token_in_header_and_in_query_both_work(make_hub):
    hub = await make_hub(jwt_secret=SECRET)
    token = mint_token(SECRET, subject="alice")
    async with websockets.connect(
        f"{hub.url}/ws/btcusdt@trade", additional_headers={"Authorization": f"Bearer {token}"}
    ) as by_header, websockets.connect(f"{hub.url}/stream?streams=btcusdt@trade&token={token}") as by_query:
        assert (await _trade(by_header))["s"] == "BTCUSDT"
        async with asyncio.timeout(3):
            m = orjson.loads(await by_query.recv())
        assert m["stream"] == "btcusdt@trade"
        assert {s.principal.subject for s in hub.sessions.values()} == {"alice"}


async def test_streams_claim_limits_subscriptions(make_hub, sim):
    hub = await make_hub(jwt_secret=SECRET, max_incoming_per_second=50)
    token = mint_token(SECRET, streams=["btcusdt@*"])
    status, body = await _refused(f"{hub.url}/ws/ethusdt@trade?token={token}")
    assert status == 403 and b"ethusdt@trade" in body
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade?token={token}") as ws:
        await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@trade"],"id":1}')
        await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":2}')
        replies: dict[int, Any] = {}
        async with asyncio.timeout(3):
            while len(replies) < 2:
                m = orjson.loads(await ws.recv())
                if "id" in m:
                    replies[m["id"]] = m
                else:
                    assert m["s"] == "BTCUSDT", "no data of a forbidden stream"
        assert replies[1]["error"]["code"] == 4
        assert "ethusdt@trade" in replies[1]["error"]["msg"]
        assert replies[2] == {"result": None, "id": 2}
        # a while of data, none of it for ethusdt
        async with asyncio.timeout(3):
            kinds = set()
            while kinds != {"trade", "aggTrade"}:
                m = orjson.loads(await ws.recv())
                assert m["s"] == "BTCUSDT"
                kinds.add(m["e"])
    assert "ethusdt@trade" not in sim.subscriptions()


async def test_token_expiring_while_connected_closes_with_4001(make_hub):
    hub = await make_hub(jwt_secret=SECRET)
    token = _token({"sub": "short", "exp": int(time.time()) + 2})
    started = time.monotonic()
    async with websockets.connect(f"{hub.url}/ws/btcusdt@trade?token={token}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    assert 0.5 < time.monotonic() - started < 4


async def test_admin_state_needs_an_admin_token_and_healthz_stays_open(make_hub):
    hub = await make_hub(jwt_secret=SECRET)
    port = hub.port
    user = mint_token(SECRET)
    admin = mint_token(SECRET, admin=True)
    assert (await asyncio.to_thread(_get, port, "/admin/state"))[0] == 401
    assert (await asyncio.to_thread(_get, port, f"/admin/state?token={user}"))[0] == 403
    assert (await asyncio.to_thread(
        _get, port, "/admin/state", {"Authorization": f"Bearer {user}"}))[0] == 403
    assert (await asyncio.to_thread(
        _get, port, "/admin/state", {"Authorization": "Bearer nope"}))[0] == 401
    status, body = await asyncio.to_thread(_get, port, "/admin/state", {"Authorization": f"Bearer {admin}"})
    assert status == 200 and orjson.loads(body)["connections"] == 0
    status, body = await asyncio.to_thread(_get, port, f"/admin/state?token={admin}")
    assert status == 200
    assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 200
    assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200
