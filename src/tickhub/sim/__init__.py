"""``tickhub simulate``: a Binance-compatible spot market-data exchange simulator.

It serves ``/ws`` and ``/stream`` market streams, the live SUBSCRIBE protocol and the few
REST endpoints clients call at start (``/api/v3/ping``, ``/time``, ``/depth``), with
deterministic seeded data and fault injection, so the hub's demo, tests and benchmarks
never need the real exchange::

    from tickhub.sim import Simulator, SimConfig

    async with Simulator(SimConfig(symbols=("btcusdt",), rate=100.0)) as sim:
        print(sim.url)            # ws://127.0.0.1:<port>
"""

from tickhub.sim.config import SimConfig
from tickhub.sim.server import Simulator

__all__ = ["SimConfig", "Simulator"]
