"""The small interface an actor needs from its host (DESIGN §2).

An actor (``EndpointBridge``, ``FleetIndex``) owns one SQLite database and nothing else.
It never sleeps, never sends and never arms timers itself: each call returns ``Effects`` —
frames for the agent socket, the one alarm time, a summary for the fleet index — and the
host performs them (the websockets pattern: feed the core → drain → flush → arm).

Both hosts give SQL through ``SqlStore``: the local host wraps ``sqlite3``, the Cloudflare
host wraps ``ctx.storage.sql`` (whose rows are JsProxy objects and NULL is ``jsnull``; the
adapter turns rows into plain dicts with ``None``). Values bound must be ``None``, ``int``
(within ±2**53), ``float`` or ``str`` — bools are bound as 0/1 by the actors themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
SqlValue = None | int | float | str
Row = dict[str, Any]


class SqlStore(Protocol):
    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        """Run one statement; rows as plain dicts (NULL → None)."""
        ...

    def transaction(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` atomically; an exception rolls back every write and propagates."""
        ...


@dataclass(slots=True)
class Effects:
    """What the host must do after an actor call, in this order: send, close, arm, notify."""

    send: list[str] = field(default_factory=list)  # text frames to the agent's socket
    close_agent: tuple[int, str] | None = None  # (code, reason): close the agent socket
    alarm_at_ms: int | None = None  # the one alarm (None: no alarm needed)
    fleet_summary: dict[str, Any] | None = None  # POST to the fleet index when set
    # Issue 13 (``worker.hooks``): webhook attempts to perform outside the event, then feed
    # back with ``webhook_results``; and delivery outcomes for the fleet's delivery log.
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    webhook_reports: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        self.send.extend(other.send)
        self.close_agent = other.close_agent or self.close_agent
        self.alarm_at_ms = other.alarm_at_ms
        self.fleet_summary = other.fleet_summary or self.fleet_summary
        self.webhooks.extend(other.webhooks)
        self.webhook_reports.extend(other.webhook_reports)


class Entropy:
    """The actors' only source of randomness: ids, secrets and backoff jitter.

    Production uses ``secrets`` (call only at request time: the Workers runtime refuses
    entropy at import). A simulation passes a seeded ``random.Random`` so every run replays.
    """

    def __init__(self, rng: Any | None = None) -> None:
        self._rng = rng

    def bits(self, n: int) -> int:
        if self._rng is not None:
            return int(self._rng.getrandbits(n))
        import secrets

        return secrets.randbits(n)

    def uniform(self) -> float:
        return float(self.bits(53)) / float(1 << 53)

    def token(self, prefix: str, nbytes: int = 32) -> str:
        """An unguessable bearer secret, URL-safe, with a readable prefix."""
        import base64

        raw = self.bits(nbytes * 8).to_bytes(nbytes, "big")
        return prefix + base64.urlsafe_b64encode(raw).decode().rstrip("=")
