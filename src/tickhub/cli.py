"""The ``tickhub`` command: serve, simulate, demo, token, check-config.

    tickhub serve [flags]          the hub (flags > environment > .env.local > defaults)
    tickhub simulate [flags]       a Binance-compatible exchange simulator
    tickhub demo                   simulator + hub on the embedded defaults, in one process
    tickhub token [flags]          mint a development JWT signed with HUB_JWT_SECRET
    tickhub check-config [flags]   validate the configuration and print it (secrets hidden)

Exit codes: 0 success, 2 bad configuration or usage, 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Sequence

import orjson

from .config import Config, load_config
from .errors import ConfigError

__all__ = ["main"]

log = logging.getLogger("tickhub.cli")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("tickhub").setLevel(level)


async def _serve(config: Config, ready: "asyncio.Future[int] | None" = None) -> int:
    from .server import Gateway

    gateway = Gateway(config)
    await gateway.start()
    if ready is not None:
        ready.set_result(gateway.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining for up to %.1f s", config.drain_seconds)
    await gateway.stop()
    return 0


def _run(coro: "asyncio.Future[int] | object") -> int:
    import uvloop

    return uvloop.run(coro)  # type: ignore[arg-type]


def cmd_serve(argv: Sequence[str]) -> int:
    config = load_config(list(argv))
    _setup_logging(config.log_level)
    return _run(_serve(config))


def cmd_check_config(argv: Sequence[str]) -> int:
    config = load_config(list(argv))
    sys.stdout.write(orjson.dumps(config.redacted(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_token(argv: Sequence[str]) -> int:
    from .auth import mint_token

    p = argparse.ArgumentParser(prog="tickhub token", description="Mint a development JWT.")
    p.add_argument("--subject", default="dev", help="sub claim (default: dev)")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds until exp (default: 3600)")
    p.add_argument("--streams", default=None, help="comma-separated glob patterns for the streams claim")
    p.add_argument("--admin", action="store_true", help="add admin: true (for /admin/state)")
    args, rest = p.parse_known_args(list(argv))
    config = load_config(rest)
    if not config.jwt_secret:
        raise ConfigError("tickhub token needs HUB_JWT_SECRET (environment, .env.local or --jwt-secret)")
    streams = [s for s in args.streams.split(",") if s] if args.streams else None
    token = mint_token(
        config.jwt_secret,
        subject=args.subject,
        ttl=args.ttl,
        streams=streams,
        algorithm=config.jwt_algorithm,
        audience=config.jwt_audience,
        issuer=config.jwt_issuer,
        admin=args.admin,
    )
    sys.stdout.write(token + "\n")
    return 0


def cmd_simulate(argv: Sequence[str]) -> int:
    from .sim.cli import main as sim_main

    return sim_main(list(argv))


async def _demo(port: int, sim_port: int) -> int:
    from .sim import SimConfig, Simulator

    sim = Simulator(SimConfig())
    await sim.start(host="127.0.0.1", port=sim_port)
    config = load_config(
        [], environ={"BINANCE_WS_URL": sim.url, "NEXT_PUBLIC_HUB_WS_URL": f"ws://127.0.0.1:{port}"}, env_file=None
    )
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(_serve(config, ready))
    hub_port = await ready
    url = f"ws://127.0.0.1:{hub_port}"
    print(
        f"tickhub demo: exchange simulator at {sim.url}, hub at {url}\n"
        f"  streams:  {url}/ws/btcusdt@trade   {url}/stream?streams=btcusdt@trade/ethusdt@bookTicker\n"
        f"  try:      .venv/bin/python -m websockets {url}/ws/btcusdt@trade\n"
        f"  health:   curl -s http://127.0.0.1:{hub_port}/healthz   state: /admin/state   metrics: /metrics\n"
        "  Ctrl-C to stop.",
        flush=True,
    )
    try:
        return await task
    finally:
        await sim.stop()


def cmd_demo(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="tickhub demo", description="Simulator + hub on embedded defaults.")
    p.add_argument("--port", type=int, default=8080, help="hub port (default 8080; 0 = any free port)")
    p.add_argument("--sim-port", type=int, default=0, help="simulator port (default: any free port)")
    args = p.parse_args(list(argv))
    _setup_logging("INFO")
    return _run(_demo(args.port, args.sim_port))


COMMANDS = {
    "serve": cmd_serve,
    "simulate": cmd_simulate,
    "demo": cmd_demo,
    "token": cmd_token,
    "check-config": cmd_check_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        sys.stdout.write(__doc__ or "")
        if args and args[0] not in ("-h", "--help"):
            sys.stderr.write(f"tickhub: unknown command {args[0]!r}\n")
            return 2
        return 0
    try:
        return COMMANDS[args[0]](args[1:])
    except ConfigError as exc:
        sys.stderr.write(f"tickhub: configuration error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
