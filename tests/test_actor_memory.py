"""What the endpoint actor keeps in memory across events (issue 15, ``worker.actor_memory``).

1. The same events through one actor object kept across them (memory used) and through a new
   object for every event (memory empty at each: the Durable Object woken from hibernation)
   store the same rows and return the same responses, frames, alarms and fleet lines.
2. A transaction that rolls back drops the memory: the next event sees the rows, not what the
   rolled-back event had set.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from bench.harness import PROMPT_BODY
from caisey import wire
from caisey.digest import held_digest
from caisey.ids import IdSource
from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
from worker.endpoint import BridgeConfig, EndpointBridge
from worker.host import Effects, Entropy
from worker.sqlite_store import SqliteStore

ENDPOINT = "memory-endpoint"
T0 = 1_800_000_000_000
HEADERS = {TECHNICIAN_HEADER: "alice", ROLE_HEADER: "technician"}


class Driver:
    """Feeds a fixed script of events; ``fresh``: a new actor object for every event."""

    def __init__(self, fresh: bool) -> None:
        self.store = SqliteStore(":memory:")
        self.entropy = Entropy(random.Random(7))
        self.config = BridgeConfig(webhooks=True)
        self.fresh = fresh
        self._actor = EndpointBridge(self.store, self.entropy, self.config)
        self.ids = IdSource(random.Random(11).getrandbits)
        self.now = T0
        self.log: list[Any] = []
        self.delivers: dict[str, str] = {}  # prompt id → its deliver frame's id

    def actor(self) -> EndpointBridge:
        self.now += 1_000  # every event at its own millisecond: ids never depend on the object
        if self.fresh:
            last = self._actor._ids._last
            self._actor = EndpointBridge(self.store, self.entropy, self.config)
            self._actor._ids._last = last
        return self._actor

    def effects(self, effects: Effects) -> None:
        for message in map(wire.decode, effects.send):
            if isinstance(message, wire.PromptDeliver):
                self.delivers[message.prompt.prompt_id] = message.id
        self.log.append((effects.send, effects.close_agent, effects.alarm_at_ms, effects.fleet_summary))
        self.log.append((effects.webhooks, effects.webhook_reports))

    def http(self, method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
        raw = json.dumps(body).encode() if body is not None else b""
        actor = self.actor()
        response, effects = actor.handle(ApiRequest(method, path, {**HEADERS, **headers}, raw), self.now, True)
        self.log.append((response.status, response.body))
        self.effects(effects)
        return dict(response.body) if isinstance(response.body, dict) else {}

    def frame(self, message: wire.Message) -> list[str]:
        effects = self.actor().agent_frame(wire.encode(message), self.now)
        self.effects(effects)
        return effects.send

    def alarm(self, at_ms: int) -> None:
        self.now = at_ms - 1_000
        actor = self.actor()
        targets = (
            [
                {
                    "id": "sub1",
                    "url": "https://hooks.example/in",
                    "events": ["prompt.created", "prompt.final"],
                    "secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
                }
            ]
            if actor.wants_targets(self.now)
            else None
        )
        self.effects(actor.alarm(self.now, True, targets=targets))

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        names = [r["name"] for r in self.store.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            name: sorted(tuple(r.values()) for r in self.store.execute(f"SELECT * FROM {name}"))
            for name in sorted(names)
        }


def _script(d: Driver) -> None:
    enroll = {"endpoint_id": ENDPOINT, "label": "memory"}
    d.http("POST", "/api/enrollments", enroll, **{"x-caisey-endpoint": ENDPOINT})
    d.effects(d.actor().agent_opened(d.now))
    d.frame(wire.Hello(d.ids.new(d.now), ENDPOINT, "test", d.now, time_zone="Europe/Paris"))
    prompts = f"/api/endpoints/{ENDPOINT}/prompts"
    first = d.http("POST", prompts, dict(PROMPT_BODY, escalate_after_s=60), **{"idempotency-key": "k1"})
    d.http("POST", prompts, PROMPT_BODY, **{"idempotency-key": "k1"})  # answered again, same prompt
    second = d.http("POST", prompts, PROMPT_BODY)
    third = d.http("POST", prompts, dict(PROMPT_BODY, supersedes=second["prompt_id"]))
    for created in (first, third):
        pid = created["prompt_id"]
        d.frame(wire.PromptReceipt(d.ids.new(d.now), pid, d.delivers[pid], d.now))
    d.frame(wire.PromptUpdate(d.ids.new(d.now), first["prompt_id"], "acknowledged"))
    update = wire.PromptUpdate(
        d.ids.new(d.now), third["prompt_id"], "decided", how="user", decision="approve", decided_at_ms=d.now
    )
    d.frame(update)
    d.frame(update)  # a resend: acked, nothing stored
    d.frame(wire.Heartbeat(d.ids.new(d.now), d.now, held_digest([])))  # disagrees: a state request
    d.http("GET", f"{prompts}/{first['prompt_id']}")
    d.http("GET", prompts)
    d.http("GET", f"/api/endpoints/{ENDPOINT}")
    d.http("GET", f"/api/endpoints/{ENDPOINT}/stats")
    for _ in range(4):  # escalation, webhook sends, expiry, firming: whatever the rows say is next
        alarm_at = d.log[-2][2]
        assert alarm_at is not None
        d.alarm(max(alarm_at, d.now + 2_000))
    d.http("POST", f"{prompts}/{first['prompt_id']}/cancel", {})


def test_memory_across_events_stores_and_returns_what_a_fresh_object_does() -> None:
    kept, fresh = Driver(fresh=False), Driver(fresh=True)
    _script(kept)
    _script(fresh)
    assert len(kept.log) == len(fresh.log)
    for i, (a, b) in enumerate(zip(kept.log, fresh.log, strict=True)):
        assert a == b, f"entry {i} differs"
    assert kept.tables() == fresh.tables()
    assert kept.tables()["facts"], "the script stored facts"


class Boom(Exception):
    pass


def test_a_rolled_back_event_leaves_nothing_in_memory() -> None:
    d = Driver(fresh=False)
    _script(d)
    actor = d._actor
    label = actor._event(lambda: actor._meta("label"))
    seq, head = actor.chain.head(ENDPOINT)
    pid = d.tables()["prompts"][0][0]

    def event() -> None:
        actor._set_meta("label", "changed")
        actor._append(pid, d.now, wire_cancel_fact())
        actor._entries(pid)
        raise Boom

    with pytest.raises(Boom):
        actor._event(event)
    assert actor._meta_rows is None and not actor._facts and actor._outbox_due is None
    assert actor.chain.head(ENDPOINT) == (seq, head)  # read again: the append was rolled back
    assert actor._event(lambda: actor._meta("label")) == label
    facts = d.store.execute("SELECT seq FROM facts ORDER BY seq DESC LIMIT 1")
    assert int(facts[0]["seq"]) == seq


def wire_cancel_fact() -> Any:
    from caisey.facts import Cancelled

    return Cancelled(by="test")
