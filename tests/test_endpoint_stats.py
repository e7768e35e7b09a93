"""worker.endpoint_stats: statistics kept incrementally equal what a scan of the rows gives.

The simulation drives seeds with faults, restarts and storage restores; afterwards every
endpoint's counted outcomes and latency samples are compared with a from-scratch computation
over its prompts (``caisey.stats`` on each prompt's reconciled view).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from caisey import stats
from caisey.facts import Entry, fact_from_record
from caisey.localtime import local_moment, resolve
from caisey.prompt import reconcile
from sim.run import run_seed
from sim.world import World
from worker.api import ApiRequest, match
from worker.endpoint import EndpointBridge
from worker.host import Entropy
from worker.sqlite_store import SqliteStore


def _view(actor: EndpointBridge, prompt_id: str, now_ms: int) -> Any:
    rows = actor.store.execute(
        "SELECT seq, at_ms, kind, fields FROM facts WHERE prompt_id = ? ORDER BY seq", (prompt_id,)
    )
    entries = [Entry(r["seq"], r["at_ms"], fact_from_record(r["kind"], json.loads(r["fields"]))) for r in rows]
    return reconcile(prompt_id, entries, now_ms, actor.config.reconcile)


@pytest.mark.parametrize("seed", range(1, 4))
def test_incremental_counts_equal_a_scan_of_the_prompts(seed: int) -> None:
    worlds: list[World] = []
    run_seed(seed, script=worlds.append)
    (world,) = worlds
    counted = 0
    for eid in world.eids:
        actor = world.actor(eid)
        zone = resolve(actor._meta("time_zone"))
        cells: Counter[tuple[int, int, int, str]] = Counter()
        samples: Counter[tuple[int, str, int]] = Counter()
        for row in actor.store.execute("SELECT prompt_id, final FROM prompts"):
            view = _view(actor, row["prompt_id"], world.now)
            moment = local_moment(view.created_at_ms, zone)
            outcome = stats.outcome_of(view) if row["final"] else None
            if outcome is not None:
                cells[(moment.day, moment.hour, 1 if view.supersedes else 0, outcome)] += 1
            for metric, ms in stats.latencies_of(view).items():
                samples[(moment.day, metric, stats.latency_bin(ms))] += 1
        kept: Counter[tuple[int, int, int, str]] = Counter()
        for r in actor.store.execute("SELECT * FROM stats_cells"):
            for outcome in stats.OUTCOMES:
                if r[outcome]:
                    kept[(r["day"], r["hour"], r["reissued"], outcome)] += r[outcome]
        assert kept == cells, eid
        kept_samples = Counter(
            {(r["day"], r["metric"], r["bin"]): r["n"] for r in actor.store.execute("SELECT * FROM stats_latency")}
        )
        assert kept_samples == samples, eid
        counted += sum(cells.values())
    assert counted > 0


def test_a_read_touches_only_the_stats_tables() -> None:
    """A stats read never scans prompts or facts: its cost is bounded by the kept days."""
    actor = EndpointBridge(SqliteStore(":memory:"), Entropy())
    actor._set_meta("endpoint_id", "e1")
    statements: list[str] = []
    execute = actor.store.execute
    op = actor._op_get_stats

    def counting(sql: str, params: Any = ()) -> Any:
        statements.append(sql)
        return execute(sql, params)

    def read(*args: Any) -> Any:
        actor.store.execute = counting  # type: ignore[method-assign]
        try:
            return op(*args)
        finally:
            actor.store.execute = execute  # type: ignore[method-assign]

    actor._op_get_stats = read  # type: ignore[method-assign]
    route = match("GET", "/api/endpoints/e1/stats")
    response, _ = actor.http(route, ApiRequest("GET", "/api/endpoints/e1/stats"), 1_800_000_000_000, False)
    assert response.status == 200 and statements
    tables = {
        word
        for s in statements
        for word in s.replace(",", " ").split()
        if word.startswith(("stats_", "facts", "prompts"))
    }
    assert tables <= {"stats_cells", "stats_latency"}, statements


def test_the_fleet_line_moves_with_outcomes_not_with_receipts() -> None:
    """Through the actor's own events: a receipt pushes no fleet line (as before issue 14); the
    answer pushes one whose summary counts it, in the zone the agent's hello named."""
    from caisey import wire
    from worker.api import ROLE_HEADER, TECHNICIAN_HEADER

    eid, now = "ep-line", 1_800_000_000_000
    headers = {TECHNICIAN_HEADER: "admin", ROLE_HEADER: "admin", "x-caisey-endpoint": eid}
    actor = EndpointBridge(SqliteStore(":memory:"), Entropy())
    body = json.dumps({"endpoint_id": eid}).encode()
    response, _ = actor.handle(ApiRequest("POST", "/api/enrollments", headers, body), now, False)
    token = json.dumps({"enrollment_token": response.body["enrollment_token"]}).encode()
    actor.handle(ApiRequest("POST", "/api/agent/enroll", {"x-caisey-endpoint": eid}, token), now, False)
    actor.agent_opened(now)
    actor.agent_frame(wire.encode(wire.Hello("h-1", eid, "test", now, time_zone="Asia/Tokyo")), now)
    create = json.dumps({"title": "Allow?", "action": "remote_control", "expires_in": 600}).encode()
    _, effects = actor.handle(ApiRequest("POST", f"/api/endpoints/{eid}/prompts", headers, create), now, True)
    deliver = next(m for m in map(wire.decode, effects.send) if isinstance(m, wire.PromptDeliver))
    receipt = wire.PromptReceipt("r-1", deliver.prompt.prompt_id, deliver.id, now + 300)
    assert actor.agent_frame(wire.encode(receipt), now + 300).fleet_summary is None
    update = wire.PromptUpdate("u-1", deliver.prompt.prompt_id, "decided", "user", "approve", now + 9_000)
    line = actor.agent_frame(wire.encode(update), now + 9_000).fleet_summary
    assert line is not None and line["time_zone"] == "Asia/Tokyo"
    patterns = line["patterns"]
    assert patterns["totals"][stats.OUTCOMES.index("answered")] == 1 and patterns["first"] == [1, 1]
    moment = local_moment(now, resolve("Asia/Tokyo"))
    assert patterns["cells"] == [[moment.weekday, moment.hour, 1, 0, 0, 0, 0]]
    assert patterns["answer_p95_ms"] == stats.bin_value_ms(stats.latency_bin(9_000))


def test_the_fleet_lines_patterns_follow_outcomes_at_most_once_a_minute() -> None:
    """The patterns summary costs a millisecond or more with a history: an outcome within a
    minute of the last summary is taken up by the alarm at the minute, not by its own event."""
    from caisey import wire
    from worker.api import ROLE_HEADER, TECHNICIAN_HEADER
    from worker.fleet_line import PATTERNS_REFRESH_MS

    eid, now = "ep-throttle", 1_800_000_000_000
    headers = {TECHNICIAN_HEADER: "admin", ROLE_HEADER: "admin", "x-caisey-endpoint": eid}
    actor = EndpointBridge(SqliteStore(":memory:"), Entropy())
    body = json.dumps({"endpoint_id": eid}).encode()
    response, _ = actor.handle(ApiRequest("POST", "/api/enrollments", headers, body), now, False)
    token = json.dumps({"enrollment_token": response.body["enrollment_token"]}).encode()
    actor.handle(ApiRequest("POST", "/api/agent/enroll", {"x-caisey-endpoint": eid}, token), now, False)
    actor.agent_opened(now)
    actor.agent_frame(wire.encode(wire.Hello("h-1", eid, "test", now)), now)

    def answered(at: int, n: int) -> Any:
        create = json.dumps({"title": "Allow?", "action": "remote_control", "expires_in": 600}).encode()
        _, effects = actor.handle(ApiRequest("POST", f"/api/endpoints/{eid}/prompts", headers, create), at, True)
        deliver = next(m for m in map(wire.decode, effects.send) if isinstance(m, wire.PromptDeliver))
        update = wire.PromptUpdate(f"u-{n}", deliver.prompt.prompt_id, "decided", "user", "approve", at + 1_000)
        return actor.agent_frame(wire.encode(update), at + 1_000)

    first = answered(now, 1)
    assert first.fleet_summary is not None and first.fleet_summary["patterns"]["first"] == [1, 1]
    second = answered(now + 5_000, 2)  # within the minute: no new summary yet, an alarm for it
    assert second.fleet_summary is None or second.fleet_summary["patterns"]["first"] == [1, 1]
    assert second.alarm_at_ms is not None and second.alarm_at_ms <= now + 1_000 + PATTERNS_REFRESH_MS
    due = now + 1_000 + PATTERNS_REFRESH_MS
    later = actor.alarm(due, True)
    assert later.fleet_summary is not None and later.fleet_summary["patterns"]["first"] == [2, 2]
