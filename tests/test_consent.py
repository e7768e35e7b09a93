"""Consent you can prove, on both hosts (DESIGN §10): signed answers, refused forgeries,
admin-only re-keying, the key history and the audit export.

The runtime here is ``ScriptedRuntime`` (a wire peer a test drives, not the real agent) with
a real Ed25519 endpoint key, signing exactly as ``agent.core`` does. The real agent and the
real bridge as processes are in ``test_consent_processes.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from agent.identity import EndpointKey
from caisey import wire
from caisey.audit import verify_export
from caisey.signing import answer_message, b64encode
from tests.bridge_hosts import BridgeUnderTest, Enrolled, Resp, ScriptedRuntime, of_type
from tests.test_bridge_behaviour import create, eid, one_deliver
from worker.ed25519_local import verify


@dataclasses.dataclass
class Signed:
    """An enrolled endpoint whose runtime holds a real key."""

    bridge: BridgeUnderTest
    endpoint: Enrolled
    key: EndpointKey
    runtime: ScriptedRuntime
    copies: dict[str, wire.PromptCopy] = dataclasses.field(default_factory=dict)

    def sign(
        self,
        prompt_id: str,
        answer: str,
        *,
        how: str = "user",
        decided_at_ms: int = 0,
        key: EndpointKey | None = None,
        endpoint_id: str | None = None,
        copy: wire.PromptCopy | None = None,
    ) -> str:
        copy = copy or self.copies[prompt_id]
        message = answer_message(endpoint_id or self.endpoint.endpoint_id, copy, answer, how, decided_at_ms)
        return b64encode((key or self.key).sign(message))

    def decided(self, prompt_id: str, decision: str = "approve", **overrides: Any) -> wire.PromptUpdate:
        at = self.bridge.now_ms()
        update = wire.PromptUpdate(
            id=self.runtime.new_id(),
            prompt_id=prompt_id,
            status="decided",
            decision=decision,
            decided_at_ms=at,
            how="user",
            key_id=self.key.key_id,
            sig=self.sign(prompt_id, decision, decided_at_ms=at),
        )
        return dataclasses.replace(update, **overrides)

    async def delivered(self) -> str:
        """Create a prompt, take its delivery and send the receipt: its id."""
        r = await create(self.bridge, self.endpoint.endpoint_id)
        assert r.status == 201, r.body
        deliver = one_deliver(await self.runtime.drain())
        self.copies[deliver.prompt.prompt_id] = deliver.prompt
        await self.runtime.receipt(deliver)
        return deliver.prompt.prompt_id

    async def send(self, message: wire.Message) -> list[wire.Message]:
        """Send, and collect frames until the bridge has answered this one (an ack or an error
        naming it) and then stays quiet: a loaded machine may take longer than a quiet spell."""
        await self.runtime.send(message)
        assert self.runtime.socket is not None
        got: list[wire.Message] = []
        deadline = asyncio.get_running_loop().time() + 10
        while not any(getattr(m, "of", None) == message.id for m in got):
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"no answer to {message.TYPE} {message.id}: {got}"
            got.append(wire.decode(await self.runtime.socket.recv(timeout=remaining)))
        got.extend(await self.runtime.drain())
        return got


async def enroll_with_key(bridge: BridgeUnderTest, endpoint_id: str, key: EndpointKey, label: str = "") -> Enrolled:
    r = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id, "label": label}
    )
    assert r.status == 201, r.body
    r2 = await bridge.request(
        "POST",
        "/api/agent/enroll",
        body={"enrollment_token": r.body["enrollment_token"], "public_key": key.public_key_b64},
    )
    assert r2.status == 200, r2.body
    assert r2.body["key_id"] == key.key_id
    return Enrolled(endpoint_id, r2.body["agent_secret"])


async def signed_endpoint(bridge: BridgeUnderTest, label: str = "signed") -> Signed:
    key = EndpointKey.generate()
    endpoint = await enroll_with_key(bridge, eid(), key, label)
    runtime = ScriptedRuntime(bridge, endpoint)
    await runtime.connect()
    return Signed(bridge, endpoint, key, runtime)


async def prompt_view(bridge: BridgeUnderTest, endpoint_id: str, prompt_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}", token=bridge.admin_token)
    assert r.status == 200, r.body
    return dict(r.body)


async def export(bridge: BridgeUnderTest, endpoint_id: str) -> list[str]:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/audit", token=bridge.admin_token)
    assert r.status == 200, r.body
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return str(r.body).splitlines()


async def technician_token(bridge: BridgeUnderTest) -> str:
    name = "tech-" + eid()[3:]
    r = await bridge.request("POST", "/api/tokens", token=bridge.admin_token, body={"name": name, "role": "technician"})
    assert r.status == 201, r.body
    return str(r.body["token"])


# --- signed answers --------------------------------------------------------------------------


async def test_a_signed_decision_is_committed_with_its_proof(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge)
    pid = await s.delivered()
    update = s.decided(pid)
    assert of_type(await s.send(update), wire.Ack)[0].of == update.id
    view = await prompt_view(bridge, s.endpoint.endpoint_id, pid)
    assert view["state"] == "approved"
    assert view["decision_signature"] == {"key_id": s.key.key_id, "sig": update.sig}
    # The same frame again (a resend after a lost ack): acked, nothing changes.
    assert of_type(await s.send(update), wire.Ack)[0].of == update.id
    assert (await prompt_view(bridge, s.endpoint.endpoint_id, pid))["events"] == view["events"]
    r = await bridge.request("GET", f"/api/endpoints/{s.endpoint.endpoint_id}", token=bridge.admin_token)
    assert r.status == 200 and r.body["key_id"] == s.key.key_id
    assert [k["key_id"] for k in r.body["keys"]] == [s.key.key_id] and r.body["keys"][0]["valid_until"] is None
    report = verify_export(await export(bridge, s.endpoint.endpoint_id), verify)
    assert report.ok, report.problems
    assert [(p.prompt_id, p.signed_by) for p in report.prompts] == [(pid, s.key.key_id)]
    assert report.head == r.body["audit_head"]["hash"] or report.facts > r.body["audit_head"]["seq"]


FORGERIES = [
    "missing_signature",
    "wrong_key",  # another key's signature under our key id
    "unknown_key",  # another key, named as itself
    "tampered_prompt",  # signed over a prompt text the bridge never delivered
    "other_prompt",  # a valid signature, made for another prompt of this endpoint
    "other_endpoint",  # a valid signature, made for the same prompt id on another endpoint
    "other_decision",  # the signature of a deny, sent as an approve
    "malformed_signature",
]


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_a_forged_decision_is_refused_recorded_and_changes_nothing(bridge: BridgeUnderTest, forgery: str) -> None:
    s = await signed_endpoint(bridge)
    pid = await s.delivered()
    other_pid = await s.delivered()
    other = EndpointKey.generate()
    at = bridge.now_ms()
    copy = s.copies[pid]
    forged = {
        "missing_signature": {"key_id": None, "sig": None},
        "wrong_key": {"sig": s.sign(pid, "approve", decided_at_ms=at, key=other)},
        "unknown_key": {"key_id": other.key_id, "sig": s.sign(pid, "approve", decided_at_ms=at, key=other)},
        "tampered_prompt": {
            "sig": s.sign(pid, "approve", decided_at_ms=at, copy=dataclasses.replace(copy, title="Update drivers?"))
        },
        "other_prompt": {"sig": s.sign(other_pid, "approve", decided_at_ms=at)},
        "other_endpoint": {"sig": s.sign(pid, "approve", decided_at_ms=at, endpoint_id="ep-other")},
        "other_decision": {"sig": s.sign(pid, "deny", decided_at_ms=at)},
        "malformed_signature": {"sig": "AAAA"},
    }[forgery]
    update = s.decided(pid, decided_at_ms=at, **forged)
    before = await prompt_view(bridge, s.endpoint.endpoint_id, pid)
    frames = await s.send(update)
    assert not [a for a in of_type(frames, wire.Ack) if a.of == update.id], "a refused answer is not acked"
    (error,) = [e for e in of_type(frames, wire.Error) if e.of == update.id]
    assert error.code == "signature_refused"
    after = await prompt_view(bridge, s.endpoint.endpoint_id, pid)
    assert after["state"] == before["state"] == "delivered" and after["decision"] is None
    refused = [e for e in after["events"] if e["type"] == "signature_refused"]
    expected = "missing_signature" if forgery == "missing_signature" else "unknown_key"
    expected = expected if forgery in ("missing_signature", "unknown_key") else "bad_signature"
    assert [(e["source"], e["detail"]["reason"], e["detail"]["answer"]) for e in refused] == [
        ("bridge", expected, "approve")
    ]
    # Resent: refused again, recorded once.
    await s.send(update)
    again = await prompt_view(bridge, s.endpoint.endpoint_id, pid)
    assert len([e for e in again["events"] if e["type"] == "signature_refused"]) == 1
    # The real answer still lands, and the export proves it.
    assert of_type(await s.send(s.decided(pid)), wire.Ack)
    assert (await prompt_view(bridge, s.endpoint.endpoint_id, pid))["state"] == "approved"
    report = verify_export(await export(bridge, s.endpoint.endpoint_id), verify)
    assert report.ok, report.problems


async def test_a_forged_dismissal_and_a_forged_report_line_are_refused(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge)
    pid = await s.delivered()
    dismissal = wire.PromptUpdate(
        id=s.runtime.new_id(),
        prompt_id=pid,
        status="acknowledged",
        how="dismissed",
        key_id=s.key.key_id,
        sig=s.sign(pid, "dismiss", how="dismissed", key=EndpointKey.generate()),
    )
    (error,) = of_type(await s.send(dismissal), wire.Error)
    assert error.code == "signature_refused" and error.of == dismissal.id
    assert (await prompt_view(bridge, s.endpoint.endpoint_id, pid))["state"] == "delivered"
    # A full report claiming a decision with a signature for another decision.
    at = bridge.now_ms()
    line = wire.HeldPrompt(
        s.copies[pid], "decided", "approve", at, "user", key_id=s.key.key_id, sig=s.sign(pid, "deny", decided_at_ms=at)
    )
    report = wire.StateReport(s.runtime.new_id(), (line,), digest="0" * 64)
    frames = await s.send(report)
    assert [a.of for a in of_type(frames, wire.Ack)] == [report.id]  # the report itself is taken
    assert [e.code for e in of_type(frames, wire.Error) if e.of == report.id] == ["signature_refused"]
    view = await prompt_view(bridge, s.endpoint.endpoint_id, pid)
    assert view["state"] == "delivered"
    assert [e["detail"]["reason"] for e in view["events"] if e["type"] == "signature_refused"] == [
        "bad_signature",
        "bad_signature",
    ]
    # A valid dismissal is taken.
    good = dataclasses.replace(dismissal, id=s.runtime.new_id(), sig=s.sign(pid, "dismiss", how="dismissed"))
    assert [a.of for a in of_type(await s.send(good), wire.Ack)] == [good.id]
    assert (await prompt_view(bridge, s.endpoint.endpoint_id, pid))["state"] == "acknowledged"


async def test_a_keyless_endpoint_answers_unsigned_and_says_so(bridge: BridgeUnderTest) -> None:
    """Enrolled without a key (an agent from before signing): unsigned answers are taken and
    the view says there is no proof; a signature it cannot check is refused."""
    from tests.bridge_hosts import enroll

    endpoint = await enroll(bridge, eid())
    runtime = ScriptedRuntime(bridge, endpoint)
    await runtime.connect()
    r = await create(bridge, endpoint.endpoint_id)
    deliver = one_deliver(await runtime.drain())
    await runtime.receipt(deliver)
    await runtime.decide(deliver.prompt.prompt_id, "deny")
    view = await prompt_view(bridge, endpoint.endpoint_id, r.body["prompt_id"])
    assert view["state"] == "denied" and view["decision_signature"] is None
    report = verify_export(await export(bridge, endpoint.endpoint_id), verify)
    assert report.ok and report.prompts[0].verdict.endswith("unsigned (recorded before signing)")


async def test_enrollment_refuses_a_bad_key_without_spending_the_token_and_never_downgrades(
    bridge: BridgeUnderTest,
) -> None:
    endpoint_id = eid()
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id})
    token = r.body["enrollment_token"]
    for bad in ("not base64!", "AAAA", 42):
        r2 = await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": token, "public_key": bad})
        assert r2.status == 400 and r2.body["error"]["code"] == "invalid_public_key", r2.body
    key = EndpointKey.generate()
    r3 = await bridge.request(
        "POST", "/api/agent/enroll", body={"enrollment_token": token, "public_key": key.public_key_b64}
    )
    assert r3.status == 200, r3.body
    # Re-enrolled by an admin, without a key: refused (a signed endpoint stays signed).
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id})
    r4 = await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": r.body["enrollment_token"]})
    assert r4.status == 400 and "public_key is required" in r4.body["error"]["message"]


# --- re-keying -------------------------------------------------------------------------------


async def test_a_technician_cannot_re_enroll_an_endpoint_that_has_an_agent(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge, label="Front desk")
    tech = await technician_token(bridge)
    before = await bridge.request("GET", f"/api/endpoints/{s.endpoint.endpoint_id}", token=bridge.admin_token)
    r = await bridge.request(
        "POST",
        "/api/enrollments",
        token=tech,
        body={"endpoint_id": s.endpoint.endpoint_id, "label": "Attacker's label"},
    )
    assert r.status == 403 and r.body["error"]["code"] == "forbidden", r.body
    after = await bridge.request("GET", f"/api/endpoints/{s.endpoint.endpoint_id}", token=bridge.admin_token)
    assert after.body == before.body  # label, keys and the audit head: nothing changed
    assert s.runtime.socket is not None and not s.runtime.socket.closed
    # A technician still registers new endpoints.
    fresh = await bridge.request("POST", "/api/enrollments", token=tech, body={"endpoint_id": eid()})
    assert fresh.status == 201, fresh.body


async def test_an_admin_re_key_is_recorded_and_retires_the_old_key(bridge: BridgeUnderTest) -> None:
    s = await signed_endpoint(bridge)
    old_key_id = s.key.key_id
    pid = await s.delivered()
    new_key = EndpointKey.generate()
    r = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": s.endpoint.endpoint_id}
    )
    assert r.status == 201
    r2 = await bridge.request(
        "POST",
        "/api/agent/enroll",
        body={"enrollment_token": r.body["enrollment_token"], "public_key": new_key.public_key_b64},
    )
    assert r2.status == 200
    # The old agent is closed and refused.
    with pytest.raises(ConnectionError):
        await s.runtime.socket.recv(timeout=2.0)  # type: ignore[union-attr]
    refused = await bridge.connect_agent(s.endpoint.endpoint_id, s.endpoint.secret)
    assert isinstance(refused, Resp) and refused.status == 401
    # The new agent answers; a decision signed by the old key is refused as retired.
    fresh = ScriptedRuntime(bridge, Enrolled(s.endpoint.endpoint_id, r2.body["agent_secret"]))
    await fresh.connect()
    s.runtime = fresh
    stale = s.decided(pid)
    (error,) = of_type(await s.send(stale), wire.Error)
    assert error.code == "signature_refused" and "retired_key" in error.message
    s.key = new_key
    assert of_type(await s.send(s.decided(pid)), wire.Ack)
    view = await prompt_view(bridge, s.endpoint.endpoint_id, pid)
    assert view["state"] == "approved" and view["decision_signature"]["key_id"] == new_key.key_id
    keys = (await bridge.request("GET", f"/api/endpoints/{s.endpoint.endpoint_id}", token=bridge.admin_token)).body
    assert [k["key_id"] for k in keys["keys"]] == [old_key_id, new_key.key_id]
    assert keys["keys"][0]["valid_until"] is not None and keys["keys"][1]["valid_until"] is None
    lines = await export(bridge, s.endpoint.endpoint_id)
    rekeys = [json.loads(x) for x in lines if '"key_registered"' in x]
    assert [(f["fields"]["rekey"], f["fields"]["previous_key_id"], f["fields"]["by"]) for f in rekeys] == [
        (False, None, "admin"),
        (True, old_key_id, "admin"),
    ]
    report = verify_export(lines, verify)
    assert report.ok, report.problems
    assert [(k.key_id, k.valid_until_ms is None) for k in report.keys] == [
        (old_key_id, False),
        (new_key.key_id, True),
    ]


# --- the routes this adds, tried without the right to use them ---------------------------------


async def test_the_endpoint_record_and_its_audit_export_refuse_who_may_not_read_them(bridge: BridgeUnderTest) -> None:
    """Both reads are technician calls: no token, a junk token or an agent's secret gets 401;
    an endpoint that was never registered is 404 ``unknown_endpoint`` (never an empty export);
    and on the Worker none of this creates storage."""
    s = await signed_endpoint(bridge)
    unknown = eid()
    for path in (f"/api/endpoints/{s.endpoint.endpoint_id}", f"/api/endpoints/{s.endpoint.endpoint_id}/audit"):
        for token in (None, "cst_not-a-token", s.endpoint.secret):
            r = await bridge.request("GET", path, token=token)
            assert r.status == 401 and r.body["error"]["code"] in ("missing_token", "invalid_token"), (path, r.body)
    for path in (f"/api/endpoints/{unknown}", f"/api/endpoints/{unknown}/audit"):
        r = await bridge.request("GET", path, token=bridge.admin_token)
        assert r.status == 404 and r.body["error"]["code"] == "unknown_endpoint", (path, r.body)
        r = await bridge.request("POST", path, token=bridge.admin_token, body={})
        assert r.status == 405, (path, r.body)
    harness = getattr(bridge, "harness", None)
    if harness is not None:  # the Workers stand-in: the unknown endpoint's object stayed empty
        assert not [name for name in harness.objects_with_storage() if unknown in name]
