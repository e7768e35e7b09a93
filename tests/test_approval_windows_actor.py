"""An approval window's end by the actor's one alarm, and its webhooks (DESIGN §13): the
actor in process on SQLite with a clock the test moves (a window lasts minutes; the hosts'
tests in ``test_approval_windows.py`` cover start and revocation on both hosts in real time).
"""

from __future__ import annotations

import dataclasses
import json

from caisey import wire
from caisey.audit import verify_export
from tests.test_hooks import ENDPOINT, TECH, Rig
from worker.api import ApiRequest
from worker.ed25519_local import verify


def quiet_rig() -> Rig:
    """A rig whose agent is not judged by liveness (it sends no heartbeats here)."""
    rig = Rig()
    rig.actor.config = dataclasses.replace(rig.actor.config, liveness_ms=10**9)
    return rig


def approved_window(rig: Rig, minutes: int = 2, granted: int = 1) -> tuple[str, int]:
    rig.connect()
    pid = rig.create(grant_minutes=minutes)
    deliver = next(m for m in map(wire.decode, rig.effects[-1].send) if isinstance(m, wire.PromptDeliver))
    rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), pid, deliver.id, rig.now))
    at = rig.now
    rig.frame(wire.PromptUpdate(rig.ids.new(rig.now), pid, "decided", how="user", decision="approve", decided_at_ms=at))
    sent = rig.frame(wire.WindowUpdate(rig.ids.new(rig.now), pid, "start", granted, at))
    assert any(isinstance(m, wire.Ack) for m in map(wire.decode, sent)), sent
    return pid, at


def test_the_alarm_ends_a_window_at_its_time_tells_the_agent_and_fires_the_webhooks() -> None:
    rig = quiet_rig()
    pid, at = approved_window(rig, minutes=2, granted=1)
    assert rig.prompt(pid)["window"]["state"] == "active"
    # The one alarm comes due when the window ends.
    rig.run_until(at + 59_000)
    assert rig.prompt(pid)["window"]["state"] == "active"
    assert rig.actor.next_alarm_ms(rig.now, rig.connected) <= at + 60_000
    rig.run_until(at + 61_000)
    view = rig.prompt(pid)
    assert view["window"]["state"] == "ended" and view["window"]["ended_at"] == view["window"]["ends_at"]
    assert [e["type"] for e in view["events"]][-2:] == ["window_started", "window_ended"]
    notices = [m for e in rig.effects for m in map(wire.decode, e.send) if isinstance(m, wire.WindowNotice)]
    assert {(n.prompt_id, n.state, n.at_ms) for n in notices} == {(pid, "ended", at + 60_000)}
    # Acked: no more resends.
    rig.frame(wire.Ack(rig.ids.new(rig.now), notices[0].id))
    rig.run_until(rig.now + 600_000)
    later = [m for e in rig.effects for m in map(wire.decode, e.send) if isinstance(m, wire.WindowNotice)]
    assert len(later) == len(notices)
    # A revocation after the end changes nothing (acked all the same); the technician is told.
    sent = rig.frame(wire.WindowUpdate(rig.ids.new(rig.now), pid, "revoke", 1, rig.now))
    assert any(isinstance(m, wire.Ack) for m in map(wire.decode, sent))
    assert rig.prompt(pid)["events"] == rig.prompt(pid)["events"] and rig.prompt(pid)["window"]["state"] == "ended"
    status, body = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{pid}/revoke")
    assert status == 409 and body["error"]["code"] == "window_ended"
    assert [t for t in rig.types() if t.startswith("window.")] == ["window.started", "window.ended"]
    started = next(json.loads(s["body"]) for s in rig.sends() if json.loads(s["body"])["type"] == "window.started")
    assert started["data"]["prompt_id"] == pid and started["data"]["window"]["minutes_granted"] == 1


def test_a_technician_revocation_fires_its_webhook_and_is_in_the_verified_export() -> None:
    rig = quiet_rig()
    pid, _ = approved_window(rig, minutes=5, granted=5)
    status, body = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{pid}/revoke")
    assert status == 200 and body["window"]["revoked_by"] == "tech"
    rig.run_until(rig.now + 600_000)  # no end after a revocation
    assert rig.prompt(pid)["window"]["state"] == "revoked"
    assert [t for t in rig.types() if t.startswith("window.")] == ["window.started", "window.revoked"]
    req = ApiRequest("GET", f"/api/endpoints/{ENDPOINT}/audit", {**TECH, "x-caisey-endpoint": ENDPOINT})
    response, _ = rig.actor.handle(req, rig.now, rig.connected)
    assert response.status == 200 and response.text is not None
    report = verify_export(response.text.splitlines(), verify)
    assert report.ok, report.problems
    assert next(p.windows for p in report.prompts if p.prompt_id == pid) == ["window_started", "window_revoked"]


def test_an_approval_that_arrives_after_its_window_records_the_start_and_the_end_at_once() -> None:
    rig = quiet_rig()
    rig.connect()
    pid = rig.create(grant_minutes=1, expires_in=3600)
    deliver = next(m for m in map(wire.decode, rig.effects[-1].send) if isinstance(m, wire.PromptDeliver))
    rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), pid, deliver.id, rig.now))
    at = rig.now
    rig.frame(wire.PromptUpdate(rig.ids.new(rig.now), pid, "decided", how="user", decision="approve", decided_at_ms=at))
    rig.now += 120_000  # the start waited in the agent's outbox (a dropped connection)
    rig.frame(wire.WindowUpdate(rig.ids.new(rig.now), pid, "start", 1, at))
    view = rig.prompt(pid)
    assert view["window"]["state"] == "ended"
    assert [e["type"] for e in view["events"]][-2:] == ["window_started", "window_ended"]


def test_a_retry_keeps_the_window_asked_with_the_reason_and_may_change_it() -> None:
    # The merge of lanes A and C: the window asked for is one of the Created fact's extras,
    # so a retry carries it with the reason and ticket; the retry's body may ask another.
    rig = quiet_rig()
    rig.connect()
    pid = rig.create(grant_minutes=30, reason="printer", ticket={"id": "T-9"})
    status, again = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{pid}/retry", {})
    assert status == 201, again
    assert again["grant_minutes"] == 30 and again["window"]["minutes_asked"] == 30
    assert again["request_reason"] == "printer" and again["ticket"]["id"] == "T-9"
    status, third = rig.api(
        "POST", f"/api/endpoints/{ENDPOINT}/prompts/{again['prompt_id']}/retry", {"grant_minutes": 10}
    )
    assert status == 201 and third["window"]["minutes_asked"] == 10
    status, bad = rig.api(
        "POST", f"/api/endpoints/{ENDPOINT}/prompts/{third['prompt_id']}/retry", {"grant_minutes": 481}
    )
    assert status == 400 and bad["error"]["code"] == "invalid_field"
    deliver = [m for e in rig.effects for m in map(wire.decode, e.send) if isinstance(m, wire.PromptDeliver)]
    assert [d.prompt.grant_minutes for d in deliver] == [30, 30, 10]
    assert {d.prompt.reason for d in deliver} == {"printer"}


def test_a_start_refused_for_good_is_refused_again_when_the_runtime_resends_it() -> None:
    """The refusal's error frame was lost and the runtime resent the start: it hears the
    error again before the ack, so its window does not stay "active" on the endpoint alone
    (found by the simulation, seed 216). An accepted start resent is acked only."""
    rig = quiet_rig()
    rig.connect()
    pid = rig.create(grant_minutes=2)
    deliver = next(m for m in map(wire.decode, rig.effects[-1].send) if isinstance(m, wire.PromptDeliver))
    rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), pid, deliver.id, rig.now))
    status, _ = rig.api("POST", f"/api/endpoints/{ENDPOINT}/prompts/{pid}/cancel", {}, {"x-caisey-technician": TECH})
    assert status == 200
    at = rig.now
    rig.frame(wire.PromptUpdate(rig.ids.new(rig.now), pid, "decided", how="user", decision="approve", decided_at_ms=at))
    start = wire.WindowUpdate(rig.ids.new(rig.now), pid, "start", 2, at)
    for _ in range(2):  # the first answer, then the resend after it was lost
        got = list(map(wire.decode, rig.frame(start)))
        assert [type(m).__name__ for m in got] == ["Error", "Ack"], got
        assert got[0].code == "not_approved" and got[0].of == start.id  # type: ignore[attr-defined]

    other = quiet_rig()
    other.connect()
    accepted = other.create(grant_minutes=2)
    deliver = next(m for m in map(wire.decode, other.effects[-1].send) if isinstance(m, wire.PromptDeliver))
    other.frame(wire.PromptReceipt(other.ids.new(other.now), accepted, deliver.id, other.now))
    at = other.now
    other.frame(
        wire.PromptUpdate(
            other.ids.new(other.now), accepted, "decided", how="user", decision="approve", decided_at_ms=at
        )
    )
    applied = wire.WindowUpdate(other.ids.new(other.now), accepted, "start", 1, at)
    assert any(isinstance(m, wire.Ack) for m in map(wire.decode, other.frame(applied)))
    again = list(map(wire.decode, other.frame(applied)))  # its ack was lost: the same frame again
    assert [type(m).__name__ for m in again] == ["Ack"], again
    assert other.prompt(accepted)["window"]["state"] == "active"
