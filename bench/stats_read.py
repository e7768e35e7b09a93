"""What a read of an endpoint's statistics costs (issue 14): ``GET /api/endpoints/{eid}/stats``
through the actor (``EndpointBridge.http``) on an in-memory store, at several history lengths.

The history is built through the actor's own statistics hook (``sim/fleet_history.py``: each
prompt reconciled from its facts and counted at its receipt or end), spread over a year, with
the hourly housekeeping run at the end so counts older than ``KEEP_DAYS`` are gone, as they
would be. A read costs the stats rows of the last 90 days — at most 90 × (48 cells + 267 bins)
— so it grows with the history only until those rows are all present (a few thousand prompts
in 90 days), then stays flat. ``rows`` says how many were read.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from sim import fleet_history
from worker.api import ApiRequest, match
from worker.endpoint_stats import KEEP_DAYS

YEAR_DAYS = 365
DAY_MS = 86_400_000


def _endpoint(prompts: int, now_ms: int, seed: int = 1) -> fleet_history._Endpoint:
    rng = random.Random(seed)
    planted = fleet_history.Planted("bench-stats", "lunch", "Europe/Berlin")
    endpoint = fleet_history._Endpoint(planted, seed)
    start = now_ms - YEAR_DAYS * DAY_MS
    for created in sorted(start + rng.randrange(YEAR_DAYS * DAY_MS) for _ in range(prompts)):
        endpoint.prompt(rng, created)
    actor = endpoint.actor
    actor._event(lambda: actor._stats_housekeeping(now_ms))
    return endpoint


def _one(prompts: int, reads: int) -> dict[str, Any]:
    now_ms = 1_800_000_000_000
    endpoint = _endpoint(prompts, now_ms)
    actor = endpoint.actor
    path = "/api/endpoints/bench-stats/stats"
    route, request = match("GET", path), ApiRequest("GET", path)
    samples = []
    for i in range(reads):
        t0 = time.perf_counter()
        response, _ = actor.http(route, request, now_ms + i, False)
        samples.append(time.perf_counter() - t0)
        assert response.status == 200, response.body
    samples.sort()
    rows = actor.store.execute("SELECT (SELECT COUNT(*) FROM stats_cells) + (SELECT COUNT(*) FROM stats_latency) AS n")[
        0
    ]["n"]
    return {
        "prompts": prompts,
        "reads": reads,
        "rows": int(rows),
        "us_mean": round(statistics.fmean(samples) * 1e6, 1),
        "us_p50": round(samples[len(samples) // 2] * 1e6, 1),
        "us_p99": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6, 1),
    }


def measure(histories: tuple[int, ...] = (100, 10_000), reads: int = 200) -> dict[str, Any]:
    """µs per stats read at each history length (prompts over a year; kept: ``KEEP_DAYS``)."""
    return {"keep_days": KEEP_DAYS, "sizes": [_one(n, reads) for n in histories]}


if __name__ == "__main__":
    for size in measure()["sizes"]:
        print(size)
