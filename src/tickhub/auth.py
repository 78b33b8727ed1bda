"""JWT authentication of WebSocket upgrades (PyJWT).

The token travels in ``Authorization: Bearer <token>`` or, for browsers (which cannot set
headers on a WebSocket), in a ``token`` query parameter: ``/stream?streams=a/b&token=...``.
When both are present the header wins; an ``Authorization`` header of another scheme
(``Basic ...``) is not a token and the query is looked at instead.

Rules, checked by :meth:`Authenticator.authenticate`:

=====================================================  ======  =========================
problem                                                status  reason (response body)
=====================================================  ======  =========================
no token                                               401     ``missing token``
``exp`` passed (minus ``HUB_JWT_LEEWAY``)              401     ``token expired``
``nbf`` in the future                                  401     ``token not yet valid``
bad signature, malformed, other algorithm (including   401     ``invalid token``
``alg: none`` and HS/RS key confusion), no ``exp``
while ``HUB_JWT_REQUIRE_EXP`` is on, bad ``iat``/``sub``
``streams`` claim present but not a list of strings    401     ``invalid streams claim``
``aud`` does not match ``HUB_JWT_AUDIENCE``            403     ``wrong audience``
``iss`` does not match ``HUB_JWT_ISSUER``              403     ``wrong issuer``
=====================================================  ======  =========================

The algorithm is pinned by configuration (``algorithms=[config.jwt_algorithm]``): the
token's header never chooses how it is verified. ``exp`` is optional by default, as in
Centrifugo: a token without ``exp`` authorises the connection for its whole life; a token
with ``exp`` ends the connection with close code 4001 (TOKEN_EXPIRED) when it passes,
which the session enforces from :attr:`Principal.expires_at`. ``HUB_JWT_REQUIRE_EXP=1``
refuses tokens without it. When ``HUB_JWT_AUDIENCE`` / ``HUB_JWT_ISSUER`` are unset, those
claims are not checked (a token with an ``aud`` is then accepted).

Without a configured key, authentication is off: every upgrade gets the anonymous
:class:`Principal` (no expiry, every stream), and a token a client sends anyway is
ignored, not verified: there is nothing to verify it with, and refusing clients that
were built for a production hub would make development harder for no safety gain.
"""

from __future__ import annotations

import fnmatch
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jwt

from .config import HMAC_ALGORITHMS, HMAC_MIN_KEY_BYTES, Config
from .errors import AuthError, ConfigError

__all__ = ["Authenticator", "Principal", "ANONYMOUS", "mint_token"]

log = logging.getLogger("tickhub.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection belongs to, decided once at the upgrade.

    ``subject`` is the ``sub`` claim; ``expires_at`` the ``exp`` claim in Unix seconds
    (``None``: never); ``stream_patterns`` the ``streams`` claim, a tuple of
    :func:`fnmatch.fnmatchcase` globs over hub-wide stream keys (``None``: no restriction;
    ``()``: no stream at all).
    """

    subject: str | None
    expires_at: float | None
    stream_patterns: tuple[str, ...] | None
    admin: bool = False  # the ``admin: true`` claim: may read /admin/state

    def may_subscribe(self, stream: str) -> bool:
        """Whether this principal may subscribe ``stream`` (a canonical hub-wide key).

        Matching is case-sensitive and against the canonical name (``btcusdt@trade``,
        ``bybit:publicTrade.BTCUSDT``), so a glob like ``btcusdt@*`` cannot be dodged by a
        client spelling the symbol in uppercase.
        """
        if self.stream_patterns is None:
            return True
        return any(fnmatch.fnmatchcase(stream, pattern) for pattern in self.stream_patterns)


#: The principal of every connection when authentication is off.
ANONYMOUS = Principal(subject=None, expires_at=None, stream_patterns=None)


class Authenticator:
    """Checks upgrade requests against the configured JWT key, algorithm and claims."""

    def __init__(self, config: Config) -> None:
        self.required: bool = config.auth_required
        self._algorithm = config.jwt_algorithm
        self._audience = config.jwt_audience
        self._issuer = config.jwt_issuer
        self._leeway = config.jwt_leeway
        self._required_claims = ["exp"] if config.jwt_require_exp else []
        self._key: Any = None
        self._short_secret = False
        key = config.jwt_key
        if key is None:
            return
        try:
            # Parse the key once (PEM parsing costs more than a verification) and fail at
            # start-up, not at the first client, when it is unusable.
            self._key = jwt.get_algorithm_by_name(self._algorithm).prepare_key(key)
        except (jwt.InvalidKeyError, ValueError, TypeError, NotImplementedError) as exc:
            source = ("HUB_JWT_SECRET" if self._algorithm in HMAC_ALGORITHMS
                      else "HUB_JWT_PUBLIC_KEY")
            raise ConfigError(f"{source} is not a usable {self._algorithm} key ({exc})") from None
        if self._algorithm in HMAC_ALGORITHMS:
            minimum = HMAC_MIN_KEY_BYTES[self._algorithm]
            self._short_secret = len(key.encode()) < minimum
            if self._short_secret:
                log.warning("HUB_JWT_SECRET is shorter than %d bytes, the minimum for %s "
                            "(RFC 7518 section 3.2); production mode refuses it",
                            minimum, self._algorithm)

    def authenticate(self, path: bytes, headers: Mapping[str, str]) -> Principal:
        """Return the :class:`Principal` of an upgrade request or raise :class:`AuthError`.

        ``path`` is the raw request target (``b"/ws/btcusdt@trade?token=..."``); ``headers``
        may be any mapping (picows gives a case-insensitive one; plain dicts are searched
        case-insensitively).
        """
        if not self.required:
            return ANONYMOUS
        token = _bearer_token(headers) or _query_token(path)
        if not token:
            raise AuthError(401, "missing token")
        claims = self._decode(token)
        return _principal_from(claims)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            with warnings.catch_warnings():
                if self._short_secret:  # warned once at start-up, not per connection
                    warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                claims: dict[str, Any] = jwt.decode(
                    token, self._key, algorithms=[self._algorithm], audience=self._audience,
                    issuer=self._issuer, leeway=self._leeway,
                    # PyJWT rejects a token with an aud claim when no audience is given;
                    # unset HUB_JWT_AUDIENCE means "not checked", so turn the check off.
                    options={"require": self._required_claims,
                             "verify_aud": self._audience is not None})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError(403, "wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError(403, "wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise AuthError(403, "wrong audience") from None
            if exc.claim == "iss":
                raise AuthError(403, "wrong issuer") from None
            raise AuthError(401, "invalid token") from None
        except (jwt.InvalidTokenError, jwt.InvalidKeyError):
            raise AuthError(401, "invalid token") from None
        return claims


def _bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization")
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _query_token(path: bytes) -> str | None:
    _, sep, query = path.partition(b"?")
    if not sep:
        return None
    # python-binance can send a second "?" (``streams=a/b?timeUnit=X``): treat it as "&".
    text = query.replace(b"?", b"&").decode("utf-8", "replace")
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name == "token":
            return value or None
    return None


def _principal_from(claims: dict[str, Any]) -> Principal:
    patterns = claims.get("streams")
    if patterns is not None:
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise AuthError(401, "invalid streams claim")
        patterns = tuple(patterns)
    exp = claims.get("exp")
    subject = claims.get("sub")
    return Principal(
        subject=subject if isinstance(subject, str) else None,
        expires_at=float(exp) if exp is not None else None,
        stream_patterns=patterns,
        admin=claims.get("admin") is True,
    )


def mint_token(
    secret: str,
    *,
    subject: str = "dev",
    ttl: float = 3600,
    streams: Sequence[str] | None = None,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    admin: bool = False,
) -> str:
    """A signed JWT for development (``tickhub token``).

    ``secret`` is the HMAC secret, or a PEM private key for RS*/ES*/EdDSA. The token gets
    ``sub``, ``iat`` and ``exp = now + ttl``; ``ttl=0`` leaves ``exp`` out (valid until the
    secret changes) and a negative ``ttl`` gives an already expired token, handy to see
    the refusal. ``streams`` (globs) restricts what the token may subscribe; ``admin``
    adds the claim that opens ``/admin/state``.
    """
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now}
    if ttl:
        claims["exp"] = now + int(round(ttl))
    if streams is not None:
        claims["streams"] = list(streams)
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm=algorithm)
