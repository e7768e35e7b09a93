"""The endpoint actor's line in the fleet index (DESIGN §8 ``GET /api/endpoints``, §12).

``FleetLine`` is part of ``EndpointBridge`` (a mixin): after every event the actor derives its
line from the rows (``_tallies``: the alarm's minimums, the open count and the last outcome in
one statement) and pushes it only when it changed. Issue 14 adds, additively, the endpoint's
``time_zone`` and ``patterns``: the small summary of its statistics
(``EndpointStatsOps._stats_summary``) that the fleet index aggregates for ``GET /api/patterns``
without asking every endpoint on a read. The summary is recomputed when the statistics
changed (``stats_rev``), at most once a minute (``_patterns``; the alarm takes up a change made
inside the minute), and the line changes when it was.
"""

from __future__ import annotations

import json
from typing import Any

from worker.host import Row


class FleetLine:
    """The fleet line of one endpoint; mixed into ``EndpointBridge``."""

    _q: Any
    _meta: Any
    _set_meta: Any
    _stats_summary: Any
    _record_fields: Any
    endpoint_id: Any

    _line_stale = False  # the fleet index may hold anything for this endpoint (``rewrite_next_line``)
    # The last fingerprint made, with the values it was made of: most events leave them as they
    # were, and comparing the values costs less than encoding them. A pure function's memo (no
    # row behind it): each value keeps its type (``online`` a bool, the times ints), so equal
    # values encode to the same text.
    _fingerprint_memo: tuple[dict[str, Any], str] | None = None

    def rewrite_next_line(self) -> None:
        """The next event sends the fleet line even if unchanged here: a host that restarted
        marked every endpoint offline in the fleet index, which this actor's fingerprint does
        not know."""
        self._line_stale = True

    def _tallies(self) -> Row:
        """What every event ends with, read from the rows in one statement: the alarm's minimums
        (the outbox, prompt moments, webhook events and deliveries, escalations, window ends) and
        the fleet line's open count and last outcome.

        The prompt moments are read per ``final`` value so both use ``prompts_open``
        (a bare ``next_moment_ms IS NOT NULL`` scanned every prompt the endpoint ever had).
        """
        return self._q(
            "SELECT (SELECT MIN(next_moment_ms) FROM prompts WHERE final = 0) AS open_moment, "
            "(SELECT MIN(next_moment_ms) FROM prompts WHERE final = 1 AND next_moment_ms IS NOT NULL) AS final_moment, "
            "(SELECT MIN(next_attempt_at_ms) FROM outbox) AS attempt, "
            "(SELECT MIN(at_ms) FROM webhook_events WHERE expanded = 0) AS hook_pending, "
            "(SELECT MIN(next_at_ms) FROM webhook_deliveries) AS hook_retry, "
            "(SELECT MIN(escalate_at_ms) FROM prompts WHERE escalate_at_ms IS NOT NULL) AS hook_escalate, "
            "(SELECT MIN(ends_at_ms) FROM windows WHERE active = 1) AS window_ends, "
            "(SELECT COUNT(*) FROM prompts WHERE final = 0) AS open_prompts, "
            "last.prompt_id AS last_id, last.state AS last_state, last.final_at_ms AS last_at_ms "
            "FROM (SELECT 1) LEFT JOIN (SELECT prompt_id, state, final_at_ms FROM prompts WHERE final = 1 "
            "ORDER BY final_at_ms DESC, prompt_id DESC LIMIT 1) AS last ON 1"
        )[0]

    def _fleet_summary(
        self, now_ms: int, connected: bool, *, force: bool = False, tallies: Row | None = None
    ) -> dict[str, Any] | None:
        """The fleet index's line for this endpoint, when it changed (DESIGN §8 ``GET /api/endpoints``)."""
        endpoint_id = self.endpoint_id
        if endpoint_id is None:
            return None
        force, self._line_stale = force or self._line_stale, False
        tallies = tallies or self._tallies()
        last_id = tallies["last_id"]
        last_seen = self._meta("last_seen_ms")
        summary = {
            "endpoint_id": endpoint_id,
            "label": self._meta("label") or "",
            "online": connected,
            "last_seen_ms": int(last_seen) if last_seen else None,
            "open_prompts": int(tallies["open_prompts"]),
            "last_outcome": (
                {"prompt_id": last_id, "state": tallies["last_state"], "at_ms": tallies["last_at_ms"]}
                if last_id is not None
                else None
            ),
            **self._record_fields(),
        }
        # last_seen moves on every heartbeat; the fleet needs it to the minute, not to the frame.
        patterns = self._patterns(now_ms)
        last_outcome = summary["last_outcome"]
        comparable = dict(
            summary,
            last_outcome=dict(last_outcome) if last_outcome else None,  # not shared with the host's copy
            last_seen_ms=(summary["last_seen_ms"] or 0) // 60_000,
            time_zone=self._meta("time_zone"),
            stats_rev=self._meta(PATTERNS_REV),
        )
        memo = self._fingerprint_memo
        if memo is not None and memo[0] == comparable:  # see ``_fingerprint_memo``
            fingerprint = memo[1]
        else:
            fingerprint = json.dumps(comparable, sort_keys=True)
            self._fingerprint_memo = (comparable, fingerprint)
        if not force and fingerprint == self._meta("fleet_fingerprint"):
            return None
        self._set_meta("fleet_fingerprint", fingerprint)
        summary["time_zone"] = self._meta("time_zone")
        summary["patterns"] = json.loads(patterns)
        return summary

    def _patterns(self, now_ms: int) -> str:
        """The patterns summary (JSON) the line carries: recomputed when the statistics changed,
        at most once per ``PATTERNS_REFRESH_MS``, else the stored one.

        Computing it (the 90-day cells and the pattern search) costs a millisecond or more on
        an endpoint with a history, and the statistics change with every final prompt: done
        per event it was most of a round trip's CPU. A change inside the interval is taken up
        by the alarm (``patterns_due_ms``), so the fleet view lags by at most the interval."""
        stored = self._meta(PATTERNS_JSON)
        rev = self._meta("stats_rev")
        if stored is not None and rev == self._meta(PATTERNS_REV):
            return stored
        refreshed = self._meta(PATTERNS_AT)
        if stored is not None and refreshed is not None and now_ms - int(refreshed) < PATTERNS_REFRESH_MS:
            return stored
        fresh = json.dumps(self._stats_summary(now_ms), separators=(",", ":"))
        self._set_meta(PATTERNS_JSON, fresh)
        self._set_meta(PATTERNS_REV, rev)
        # An endpoint with no statistics yet costs nothing to summarise: its first outcome is
        # summarised at once, not a minute after its enrollment.
        self._set_meta(PATTERNS_AT, str(now_ms) if rev is not None else None)
        return fresh

    def patterns_due_ms(self) -> int | None:
        """When a statistics change the line does not show yet will be taken up (alarm)."""
        refreshed = self._meta(PATTERNS_AT)
        if refreshed is None or self._meta("stats_rev") == self._meta(PATTERNS_REV):
            return None
        return int(refreshed) + PATTERNS_REFRESH_MS


# The patterns summary the fleet line carries is recomputed at most this often (see _patterns).
PATTERNS_REFRESH_MS = 60_000
# meta keys: that summary as last computed, the statistics revision it reflects, and when.
PATTERNS_JSON = "patterns_json"
PATTERNS_REV = "patterns_rev"
PATTERNS_AT = "patterns_at_ms"
