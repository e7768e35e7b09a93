"""Issue 14: a realistic fleet history (sim/fleet_history.py) — every planted habit is found,
in plain words with its evidence, and the control group shows no finding.

200 endpoints by default (about 20 s); ``CAISEY_FLEET_ENDPOINTS=2000`` runs the full-size
fleet of the issue (a few minutes).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import pytest

from sim.fleet_history import History, build

ENDPOINTS = int(os.environ.get("CAISEY_FLEET_ENDPOINTS", "200"))
# Building takes about 0.15 s an endpoint on a quiet core; leave room for a loaded machine.
pytestmark = [pytest.mark.timeout(300 + ENDPOINTS)]


@pytest.fixture(scope="module")
def history() -> History:
    return build(ENDPOINTS, seed=1)


def _findings(history: History) -> dict[str, list[dict[str, Any]]]:
    body = history.patterns(limit="10000", findings="60000")
    assert body["findings_total"] == len(body["findings"])  # none cut off at this size
    by_endpoint: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for finding in body["findings"]:
        by_endpoint[finding["endpoint_id"]].append(finding)
    return by_endpoint


def _covers(finding: dict[str, Any], hour: int) -> bool:
    start, end = finding["hours"]
    return any((h % 24) == hour for h in range(start, end))


def _expected(kind: str, finding: dict[str, Any]) -> bool:
    if kind == "lunch":
        return (
            finding["kind"] == "misses_by_hour"
            and _covers(finding, 12)
            and finding["hours"][1] - finding["hours"][0] <= 2
        )
    if kind == "first_ignorer":
        return finding["kind"] == "first_prompt"
    if kind == "night_shift":
        # The working day, possibly with a neutral hour either side (07:00, 18:00-20:00: 15 % missed).
        band = {h % 24 for h in range(*finding["hours"])} if finding["kind"] == "misses_by_hour" else set()
        return set(range(9, 17)) <= band <= set(range(6, 20))
    if kind == "sleeper":
        return finding["kind"] == "unreachable" and finding["weekday"] is None and _covers(finding, 23)
    if kind == "monday":
        # Monday morning (prompts land there from 06:00; an hour before may hold none).
        if finding["kind"] != "unreachable" or finding["weekday"] != "Monday":
            return False
        return {6, 7, 8} <= set(range(*finding["hours"])) <= set(range(12))
    raise AssertionError(kind)


def test_every_planted_habit_is_found_and_the_control_group_shows_none(history: History) -> None:
    found = _findings(history)
    kinds = {e.kind for e in history.endpoints}
    assert kinds == {"control", "lunch", "first_ignorer", "night_shift", "sleeper", "monday"}
    for endpoint in history.endpoints:
        findings = found.get(endpoint.endpoint_id, [])
        if endpoint.kind == "control":
            assert findings == [], (endpoint, findings)
            continue
        assert any(_expected(endpoint.kind, f) for f in findings), (endpoint, findings)
    assert sum(e.kind == "control" for e in history.endpoints) >= ENDPOINTS * 0.35


def test_findings_read_in_plain_words_with_their_evidence(history: History) -> None:
    found = _findings(history)
    lunch = [
        next(f for f in found[e.endpoint_id] if f["kind"] == "misses_by_hour")
        for e in history.endpoints
        if e.kind == "lunch"
    ]
    exact = [f for f in lunch if f["hours"] == [12, 13]]
    assert len(exact) >= len(lunch) * 0.7, [f["text"] for f in lunch]  # the rest: a neighbour hour too
    for finding in lunch:
        evidence, (start, end) = finding["evidence"], finding["hours"]
        band = f"between {start:02d}:00 and {end % 24:02d}:00 local time"
        assert finding["text"] == f"misses {evidence['k']} of {evidence['n']} prompts {band}"
        assert evidence["n"] >= 10 and evidence["rate"] >= evidence["baseline_rate"] + 0.3
        assert evidence["p_value"] < 1e-6
    monday = next(e for e in history.endpoints if e.kind == "monday")
    texts = [f["text"] for f in found[monday.endpoint_id]]
    assert any(t.startswith("unreachable on Mondays ") and " 09:00" in t for t in texts), texts
    ignorer = next(e for e in history.endpoints if e.kind == "first_ignorer")
    texts = [f["text"] for f in found[ignorer.endpoint_id]]
    assert any(t.startswith("answers re-issued prompts") and ", the first only " in t for t in texts), texts


def test_the_ranking_puts_the_missers_first_and_the_heat_map_sums_the_fleet(history: History) -> None:
    body = history.patterns(limit="10000")
    ranking = body["ranking"]
    assert len(ranking) == ENDPOINTS == body["endpoints_with_history"]
    assert [r["missed"] for r in ranking] == sorted((r["missed"] for r in ranking), reverse=True)
    kinds = {e.endpoint_id: e.kind for e in history.endpoints}
    top = [kinds[r["endpoint_id"]] for r in ranking[: ENDPOINTS // 10]]
    assert "control" not in top, top
    assert sum(c["counted"] for c in body["heat"]) == body["totals"]["counted"]
    assert body["totals"]["counted"] == sum(r["counted"] for r in ranking)
    assert len(history.patterns(limit="5")["ranking"]) == 5
    assert len(history.patterns(findings="3")["findings"]) == 3
