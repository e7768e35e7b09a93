"""Errors with a direction (after h11).

``ProtocolError`` means a peer sent something we refuse; it carries a stable ``code`` that
hosts put on the wire or into an HTTP error body. ``UsageError`` means our own code called
the core wrongly — a bug, never a peer's fault. Any other exception escaping the core is a bug.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A peer's input was refused. ``code`` is machine-readable, ``message`` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class UsageError(Exception):
    """The core was called in a way its contract forbids (a bug in the caller)."""
