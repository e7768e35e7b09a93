"""Stand-in for Pyodide's ``js`` module (the JS global scope), limited to what a Worker here needs.

A name that is not emulated raises ``AttributeError`` / ``ImportError`` rather than pretending.
"""

from __future__ import annotations

from typing import Any

import _standin_runtime as _rt
from _standin_runtime import WebSocketPair


class Date:
    @staticmethod
    def now() -> int:
        """Milliseconds since the epoch, from the harness's virtual clock."""
        return _rt.CLOCK.now_ms


class Object:
    @staticmethod
    def fromEntries(entries: Any) -> _rt.JsObject:
        return _rt.JsObject({k: v for k, v in (tuple(e) for e in entries)})


class console:
    @staticmethod
    def log(*args: Any) -> None:
        print(*args)

    @staticmethod
    def error(*args: Any) -> None:
        import sys

        print(*args, file=sys.stderr)


__all__ = ["Date", "Object", "WebSocketPair", "console"]
