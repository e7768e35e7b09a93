"""Caisey protocol core: sans-I/O, standard library only, runs on CPython and Pyodide.

Modules, one concept each:

- ``facts``   — the facts each authority writes (console, bridge, runtime)
- ``prompt``  — prompt states, the transition table and ``reconcile`` (DESIGN §3–§4, R1–R7)
- ``wire``    — the agent ↔ bridge frame schema with its bounds (DESIGN §7)
- ``digest``  — the held-state digest both sides compute for heartbeats (DESIGN §6)
- ``backoff`` — full-jitter retry policy with an injected random source (DESIGN §5)
- ``ids``     — sortable ids made from an injected clock and random source
- ``clock``   — RFC 3339 formatting and the NTP-style clock-offset estimator
- ``errors``  — the two error types: a bad peer vs. our own misuse
"""

__version__ = "0.1.0"
