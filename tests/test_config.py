"""Configuration: precedence, validation messages, redaction, and the docs table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tickhub.config import Config, build_parser, load_config
from tickhub.errors import ConfigError

SECRET = "s" * 32
DOCS = Path(__file__).resolve().parents[1] / "README.md"  # the Configuration table


def load(argv: list[str] | None = None, env: dict[str, str] | None = None,
         env_file: str | Path | None = None) -> Config:
    return load_config(argv or [], env or {}, env_file)


def test_defaults() -> None:
    cfg = load()
    assert cfg.listen_host == "127.0.0.1" and cfg.listen_port == 8080 and not cfg.tls
    assert cfg.bus == "memory"
    assert not cfg.auth_required and not cfg.production
    assert cfg.max_streams_per_connection == 1024
    assert cfg.max_incoming_per_second == 5
    assert cfg.ping_interval == 20.0 and cfg.pong_timeout == 60.0
    assert cfg.max_queued_bytes == 4 * 1024 * 1024
    assert cfg.upstream_max_age == 23.5 * 3600
    assert cfg.binance_ws_url == "wss://stream.binance.com:9443"
    assert cfg == Config()


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    env_file.write_text("TICKHUB_MAX_STREAMS=10\nTICKHUB_PING_INTERVAL=7\n"
                        "TICKHUB_DRAIN_SECONDS=3\n")
    env = {"TICKHUB_MAX_STREAMS": "20", "TICKHUB_PING_INTERVAL": "8"}
    cfg = load(["--max-streams", "30"], env, env_file)
    assert cfg.max_streams_per_connection == 30      # flag beats env and file
    assert cfg.ping_interval == 8.0                   # env beats file
    assert cfg.drain_seconds == 3.0                   # file beats default
    assert cfg.pong_timeout == 60.0                   # default


def test_env_file_default_name_is_read_from_cwd_and_missing_is_fine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config([], {}).listen_port == 8080    # no .env.local: defaults
    (tmp_path / ".env.local").write_text("NEXT_PUBLIC_HUB_WS_URL=ws://0.0.0.0:9001\n")
    assert load_config([], {}).listen_port == 9001


def test_explicit_env_file_flag_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--env-file"):
        load(["--env-file", str(tmp_path / "nope")])
    other = tmp_path / "prod.env"
    other.write_text("TICKHUB_MAX_CONNECTIONS=7\n")
    assert load(["--env-file", str(other)]).max_connections == 7


def test_env_file_values_are_literal_and_os_environ_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMEVAR", "expanded")
    env_file = tmp_path / ".env.local"
    env_file.write_text("HUB_JWT_SECRET=abc${SOMEVAR}" + "x" * 32 + "\n")
    cfg = load_config([], {}, env_file)
    assert cfg.jwt_secret == "abc${SOMEVAR}" + "x" * 32
    import os
    assert "HUB_JWT_SECRET" not in os.environ


def test_empty_value_counts_as_unset(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    env_file.write_text("REDIS_URL=redis://file:6379\n")
    cfg = load([], {"REDIS_URL": ""}, env_file)
    assert cfg.redis_url == "redis://file:6379"


def test_listen_url_derivations() -> None:
    assert load(env={"NEXT_PUBLIC_HUB_WS_URL": "ws://0.0.0.0:0"}).listen_port == 0
    cfg = load(["--listen", "ws://[::1]:9000"])
    assert (cfg.listen_host, cfg.listen_port) == ("::1", 9000)
    assert load(["--listen", "ws://example.org"]).listen_port == 80
    # TICKHUB_LISTEN_URL wins where the public URL is not the bind address
    cfg = load(env={"NEXT_PUBLIC_HUB_WS_URL": "wss://hub.example.org",
                    "TICKHUB_LISTEN_URL": "ws://0.0.0.0:8080"})
    assert cfg.listen_host == "0.0.0.0"


@pytest.mark.parametrize("url", ["http://0.0.0.0:80", "ws://", "ws://h:70000", "ws://h:1/ws",
                                 "ws://u:p@h:1", "garbage"])
def test_bad_listen_url(url: str) -> None:
    with pytest.raises(ConfigError, match="NEXT_PUBLIC_HUB_WS_URL"):
        load(env={"NEXT_PUBLIC_HUB_WS_URL": url})


def test_wss_needs_cert_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TICKHUB_TLS_CERT"):
        load(env={"NEXT_PUBLIC_HUB_WS_URL": "wss://0.0.0.0:8443"})
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert")
    with pytest.raises(ConfigError, match="TICKHUB_TLS_KEY"):
        load(env={"NEXT_PUBLIC_HUB_WS_URL": "wss://0.0.0.0:8443", "TICKHUB_TLS_CERT": str(cert)})
    with pytest.raises(ConfigError, match="no such file"):
        load(env={"NEXT_PUBLIC_HUB_WS_URL": "wss://0.0.0.0:8443", "TICKHUB_TLS_CERT": str(cert),
                  "TICKHUB_TLS_KEY": str(key)})
    key.write_text("key")
    cfg = load(env={"NEXT_PUBLIC_HUB_WS_URL": "wss://0.0.0.0:8443",
                    "TICKHUB_TLS_CERT": str(cert), "TICKHUB_TLS_KEY": str(key)})
    assert cfg.tls and cfg.listen_port == 8443


def test_cert_with_plain_ws_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("cert")
    with pytest.raises(ConfigError, match="use wss://"):
        load(env={"TICKHUB_TLS_CERT": str(cert)})


def test_production_refuses_to_start_without_a_key() -> None:
    with pytest.raises(ConfigError, match="^NODE_ENV=production requires HUB_JWT_SECRET"):
        load(env={"NODE_ENV": "production"})
    assert load(env={"NODE_ENV": "production", "HUB_JWT_SECRET": SECRET}).auth_required
    assert not load(env={"NODE_ENV": "development"}).production
    with pytest.raises(ConfigError, match="NODE_ENV=production"):
        load(["--production"])


def test_production_refuses_short_hmac_secret() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        load(env={"NODE_ENV": "production", "HUB_JWT_SECRET": "changeme"})
    with pytest.raises(ConfigError, match="at least 64"):
        load(env={"NODE_ENV": "production", "HUB_JWT_SECRET": SECRET,
                  "HUB_JWT_ALGORITHM": "HS512"})
    assert load(env={"HUB_JWT_SECRET": "changeme"}).auth_required   # allowed in development


def test_algorithm_and_key_kind_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HUB_JWT_ALGORITHM"):
        load(env={"HUB_JWT_ALGORITHM": "none"})
    with pytest.raises(ConfigError, match="HUB_JWT_PUBLIC_KEY"):
        load(env={"HUB_JWT_ALGORITHM": "RS256", "HUB_JWT_SECRET": SECRET})
    with pytest.raises(ConfigError, match="HUB_JWT_SECRET instead"):
        load(env={"HUB_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"})
    with pytest.raises(ConfigError, match="PEM"):
        load(env={"HUB_JWT_ALGORITHM": "ES256", "HUB_JWT_PUBLIC_KEY": "not a pem"})
    pem = tmp_path / "pub.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n")
    cfg = load(env={"HUB_JWT_ALGORITHM": "eddsa", "HUB_JWT_PUBLIC_KEY_FILE": str(pem)})
    assert cfg.jwt_algorithm == "EdDSA" and cfg.auth_required
    assert cfg.jwt_key == pem.read_text()
    with pytest.raises(ConfigError, match="not both"):
        load(env={"HUB_JWT_ALGORITHM": "RS256", "HUB_JWT_PUBLIC_KEY_FILE": str(pem),
                  "HUB_JWT_PUBLIC_KEY": pem.read_text()})
    with pytest.raises(ConfigError, match="cannot read"):
        load(["--jwt-algorithm", "RS256", "--jwt-public-key-file", str(tmp_path / "missing")])


def test_escaped_newlines_in_one_line_pem() -> None:
    cfg = load(env={"HUB_JWT_ALGORITHM": "RS256",
                    "HUB_JWT_PUBLIC_KEY": r"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----"})
    assert cfg.jwt_public_key == "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----"


def test_bus_selection() -> None:
    assert load(env={"REDIS_URL": "redis://127.0.0.1:6379/0"}).bus == "redis"
    assert load(env={"REDIS_URL": "redis://h", "TICKHUB_BUS": "memory"}).bus == "memory"
    with pytest.raises(ConfigError, match="TICKHUB_BUS .* is redis, which needs REDIS_URL"):
        load(env={"TICKHUB_BUS": "redis"})
    with pytest.raises(ConfigError, match="KAFKA_BROKER_URL"):
        load(env={"TICKHUB_BUS": "kafka"})
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load(env={"TICKHUB_BUS": "kafka", "KAFKA_BROKER_URL": "127.0.0.1:9092"})
    assert load(env={"TICKHUB_BUS": "Kafka", "KAFKA_BROKER_URL": "127.0.0.1:9092",
                     "REDIS_URL": "redis://h"}).bus == "kafka"
    with pytest.raises(ConfigError, match="TICKHUB_BUS"):
        load(env={"TICKHUB_BUS": "zeromq"})
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load(env={"REDIS_URL": "http://h"})


NUMERIC = [
    (f.metadata["env"][0], f.metadata["flag"], f.metadata["kind"])
    for f in dataclasses.fields(Config) if f.metadata["kind"] in ("int", "float")
]


@pytest.mark.parametrize(("env_name", "flag", "kind"), NUMERIC)
@pytest.mark.parametrize("bad", ["abc", "1x", "nan", "inf", "1e", "5s", "1_000", "0x10"])
def test_every_bad_number_names_its_variable(env_name: str, flag: str, kind: str,
                                             bad: str) -> None:
    with pytest.raises(ConfigError, match=f"^{env_name}: expected"):
        load(env={env_name: bad})
    with pytest.raises(ConfigError, match=f"^{flag}: expected"):
        load([flag, bad])


@pytest.mark.parametrize(("env_name", "flag", "kind"), NUMERIC)
def test_every_negative_number_names_its_variable(env_name: str, flag: str, kind: str) -> None:
    with pytest.raises(ConfigError, match=f"^{env_name} .*(negative|greater than 0|at least)"):
        load(env={env_name: "-1"})


def test_int_field_refuses_fraction_and_names_file_origin(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    env_file.write_text("TICKHUB_MAX_CONNECTIONS=1.5\n")
    with pytest.raises(ConfigError, match=r"^TICKHUB_MAX_CONNECTIONS \(from \.env\.local\): "
                                          r"expected a whole number, got '1\.5'$"):
        load(env_file=env_file)


def test_zero_rules() -> None:
    cfg = load(env={"TICKHUB_MAX_INCOMING_PER_SECOND": "0", "TICKHUB_MAX_STREAMS": "0",
                    "TICKHUB_PING_INTERVAL": "0", "TICKHUB_UPSTREAM_LINGER": "0"})
    assert cfg.max_incoming_per_second == 0 and cfg.ping_interval == 0.0
    for name in ("TICKHUB_MAX_QUEUED_BYTES", "TICKHUB_MAX_FRAME_SIZE",
                 "TICKHUB_UPSTREAM_BACKOFF_INITIAL"):
        with pytest.raises(ConfigError, match=f"^{name} .*greater than 0"):
            load(env={name: "0"})
    # one slot of each second is kept for the upstream's pongs
    with pytest.raises(ConfigError, match="^TICKHUB_UPSTREAM_CONTROL_PER_SECOND .*at least 2, got 1$"):
        load(env={"TICKHUB_UPSTREAM_CONTROL_PER_SECOND": "1"})


def test_backoff_max_below_initial() -> None:
    with pytest.raises(ConfigError, match="TICKHUB_UPSTREAM_BACKOFF_MAX"):
        load(env={"TICKHUB_UPSTREAM_BACKOFF_INITIAL": "5", "TICKHUB_UPSTREAM_BACKOFF_MAX": "1"})


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("TRUE", True),
                                            ("0", False), ("no", False), ("false", False)])
def test_booleans(raw: str, value: bool) -> None:
    assert load(env={"TICKHUB_ALLOW_PURE_PYTHON": raw}).allow_pure_python is value


def test_bad_boolean_and_boolean_flags() -> None:
    with pytest.raises(ConfigError, match="^TICKHUB_ALLOW_PURE_PYTHON: expected one of"):
        load(env={"TICKHUB_ALLOW_PURE_PYTHON": "maybe"})
    assert load(["--allow-pure-python"]).allow_pure_python
    assert not load(["--no-allow-pure-python"], {"TICKHUB_ALLOW_PURE_PYTHON": "1"}).allow_pure_python


def test_log_level() -> None:
    assert load(env={"TICKHUB_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    with pytest.raises(ConfigError, match="TICKHUB_LOG_LEVEL"):
        load(env={"TICKHUB_LOG_LEVEL": "loud"})


def test_bad_flag_is_a_config_error_not_an_exit() -> None:
    with pytest.raises(ConfigError, match="unrecognized arguments: --bogus"):
        load(["--bogus"])
    with pytest.raises(ConfigError, match="expected one argument"):
        load(["--max-streams"])


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="TICKHUB_MAX_STREAMS"):
        Config(max_streams_per_connection=-5)
    with pytest.raises(ConfigError, match="NODE_ENV=production"):
        dataclasses.replace(Config(), production=True)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().max_connections = 5  # type: ignore[misc]


def test_redacted_hides_secrets_and_url_passwords() -> None:
    cfg = load(env={"HUB_JWT_SECRET": SECRET, "REDIS_URL": "redis://user:hunter2@redis:6379/0"})
    shown = cfg.redacted()
    assert shown["jwt_secret"] == "***set***"
    assert shown["redis_url"] == "redis://user:***@redis:6379/0"
    assert SECRET not in repr(shown) and "hunter2" not in repr(shown)
    assert shown["auth_required"] is True and shown["listen_port"] == 8080
    assert load().redacted()["jwt_secret"] is None
    assert set(shown) >= {f.name for f in dataclasses.fields(Config)}


def test_help_lists_every_flag() -> None:
    text = build_parser().format_help()
    for f in dataclasses.fields(Config):
        if f.metadata["flag"]:
            assert f.metadata["flag"] in text


def test_docs_table_lists_every_variable_and_flag() -> None:
    doc = DOCS.read_text()
    for f in dataclasses.fields(Config):
        for env_name in f.metadata["env"]:
            assert f"`{env_name}`" in doc, env_name
        if f.metadata["flag"]:
            assert f"`{f.metadata['flag']}`" in doc, f.metadata["flag"]
    for extra in ("`HUB_JWT_PUBLIC_KEY_FILE`", "`--jwt-public-key-file`", "`--env-file`"):
        assert extra in doc
