"""JWT checks at the upgrade: transports, every refusal rule, algorithm pinning, stream globs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from tickhub.auth import ANONYMOUS, Authenticator, Principal, mint_token
from tickhub.config import Config
from tickhub.errors import AuthError, ConfigError

SECRET = "k" * 32
OTHER_SECRET = "o" * 32


def auth(**overrides: Any) -> Authenticator:
    return Authenticator(Config(**{"jwt_secret": SECRET, **overrides}))


def token(claims: dict[str, Any] | None = None, key: str = SECRET, alg: str = "HS256") -> str:
    base = {"sub": "alice", "exp": int(time.time()) + 600}
    return jwt.encode({**base, **(claims or {})}, key, algorithm=alg)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def refusal(authenticator: Authenticator, path: bytes = b"/ws",
            headers: dict[str, str] | None = None) -> tuple[int, str]:
    with pytest.raises(AuthError) as info:
        authenticator.authenticate(path, headers or {})
    return info.value.status, info.value.reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- transports --------------------------------------------------------------------------

def test_bearer_header() -> None:
    principal = auth().authenticate(b"/ws/btcusdt@trade", bearer(token()))
    assert principal.subject == "alice"


def test_query_parameter_for_browsers() -> None:
    tok = token()
    path = f"/stream?streams=btcusdt@trade/ethbtc@depth&token={tok}".encode()
    assert auth().authenticate(path, {}).subject == "alice"


def test_query_token_after_python_binance_second_question_mark() -> None:
    path = f"/stream?streams=btcusdt@trade?timeUnit=MICROSECOND&token={token()}".encode()
    assert auth().authenticate(path, {}).subject == "alice"
    path = f"/stream?streams=btcusdt@trade?token={token()}".encode()
    assert auth().authenticate(path, {}).subject == "alice"


def test_header_name_is_case_insensitive_and_beats_the_query() -> None:
    bad_in_query = b"/ws?token=garbage"
    principal = auth().authenticate(bad_in_query, {"authorization": f"bearer {token()}"})
    assert principal.subject == "alice"


def test_non_bearer_authorization_falls_back_to_query() -> None:
    path = f"/ws?token={token()}".encode()
    assert auth().authenticate(path, {"Authorization": "Basic dXNlcjpwdw=="}).subject == "alice"
    assert refusal(auth(), b"/ws", {"Authorization": "Basic dXNlcjpwdw=="}) == (401,
                                                                              "missing token")


@pytest.mark.parametrize(("path", "headers"), [
    (b"/ws", {}),
    (b"/ws?token=", {}),
    (b"/stream?streams=btcusdt@trade", {}),
    (b"/ws", {"Authorization": "Bearer "}),
])
def test_missing_token(path: bytes, headers: dict[str, str]) -> None:
    assert refusal(auth(), path, headers) == (401, "missing token")


# --- auth off ----------------------------------------------------------------------------

def test_auth_off_gives_anonymous_and_ignores_presented_tokens() -> None:
    authenticator = Authenticator(Config())
    assert not authenticator.required
    assert authenticator.authenticate(b"/ws", {}) is ANONYMOUS
    assert authenticator.authenticate(b"/ws?token=not-a-jwt", bearer("garbage")) is ANONYMOUS
    assert ANONYMOUS.may_subscribe("anything@trade") and ANONYMOUS.expires_at is None


# --- time claims -------------------------------------------------------------------------

def test_expired() -> None:
    tok = token({"exp": int(time.time()) - 30})
    assert refusal(auth(), headers=bearer(tok)) == (401, "token expired")
    assert auth(jwt_leeway=60).authenticate(b"/ws", bearer(tok)).subject == "alice"


def test_not_yet_valid() -> None:
    tok = token({"nbf": int(time.time()) + 300})
    assert refusal(auth(), headers=bearer(tok)) == (401, "token not yet valid")
    assert auth(jwt_leeway=600).authenticate(b"/ws", bearer(tok)).subject == "alice"


def test_expires_at_is_the_exp_claim() -> None:
    exp = int(time.time()) + 1234
    assert auth().authenticate(b"/ws", bearer(token({"exp": exp}))).expires_at == float(exp)


def test_exp_optional_unless_required() -> None:
    no_exp = jwt.encode({"sub": "bob"}, SECRET, algorithm="HS256")
    principal = auth().authenticate(b"/ws", bearer(no_exp))
    assert principal.expires_at is None and principal.subject == "bob"
    assert refusal(auth(jwt_require_exp=True), headers=bearer(no_exp)) == (401, "invalid token")


# --- signature and algorithm -------------------------------------------------------------

@pytest.mark.parametrize("tok", [
    token(key=OTHER_SECRET),                       # wrong secret
    "not.a.jwt",                                   # malformed
    "abc",                                         # not even three parts
    token(alg="HS384", key="k" * 48),              # another HMAC algorithm than the pinned one
    token()[:-4] + "AAAA",                         # tampered signature
])
def test_invalid_tokens(tok: str) -> None:
    assert refusal(auth(), headers=bearer(tok)) == (401, "invalid token")


def test_alg_none_is_refused() -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "mallory", "exp": int(time.time()) + 600}).encode())
    for tok in (f"{header}.{payload}.", f"{header}.{payload}"):
        assert refusal(auth(), headers=bearer(tok)) == (401, "invalid token")


def test_reason_never_echoes_the_token() -> None:
    tok = token(key=OTHER_SECRET)
    with pytest.raises(AuthError) as info:
        auth().authenticate(b"/ws", bearer(tok))
    assert tok not in str(info.value) and tok not in repr(info.value.args)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


def test_rs256_accepts_tokens_signed_by_the_private_key(rsa_keys: tuple[str, str]) -> None:
    private_pem, public_pem = rsa_keys
    authenticator = Authenticator(Config(jwt_algorithm="RS256", jwt_public_key=public_pem))
    tok = mint_token(private_pem, algorithm="RS256", subject="svc")
    assert authenticator.authenticate(b"/ws", bearer(tok)).subject == "svc"


def test_hs_rs_key_confusion_is_refused(rsa_keys: tuple[str, str]) -> None:
    """The classic attack: sign HS256 with the server's *public* key as the HMAC secret."""
    _, public_pem = rsa_keys
    authenticator = Authenticator(Config(jwt_algorithm="RS256", jwt_public_key=public_pem))
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "mallory", "exp": int(time.time()) + 600}).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64url(signature)}"
    assert refusal(authenticator, headers=bearer(forged)) == (401, "invalid token")


def test_unusable_public_key_fails_at_start() -> None:
    pytest.importorskip("cryptography")
    bad = "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ConfigError, match="HUB_JWT_PUBLIC_KEY is not a usable RS256 key"):
        Authenticator(Config(jwt_algorithm="RS256", jwt_public_key=bad))


def test_short_secret_works_in_development_without_warnings_per_connection(
        recwarn: pytest.WarningsRecorder) -> None:
    authenticator = Authenticator(Config(jwt_secret="short"))
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        tok = token(key="short")
    recwarn.clear()
    assert authenticator.authenticate(b"/ws", bearer(tok)).subject == "alice"
    assert not [w for w in recwarn if issubclass(w.category, jwt.InsecureKeyLengthWarning)]


# --- audience and issuer ------------------------------------------------------------------

def test_audience() -> None:
    authenticator = auth(jwt_audience="tickhub")
    assert authenticator.authenticate(b"/ws", bearer(token({"aud": "tickhub"}))).subject
    assert authenticator.authenticate(b"/ws", bearer(token({"aud": ["x", "tickhub"]}))).subject
    assert refusal(authenticator, headers=bearer(token({"aud": "other"}))) == (403,
                                                                               "wrong audience")
    assert refusal(authenticator, headers=bearer(token())) == (403, "wrong audience")


def test_audience_unset_is_not_checked() -> None:
    assert auth().authenticate(b"/ws", bearer(token({"aud": "someone-else"}))).subject == "alice"


def test_issuer() -> None:
    authenticator = auth(jwt_issuer="https://auth.example.org")
    good = token({"iss": "https://auth.example.org"})
    assert authenticator.authenticate(b"/ws", bearer(good)).subject == "alice"
    assert refusal(authenticator, headers=bearer(token({"iss": "evil"}))) == (403, "wrong issuer")
    assert refusal(authenticator, headers=bearer(token())) == (403, "wrong issuer")


# --- streams claim -----------------------------------------------------------------------

def test_streams_claim_globs() -> None:
    tok = token({"streams": ["btcusdt@*", "*@bookTicker", "bybit:publicTrade.*"]})
    principal = auth().authenticate(b"/ws", bearer(tok))
    assert principal.stream_patterns == ("btcusdt@*", "*@bookTicker", "bybit:publicTrade.*")
    assert principal.may_subscribe("btcusdt@trade")
    assert principal.may_subscribe("btcusdt@kline_1m@+08:00")
    assert principal.may_subscribe("ethbtc@bookTicker")
    assert principal.may_subscribe("bybit:publicTrade.BTCUSDT")
    assert not principal.may_subscribe("ethbtc@trade")
    assert not principal.may_subscribe("BTCUSDT@trade")  # case-sensitive, canonical keys


def test_no_streams_claim_means_unrestricted_and_empty_means_nothing() -> None:
    assert auth().authenticate(b"/ws", bearer(token())).may_subscribe("ethbtc@trade")
    nothing = auth().authenticate(b"/ws", bearer(token({"streams": []})))
    assert not nothing.may_subscribe("ethbtc@trade")


@pytest.mark.parametrize("claim", ["btcusdt@*", {"a": 1}, 5, ["ok@*", 3]])
def test_invalid_streams_claim(claim: Any) -> None:
    assert refusal(auth(), headers=bearer(token({"streams": claim}))) == (401,
                                                                          "invalid streams claim")


def test_principal_is_frozen() -> None:
    principal = Principal("a", None, None)
    with pytest.raises(AttributeError):
        principal.subject = "b"  # type: ignore[misc]


# --- mint_token ---------------------------------------------------------------------------

def test_mint_token_round_trips_through_the_authenticator() -> None:
    tok = mint_token(SECRET, subject="dev-user", ttl=120, streams=["btcusdt@*"],
                     audience="tickhub", issuer="tickhub-cli")
    principal = auth(jwt_audience="tickhub", jwt_issuer="tickhub-cli").authenticate(
        b"/ws", bearer(tok))
    assert principal.subject == "dev-user"
    assert principal.stream_patterns == ("btcusdt@*",)
    assert principal.expires_at is not None
    assert 100 < principal.expires_at - time.time() <= 121


def test_mint_token_ttl_zero_has_no_exp_and_negative_is_expired() -> None:
    assert "exp" not in jwt.decode(mint_token(SECRET, ttl=0), SECRET, algorithms=["HS256"])
    assert refusal(auth(), headers=bearer(mint_token(SECRET, ttl=-60))) == (401, "token expired")
