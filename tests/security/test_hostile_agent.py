"""Issue 11 item 3: a hostile agent, with its own valid secret, against its endpoint's actor.

It used to: adopt prompts past the 100-open limit through R6 (3 reports of 100 ids → 297 open,
technicians then got 429), give them ``expires_at`` 9999-12-31 and ``created_by`` of any
technician, sort them first with crafted ids; and decide with ``decided_at_ms = 0``, turning a
provisional ``expired`` into ``approved`` at a 1970 time. Checked on the actor itself (the
same class both hosts run), fed the frames such an agent sends.
"""

from __future__ import annotations

import json
import random

from bench.actor_cpu import ENDPOINT, ActorRig, now_ms
from caisey import wire
from caisey.clock import from_rfc3339
from caisey.digest import held_digest
from caisey.ids import IdSource
from worker.api import ApiRequest
from worker.endpoint import DAY_MS

TECHNICIAN = "alice"


def _get(rig: ActorRig, path: str, now: int, query: dict[str, str] | None = None) -> tuple[int, dict]:
    response, _ = rig.actor.handle(ApiRequest("GET", path, dict(rig.headers), query=query or {}), now, True)
    return response.status, response.body


def _create(rig: ActorRig, now: int, expires_in: int = 600) -> tuple[int, dict]:
    body = {"title": "Allow remote control?", "action": "remote_control", "expires_in": expires_in}
    req = ApiRequest("POST", f"/api/endpoints/{ENDPOINT}/prompts", dict(rig.headers), json.dumps(body).encode())
    response, _ = rig.actor.handle(req, now, True)
    return response.status, response.body


def _line(prompt_id: str, now: int, *, requested_by: str = TECHNICIAN) -> wire.HeldPrompt:
    copy = wire.PromptCopy(prompt_id, "Install?", "", "install", now - 1_000, wire.MAX_TIME_MS, "approve", requested_by)
    return wire.HeldPrompt(copy, "received")


def _report(rig: ActorRig, lines: list[wire.HeldPrompt], now: int) -> list[wire.Message]:
    report = wire.StateReport(rig.ids.new(now), tuple(lines), held_digest([]))
    return [wire.decode(f) for f in rig.actor.agent_frame(wire.encode(report), now).send]


def _open_count(rig: ActorRig) -> int:
    return int(rig.store.execute("SELECT COUNT(*) AS n FROM prompts WHERE final = 0")[0]["n"])


def test_adoptions_count_against_the_open_limit_and_claims_are_not_taken_as_facts() -> None:
    rig = ActorRig(":memory:")
    now = now_ms()
    ids = IdSource(random.Random(11).getrandbits)
    # Three full reports of prompts the bridge never created.
    for _ in range(3):
        _report(rig, [_line(ids.new(now), now) for _ in range(wire.MAX_OPEN_PROMPTS)], now)
    assert _open_count(rig) == wire.MAX_OPEN_PROMPTS  # was 3 × 100 = 300 (297 with 3 created)
    # Each refused line was answered with an error frame, never silently dropped.
    more = _report(rig, [_line(ids.new(now), now)], now)
    assert any(isinstance(m, wire.Error) and m.code == "adoption_refused" for m in more)
    assert _open_count(rig) == wire.MAX_OPEN_PROMPTS

    status, listing = _get(rig, f"/api/endpoints/{ENDPOINT}/prompts", now, {"limit": "200"})
    assert status == 200
    for p in listing["prompts"]:
        assert p["adopted"]
        # Expiry clamped to the create bounds (at most 7 days), not 9999-12-31.
        assert from_rfc3339(p["expires_at"]) <= now + 7 * DAY_MS
        # The requester is the endpoint's claim, never a technician's name.
        assert p["created_by"] == f"endpoint (claimed: {TECHNICIAN})"
    rig.close()


def test_one_report_cannot_push_technician_prompts_past_the_limit() -> None:
    rig = ActorRig(":memory:")
    now = now_ms()
    for _ in range(60):
        assert _create(rig, now)[0] == 201
    ids = IdSource(random.Random(12).getrandbits)
    _report(rig, [_line(ids.new(now), now) for _ in range(wire.MAX_OPEN_PROMPTS)], now)
    assert _open_count(rig) == wire.MAX_OPEN_PROMPTS  # 40 adopted, 60 refused: counted line by line
    rig.close()


def test_crafted_ids_are_not_adopted_and_cannot_sort_first() -> None:
    rig = ActorRig(":memory:")
    now = now_ms()
    status, created = _create(rig, now)
    assert status == 201
    crafted = ["Z" * 26, "zzzz-sorts-first", IdSource(random.Random(1).getrandbits).new(now + 365 * DAY_MS)]
    replies = _report(rig, [_line(pid, now) for pid in crafted], now)
    refused = [m for m in replies if isinstance(m, wire.Error) and m.code == "adoption_refused"]
    assert len(refused) == len(crafted)
    status, listing = _get(rig, f"/api/endpoints/{ENDPOINT}/prompts", now)
    assert [p["prompt_id"] for p in listing["prompts"]] == [created["prompt_id"]]
    rig.close()


def test_a_decision_dated_before_the_prompt_was_created_is_refused() -> None:
    rig = ActorRig(":memory:")
    now = now_ms()
    status, created = _create(rig, now, expires_in=5)
    assert status == 201
    pid = created["prompt_id"]
    deliver_id = rig.store.execute("SELECT deliver_id FROM prompts WHERE prompt_id = ?", (pid,))[0]["deliver_id"]
    rig.actor.agent_frame(wire.encode(wire.PromptReceipt(rig.ids.new(now), pid, deliver_id, now)), now)
    later = now + 60_000  # expired, provisionally (R4 may still honour a decision made in time)
    assert _get(rig, f"/api/endpoints/{ENDPOINT}/prompts/{pid}", later)[1]["state"] == "expired"

    update = wire.PromptUpdate(rig.ids.new(later), pid, "decided", how="user", decision="approve", decided_at_ms=0)
    replies = [wire.decode(f) for f in rig.actor.agent_frame(wire.encode(update), later).send]
    assert any(isinstance(m, wire.Error) and m.code == "invalid_decided_at" and m.of == update.id for m in replies)
    assert not any(isinstance(m, wire.Ack) and m.of == update.id for m in replies)  # refused, not acked
    # The same claim in a report line is refused too.
    line = wire.HeldPrompt(
        wire.PromptCopy(pid, "Allow remote control?", "", "remote_control", now, now + 5_000, "wait", TECHNICIAN),
        "decided",
        decision="approve",
        decided_at_ms=0,
        how="user",
    )
    replies = _report(rig, [line], later)
    assert any(isinstance(m, wire.Error) and m.code == "invalid_decided_at" for m in replies)

    view = _get(rig, f"/api/endpoints/{ENDPOINT}/prompts/{pid}", later)[1]
    assert view["state"] == "expired" and view["decided_at"] is None
    # A decision made in time (bridge clock, within the skew) is still honoured (R4).
    honest = wire.PromptUpdate(
        rig.ids.new(later), pid, "decided", how="user", decision="approve", decided_at_ms=now + 2_000
    )
    rig.actor.agent_frame(wire.encode(honest), later)
    assert _get(rig, f"/api/endpoints/{ENDPOINT}/prompts/{pid}", later)[1]["state"] == "approved"
    rig.close()
