"""The bridge asking the runtime for its history (R6) behind the endpoint actor: when a
storage regression is suspected, absence from an open report proves nothing until the
history's last page lands. Part of ``EndpointBridge`` (a mixin, like ``worker.hooks``);
moved out of ``worker.endpoint`` unchanged.
"""

from __future__ import annotations

from typing import Any

from caisey import wire
from worker.host import Effects

# How long absence inference (R5 replay, R4 firming) waits after the latest history request.
HISTORY_WAIT_MS = 10 * 60_000


class HistoryRequests:
    """History requests; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge.
    _meta: Any
    _set_meta: Any
    _ids: Any
    _pinging: Any
    config: Any

    def _awaiting_history(self, now_ms: int) -> bool:
        return int(self._meta("awaiting_history_until_ms") or 0) > now_ms

    def _history_reask_ms(self, now_ms: int) -> int | None:
        """When to ask a pinging agent for the history again (None: not waiting for it). Its
        full heartbeats, which ask again otherwise, come only every ``digest_every_ms``: the
        alarm asks every ``heartbeat_ms`` instead, as heartbeats did (the simulation found a
        lost history report converging only at the next full heartbeat, 6 min later)."""
        until = int(self._meta("awaiting_history_until_ms") or 0)
        if until <= now_ms or not self._pinging():
            return None
        return until - HISTORY_WAIT_MS + self.config.heartbeat_ms

    def _request_history(self, now_ms: int, effects: Effects) -> None:
        """Ask for the runtime's open and recently final prompts; until the history's last page
        lands, absence from an open report proves nothing (decided-and-acked prompts are absent
        from it by design), so R5 replays and R4 firming by absence wait. A history request or
        report can be lost like any frame: it is asked again on every hello and every heartbeat
        until it lands, and the wait is counted from the latest request, so it cannot
        lapse while the runtime is away (the simulation found a lost history report followed by
        a wrongly firmed ``expired`` for a prompt the user had approved)."""
        request = wire.StateRequest(
            id=self._ids.new(now_ms),
            reason="bridge storage regressed",
            include_final_since_ms=max(0, now_ms - self.config.seen_event_retention_ms),
        )
        effects.send.append(wire.encode(request))
        self._set_meta("awaiting_history_until_ms", str(now_ms + HISTORY_WAIT_MS))


__all__ = ["HISTORY_WAIT_MS", "HistoryRequests"]
