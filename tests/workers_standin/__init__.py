"""A stand-in for the Cloudflare Python Workers runtime, for testing ``worker/entry.py``.

This directory, put first on ``sys.path`` (``activate()``), provides the modules a Python
Worker imports — ``workers``, ``pyodide.ffi``, ``js`` — behaving as
``docs/WORKERS_RUNTIME.md`` records. ``harness.Harness`` loads ``worker/entry.py`` with the
bindings ``wrangler.toml`` declares and drives it: HTTP requests, agent WebSockets, a virtual
clock and alarms, hibernation. README.md says what it reproduces and what it does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

PATH = str(Path(__file__).resolve().parent)


def activate() -> None:
    """Put the stand-in's modules first on ``sys.path`` (idempotent)."""
    if sys.path[:1] != [PATH]:
        if PATH in sys.path:
            sys.path.remove(PATH)
        sys.path.insert(0, PATH)
