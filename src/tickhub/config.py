"""tickhub configuration: one frozen :class:`Config`, built once and validated once.

Sources, highest precedence first:

1. command-line flags of ``tickhub serve`` (:func:`build_parser`),
2. the process environment,
3. a ``.env.local`` file in the working directory (read with python-dotenv's
   ``dotenv_values``; ``os.environ`` is never modified; a missing file is fine unless it
   was named with ``--env-file``; values are taken literally, without ``${VAR}``
   interpolation),
4. the defaults below.

An empty value (``REDIS_URL=``) counts as unset, as in docker-compose files. Numbers are
parsed strictly (decimal only, no units: durations are seconds) and must not be negative;
booleans accept ``1/0/true/false/yes/no``. Every problem raises :class:`ConfigError` with
a one-line message naming the variable, so ``tickhub serve`` can print it and exit.

Every field documents its default and what zero or unset means; the same facts are the
table in README.md, "Configuration" (a test checks that every variable appears there).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from dotenv import dotenv_values

from .errors import ConfigError

__all__ = [
    "Config",
    "load_config",
    "build_parser",
    "add_arguments",
    "JWT_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "HMAC_MIN_KEY_BYTES",
    "BUSES",
    "LOG_LEVELS",
]

#: JWT algorithms the hub accepts, canonical spelling. HS* use a shared secret
#: (HUB_JWT_SECRET); the others verify with a PEM public key (HUB_JWT_PUBLIC_KEY[_FILE]).
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
#: RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
HMAC_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
BUSES = ("memory", "redis", "kafka")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_MIB = 1024 * 1024
_INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def _setting(
    default: Any,
    *,
    env: str | tuple[str, ...],
    flag: str | None,
    kind: str,
    minimum: float | None = None,
    positive: bool = False,
    secret: bool = False,
    doc: str,
) -> Any:
    """Declare a Config field with where it comes from and how it is checked.

    ``kind`` is how a string from a flag or the environment becomes a value: ``str``,
    ``optstr`` (unset allowed), ``int``, ``float``, ``bool`` or ``node_env``. ``minimum``
    and ``positive`` bound numbers. ``doc`` is the ``--help`` text and says what
    zero / unset means.
    """
    envs = (env,) if isinstance(env, str) else env
    meta = {"env": envs, "flag": flag, "kind": kind, "minimum": minimum, "positive": positive,
            "secret": secret, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Config:
    """The hub's whole configuration. Build it with :func:`load_config`.

    Constructing it directly (tests, embedding) runs the same validation; so does
    :func:`dataclasses.replace`.
    """

    # --- listening ---------------------------------------------------------------------
    listen_url: str = _setting(
        "ws://127.0.0.1:8080", env=("TICKHUB_LISTEN_URL", "NEXT_PUBLIC_HUB_WS_URL"),
        flag="--listen", kind="str",
        doc="URL the hub listens on: ws://HOST:PORT, or wss://HOST:PORT for TLS; no path. "
            "Port 0 picks a free port. TICKHUB_LISTEN_URL wins over NEXT_PUBLIC_HUB_WS_URL "
            "where the public URL (behind an ingress) is not the bind address.")
    tls_cert_file: str | None = _setting(
        None, env="TICKHUB_TLS_CERT", flag="--tls-cert", kind="optstr",
        doc="PEM certificate chain; required with wss://, refused with ws://.")
    tls_key_file: str | None = _setting(
        None, env="TICKHUB_TLS_KEY", flag="--tls-key", kind="optstr",
        doc="PEM private key; required with wss://, refused with ws://.")

    # --- mode and auth -----------------------------------------------------------------
    production: bool = _setting(
        False, env="NODE_ENV", flag="--production", kind="node_env",
        doc="NODE_ENV=production: refuse to start without JWT verification, and refuse HMAC "
            "secrets shorter than the hash (RFC 7518 section 3.2).")
    jwt_secret: str | None = _setting(
        None, env="HUB_JWT_SECRET", flag="--jwt-secret", kind="optstr", secret=True,
        doc="Shared secret for HS256/384/512 tokens. Prefer the environment to the flag "
            "(flags show in ps). Unset, with no public key: no auth.")
    jwt_algorithm: str = _setting(
        "HS256", env="HUB_JWT_ALGORITHM", flag="--jwt-algorithm", kind="str",
        doc="The one JWT algorithm accepted: HS256/384/512, RS256/384/512, ES256/384 or "
            "EdDSA. Pinned, so alg=none and HS/RS confusion are refused.")
    jwt_public_key: str | None = _setting(
        None, env="HUB_JWT_PUBLIC_KEY", flag=None, kind="optstr",
        doc="PEM public key for RS*/ES*/EdDSA; the text itself (or the file named by "
            "HUB_JWT_PUBLIC_KEY_FILE / --jwt-public-key-file).")
    jwt_audience: str | None = _setting(
        None, env="HUB_JWT_AUDIENCE", flag="--jwt-audience", kind="optstr",
        doc="Required aud claim (403 otherwise). Unset: aud is not checked.")
    jwt_issuer: str | None = _setting(
        None, env="HUB_JWT_ISSUER", flag="--jwt-issuer", kind="optstr",
        doc="Required iss claim (403 otherwise). Unset: iss is not checked.")
    jwt_leeway: float = _setting(
        0.0, env="HUB_JWT_LEEWAY", flag="--jwt-leeway", kind="float", minimum=0,
        doc="Seconds of clock skew tolerated on exp and nbf. 0: none.")
    jwt_require_exp: bool = _setting(
        False, env="HUB_JWT_REQUIRE_EXP", flag="--jwt-require-exp", kind="bool",
        doc="Refuse tokens without exp. Off (as in Centrifugo): a token without exp is "
            "valid for the life of the connection.")

    # --- bus and upstream endpoints ------------------------------------------------------
    redis_url: str | None = _setting(
        None, env="REDIS_URL", flag="--redis-url", kind="optstr",
        doc="Redis for the cluster bus: redis://, rediss:// or unix://.")
    kafka_broker_url: str | None = _setting(
        None, env="KAFKA_BROKER_URL", flag="--kafka-broker-url", kind="optstr",
        doc="Kafka bootstrap servers (host:port[,host:port]) for the durable event log.")
    bus: str = _setting(
        "memory", env="TICKHUB_BUS", flag="--bus", kind="str",
        doc="memory (single node), redis or kafka (events over Kafka, ownership by Redis "
            "leases: needs KAFKA_BROKER_URL and REDIS_URL). Unset: redis when REDIS_URL is "
            "set, else memory.")
    instance_id: str | None = _setting(
        None, env="TICKHUB_INSTANCE_ID", flag="--instance-id", kind="optstr",
        doc="This instance's name on the cluster bus (letters, digits, . _ - :; at most "
            "100). Unset: <hostname>-<pid>-<random>. Use the pod name on Kubernetes.")
    bus_lease_ttl: float = _setting(
        3.0, env="TICKHUB_BUS_LEASE_TTL", flag="--bus-lease-ttl", kind="float",
        positive=True,
        doc="Seconds an upstream-ownership lease (and a demand entry) lives in Redis "
            "unless renewed; renewed every third of it. A dead owner is replaced within "
            "about 4/3 of it. Must be > 0.")
    bus_linger: float = _setting(
        5.0, env="TICKHUB_BUS_LINGER", flag="--bus-linger", kind="float", minimum=0,
        doc="Seconds a stream's bus channel stays subscribed (and its demand registered) "
            "after its last local client left. 0: unsubscribe at once.")
    bus_max_pending_bytes: int = _setting(
        16 * _MIB, env="TICKHUB_BUS_MAX_PENDING_BYTES", flag="--bus-max-pending-bytes",
        kind="int", positive=True,
        doc="Bytes of batches waiting to be published on the bus; beyond it new batches "
            "are dropped and counted (receivers see the hole and report a gap). Must be > 0.")
    bus_backoff_max: float = _setting(
        5.0, env="TICKHUB_BUS_BACKOFF_MAX", flag="--bus-backoff-max", kind="float",
        positive=True,
        doc="Cap in seconds of the Redis reconnect delay (starts at 0.1 s, doubles, "
            "jittered). Must be > 0.")
    bus_outage_unready: bool = _setting(
        False, env="TICKHUB_BUS_OUTAGE_UNREADY", flag="--bus-outage-unready", kind="bool",
        doc="Answer /readyz with 503 while the bus is down. Off: stay ready and keep "
            "serving local upstreams (the outage shows in the /readyz body and metrics).")
    kafka_max_buffered: int = _setting(
        100_000, env="TICKHUB_KAFKA_MAX_BUFFERED", flag="--kafka-max-buffered", kind="int",
        positive=True,
        doc="Upstream events waiting for the Kafka producer; beyond it events are dropped "
            "from the log and counted, never blocking the fan-out. Must be > 0.")
    kafka_max_lag: int = _setting(
        10_000, env="TICKHUB_KAFKA_MAX_LAG", flag="--kafka-max-lag", kind="int",
        positive=True,
        doc="With TICKHUB_BUS=kafka: records the consumer may fall behind the end of a "
            "partition; beyond it, it skips to the end and reports a gap on the streams "
            "it serves. Must be > 0.")
    replay_max_seconds: float = _setting(
        300.0, env="TICKHUB_REPLAY_MAX_SECONDS", flag="--replay-max-seconds", kind="float",
        minimum=0,
        doc="Longest replay a client may ask for (?replay=SECONDS), served from Kafka. "
            "0: replay is refused.")
    replay_max_messages: int = _setting(
        10_000, env="TICKHUB_REPLAY_MAX_MESSAGES", flag="--replay-max-messages", kind="int",
        positive=True,
        doc="Most events one replay delivers per stream; older ones are left out (the "
            "replay starts later). Must be > 0.")
    max_replays: int = _setting(
        64, env="TICKHUB_MAX_REPLAYS", flag="--max-replays", kind="int", minimum=0,
        doc="Replays (one per stream of a ?replay= URL, each its own Kafka consumer) running "
            "at once on this hub; a connection that would go over it is refused with HTTP 503 "
            "and may retry. 0: no limit.")
    binance_ws_url: str = _setting(
        "wss://stream.binance.com:9443", env="BINANCE_WS_URL", flag="--binance-ws-url",
        kind="str", doc="Binance Spot stream base URL (point it at `tickhub simulate`).")

    # --- client limits -----------------------------------------------------------------
    max_streams_per_connection: int = _setting(
        1024, env="TICKHUB_MAX_STREAMS", flag="--max-streams", kind="int", minimum=0,
        doc="Streams one client connection may hold (Binance: 1024). 0: unlimited.")
    max_incoming_per_second: int = _setting(
        5, env="TICKHUB_MAX_INCOMING_PER_SECOND", flag="--max-incoming-per-second",
        kind="int", minimum=0,
        doc="Incoming messages per second per connection (control messages, pings, pongs) "
            "before the hub closes it with 4029 (Binance: 5). 0: unlimited.")
    ping_interval: float = _setting(
        20.0, env="TICKHUB_PING_INTERVAL", flag="--ping-interval", kind="float", minimum=0,
        doc="Seconds between server pings (Binance: 20). 0: the hub sends no pings.")
    pong_timeout: float = _setting(
        60.0, env="TICKHUB_PONG_TIMEOUT", flag="--pong-timeout", kind="float", minimum=0,
        doc="Seconds without a pong before closing with 4010 (Binance: 60). 0: never close "
            "for a missing pong.")
    max_frame_size: int = _setting(
        65536, env="TICKHUB_MAX_FRAME_SIZE", flag="--max-frame-size", kind="int",
        positive=True,
        doc="Largest incoming frame in bytes; a bigger one closes with 1009. Must be > 0.")
    max_queued_bytes: int = _setting(
        4 * _MIB, env="TICKHUB_MAX_QUEUED_BYTES", flag="--max-queued-bytes", kind="int",
        positive=True,
        doc="Bytes queued to one client before it is a slow consumer (closed with 4008). "
            "Must be > 0, so memory per client is always bounded.")
    max_connections: int = _setting(
        0, env="TICKHUB_MAX_CONNECTIONS", flag="--max-connections", kind="int", minimum=0,
        doc="Concurrent client connections; upgrades over it are refused. 0: unlimited.")

    # --- upstream ----------------------------------------------------------------------
    upstream_linger: float = _setting(
        5.0, env="TICKHUB_UPSTREAM_LINGER", flag="--upstream-linger", kind="float",
        minimum=0,
        doc="Seconds a stream stays subscribed upstream after its last client left, so a "
            "quick re-subscribe costs nothing. 0: unsubscribe at once.")
    upstream_streams_per_connection: int = _setting(
        1024, env="TICKHUB_UPSTREAM_STREAMS_PER_CONNECTION",
        flag="--upstream-streams-per-connection", kind="int", positive=True,
        doc="Streams per upstream connection (Binance: 1024). Must be > 0.")
    upstream_control_per_second: int = _setting(
        5, env="TICKHUB_UPSTREAM_CONTROL_PER_SECOND", flag="--upstream-control-per-second",
        kind="int", minimum=2,
        doc="Control messages per second per upstream connection that the manager stays "
            "under (Binance: 5); one slot of each second is kept for pongs. At least 2.")
    upstream_max_age: float = _setting(
        23.5 * 3600, env="TICKHUB_UPSTREAM_MAX_AGE", flag="--upstream-max-age",
        kind="float", minimum=0,
        doc="Seconds before an upstream connection is rotated make-before-break (Binance "
            "cuts at 24 h). 0: never rotate proactively.")
    upstream_stall_timeout: float = _setting(
        30.0, env="TICKHUB_UPSTREAM_STALL_TIMEOUT", flag="--upstream-stall-timeout",
        kind="float", minimum=0,
        doc="Seconds without any upstream message before the connection counts as stalled "
            "and is replaced. 0: no stall watchdog.")
    upstream_backoff_initial: float = _setting(
        0.5, env="TICKHUB_UPSTREAM_BACKOFF_INITIAL", flag="--upstream-backoff-initial",
        kind="float", positive=True,
        doc="First reconnect delay in seconds (doubled per failure, jittered). Must be > 0.")
    upstream_backoff_max: float = _setting(
        30.0, env="TICKHUB_UPSTREAM_BACKOFF_MAX", flag="--upstream-backoff-max",
        kind="float", positive=True,
        doc="Cap of the reconnect delay in seconds; at least upstream_backoff_initial.")
    upstream_connect_budget: int = _setting(
        300, env="TICKHUB_UPSTREAM_CONNECT_BUDGET", flag="--upstream-connect-budget",
        kind="int", minimum=0,
        doc="Upstream connection attempts allowed per window (Binance: 300 per 5 min per "
            "IP). 0: unlimited.")
    upstream_connect_window: float = _setting(
        300.0, env="TICKHUB_UPSTREAM_CONNECT_WINDOW", flag="--upstream-connect-window",
        kind="float", positive=True,
        doc="Length in seconds of the upstream_connect_budget window. Must be > 0.")

    gap_policy: str = _setting(
        "notice", env="TICKHUB_GAP_POLICY", flag="--gap-policy", kind="str",
        doc="What clients of a stream see when events may have been missed (upstream "
            "reconnect, bus outage): notice = a {\"e\":\"streamGap\"} event in the stream, "
            "connection kept; close = close with 4011 so the client reconnects and resyncs.")

    # --- process -----------------------------------------------------------------------
    drain_seconds: float = _setting(
        10.0, env="TICKHUB_DRAIN_SECONDS", flag="--drain-seconds", kind="float", minimum=0,
        doc="Seconds to drain on SIGTERM: stop accepting, close clients with 1001, let "
            "queues flush. 0: close at once.")
    aiofastnet: bool = _setting(
        False, env="TICKHUB_AIOFASTNET", flag="--aiofastnet", kind="bool",
        doc="Client sockets on picows's aiofastnet transports instead of uvloop's own. Off: "
            "uvloop's, about 5 KB less memory per idle connection at no throughput cost "
            "measurable here (README, Benchmarks).")
    allow_pure_python: bool = _setting(
        False, env="TICKHUB_ALLOW_PURE_PYTHON", flag="--allow-pure-python", kind="bool",
        doc="Serve even when the compiled hot path is missing (the slow pure-Python twins).")
    log_level: str = _setting(
        "INFO", env="TICKHUB_LOG_LEVEL", flag="--log-level", kind="str",
        doc="Level of the tickhub logger tree: DEBUG, INFO, WARNING, ERROR or CRITICAL.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.metadata["kind"] in ("int", "float"):
                _check_number(f, getattr(self, f.name))
        self._check_listen()
        self._check_auth()
        self._check_bus()
        self._check_gap_policy()
        _check_ws_url(_label_of("binance_ws_url"), self.binance_ws_url)
        if self.upstream_backoff_max < self.upstream_backoff_initial:
            raise ConfigError(
                f"{_label_of('upstream_backoff_max')} must be >= "
                f"TICKHUB_UPSTREAM_BACKOFF_INITIAL ({self.upstream_backoff_initial:g}), "
                f"got {self.upstream_backoff_max:g}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"{_label_of('log_level')} must be one of {', '.join(LOG_LEVELS)},"
                              f" got {self.log_level!r}")

    def _check_listen(self) -> None:
        label = _label_of("listen_url")
        url = _check_ws_url(label, self.listen_url)
        if url.path not in ("", "/") or url.query or url.fragment or url.username is not None:
            raise ConfigError(f"{label} must be ws://HOST:PORT or wss://HOST:PORT without a path,"
                              f" query or user, got {self.listen_url!r} (clients pick /ws or "
                              f"/stream themselves)")
        tls_files = (("tls_cert_file", self.tls_cert_file), ("tls_key_file", self.tls_key_file))
        if url.scheme == "wss":
            for name, path in tls_files:
                if path is None:
                    raise ConfigError(f"{label} is wss:// (TLS), which needs {_label_of(name)}")
                if not Path(path).is_file():
                    raise ConfigError(f"{_label_of(name)}: no such file {path!r}")
        else:
            for name, path in tls_files:
                if path is not None:
                    raise ConfigError(f"{_label_of(name)} is set but {label} is ws:// "
                                      f"(plain); use wss:// to serve TLS")

    def _check_auth(self) -> None:
        alg = self.jwt_algorithm
        if alg not in JWT_ALGORITHMS:
            raise ConfigError(f"{_label_of('jwt_algorithm')} must be one of "
                              f"{', '.join(JWT_ALGORITHMS)}, got {alg!r}")
        if alg in HMAC_ALGORITHMS:
            if self.jwt_public_key is not None:
                raise ConfigError(f"HUB_JWT_PUBLIC_KEY is for RS*/ES*/EdDSA but HUB_JWT_ALGORITHM"
                                  f" is {alg}; set HUB_JWT_SECRET instead (or change the "
                                  f"algorithm)")
            if (self.production and self.jwt_secret is not None
                    and len(self.jwt_secret.encode()) < HMAC_MIN_KEY_BYTES[alg]):
                raise ConfigError(f"HUB_JWT_SECRET is {len(self.jwt_secret.encode())} bytes; "
                                  f"{alg} in production needs at least "
                                  f"{HMAC_MIN_KEY_BYTES[alg]} (RFC 7518 section 3.2)")
        else:
            if self.jwt_secret is not None:
                raise ConfigError(f"HUB_JWT_SECRET is for HS256/384/512 but HUB_JWT_ALGORITHM is"
                                  f" {alg}; set HUB_JWT_PUBLIC_KEY or HUB_JWT_PUBLIC_KEY_FILE "
                                  f"(a PEM public key)")
            if self.jwt_public_key is not None and "-----BEGIN" not in self.jwt_public_key:
                raise ConfigError("HUB_JWT_PUBLIC_KEY must be a PEM public key "
                                  "(-----BEGIN PUBLIC KEY-----...)")
        if self.production and not self.auth_required:
            raise ConfigError("NODE_ENV=production requires HUB_JWT_SECRET (or, for RS*/ES*/"
                              "EdDSA, HUB_JWT_PUBLIC_KEY or HUB_JWT_PUBLIC_KEY_FILE)")

    def _check_gap_policy(self) -> None:
        if self.gap_policy not in ("notice", "close"):
            raise ConfigError(f"{_label_of('gap_policy')} must be notice or close, "
                              f"not {self.gap_policy!r}")

    def _check_bus(self) -> None:
        label = _label_of("bus")
        if self.bus not in BUSES:
            raise ConfigError(f"{label} must be one of {', '.join(BUSES)}, got {self.bus!r}")
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ConfigError(f"{_label_of('redis_url')} must start with redis://, rediss:// "
                                  f"or unix://, got {_redact_url(self.redis_url)!r}")
        if self.instance_id is not None and not _INSTANCE_ID_RE.fullmatch(self.instance_id):
            raise ConfigError(f"{_label_of('instance_id')} must be 1 to 100 of letters, "
                              f"digits and . _ - :, got {self.instance_id!r}")
        if self.bus == "redis" and self.redis_url is None:
            raise ConfigError(f"{label} is redis, which needs REDIS_URL")
        if self.bus == "kafka" and (self.kafka_broker_url is None or self.redis_url is None):
            # Kafka carries the events; upstream ownership (one per stream) needs the
            # Redis leases, Kafka has no lease store (tickhub.bus.kafkabus).
            raise ConfigError(f"{label} is kafka, which needs KAFKA_BROKER_URL (events) and "
                              f"REDIS_URL (upstream ownership)")

    # --- derived -------------------------------------------------------------------------
    @property
    def tls(self) -> bool:
        """Whether the hub serves TLS (``wss://``)."""
        return urlsplit(self.listen_url).scheme == "wss"

    @property
    def listen_host(self) -> str:
        """Host (or IP) to bind, without IPv6 brackets."""
        return urlsplit(self.listen_url).hostname or ""

    @property
    def listen_port(self) -> int:
        """Port to bind; 0 asks the OS for a free one. Defaults to 80 / 443 by scheme."""
        url = urlsplit(self.listen_url)
        return url.port if url.port is not None else (443 if url.scheme == "wss" else 80)

    @property
    def auth_required(self) -> bool:
        """Whether upgrades must carry a valid JWT (a secret or public key is configured)."""
        return self.jwt_secret is not None or self.jwt_public_key is not None

    @property
    def jwt_key(self) -> str | None:
        """The verification key for :attr:`jwt_algorithm`: the secret or the PEM public key."""
        return self.jwt_secret if self.jwt_algorithm in HMAC_ALGORITHMS else self.jwt_public_key

    def redacted(self) -> dict[str, Any]:
        """Every field plus the derived values, safe to print (``tickhub check-config``).

        Secrets show as ``"***set***"`` or ``None``; passwords inside URLs as ``***``.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"]:
                value = None if value is None else "***set***"
            elif f.name == "jwt_public_key" and value is not None:
                value = f"<PEM public key, {len(value)} characters>"
            elif f.name in ("redis_url", "kafka_broker_url", "binance_ws_url") and value:
                value = _redact_url(value)
            out[f.name] = value
        out.update(listen_host=self.listen_host, listen_port=self.listen_port, tls=self.tls,
                   auth_required=self.auth_required)
        return out


# --- field helpers ---------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _label(f: dataclasses.Field[Any]) -> str:
    """How an error names a field: its environment variable(s), then its flag."""
    name = " / ".join(f.metadata["env"])
    flag = f.metadata["flag"]
    return f"{name} ({flag})" if flag else name


def _label_of(name: str) -> str:
    return _label(_FIELDS[name])


def _check_number(f: dataclasses.Field[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{_label(f)} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{_label(f)} must be a finite number, got {value!r}")
    if f.metadata["positive"] and value <= 0:
        raise ConfigError(f"{_label(f)} must be greater than 0, got {value:g}")
    minimum = f.metadata["minimum"]
    if minimum is not None and value < minimum:
        rule = "must not be negative" if minimum == 0 else f"must be at least {minimum:g}"
        raise ConfigError(f"{_label(f)} {rule}, got {value:g}")


def _check_ws_url(label: str, raw: str) -> SplitResult:
    try:
        url = urlsplit(raw)
        url.port  # noqa: B018 -- property access validates the port number
    except ValueError as exc:
        raise ConfigError(f"{label}: invalid URL {raw!r} ({exc})") from None
    if url.scheme not in ("ws", "wss") or not url.hostname:
        raise ConfigError(f"{label} must be a ws:// or wss:// URL with a host, got {raw!r}")
    return url


def _redact_url(raw: str) -> str:
    """Hide the password of ``scheme://user:password@host``; other URLs come back as given."""
    url = urlsplit(raw)
    if url.password is None:
        return raw
    userinfo, _, hostinfo = url.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return url._replace(netloc=f"{user}:***@{hostinfo}").geturl()


# --- parsing strings from flags / environment ------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_ALGORITHMS_BY_UPPER = {a.upper(): a for a in JWT_ALGORITHMS}


def _parse(f: dataclasses.Field[Any], raw: str, origin: str) -> Any:
    """Turn one string into the field's value; ``origin`` names the source in errors."""
    kind = f.metadata["kind"]
    if kind == "int":
        if not _INT_RE.fullmatch(raw):
            raise ConfigError(f"{origin}: expected a whole number, got {raw!r}")
        return int(raw)
    if kind == "float":
        if not _FLOAT_RE.fullmatch(raw):
            raise ConfigError(f"{origin}: expected a number (seconds), got {raw!r}")
        return float(raw)
    if kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{origin}: expected one of 1/0/true/false/yes/no, got {raw!r}")
    if kind == "node_env":
        return raw.lower() == "production"
    if f.name == "jwt_algorithm":
        return _ALGORITHMS_BY_UPPER.get(raw.upper(), raw)
    if f.name == "bus":
        return raw.lower()
    if f.name == "log_level":
        return raw.upper()
    if f.name == "jwt_public_key" and "\n" not in raw:
        # One-line env values often carry PEM newlines as the two characters \n.
        return raw.replace("\\n", "\n")
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every configuration flag to ``parser`` (``serve`` and ``check-config`` share them).

    All flags default to ``None`` so an absent flag never hides the environment.
    """
    parser.add_argument("--env-file", metavar="PATH",
                        help="dotenv file read below the environment (default: .env.local; "
                             "must exist when given)")
    parser.add_argument("--jwt-public-key-file", metavar="PATH",
                        help="PEM public key for RS*/ES*/EdDSA [HUB_JWT_PUBLIC_KEY_FILE]")
    for f in dataclasses.fields(Config):
        flag = f.metadata["flag"]
        if flag is None:
            continue
        envs = ", ".join(f.metadata["env"])
        default = "" if f.default is None else f" (default {f.default})"
        help_text = f"{f.metadata['doc']} [{envs}]{default}"
        if f.metadata["kind"] in ("bool", "node_env"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, metavar=_metavar(f), default=None,
                                help=help_text)


def _metavar(f: dataclasses.Field[Any]) -> str:
    if f.name.endswith(("_url", "_file")):
        return "URL" if f.name.endswith("_url") else "PATH"
    if "per_second" in f.name:
        return "RATE"
    return {"int": "N", "float": "SECONDS"}.get(f.metadata["kind"], "VALUE")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are ConfigErrors instead of ``sys.exit(2)``."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"{self.prog}: {message}")


def build_parser(prog: str = "tickhub serve") -> argparse.ArgumentParser:
    """The flags of ``tickhub serve``. Bad usage raises :class:`ConfigError`."""
    parser = _Parser(prog=prog, description="Run the tickhub market-data hub.")
    add_arguments(parser)
    return parser


def _read_env_file(path: Path, explicit: bool) -> dict[str, str]:
    if not path.is_file():
        if explicit:
            raise ConfigError(f"--env-file: no such file {str(path)!r}")
        return {}
    values = dotenv_values(path, interpolate=False)
    return {k: v for k, v in values.items() if v is not None}


def load_config(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env.local",
) -> Config:
    """Build the one :class:`Config` from flags > environment > ``env_file`` > defaults.

    ``argv`` are the flags after ``tickhub serve`` (``None``: no flags, not ``sys.argv``);
    ``environ`` defaults to ``os.environ``; ``env_file=None`` reads no file.
    """
    namespace = build_parser().parse_args(list(argv) if argv is not None else [])
    env = os.environ if environ is None else environ
    file_path: Path | None = None
    if namespace.env_file is not None:
        file_path = Path(namespace.env_file)
    elif env_file is not None:
        file_path = Path(env_file)
    file_values = (_read_env_file(file_path, explicit=namespace.env_file is not None)
                   if file_path is not None else {})
    file_name = file_path.name if file_path is not None else ""

    def lookup(names: Sequence[str]) -> tuple[str, str] | None:
        """The first non-empty value of ``names`` with its origin, env before file."""
        for source, origin_suffix in ((env, ""), (file_values, f" (from {file_name})")):
            for name in names:
                value = source.get(name)
                if value is not None and value.strip():
                    return value.strip(), name + origin_suffix
        return None

    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        flag_value = getattr(namespace, f.name, None)
        if isinstance(flag_value, bool):
            values[f.name] = flag_value
            continue
        if isinstance(flag_value, str) and flag_value.strip():
            values[f.name] = _parse(f, flag_value.strip(), f.metadata["flag"])
            continue
        found = lookup(f.metadata["env"])
        if found is not None:
            values[f.name] = _parse(f, found[0], found[1])

    _load_public_key_file(values, namespace.jwt_public_key_file, lookup)
    if "bus" not in values and "redis_url" in values:
        values["bus"] = "redis"
    return Config(**values)


def _load_public_key_file(
    values: dict[str, Any],
    flag_path: str | None,
    lookup: Callable[[Sequence[str]], tuple[str, str] | None],
) -> None:
    """Fill ``jwt_public_key`` from --jwt-public-key-file or HUB_JWT_PUBLIC_KEY_FILE.

    The flag beats any environment value; in the environment (or the dotenv file) the
    key text and the key file together are ambiguous and refused.
    """
    if flag_path is not None and flag_path.strip():
        path, origin = flag_path.strip(), "--jwt-public-key-file"
    else:
        found = lookup(("HUB_JWT_PUBLIC_KEY_FILE",))
        if found is None:
            return
        path, origin = found
        if "jwt_public_key" in values:
            raise ConfigError(f"{origin}: set HUB_JWT_PUBLIC_KEY or HUB_JWT_PUBLIC_KEY_FILE, "
                              f"not both")
    try:
        values["jwt_public_key"] = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read {path!r} ({exc.strerror})") from None
