"""The endpoint actor's line in the fleet index (DESIGN §8 ``GET /api/endpoints``, §12).

``FleetLine`` is part of ``EndpointBridge`` (a mixin): after every event the actor derives its
line from the rows (``_tallies``: the alarm's minimums, the open count and the last outcome in
one statement) and pushes it only when it changed. Issue 14 adds, additively, the endpoint's
``time_zone`` and ``patterns``: the small summary of its statistics
(``EndpointStatsOps._stats_summary``) that the fleet index aggregates for ``GET /api/patterns``
without asking every endpoint on a read. The summary is computed only when the line is sent,
and the line changes when the statistics did (``stats_rev``).
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

    def _tallies(self) -> Row:
        """What every event ends with, read from the rows in one statement: the alarm's minimums
        and the fleet line's open count and last outcome.

        The prompt moments are read per ``final`` value so both use ``prompts_open``
        (a bare ``next_moment_ms IS NOT NULL`` scanned every prompt the endpoint ever had).
        """
        return self._q(
            "SELECT (SELECT MIN(next_moment_ms) FROM prompts WHERE final = 0) AS open_moment, "
            "(SELECT MIN(next_moment_ms) FROM prompts WHERE final = 1 AND next_moment_ms IS NOT NULL) AS final_moment, "
            "(SELECT MIN(next_attempt_at_ms) FROM outbox) AS attempt, "
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
        comparable = dict(
            summary,
            last_seen_ms=(summary["last_seen_ms"] or 0) // 60_000,
            time_zone=self._meta("time_zone"),
            stats_rev=self._meta("stats_rev"),
        )
        fingerprint = json.dumps(comparable, sort_keys=True)
        if not force and fingerprint == self._meta("fleet_fingerprint"):
            return None
        self._set_meta("fleet_fingerprint", fingerprint)
        summary["time_zone"] = self._meta("time_zone")
        summary["patterns"] = self._stats_summary(now_ms)
        return summary
