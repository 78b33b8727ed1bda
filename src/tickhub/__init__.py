"""tickhub: a market-data WebSocket hub.

One upstream subscription per exchange stream, fanned out to many clients by a compiled
(Cython) hot path on uvloop + picows. See README.md for the architecture.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
