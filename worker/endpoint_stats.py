"""An endpoint's statistics, kept incrementally in its own actor's store (issue 14, DESIGN §12).

``EndpointStatsOps`` is part of ``EndpointBridge`` (a mixin, like ``EndpointRecord``): the
actor calls ``_observe_stats`` from ``_refresh`` — wherever a prompt's facts were committed
and its view derived — so each prompt is counted as it is delivered, presented, answered and
ends, never by scanning the history on a read. What the numbers mean is ``caisey.stats``.

Tables (``worker.endpoint_schema`` version 5), all bounded:

- ``stats_prompts``: per prompt, where it is counted (local day, hour, first or re-issued),
  its counted outcome and which latencies were taken — so a replaced provisional final moves
  its count instead of adding one, and a sample is never taken twice. Rows older than
  ``KEEP_DAYS`` go at housekeeping (a prompt cannot change after 7 days + 24 h firming).
- ``stats_cells``: outcome counts per (local day, hour, re-issued): at most 24 × 2 rows a day.
- ``stats_latency``: per (local day, metric, bin) a count (``caisey.stats.latency_bin``):
  at most 3 × 89 rows a day.

Cells and bins older than ``KEEP_DAYS`` go at housekeeping, so a read costs at most
``KEEP_DAYS`` × (48 + 267) rows whatever the history's length (``bench/stats_read.py``).

The local day and hour are the prompt's creation in the zone the agent reported
(``caisey.localtime``), read when the prompt is first counted; a later change of zone does not
move what was counted.
"""

from __future__ import annotations

from typing import Any

from caisey import stats
from caisey.clock import to_rfc3339
from caisey.localtime import WEEKDAYS, Zone, day_label, local_moment, resolve
from caisey.prompt import PromptView
from worker.api import ApiError, ApiRequest, ApiResponse, Route, with_etag
from worker.host import Effects

# The longest window read (90 days) plus a margin; older counts are dropped at housekeeping.
WINDOWS_DAYS = (30, 90)
KEEP_DAYS = 100
WEEKS_OF_P95 = 13

_FLAG = {"deliver": 1, "present": 2, "answer": 4}
_DAY_MS = 86_400_000

STATS_MIGRATION = [
    """CREATE TABLE IF NOT EXISTS stats_prompts (
        prompt_id TEXT PRIMARY KEY, day INTEGER NOT NULL, hour INTEGER NOT NULL, reissued INTEGER NOT NULL,
        outcome TEXT, latencies INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS stats_prompts_day ON stats_prompts (day)",
    """CREATE TABLE IF NOT EXISTS stats_cells (
        day INTEGER NOT NULL, hour INTEGER NOT NULL, reissued INTEGER NOT NULL,
        answered INTEGER NOT NULL DEFAULT 0, unattended INTEGER NOT NULL DEFAULT 0,
        ignored INTEGER NOT NULL DEFAULT 0, unreachable INTEGER NOT NULL DEFAULT 0,
        withdrawn INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, hour, reissued))""",
    """CREATE TABLE IF NOT EXISTS stats_latency (
        day INTEGER NOT NULL, metric TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (day, metric, bin))""",
]

# Column names interpolated into SQL come only from this fixed tuple.
assert stats.OUTCOMES == ("answered", "unattended", "ignored", "unreachable", "withdrawn")


class EndpointStatsOps:
    """Statistics of one endpoint; mixed into ``EndpointBridge``."""

    _q: Any
    _meta: Any
    _set_meta: Any
    _require_registered: Any
    _stats_rows: dict[str, Any]

    # --- the endpoint's zone ---------------------------------------------------------------

    def _zone(self) -> Zone:
        return resolve(self._meta("time_zone"))

    def _set_time_zone(self, name: str | None) -> None:
        """The agent reported its zone (hello or heartbeat; the wire checked its shape)."""
        if name is not None and name != self._meta("time_zone"):
            self._set_meta("time_zone", name)

    # --- counting ----------------------------------------------------------------------------

    def _observe_stats(self, view: PromptView, now_ms: int) -> None:
        """Count what ``view`` adds: latencies first known, an outcome reached or replaced."""
        latencies = stats.latencies_of(view)
        outcome = stats.outcome_of(view)
        if not latencies and outcome is None:
            return  # open and not yet delivered: nothing to count (no read either)
        if view.created_at_ms < now_ms - KEEP_DAYS * _DAY_MS:
            return  # older than anything kept (an adopted prompt's claimed age, say)
        if view.prompt_id in self._stats_rows:  # remembered (``worker.actor_memory``)
            known = self._stats_rows[view.prompt_id]
        else:
            rows = self._q(
                "SELECT day, hour, reissued, outcome, latencies FROM stats_prompts WHERE prompt_id = ?", view.prompt_id
            )
            row = rows[0] if rows else None
            known = None
            if row is not None:
                known = (int(row["day"]), int(row["hour"]), int(row["reissued"]), row["outcome"], int(row["latencies"]))
        if known is not None:
            day, hour, reissued, counted, flags = known
        else:
            moment = local_moment(view.created_at_ms, self._zone())
            day, hour, reissued = moment.day, moment.hour, 1 if view.supersedes else 0
            counted, flags = None, 0
        new_flags = flags
        for metric, duration in latencies.items():
            if not flags & _FLAG[metric]:
                self._q(
                    "INSERT INTO stats_latency (day, metric, bin, n) VALUES (?, ?, ?, 1) "
                    "ON CONFLICT (day, metric, bin) DO UPDATE SET n = n + 1",
                    day,
                    metric,
                    stats.latency_bin(duration),
                )
                new_flags |= _FLAG[metric]
        if outcome != counted and outcome is not None:
            if counted in stats.OUTCOMES:
                self._stats_bump(day, hour, reissued, counted, -1)
            self._stats_bump(day, hour, reissued, outcome, +1)
        if known is not None and new_flags == flags and outcome == counted:
            self._stats_rows[view.prompt_id] = known
            return
        self._q(
            "INSERT INTO stats_prompts (prompt_id, day, hour, reissued, outcome, latencies) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (prompt_id) DO UPDATE SET outcome = excluded.outcome, latencies = excluded.latencies",
            view.prompt_id,
            day,
            hour,
            reissued,
            outcome,
            new_flags,
        )
        self._stats_rows[view.prompt_id] = (day, hour, reissued, outcome, new_flags)  # the row now
        if outcome != counted:
            # The fleet line's summary is due again. Only an outcome moves it (the answer's
            # latency lands with its outcome): a receipt alone pushes no line, as before.
            self._set_meta("stats_rev", str(now_ms))

    def _stats_bump(self, day: int, hour: int, reissued: int, outcome: str, delta: int) -> None:
        assert outcome in stats.OUTCOMES
        self._q(
            f"INSERT INTO stats_cells (day, hour, reissued, {outcome}) VALUES (?, ?, ?, ?) "
            f"ON CONFLICT (day, hour, reissued) DO UPDATE SET {outcome} = {outcome} + excluded.{outcome}",
            day,
            hour,
            reissued,
            delta,
        )

    def _stats_housekeeping(self, now_ms: int) -> None:
        oldest = local_moment(now_ms, self._zone()).day - KEEP_DAYS
        self._stats_rows.clear()  # rows remembered may go now
        for table in ("stats_prompts", "stats_cells", "stats_latency"):
            self._q(f"DELETE FROM {table} WHERE day < ?", oldest)

    # --- reading -----------------------------------------------------------------------------

    def _stats_outcomes(self, since: int) -> stats.Tally:
        sums = ", ".join(f"COALESCE(SUM({name}), 0) AS {name}" for name in stats.OUTCOMES)
        return _row_tally(self._q(f"SELECT {sums} FROM stats_cells WHERE day >= ?", since)[0])

    def _stats_grid(self, since: int) -> tuple[dict[tuple[int, int], stats.Tally], stats.Tally, stats.Tally]:
        """Weekday × hour tallies since a local day, and first / re-issued totals: summed by
        SQLite over at most 48 rows a day, returning at most 336."""
        sums = ", ".join(f"SUM({name}) AS {name}" for name in stats.OUTCOMES)
        rows = self._q(
            f"SELECT (day + 3) % 7 AS weekday, hour, reissued, {sums} FROM stats_cells WHERE day >= ? "
            "GROUP BY weekday, hour, reissued",
            since,
        )
        grid: dict[tuple[int, int], stats.Tally] = {}
        first, reissued = stats.Tally(), stats.Tally()
        for row in rows:
            tally = _row_tally(row)
            grid.setdefault((int(row["weekday"]), int(row["hour"])), stats.Tally()).add(tally)
            (reissued if int(row["reissued"]) else first).add(tally)
        return grid, first, reissued

    def _stats_percentiles(self, since: int) -> dict[str, dict[str, int | None]]:
        """n, p50 and p95 of each metric since a local day (one statement for all three)."""
        histograms: dict[str, dict[int, int]] = {metric: {} for metric in stats.METRICS}
        for row in self._q(
            "SELECT metric, bin, SUM(n) AS n FROM stats_latency WHERE day >= ? GROUP BY metric, bin", since
        ):
            histograms.setdefault(row["metric"], {})[int(row["bin"])] = int(row["n"])
        return {
            metric: {
                "n": sum(histogram.values()),
                "p50_ms": stats.percentile_ms(histogram, 0.5),
                "p95_ms": stats.percentile_ms(histogram, 0.95),
            }
            for metric, histogram in histograms.items()
            if metric in stats.METRICS
        }

    def _stats_weekly_p95(self, today: int) -> list[dict[str, Any]]:
        """p95 time to answer per week (7 local days ending ``today``, and the 12 before)."""
        rows = self._q(
            "SELECT (? - day) / 7 AS week, bin, SUM(n) AS n FROM stats_latency "
            "WHERE metric = 'answer' AND day > ? AND day <= ? GROUP BY week, bin",
            today,
            today - 7 * WEEKS_OF_P95,
            today,
        )
        weeks: dict[int, dict[int, int]] = {}
        for row in rows:
            weeks.setdefault(int(row["week"]), {})[int(row["bin"])] = int(row["n"])
        out = []
        for week in range(WEEKS_OF_P95 - 1, -1, -1):
            histogram = weeks.get(week, {})
            out.append(
                {
                    "week_start": day_label(today - 7 * week - 6),
                    "n": sum(histogram.values()),
                    "p95_ms": stats.percentile_ms(histogram, 0.95),
                }
            )
        return out

    def _op_get_stats(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        endpoint_id = self._require_registered(route.endpoint_id)
        days = _days_param(req)
        zone = self._zone()
        today = local_moment(now_ms, zone).day
        body: dict[str, Any] = {
            "endpoint_id": endpoint_id,
            "time_zone": zone.to_api(),
            "as_of": to_rfc3339(now_ms),
            "local_day": day_label(today),
            "days": days,
        }
        body["outcomes"] = {f"{w}d": self._stats_outcomes(today - w + 1).to_api() for w in WINDOWS_DAYS}
        grid, first, reissued = self._stats_grid(today - days + 1)
        by_hour, by_weekday = [stats.Tally() for _ in range(24)], [stats.Tally() for _ in range(7)]
        heat = []
        for (weekday, hour), tally in sorted(grid.items()):
            by_hour[hour].add(tally)
            by_weekday[weekday].add(tally)
            heat.append(_rates(tally, weekday=WEEKDAYS[weekday], hour=hour))
        body["by_hour"] = [_rates(t, hour=h) for h, t in enumerate(by_hour)]
        body["by_weekday"] = [_rates(t, weekday=WEEKDAYS[d]) for d, t in enumerate(by_weekday)]
        body["heat"] = heat
        body["first_vs_reissued"] = {"first": _rates(first), "reissued": _rates(reissued)}
        windows = {w: self._stats_percentiles(today - w + 1) for w in WINDOWS_DAYS}
        body["latency"] = {metric: {f"{w}d": windows[w][metric] for w in WINDOWS_DAYS} for metric in stats.METRICS}
        body["answer_p95_by_week"] = self._stats_weekly_p95(today)
        body["findings"] = [f.to_api() for f in stats.find_patterns(grid, first, reissued)]
        return with_etag(req, body, volatile=("as_of",))

    def _stats_summary(self, now_ms: int) -> dict[str, Any]:
        """The small summary the fleet line carries (``worker.patterns``): 90-day totals,
        first/re-issued, p95 time to answer, the non-empty weekday × hour cells, findings."""
        zone = self._zone()
        today = local_moment(now_ms, zone).day
        since = today - max(WINDOWS_DAYS) + 1
        grid, first, reissued = self._stats_grid(since)
        total = stats.Tally()
        for tally in grid.values():
            total.add(tally)
        return {
            "days": max(WINDOWS_DAYS),
            "time_zone": zone.effective,
            "totals": total.as_list(),
            "first": [first.counted, first.answered],
            "reissued": [reissued.counted, reissued.answered],
            "answer_p95_ms": self._stats_percentiles(since)["answer"]["p95_ms"],
            "cells": [[d, h, *t.as_list()] for (d, h), t in sorted(grid.items())],
            "findings": [f.to_api() for f in stats.find_patterns(grid, first, reissued)],
        }


def _days_param(req: ApiRequest) -> int:
    raw = req.query.get("days")
    if raw is None:
        return max(WINDOWS_DAYS)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= max(WINDOWS_DAYS):
        raise ApiError(400, "invalid_field", f"days must be a whole number from 1 to {max(WINDOWS_DAYS)}")
    return int(raw)


def _row_tally(row: Any) -> stats.Tally:
    return stats.Tally.of(int(row[name]) for name in stats.OUTCOMES)


def _rates(tally: stats.Tally, **where: Any) -> dict[str, Any]:
    return {
        **where,
        "counted": tally.counted,
        "answered": tally.answered,
        "missed": tally.counted - tally.answered,
        "unreachable": tally.unreachable,
        "answer_rate": stats.rate(tally.answered, tally.counted),
    }
