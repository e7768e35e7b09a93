"""What the bridge keeps to spare CPU (per-event caches, stored derived columns, one combined
read at the end of an event) must always equal what it would compute from the rows afresh.

The simulation drives a few seeds (faults, restarts, storage restores) while every view,
alarm, fleet line and held digest the actor computes is checked against a from-scratch oracle:
the straightforward per-row computation the bridge used before these shortcuts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caisey import wire
from caisey.digest import held_digest
from caisey.facts import Entry, fact_from_record
from caisey.ids import IdSource
from caisey.prompt import PromptView, reconcile, runtime_status
from sim.run import run_seed
from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
from worker.endpoint import EndpointBridge
from worker.endpoint_schema import SCHEMA_VERSION
from worker.fleet_line import PATTERNS_REFRESH_MS
from worker.host import Entropy, Row
from worker.sqlite_store import SqliteStore

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
        if attempt is not None and not actor._meta("awaiting_hello"):  # sent by the hello's flush
            candidates.append(int(attempt))
        candidates.append(int(actor._meta("last_seen_ms") or now_ms) + actor.config.liveness_ms)
    for sql in (  # webhook events waiting, deliveries to retry, escalations (worker.hooks)
        "SELECT MIN(at_ms) AS t FROM webhook_events WHERE expanded = 0",
        "SELECT MIN(next_at_ms) AS t FROM webhook_deliveries",
        "SELECT MIN(escalate_at_ms) AS t FROM prompts",
        "SELECT MIN(ends_at_ms) AS t FROM windows WHERE active = 1",  # approval windows ending
    ):
        due = _one(actor, sql)
        if due is not None:
            candidates.append(int(due))
    refreshed = actor._meta("patterns_at_ms")  # a statistics change the fleet line waits to show
    if refreshed is not None and actor._meta("stats_rev") != actor._meta("patterns_rev"):
        candidates.append(int(refreshed) + PATTERNS_REFRESH_MS)
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

    def checked_alarm(
        self: EndpointBridge, now_ms: int, connected: bool, tallies: Row | None = None, work: int | None = None
    ) -> int | None:
        got = alarm(self, now_ms, connected, tallies, work=work)
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


# --- the stored runtime_status, directly ------------------------------------------------------

ENDPOINT = "ep-derived"
HEADERS = {TECHNICIAN_HEADER: "tech", ROLE_HEADER: "technician"}


class Rig:
    """One registered endpoint's actor in-process, its agent connected; time is explicit."""

    def __init__(self, store: SqliteStore, now_ms: int = 1_700_000_000_000) -> None:
        self.store, self.now = store, now_ms
        self.actor = EndpointBridge(store, Entropy(random.Random(7)))
        self.ids = IdSource(random.Random(8).getrandbits)

    def register(self) -> None:
        body = json.dumps({"endpoint_id": ENDPOINT, "label": "x"}).encode()
        req = ApiRequest("POST", "/api/enrollments", {**HEADERS, "x-caisey-endpoint": ENDPOINT}, body)
        assert self.actor.handle(req, self.now, False)[0].status == 201
        self.actor.agent_opened(self.now)
        self.frame(wire.Hello(self.ids.new(self.now), ENDPOINT, "test", self.now))

    def create(self, expires_in: int = 60) -> str:
        body = json.dumps({"title": "t", "action": "a", "expires_in": expires_in}).encode()
        req = ApiRequest("POST", f"/api/endpoints/{ENDPOINT}/prompts", dict(HEADERS), body)
        response, _ = self.actor.handle(req, self.now, True)
        assert response.status == 201, response.body
        return str(response.body["prompt_id"])

    def frame(self, message: wire.Message) -> list[str]:
        return self.actor.agent_frame(wire.encode(message), self.now).send

    def receive(self, prompt_id: str) -> None:
        self.frame(wire.PromptReceipt(self.ids.new(self.now), prompt_id, self.ids.new(self.now), self.now))

    def decide(self, prompt_id: str) -> None:
        update = wire.PromptUpdate(
            self.ids.new(self.now), prompt_id, "decided", how="user", decision="approve", decided_at_ms=self.now
        )
        self.frame(update)

    def heartbeat_asks_for_a_report(self, held: list[tuple[str, str]]) -> bool:
        sent = self.frame(wire.Heartbeat(self.ids.new(self.now), self.now, held_digest(held)))
        return any('"type":"state.request"' in s for s in sent)

    def statuses(self) -> dict[str, str | None]:
        rows = self.store.execute("SELECT prompt_id, runtime_status FROM prompts")
        return {r["prompt_id"]: r["runtime_status"] for r in rows}


def test_a_received_prompt_past_its_expiry_holds_nothing_before_the_alarm_runs() -> None:
    rig = Rig(SqliteStore(":memory:"))
    rig.register()
    prompt_id = rig.create(expires_in=60)
    rig.receive(prompt_id)
    assert rig.statuses()[prompt_id] == "received"
    assert not rig.heartbeat_asks_for_a_report([(prompt_id, "received")])
    rig.now += 60_000  # at expires_at: expired, though no alarm has refreshed the row yet
    assert not rig.heartbeat_asks_for_a_report([])
    assert rig.heartbeat_asks_for_a_report([(prompt_id, "received")])


def test_migration_3_upgrades_a_version_2_database(tmp_path: Path) -> None:
    """Final prompts get '' at once; an open one stays NULL, is derived when read, stored when refreshed."""
    path = tmp_path / "endpoint.sqlite3"
    rig = Rig(SqliteStore(path))
    rig.register()
    decided, received, pending = rig.create(), rig.create(), rig.create()
    rig.receive(decided)
    rig.decide(decided)
    rig.receive(received)
    # What version 2 left on disk: the same rows without the column.
    rig.store.execute("ALTER TABLE prompts DROP COLUMN runtime_status")
    for statement in (  # and without what migration 4 adds
        "ALTER TABLE facts DROP COLUMN hash",
        "DROP TABLE endpoint_keys",
        "ALTER TABLE enrollments DROP COLUMN created_by",
        "ALTER TABLE enrollments DROP COLUMN rekey",
        "DROP INDEX prompts_escalate",  # and without what migration 5 adds
        "ALTER TABLE prompts DROP COLUMN escalate_after_ms",
        "ALTER TABLE prompts DROP COLUMN escalate_at_ms",
        "ALTER TABLE prompts DROP COLUMN hook_marks",
        "DROP TABLE webhook_events",
        "DROP TABLE webhook_deliveries",
    ):
        rig.store.execute(statement)
    rig.store.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    rig.store.close()

    upgraded = Rig(SqliteStore(path), rig.now)
    upgraded.ids = rig.ids
    assert upgraded.actor._meta("schema_version") == str(SCHEMA_VERSION)
    assert upgraded.statuses() == {decided: "", received: None, pending: None}
    assert not upgraded.heartbeat_asks_for_a_report([(received, "received")])
    assert upgraded.heartbeat_asks_for_a_report([])
    upgraded.receive(pending)
    assert upgraded.statuses() == {decided: "", received: None, pending: "received"}
    upgraded.decide(received)
    assert upgraded.statuses() == {decided: "", received: "", pending: "received"}
    assert not upgraded.heartbeat_asks_for_a_report([(pending, "received")])
