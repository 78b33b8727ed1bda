"""``tickhub simulate``: run the Binance-compatible simulator until SIGINT/SIGTERM.

The main ``tickhub`` CLI delegates to :func:`main`; ``python -m tickhub.sim.cli`` runs it
directly. The first line on stdout is ``listening on ws://<host>:<port>`` so scripts that
start it with ``--port 0`` can read the port back.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop

from tickhub.sim.config import SimConfig
from tickhub.sim.server import Simulator

__all__ = ["build_parser", "main"]

log = logging.getLogger("tickhub.sim.cli")
_DEFAULTS = SimConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickhub simulate",
        description="Binance-compatible spot market-data simulator (WebSocket streams, "
                    "SUBSCRIBE protocol, /api/v3/ping|time|depth) with seeded data.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=9443,
                        help="TCP port, 0 picks a free one (default %(default)s)")
    parser.add_argument("--symbols", default=",".join(_DEFAULTS.symbols),
                        help="comma-separated lowercase symbols (default %(default)s)")
    parser.add_argument("--rate", type=float, default=_DEFAULTS.rate,
                        help="events/s per real-time stream and book changes/s per symbol "
                             "(default %(default)s)")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                        help="generator seed (default %(default)s)")
    parser.add_argument("--ping-interval", type=float, default=_DEFAULTS.ping_interval,
                        help="seconds between server pings, 0 disables (default %(default)s)")
    parser.add_argument("--pong-timeout", type=float, default=_DEFAULTS.pong_timeout,
                        help="close after this many seconds without a pong (default %(default)s)")
    parser.add_argument("--max-streams", type=int, default=_DEFAULTS.max_streams_per_connection,
                        help="streams per connection, 0 = unlimited (default %(default)s)")
    parser.add_argument("--max-incoming", type=int, default=_DEFAULTS.max_incoming_per_second,
                        help="incoming messages/s per connection before it is closed, "
                             "0 = unlimited (default %(default)s)")
    parser.add_argument("--max-age", type=float, default=_DEFAULTS.max_connection_age,
                        help="connection lifetime in seconds, 0 = unlimited (default %(default)s)")
    parser.add_argument("--tick-interval", type=float, default=_DEFAULTS.tick_interval,
                        help="generator timer period in seconds (default %(default)s)")
    parser.add_argument("--burst", type=int, default=_DEFAULTS.burst,
                        help="real-time events per socket write, 0 = whatever is due "
                             "(default %(default)s)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="logging level (default %(default)s)")
    return parser


def _config(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        symbols=tuple(s.strip() for s in args.symbols.split(",") if s.strip()),
        rate=args.rate,
        seed=args.seed,
        ping_interval=args.ping_interval,
        pong_timeout=args.pong_timeout,
        max_streams_per_connection=args.max_streams,
        max_incoming_per_second=args.max_incoming,
        max_connection_age=args.max_age,
        tick_interval=args.tick_interval,
        burst=args.burst,
    )


async def _serve(config: SimConfig, host: str, port: int) -> None:
    sim = Simulator(config)
    await sim.start(host, port)
    print(f"listening on {sim.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (without the program name), serve until a signal; return the exit code.

    0 after SIGINT/SIGTERM or ``--help``; 2 for invalid arguments; 1 if the port cannot
    be bound.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage or the error
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":  # picows logs every accepted connection at INFO
        logging.getLogger("tickhub.sim.picows").setLevel(logging.WARNING)
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"tickhub simulate: error: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(_serve(config, args.host, args.port))
    except OSError as exc:
        print(f"tickhub simulate: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
