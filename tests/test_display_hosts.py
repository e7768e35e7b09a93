"""Evidence of display on both hosts (DESIGN §13, issue 16): a runtime's signed
``caisey/decision/v2`` answers land with their evidence, ``locked`` and ``no_user`` are distinct
outcomes in the API and the audit export, an answer whose shown text was altered after signing
is refused, and ``caisey-audit verify`` proves the evidence — and fails when the shown text in
the export is altered, even with the chain re-linked around it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from caisey import wire
from caisey.audit import link
from caisey.signing import answer_message, b64encode
from tests.agent_harness import seeded_key
from tests.bridge_hosts import BridgeUnderTest, Enrolled, ScriptedRuntime
from worker.audit_cli import check

KEY = seeded_key(16)


async def enroll_signed(bridge: BridgeUnderTest) -> Enrolled:
    endpoint_id = "ep-" + uuid.uuid4().hex[:10]
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id})
    assert r.status == 201, r.body
    body = {"enrollment_token": r.body["enrollment_token"], "public_key": KEY.public_key_b64}
    r2 = await bridge.request("POST", "/api/agent/enroll", body=body)
    assert r2.status == 200, r2.body
    return Enrolled(endpoint_id, r2.body["agent_secret"])


async def create(bridge: BridgeUnderTest, endpoint_id: str, title: str) -> str:
    body = {"title": title, "message": "Sam from support", "action": "remote_control", "on_no_user": "deny"}
    r = await bridge.request("POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=body)
    assert r.status == 201, r.body
    return str(r.body["prompt_id"])


def shown_evidence(at_ms: int, text: str = "Caisey\nAllow remote control?") -> wire.DisplayEvidence:
    return wire.DisplayEvidence(
        outcome="shown",
        session="console",
        presenter="tk",
        user="ACME\\alice",
        shown_at_ms=at_ms,
        locale="de",
        template_id="remote_control",
        template_version=1,
        shown_text=text,
        shown_sha256=wire.shown_text_sha256("de", "remote_control", 1, text),
    )


def signed_update(
    runtime: ScriptedRuntime,
    copy: wire.PromptCopy,
    decision: str,
    how: str,
    at_ms: int,
    display: wire.DisplayEvidence,
    signed_display: wire.DisplayEvidence | None = None,
) -> wire.PromptUpdate:
    message = answer_message(runtime.endpoint.endpoint_id, copy, decision, how, at_ms, signed_display or display)
    return wire.PromptUpdate(
        id=runtime.new_id(),
        prompt_id=copy.prompt_id,
        status="decided",
        decision=decision,
        decided_at_ms=at_ms,
        how=how,
        key_id=KEY.key_id,
        sig=b64encode(KEY.sign(message)),
        display=display,
    )


async def view(bridge: BridgeUnderTest, endpoint_id: str, prompt_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}", token=bridge.admin_token)
    assert r.status == 200, r.body
    return dict(r.body)


async def test_evidence_outcomes_signature_and_export(bridge: BridgeUnderTest) -> None:
    endpoint = await enroll_signed(bridge)
    eid = endpoint.endpoint_id
    ids = {
        name: await create(bridge, eid, f"Allow remote control? ({name})")
        for name in ("shown", "locked", "nobody", "forged")
    }
    runtime = ScriptedRuntime(bridge, endpoint)
    frames = await runtime.connect()
    frames += await runtime.drain()
    delivers = {f.prompt.prompt_id: f for f in frames if isinstance(f, wire.PromptDeliver)}
    assert set(delivers) == set(ids.values())
    for deliver in delivers.values():
        await runtime.receipt(deliver)

    at = bridge.now_ms()
    copies = {name: delivers[pid].prompt for name, pid in ids.items()}
    locked = wire.DisplayEvidence(outcome="locked", session="console", locked=True, user="ACME\\alice")
    nobody = wire.DisplayEvidence(outcome="no_user")
    good = shown_evidence(at)
    await runtime.send(signed_update(runtime, copies["shown"], "approve", "user", at, good))
    await runtime.send(signed_update(runtime, copies["locked"], "deny", "no_user_policy", at, locked))
    await runtime.send(signed_update(runtime, copies["nobody"], "deny", "no_user_policy", at, nobody))
    # Signed over one text, sent with another: the signature does not hold over what it claims.
    altered = shown_evidence(at, "Caisey\nAllow a harmless check?")
    forged = signed_update(runtime, copies["forged"], "approve", "user", at, altered, signed_display=good)
    await runtime.send(forged)
    answers = await runtime.drain(quiet=0.5)
    refused = [e for e in answers if isinstance(e, wire.Error) and e.code == "signature_refused"]
    assert [e.of for e in refused] == [forged.id] and "bad_signature" in refused[0].message

    shown_view = await view(bridge, eid, ids["shown"])
    assert (shown_view["state"], shown_view["outcome"]) == ("approved", "user")
    assert shown_view["display"]["user"] == "ACME\\alice" and shown_view["display"]["locale"] == "de"
    assert shown_view["display"]["shown_sha256"] == good.shown_sha256
    locked_view = await view(bridge, eid, ids["locked"])
    assert (locked_view["state"], locked_view["outcome"], locked_view["decided_how"]) == (
        "denied",
        "locked",
        "no_user_policy",
    )
    assert locked_view["display"]["locked"] is True and locked_view["display"]["shown_at"] is None
    nobody_view = await view(bridge, eid, ids["nobody"])
    assert (nobody_view["state"], nobody_view["outcome"]) == ("denied", "no_user")
    forged_view = await view(bridge, eid, ids["forged"])
    assert forged_view["decision"] is None and forged_view["outcome"] is None and forged_view["display"] is None
    await runtime.close()

    # The audit export carries the evidence; caisey-audit verify proves it (v2) and says who answered.
    r = await bridge.request("GET", f"/api/endpoints/{eid}/audit", token=bridge.admin_token)
    assert r.status == 200
    lines = r.body.splitlines() if isinstance(r.body, str) else []
    report = check(lines)
    assert report.ok, (report.problems, [p.verdict for p in report.prompts])
    outcomes = {p.prompt_id: (p.outcome, p.signed_by) for p in report.prompts}
    assert outcomes[ids["shown"]] == ("user", KEY.key_id)
    assert outcomes[ids["locked"]] == ("locked", KEY.key_id)
    assert outcomes[ids["nobody"]] == ("no_user", KEY.key_id)
    by_id = {p.prompt_id: p for p in report.prompts}
    assert (by_id[ids["shown"]].shown or "").startswith("shown to ACME\\alice on the console session at ")
    assert by_id[ids["locked"]].shown == "screen locked — answered by the no-user rule"
    assert by_id[ids["nobody"]].shown == "nobody logged in — answered by the no-user rule"

    # An auditor's copy whose shown text was edited — the chain re-linked so that every hash
    # holds — fails on the signature of that decision.
    tampered = relink(lines, ids["shown"], "Caisey\nAllow a harmless check?")
    bad = check(tampered)
    assert not bad.ok and [what for _, what in bad.problems] == [
        f"the signature of this approve of prompt {ids['shown']} does not verify with key {KEY.key_id}"
    ]
    assert not next(p for p in bad.prompts if p.prompt_id == ids["shown"]).ok


def relink(lines: list[str], prompt_id: str, new_text: str) -> list[str]:
    """The export with the decided fact's shown text replaced and every later hash recomputed."""
    out: list[str] = []
    previous = ""
    for line in lines:
        body = json.loads(line)
        if body["type"] == "header":
            previous = body["genesis"]
        elif body["type"] == "fact":
            fields = body["fields"]
            if body["prompt_id"] == prompt_id and body["kind"] == "decided":
                display = dict(fields["display"])
                display["shown_text"] = new_text
                display["shown_sha256"] = wire.shown_text_sha256(
                    display.get("locale"), display.get("template_id"), display.get("template_version"), new_text
                )
                fields = {**fields, "display": display}
                body["fields"] = fields
            previous = link(
                previous, body["seq"], body["prompt_id"], body["at_ms"], body["kind"], fields, body["event_id"]
            )
            body["hash"] = previous
        elif body["type"] == "head":
            body["hash"] = previous
        out.append(json.dumps(body))
    return out


async def test_locale_from_hello_and_bad_evidence_refused(bridge: BridgeUnderTest) -> None:
    endpoint = await enroll_signed(bridge)
    eid = endpoint.endpoint_id
    pid = await create(bridge, eid, "Allow remote control?")
    runtime = ScriptedRuntime(bridge, endpoint)
    await runtime.connect(hello=False)
    hello = wire.Hello(runtime.new_id(), eid, "caisey-agent/test", runtime.local_now(), locale="nl-BE")
    await runtime.send(hello)
    frames = await runtime.drain()
    r = await bridge.request("GET", f"/api/endpoints/{eid}", token=bridge.admin_token)
    assert r.body["locale"] == "nl-BE"
    deliver = next(f for f in frames if isinstance(f, wire.PromptDeliver) and f.prompt.prompt_id == pid)
    await runtime.receipt(deliver)
    # An agent (or someone holding its secret) sending evidence outside the contract is refused
    # with a precise error, and nothing is recorded.
    good = shown_evidence(bridge.now_ms()).to_json()
    for bad, code in (
        ({**good, "outcome": "approved_by_admin"}, "invalid_field"),
        ({**good, "shown_text": "edited"}, "invalid_field"),  # its hash no longer matches
        ({**good, "user": "x" * 500}, "field_too_long"),
    ):
        frame = {"v": 1, "type": "prompt.update", "id": runtime.new_id(), "prompt_id": pid, "status": "decided"}
        frame |= {"decision": "approve", "decided_at_ms": bridge.now_ms(), "how": "user", "display": bad}
        await runtime.send_raw(json.dumps(frame))
        errors = [e for e in await runtime.drain() if isinstance(e, wire.Error)]
        assert [(e.code, e.of) for e in errors] == [(code, frame["id"])], errors
    view_now = await view(bridge, eid, pid)
    assert view_now["decision"] is None and view_now["display"] is None
    await runtime.close()
