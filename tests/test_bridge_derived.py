"""What the bridge keeps to spare CPU (per-event caches, stored derived columns, one combined
read at the end of an event) must always equal what it would compute from the rows afresh.

The simulation drives a few seeds (faults, restarts, storage restores) while every view,
alarm, fleet line and held digest the actor computes is checked against a from-scratch oracle:
the straightforward per-row computation the bridge used before these shortcuts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from caisey.digest import held_digest
from caisey.facts import Entry, fact_from_record
from caisey.prompt import PromptView, reconcile, runtime_status
from sim.run import run_seed
from worker.endpoint import EndpointBridge
from worker.host import Row

SEEDS = range(1, 5)


def _fresh_view(actor: EndpointBridge, prompt_id: str, now_ms: int) -> PromptView:
    rows = actor.store.execute(
        "SELECT seq, at_ms, kind, fields FROM facts WHERE prompt_id = ? ORDER BY seq", (prompt_id,)
    )
    entries = [Entry(r["seq"], r["at_ms"], fact_from_record(r["kind"], json.loads(r["fields"]))) for r in rows]
    return reconcile(prompt_id, entries, now_ms, actor.config.reconcile)


def _one(actor: EndpointBridge, sql: str) -> Any:
    return actor.store.execute(sql)[0]["t"]


def _fresh_alarm(actor: EndpointBridge, now_ms: int, connected: bool) -> int | None:
    candidates = []
    moment = _one(actor, "SELECT MIN(next_moment_ms) AS t FROM prompts WHERE next_moment_ms IS NOT NULL")
    if moment is not None:
        candidates.append(int(moment))
    if connected:
        attempt = _one(actor, "SELECT MIN(next_attempt_at_ms) AS t FROM outbox")
        if attempt is not None:
            candidates.append(int(attempt))
        candidates.append(int(actor._meta("last_seen_ms") or now_ms) + actor.config.liveness_ms)
    if actor.endpoint_id is not None:
        housekeeping = actor._meta("housekeeping_due_ms")
        candidates.append(int(housekeeping) if housekeeping else now_ms + actor.config.housekeeping_every_ms)
    return min(candidates) if candidates else None


def _fresh_fleet_parts(actor: EndpointBridge) -> tuple[int, dict[str, Any] | None]:
    last = actor.store.execute(
        "SELECT prompt_id, state, final_at_ms FROM prompts WHERE final = 1 "
        "ORDER BY final_at_ms DESC, prompt_id DESC LIMIT 1"
    )
    open_prompts = int(_one(actor, "SELECT COUNT(*) AS t FROM prompts WHERE final = 0"))
    if not last:
        return open_prompts, None
    return open_prompts, {"prompt_id": last[0]["prompt_id"], "state": last[0]["state"], "at_ms": last[0]["final_at_ms"]}


def _fresh_digest(actor: EndpointBridge, now_ms: int) -> str:
    held = []
    for row in actor.store.execute("SELECT prompt_id FROM prompts WHERE final = 0"):
        status = runtime_status(_fresh_view(actor, row["prompt_id"], now_ms))
        if status is not None:
            held.append((row["prompt_id"], status))
    return held_digest(held)


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Wrap the actor's shortcuts with their oracles; count the checks made."""
    counts = {"view": 0, "alarm": 0, "fleet": 0, "digest": 0}
    view, alarm, fleet, digest = (
        EndpointBridge._view,
        EndpointBridge.next_alarm_ms,
        EndpointBridge._fleet_summary,
        EndpointBridge._held_digest,
    )

    def checked_view(self: EndpointBridge, prompt_id: str, now_ms: int) -> PromptView:
        got = view(self, prompt_id, now_ms)
        assert got == _fresh_view(self, prompt_id, now_ms), prompt_id
        counts["view"] += 1
        return got

    def checked_alarm(self: EndpointBridge, now_ms: int, connected: bool, tallies: Row | None = None) -> int | None:
        got = alarm(self, now_ms, connected, tallies)
        assert got == _fresh_alarm(self, now_ms, connected)
        counts["alarm"] += 1
        return got

    def checked_fleet(self: EndpointBridge, now_ms: int, connected: bool, **kwargs: Any) -> dict[str, Any] | None:
        got = fleet(self, now_ms, connected, **kwargs)
        if got is not None:
            assert (got["open_prompts"], got["last_outcome"]) == _fresh_fleet_parts(self)
            counts["fleet"] += 1
        return got

    def checked_digest(self: EndpointBridge, now_ms: int) -> str:
        got = digest(self, now_ms)
        assert got == _fresh_digest(self, now_ms)
        counts["digest"] += 1
        return got

    monkeypatch.setattr(EndpointBridge, "_view", checked_view)
    monkeypatch.setattr(EndpointBridge, "next_alarm_ms", checked_alarm)
    monkeypatch.setattr(EndpointBridge, "_fleet_summary", checked_fleet)
    monkeypatch.setattr(EndpointBridge, "_held_digest", checked_digest)
    yield counts


@pytest.mark.parametrize("seed", SEEDS)
def test_shortcuts_agree_with_the_rows(seed: int, checked: dict[str, int]) -> None:
    run_seed(seed)
    assert all(n > 0 for n in checked.values()), checked
