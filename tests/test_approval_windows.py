"""Approval windows on both hosts (DESIGN §13, issue 16): a prompt asks for ``grant_minutes``;
the user's signed approval starts the window (shortened if the user chose so), the technician
sees it with its end, and the user or the technician revokes it; every step is a fact of the
audit chain that ``caisey-audit verify`` checks.

The runtime is ``ScriptedRuntime`` with a real Ed25519 key, signing as ``agent.core`` does;
the real agent and bridge as processes are in ``test_approval_windows_processes.py``; the
window's end by the alarm (which needs an hour of clock here) in ``test_approval_windows_actor.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from caisey import wire
from caisey.audit import verify_export
from caisey.signing import b64encode, copy_sha256, window_message
from tests.bridge_hosts import BridgeUnderTest, of_type
from tests.test_bridge_behaviour import create, one_deliver
from tests.test_consent import Signed, export, prompt_view, signed_endpoint, technician_token
from worker.ed25519_local import verify


async def window_prompt(s: Signed, minutes: int = 30) -> str:
    r = await create(s.bridge, s.endpoint.endpoint_id, grant_minutes=minutes)
    assert r.status == 201, r.body
    assert r.body["window"]["state"] == "asked" and r.body["window"]["minutes_asked"] == minutes
    deliver = one_deliver(await s.runtime.drain())
    assert deliver.prompt.grant_minutes == minutes  # delivered, and so covered by the signature
    s.copies[deliver.prompt.prompt_id] = deliver.prompt
    await s.runtime.receipt(deliver)
    return deliver.prompt.prompt_id


def window_update(s: Signed, pid: str, event: str, minutes: int, at_ms: int, **sign: Any) -> wire.WindowUpdate:
    message = window_message(
        endpoint_id=sign.get("endpoint_id", s.endpoint.endpoint_id),
        prompt_id=pid,
        event=sign.get("signed_event", event),
        minutes=sign.get("signed_minutes", minutes),
        at_ms=at_ms,
        prompt_hash=copy_sha256(s.copies[pid]),
    )
    return wire.WindowUpdate(
        id=s.runtime.new_id(),
        prompt_id=pid,
        event=event,
        minutes=minutes,
        at_ms=at_ms,
        key_id=s.key.key_id,
        sig=b64encode(s.key.sign(message)),
    )


async def approved_with_window(s: Signed, minutes: int, asked: int = 30) -> tuple[str, int]:
    pid = await window_prompt(s, asked)
    decided = s.decided(pid)
    assert of_type(await s.send(decided), wire.Ack)
    assert decided.decided_at_ms is not None
    start = window_update(s, pid, "start", minutes, decided.decided_at_ms)
    got = await s.send(start)
    assert [a.of for a in of_type(got, wire.Ack)] == [start.id], got
    return pid, decided.decided_at_ms


async def test_a_granted_window_is_shown_with_its_end_and_the_technician_revokes_it(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge)
    eid = s.endpoint.endpoint_id
    pid, _at = await approved_with_window(s, minutes=10, asked=30)  # the user shortened it to 10
    window = (await prompt_view(bridge, eid, pid))["window"]
    assert window["state"] == "active" and window["minutes_asked"] == 30 and window["minutes_granted"] == 10
    assert window["ends_at"] is not None and window["revoked_at"] is None

    tech = await technician_token(bridge)
    r = await bridge.request("POST", f"/api/endpoints/{eid}/prompts/{pid}/revoke", token=tech)
    assert r.status == 200, r.body
    assert r.body["window"]["state"] == "revoked" and r.body["window"]["revoked_by_user"] is False
    assert r.body["window"]["revoked_by"].startswith("tech-")
    notices = of_type(await s.runtime.drain(), wire.WindowNotice)
    # (a resend of it, same id, may ride along before the ack)
    assert {(n.id, n.prompt_id, n.state) for n in notices} == {(notices[0].id, pid, "revoked")}
    # Revoking again answers what it is; the agent's ack ends the notice's resends.
    again = await bridge.request("POST", f"/api/endpoints/{eid}/prompts/{pid}/revoke", token=tech)
    assert again.status == 200 and again.body["window"]["state"] == "revoked"
    await s.runtime.send(wire.Ack(id=s.runtime.new_id(), of=notices[0].id))

    report = verify_export(await export(bridge, eid), verify)
    assert report.ok, report.problems
    kinds = next(p.windows for p in report.prompts if p.prompt_id == pid)
    assert kinds == ["window_started", "window_revoked"]


async def test_the_user_revokes_with_a_signed_frame_and_forgeries_change_nothing(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge)
    eid = s.endpoint.endpoint_id
    pid, _ = await approved_with_window(s, minutes=30)
    now = bridge.now_ms()
    forged = window_update(s, pid, "revoke", 30, now, signed_event="start")
    got = await s.send(forged)
    assert not of_type(got, wire.Ack) and of_type(got, wire.Error)[0].code == "signature_refused"
    view = await prompt_view(bridge, eid, pid)
    assert view["window"]["state"] == "active"
    refused = [e["detail"] for e in view["events"] if e["type"] == "signature_refused"]
    assert [(r["answer"], r["reason"]) for r in refused] == [("window_revoke", "bad_signature")]

    revoke = window_update(s, pid, "revoke", 30, now)
    assert [a.of for a in of_type(await s.send(revoke), wire.Ack)] == [revoke.id]
    view = await prompt_view(bridge, eid, pid)
    assert view["window"]["state"] == "revoked" and view["window"]["revoked_by"] == "user"
    assert view["window"]["revoked_by_user"] is True
    assert [e["type"] for e in view["events"]][-3:] == ["window_started", "signature_refused", "window_revoked"]
    # The same frame again (a lost ack): acked, nothing new.
    assert of_type(await s.send(revoke), wire.Ack)
    assert (await prompt_view(bridge, eid, pid))["events"] == view["events"]
    tech = await technician_token(bridge)
    r = await bridge.request("POST", f"/api/endpoints/{eid}/prompts/{pid}/revoke", token=tech)
    assert r.status == 200 and r.body["window"]["revoked_by"] == "user"  # it is what it is
    report = verify_export(await export(bridge, eid), verify)
    assert report.ok, report.problems


async def test_a_window_never_grants_more_than_asked_nor_starts_without_an_approval(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge)
    eid = s.endpoint.endpoint_id
    pid = await window_prompt(s, 15)
    at = bridge.now_ms()
    early = window_update(s, pid, "start", 15, at)
    got = await s.send(early)  # no approval yet: refused, not acked (it may come)
    assert not of_type(got, wire.Ack) and of_type(got, wire.Error)[0].code == "not_decided"
    decided = s.decided(pid)
    await s.send(decided)
    assert decided.decided_at_ms is not None
    longer = window_update(s, pid, "start", 16, decided.decided_at_ms)
    got = await s.send(longer)  # more than asked: never applies, so acked with the error
    assert of_type(got, wire.Error)[0].code == "window_too_long" and of_type(got, wire.Ack)
    moved = window_update(s, pid, "start", 15, decided.decided_at_ms + 60_000)
    assert of_type(await s.send(moved), wire.Error)[0].code == "invalid_at"
    assert (await prompt_view(bridge, eid, pid))["window"]["state"] == "asked"

    denied = await window_prompt(s, 15)
    await s.send(s.decided(denied, "deny"))
    got = await s.send(window_update(s, denied, "start", 15, bridge.now_ms()))
    assert of_type(got, wire.Error)[0].code == "not_approved"
    assert (await prompt_view(bridge, eid, denied))["window"]["state"] == "not_granted"
    tech = await technician_token(bridge)
    r = await bridge.request("POST", f"/api/endpoints/{eid}/prompts/{denied}/revoke", token=tech)
    assert r.status == 409 and r.body["error"]["code"] == "window_not_granted"
    r = await bridge.request("POST", f"/api/endpoints/{eid}/prompts/{pid}/revoke", token=tech)
    assert r.status == 409 and r.body["error"]["code"] == "window_not_started"


@pytest.mark.parametrize("bad", [0, 481, "30", 1.5, True, -1])
async def test_a_create_refuses_a_bad_grant_minutes(bridge: BridgeUnderTest, bad: object) -> None:
    s = await signed_endpoint(bridge)
    r = await create(bridge, s.endpoint.endpoint_id, grant_minutes=bad)
    assert r.status == 400 and r.body["error"]["code"] == "invalid_field"
    assert "grant_minutes" in r.body["error"]["message"]


async def test_revoke_refuses_who_may_not_and_what_is_not(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge)
    eid = s.endpoint.endpoint_id
    r = await create(bridge, eid)  # no window asked
    assert r.status == 201 and r.body["window"] is None
    pid = r.body["prompt_id"]
    path = f"/api/endpoints/{eid}/prompts/{pid}/revoke"
    assert (await bridge.request("POST", path, token=None)).status == 401
    assert (await bridge.request("POST", path, token="not-a-token")).status == 401
    assert (await bridge.request("POST", path, token=s.endpoint.secret)).status == 401  # the agent's secret
    r = await bridge.request("POST", path, token=bridge.admin_token)
    assert r.status == 409 and r.body["error"]["code"] == "no_window"
    r = await bridge.request("POST", f"/api/endpoints/{eid}/prompts/01NOPE/revoke", token=bridge.admin_token)
    assert r.status == 404 and r.body["error"]["code"] == "unknown_prompt"
    r = await bridge.request("GET", path, token=bridge.admin_token)
    assert r.status == 405


async def test_a_technician_out_of_scope_cannot_revoke_nor_learn_the_endpoint_exists(bridge: BridgeUnderTest) -> None:
    from tests.test_admin_scope import enroll_for, name, new_token, unknown_body

    endpoint_id = "ep-" + name("win")[4:]
    await enroll_for(bridge, endpoint_id, name("client-b"))
    r = await create(bridge, endpoint_id, grant_minutes=30)
    assert r.status == 201, r.body
    outsider = await new_token(bridge, clients=[name("client-a")])
    path = f"/api/endpoints/{endpoint_id}/prompts/{r.body['prompt_id']}/revoke"
    r = await bridge.request("POST", path, token=outsider)
    assert (r.status, r.body) == (404, unknown_body(endpoint_id))


async def test_a_window_ends_by_the_alarm_and_the_agent_is_told_when_it_is_back(bridge: BridgeUnderTest) -> None:
    """One minute of bridge time (real on the local host, virtual on the stand-in): the alarm
    records the end; the agent, silent meanwhile (its socket closed), gets the notice on its
    next hello, until it acks it."""
    s = await signed_endpoint(bridge)
    eid = s.endpoint.endpoint_id
    pid, at = await approved_with_window(s, minutes=1, asked=1)
    await s.runtime.close()
    await bridge.advance(62_000)
    view = await prompt_view(bridge, eid, pid)
    assert view["window"]["state"] == "ended"
    assert [e["type"] for e in view["events"]][-1] == "window_ended"
    assert view["events"][-1]["detail"]["ended_at_ms"] == at + 60_000
    frames = await s.runtime.connect()
    notices = of_type(frames, wire.WindowNotice)
    # (a resend of it, same id, may ride along before the ack)
    assert {(n.id, n.prompt_id, n.state, n.at_ms) for n in notices} == {(notices[0].id, pid, "ended", at + 60_000)}
    await s.runtime.send(wire.Ack(id=s.runtime.new_id(), of=notices[0].id))
    await s.runtime.drain()
    await s.runtime.close()
    assert of_type(await s.runtime.connect(), wire.WindowNotice) == []  # acked: not sent again
