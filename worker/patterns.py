"""Fleet patterns: ``GET /api/patterns`` (issue 14, DESIGN §12), answered by the fleet index.

Each endpoint's actor pushes a small summary of its statistics with its fleet line
(``worker.fleet_line``; built by ``worker.endpoint_stats``: 90-day outcome totals, first vs
re-issued, p95 time to answer, its non-empty weekday × hour cells and its findings). The fleet
index keeps the latest one per endpoint in ``endpoint_patterns`` and answers from those rows
alone — one read, no call to any endpoint's object.

The findings are each endpoint's own (``caisey.stats.find_patterns``: minimum sample, margin
over the endpoint's rate elsewhere, binomial tail below ``ALPHA``), listed with the endpoint
they belong to, most significant first. The ranking orders endpoints by prompts missed
(counted − answered) over 90 days. The heat map sums every endpoint's cells, each in its own
local time.

``?client=`` and ``?site=`` keep the endpoints whose fleet line has that client / site
(issue 14 item 5 adds them to the line; a line without them has none, so it matches no filter).
"""

from __future__ import annotations

import json
from typing import Any

from caisey import stats, text
from caisey.clock import to_rfc3339
from caisey.localtime import WEEKDAYS
from worker import scope
from worker.api import ApiError, ApiRequest, ApiResponse, with_etag
from worker.host import SqlStore

PATTERNS_MIGRATION = [
    """CREATE TABLE IF NOT EXISTS endpoint_patterns (
        endpoint_id TEXT PRIMARY KEY, time_zone TEXT, summary TEXT, updated_at_ms INTEGER NOT NULL)""",
]
# A summary holds at most 168 cells of 7 small integers and 6 findings: a few KiB. Anything
# larger did not come from an actor of this version and is not stored.
MAX_SUMMARY_CHARS = 32_000
MAX_FILTER_CHARS = 128
RANKING_DEFAULT = 100
RANKING_MAX = 10_000  # the default endpoint quota
FINDINGS_DEFAULT = 500
FINDINGS_MAX = 60_000  # at most 6 findings per endpoint


def store_summary(store: SqlStore, line: dict[str, Any], now_ms: int) -> None:
    """Keep the zone and statistics summary an endpoint's line carries (if it carries them)."""
    if "patterns" not in line and "time_zone" not in line:
        return  # a line from an actor before issue 14, or a claim's placeholder
    summary = json.dumps(line.get("patterns"), separators=(",", ":"))
    if len(summary) > MAX_SUMMARY_CHARS:
        summary = "null"
    zone = line.get("time_zone")
    store.execute(
        "INSERT INTO endpoint_patterns (endpoint_id, time_zone, summary, updated_at_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (endpoint_id) DO UPDATE SET time_zone = excluded.time_zone, summary = excluded.summary, "
        "updated_at_ms = excluded.updated_at_ms",
        (str(line["endpoint_id"]), zone if isinstance(zone, str) else None, summary, now_ms),
    )


def _same_name(held: str | None, wanted: str) -> bool:
    """Client and site names compare without case, as the fleet list's filters do."""
    return held is not None and held.casefold() == wanted.casefold()


def _filter_param(req: ApiRequest, name: str) -> str | None:
    value = req.query.get(name)
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_FILTER_CHARS or text.check(value, name) is not None:
        raise ApiError(400, "invalid_field", f"{name} must be 1-{MAX_FILTER_CHARS} characters without controls")
    return value


def _limit_param(req: ApiRequest, name: str, default: int, most: int) -> int:
    raw = req.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= most:
        raise ApiError(400, "invalid_limit", f"{name} must be between 1 and {most}")
    return int(raw)


class PatternsCache:
    """The last answers of ``GET /api/patterns``, until a fleet line changes.

    An answer sums every endpoint's summary: seconds at 10,000 endpoints, on the one fleet
    index every call passes through (review F1). Between two line changes the answer for a
    query and a scope is the same, so it is computed once and a repeated read — or a 304 —
    costs a dictionary lookup. The fleet index calls ``invalidate`` on every line it stores.
    """

    MAX_ENTRIES = 64  # distinct (query, scope) pairs kept; more clears the lot

    def __init__(self) -> None:
        self.version = 0
        self.answers: dict[tuple[Any, ...], tuple[int, dict[str, Any], str]] = {}

    def invalidate(self) -> None:
        self.version += 1


def patterns(store: SqlStore, req: ApiRequest, now_ms: int, cache: PatternsCache) -> ApiResponse:
    """The answer, from ``cache`` when no line changed since it was computed."""
    clients = scope.of_request(req)
    key = (tuple(sorted(req.query.items())), None if clients is None else tuple(clients))
    held = cache.answers.get(key)
    if held is None or held[0] != cache.version:
        fresh = with_etag(ApiRequest("GET", req.path), _patterns_body(store, req))
        held = (cache.version, fresh.body, fresh.headers["etag"])
        if len(cache.answers) >= PatternsCache.MAX_ENTRIES:
            cache.answers.clear()
        cache.answers[key] = held
    _, body, etag = held
    if req.header("if-none-match") == etag:
        return ApiResponse(304, None, {"etag": etag})
    # ``as_of`` (when this read was answered) is left out of the ETag, as ``with_etag`` would.
    return ApiResponse(200, {"as_of": to_rfc3339(now_ms), **body}, {"etag": etag})


def _patterns_body(store: SqlStore, req: ApiRequest) -> dict[str, Any]:
    client, site = _filter_param(req, "client"), _filter_param(req, "site")
    limit = _limit_param(req, "limit", RANKING_DEFAULT, RANKING_MAX)
    most_findings = _limit_param(req, "findings", FINDINGS_DEFAULT, FINDINGS_MAX)
    rows = store.execute(
        "SELECT e.*, p.time_zone AS patterns_zone, p.summary AS patterns_summary "
        "FROM endpoints e LEFT JOIN endpoint_patterns p ON p.endpoint_id = e.endpoint_id ORDER BY e.endpoint_id"
    )
    total = stats.Tally()
    heat: dict[tuple[int, int], stats.Tally] = {}
    ranking: list[dict[str, Any]] = []
    findings: list[tuple[float, dict[str, Any]]] = []
    matched = 0
    clients = scope.of_request(req)  # a scoped token sees only its clients' endpoints (DESIGN §12)
    for row in rows:
        line_client, line_site = row.get("client"), row.get("site")
        if row.get("removed_at_ms") is not None or not scope.visible(clients, line_client):
            continue
        if (client is not None and not _same_name(line_client, client)) or (
            site is not None and not _same_name(line_site, site)
        ):
            continue
        matched += 1
        summary = json.loads(row["patterns_summary"]) if row["patterns_summary"] else None
        if not isinstance(summary, dict):
            continue
        who = {
            "endpoint_id": row["endpoint_id"],
            "label": row["label"],
            "client": line_client,
            "site": line_site,
            "time_zone": row["patterns_zone"],
        }
        tally = stats.Tally.of(summary.get("totals") or [0] * len(stats.OUTCOMES))
        total.add(tally)
        for cell in summary.get("cells") or []:
            heat.setdefault((int(cell[0]), int(cell[1])), stats.Tally()).add(stats.Tally.of(cell[2:]))
        endpoint_findings = summary.get("findings") or []
        for finding in endpoint_findings:
            findings.append((float(finding["evidence"]["p_value"]), {**who, **finding}))
        first, reissued = summary.get("first") or [0, 0], summary.get("reissued") or [0, 0]
        ranking.append(
            {
                **who,
                **tally.to_api(),
                "answer_rate": stats.rate(tally.answered, tally.counted),
                "first": {"counted": first[0], "answered": first[1]},
                "reissued": {"counted": reissued[0], "answered": reissued[1]},
                "answer_p95_ms": summary.get("answer_p95_ms"),
                "findings": len(endpoint_findings),
            }
        )
    ranking.sort(key=lambda r: (-r["missed"], -r["counted"], r["endpoint_id"]))
    findings.sort(key=lambda f: (f[0], f[1]["endpoint_id"]))
    body = {
        "filter": {"client": client, "site": site},
        "window_days": 90,
        "endpoints": matched,
        "endpoints_with_history": len(ranking),
        "totals": total.to_api(),
        "rules": {
            "min_sample": stats.MIN_SAMPLE,
            "min_rate": stats.MIN_RATE,
            "margin": stats.MARGIN,
            "alpha": stats.ALPHA,
            "max_band_hours": stats.MAX_BAND_HOURS,
        },
        "findings": [f for _, f in findings[:most_findings]],
        "findings_total": len(findings),
        "ranking": ranking[:limit],
        "heat": [
            {
                "weekday": WEEKDAYS[d],
                "hour": h,
                "counted": t.counted,
                "answered": t.answered,
                "missed": t.counted - t.answered,
                "unreachable": t.unreachable,
            }
            for (d, h), t in sorted(heat.items())
        ],
    }
    return body
