"""A realistic fleet history for the patterns (issue 14): planted habits and a control group.

Each endpoint is a real ``EndpointBridge`` on in-memory SQLite; the fleet is a real
``FleetIndex``. Time is virtual: each prompt's facts (created, received, acknowledged,
decided / superseded) are built as the bridge would commit them, reconciled with
``caisey.prompt.reconcile`` and handed to the actor's statistics hook at its end (and, for
one in five, at its receipt too), as ``EndpointBridge._refresh`` does, inside the actor's events.
Then each actor's fleet line is pushed through the fleet index's internal summary call and
``GET /api/patterns`` is answered by the fleet index — the same code both hosts run. The wire
and the hosts are left out (the behaviour suites cover them): 90 days of a 2,000-endpoint
fleet take a few minutes this way, 200 endpoints about 30 s.

Habits (``KINDS``), in the endpoint user's own zone:

- ``control``: answers 85 % of prompts at any hour, 3 % unreachable — no finding expected;
- ``lunch``: as control, but answers 10 % between 12:00 and 13:00;
- ``first_ignorer``: answers 15 % of first prompts and 90 % of re-issued ones;
- ``night_shift``: answers 90 % between 20:00 and 07:00, 10 % between 08:00 and 18:00;
- ``sleeper``: a laptop asleep between 19:00 and 07:00 (95 % unreachable);
- ``monday``: unreachable on Mondays before 09:00 (left at the office over the weekend).

Every endpoint's technicians re-issue a prompt that went unanswered now and then (control
included), so first-vs-re-issued is measured for everyone.

    python -m sim.fleet_history --endpoints 2000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from caisey.facts import (
    Acknowledged,
    Created,
    Decided,
    Decision,
    Entry,
    Fact,
    NoUserPolicy,
    Received,
)
from caisey.ids import IdSource
from caisey.prompt import reconcile
from worker.api import ApiRequest
from worker.endpoint import EndpointBridge
from worker.fleet import SUMMARY_PATH, FleetIndex
from worker.host import Entropy
from worker.sqlite_store import SqliteStore

DAY_MS = 86_400_000
EXPIRES_IN_MS = 5 * 60_000
ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Sao_Paulo",
)
# Share of the fleet per habit; the rest is the control group.
KINDS = {"lunch": 0.12, "first_ignorer": 0.12, "night_shift": 0.12, "sleeper": 0.12, "monday": 0.12}
DAYS = 90
PROMPTS_PER_ENDPOINT = 300


@dataclass
class Planted:
    endpoint_id: str
    kind: str
    zone: str
    prompts: int = 0


@dataclass
class History:
    fleet: FleetIndex
    endpoints: list[Planted] = field(default_factory=list)
    now_ms: int = 0
    seconds: float = 0.0

    def patterns(self, **query: str) -> dict[str, Any]:
        response = self.fleet.handle(ApiRequest("GET", "/api/patterns", query=query), self.now_ms)
        assert response.status == 200, response.body
        body: dict[str, Any] = response.body
        return body


def _answer_probability(kind: str, local: datetime, reissued: bool) -> float:
    hour = local.hour
    if kind == "lunch" and hour == 12:
        return 0.1
    if kind == "first_ignorer":
        return 0.9 if reissued else 0.15
    if kind == "night_shift":
        if hour >= 20 or hour < 7:
            return 0.9
        if 8 <= hour < 18:
            return 0.1
    return 0.85


def _unreachable_probability(kind: str, local: datetime) -> float:
    if kind == "sleeper" and (local.hour >= 19 or local.hour < 7):
        return 0.95
    if kind == "monday" and local.weekday() == 0 and local.hour < 9:
        return 0.95
    return 0.03


def _creation_times(rng: random.Random, kind: str, zone: ZoneInfo, start_ms: int) -> list[int]:
    """When technicians ask: mostly working hours on weekdays, some at any time (all of them
    at any time for machines used around the clock)."""
    any_time = 1.0 if kind in ("night_shift", "sleeper", "monday") else 0.25
    start = datetime.fromtimestamp(start_ms / 1000, zone)
    times = []
    count = PROMPTS_PER_ENDPOINT
    if kind == "monday":
        count -= 20
        for _ in range(20):  # patches pushed first thing on Monday
            day = start + timedelta(days=rng.randrange(DAYS))
            day += timedelta(days=(7 - day.weekday()) % 7)
            local = day.replace(hour=rng.choice((6, 7, 8)), minute=rng.randrange(60))
            times.append(int(local.timestamp() * 1000))
    for _ in range(count):
        day = start + timedelta(days=rng.randrange(DAYS))
        if rng.random() < any_time:
            hour = rng.randrange(24)
        else:
            while day.weekday() >= 5:
                day += timedelta(days=1)
            hour = rng.randrange(8, 18)
        local = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60))
        times.append(int(local.timestamp() * 1000))
    return sorted(t for t in times if t < start_ms + DAYS * DAY_MS)


class _Endpoint:
    def __init__(self, planted: Planted, seed: int, store: SqliteStore | None = None) -> None:
        self.planted = planted
        self.store = store or SqliteStore(":memory:")
        self.actor = EndpointBridge(self.store, Entropy(random.Random(seed)))
        self.actor._event(lambda: self._register())
        self.ids = IdSource(random.Random(seed).getrandbits)

    def _register(self) -> None:
        self.actor._set_meta("endpoint_id", self.planted.endpoint_id)
        self.actor._set_meta("label", f"{self.planted.kind} {self.planted.endpoint_id[-4:]}")
        self.actor._set_time_zone(self.planted.zone)

    def observe(self, prompt_id: str, entries: list[Entry], at_ms: int) -> None:
        """What ``_refresh`` does after a fact: reconcile, then count (inside an event)."""
        view = reconcile(prompt_id, entries, at_ms, self.actor.config.reconcile)
        self.actor._event(lambda: self.actor._observe_stats(view, at_ms))

    def prompt(self, rng: random.Random, created_ms: int, supersedes: str | None = None) -> str | None:
        """One prompt's life; returns its id when it went unanswered while reachable (a
        technician may re-issue it)."""
        kind = self.planted.kind
        local = datetime.fromtimestamp(created_ms / 1000, ZoneInfo(self.planted.zone))
        prompt_id = self.ids.new(created_ms)
        expires = created_ms + EXPIRES_IN_MS
        facts: list[tuple[int, Fact]] = [
            (
                created_ms,
                Created("Allow remote control?", "", "remote_control", expires, NoUserPolicy.WAIT, "tech", supersedes),
            )
        ]

        def entries() -> list[Entry]:
            return [Entry(i + 1, at, fact) for i, (at, fact) in enumerate(facts)]

        self.planted.prompts += 1
        if rng.random() < _unreachable_probability(kind, local):
            self.observe(prompt_id, entries(), expires + 1)  # failed_to_deliver at its expiry
            return None
        received = created_ms + rng.randint(80, 1_500)
        facts.append((received, Received(received)))
        if rng.random() < 0.2:  # counted at its receipt too, now and then (the rest at its end only)
            self.observe(prompt_id, entries(), received)
        shown = received + rng.randint(300, 3_000)
        facts.append((shown, Acknowledged("shown")))  # counted with what follows
        if rng.random() < _answer_probability(kind, local, supersedes is not None):
            decided = shown + min(int(rng.lognormvariate(10.0, 0.9)), EXPIRES_IN_MS - 5_000)
            decision = Decision.APPROVE if rng.random() < 0.9 else Decision.DENY
            facts.append((decided, Decided(decision, decided)))
            self.observe(prompt_id, entries(), decided)
            return None
        if rng.random() < 0.03:  # nobody there, the prompt's policy answered
            decided = shown + 60_000
            facts.append((decided, Decided(Decision.DENY, decided, how="no_user_policy")))
            self.observe(prompt_id, entries(), decided)
            return None
        self.observe(prompt_id, entries(), expires + 1)  # expired unanswered
        return prompt_id


def build(
    endpoints: int = 200,
    seed: int = 1,
    start_ms: int = 1_780_000_000_000,
    store_for: Callable[[str], SqliteStore] | None = None,
) -> History:
    """Build the fleet's history and push every endpoint's line to one fleet index.
    ``store_for(endpoint_id)``: the store of each endpoint (default: in memory) — a file in a
    local host's data directory, say, for the console's tests (closed when built)."""
    began = time.perf_counter()
    rng = random.Random(seed)
    now_ms = start_ms + DAYS * DAY_MS
    fleet = FleetIndex(SqliteStore(":memory:"), Entropy(random.Random(seed)), admin_token_hash=None)
    history = History(fleet, now_ms=now_ms)
    cut = 0.0
    bounds = []
    for kind, share in KINDS.items():
        cut += share
        bounds.append((cut, kind))
    for n in range(endpoints):
        position = (n + 0.5) / endpoints
        kind = next((k for bound, k in bounds if position < bound), "control")
        planted = Planted(f"ep-{n:05d}", kind, rng.choice(ZONES))
        history.endpoints.append(planted)
        store = store_for(planted.endpoint_id) if store_for is not None else None
        endpoint = _Endpoint(planted, seed * 100_003 + n, store)
        zone = ZoneInfo(planted.zone)
        for created in _creation_times(rng, kind, zone, start_ms):
            missed = endpoint.prompt(rng, created)
            if missed is not None and rng.random() < (0.9 if kind == "first_ignorer" else 0.2):
                retry_at = created + EXPIRES_IN_MS + rng.randint(30_000, 600_000)
                endpoint.prompt(rng, retry_at, supersedes=missed)
        actor = endpoint.actor
        line = actor._event(lambda actor=actor: actor._fleet_summary(now_ms, False, force=True))
        answer = fleet.handle(ApiRequest("POST", SUMMARY_PATH, body=json.dumps(line).encode()), now_ms)
        assert answer.status == 204, answer.body
        if store is not None:
            store.close()
    history.seconds = time.perf_counter() - began
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.fleet_history", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    history = build(args.endpoints, args.seed)
    body = history.patterns(limit="10")
    print(f"{args.endpoints} endpoints, {sum(e.prompts for e in history.endpoints)} prompts in {history.seconds:.1f} s")
    print(f"{body['findings_total']} findings; the first 10:")
    for finding in body["findings"][:10]:
        print(f"  {finding['endpoint_id']} ({finding['label']}): {finding['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
