"""Consent policies per client, site and endpoint, on both hosts (issue 16; DESIGN §13).

One scenario per host: an admin sets a client's, a site's and an endpoint's policy; the
effective policy resolves field by field (endpoint > site > client > default) and says where
each value came from; every refusal is checked — each rule's 422 ``policy_violation`` on a
create, 403 for a technician's write (nothing changes), 400 for each kind of bad policy body,
404 out of scope — and a create inside the policy carries the policy's defaults, the reason and
ticket, the locked-screen rule and the branding on its fact, its API view, its deliver frame and
the verified audit export. A technician cannot bring a policy of their own in an internal header.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from caisey import wire
from caisey.audit import verify_export
from tests.bridge_hosts import BridgeUnderTest, Resp, ScriptedRuntime, of_type
from tests.openapi_contract import conforms
from tests.test_admin_scope import enroll_for, new_token
from tests.workers_host import WorkersBridge

LOGO = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
BASE = {"title": "Allow remote control?", "action": "remote_control"}
WHY = {"reason": "printer queue stuck", "ticket": {"id": "T-42", "url": "https://tickets.example/T-42"}}


class Conforming:
    """The bridge, each answer checked against the OpenAPI document (``worker/openapi.py``)."""

    def __init__(self, bridge: BridgeUnderTest) -> None:
        self.inner = bridge
        self.admin_token = bridge.admin_token

    async def request(self, method: str, path: str, **kw: Any) -> Resp:
        r = await self.inner.request(method, path, **kw)
        raw = b"" if r.body is None else (r.body.encode() if isinstance(r.body, str) else json.dumps(r.body).encode())
        headers = {k.lower(): v for k, v in dict(r.headers).items()}
        if r.body is not None and "content-type" not in headers:
            headers["content-type"] = "application/json"
        conforms(method, path.split("?")[0], r.status, headers, raw)
        return r

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def refused(r: Resp, status: int, code: str) -> None:
    assert r.status == status and r.body["error"]["code"] == code, (r.status, r.body)


def violation(r: Resp, rule: str) -> None:
    refused(r, 422, "policy_violation")
    assert r.body["error"]["rule"] == rule and r.body["error"]["message"].startswith(f"policy rule {rule}:"), r.body


async def test_policy_resolution_enforcement_and_every_refusal(bridge: BridgeUnderTest) -> None:
    bridge = Conforming(bridge)  # every answer below is also checked against the OpenAPI document
    admin = bridge.admin_token
    client, other_client = uid("Acme Corp"), uid("Globex")
    site = "HQ 1"
    ep, sibling, foreign = uid("pol"), uid("pol-sib"), uid("pol-x")
    secret = await enroll_for(bridge, ep, client, site)
    await enroll_for(bridge, sibling, client, "Annex")
    await enroll_for(bridge, foreign, other_client, "HQ 1")
    tech = await new_token(bridge, clients=[client])
    client_path = f"/api/clients/{client.replace(' ', '%20')}/policy"
    site_path = f"/api/clients/{client.replace(' ', '%20')}/sites/{site.replace(' ', '%20')}/policy"

    # --- the admin sets three levels -------------------------------------------------------
    r = await bridge.request(
        "PUT",
        client_path,
        token=admin,
        body={
            "expires_in_default": 120,
            "expires_in_max": 600,
            "on_no_user_allowed": ["wait", "deny"],
            "on_no_user_default": "deny",
            "escalate_after": 300,
            "require_reason": True,
            "on_locked": "no_user",
            "brand_name": "Acme IT",
            "brand_logo_png": LOGO,
            "expires_in": 600,
        },
    )
    refused(r, 400, "unknown_field")  # expires_in is not a policy field
    client_policy = {
        "expires_in_default": 120,
        "expires_in_max": 600,
        "on_no_user_allowed": ["wait", "deny"],
        "on_no_user_default": "deny",
        "escalate_after": 300,
        "require_reason": True,
        "on_locked": "no_user",
        "brand_name": "Acme IT",
        "brand_logo_png": LOGO,
    }
    r = await bridge.request("PUT", client_path, token=admin, body=client_policy)
    assert r.status == 200, r.body
    assert r.body["level"] == "client" and r.body["client"] == client and r.body["updated_by"] == "admin"
    assert r.body["policy"]["on_no_user_allowed"] == ["deny", "wait"]  # kept in the canonical order
    r = await bridge.request("PUT", site_path, token=admin, body={"expires_in_default": 60})
    assert r.status == 200 and r.body["level"] == "site" and r.body["site"] == site, r.body
    r = await bridge.request("PUT", f"/api/endpoints/{ep}/policy", token=admin, body={"expires_in_max": 300})
    assert r.status == 200 and r.body["level"] == "endpoint", r.body
    # The client's name in the path ignores case, as client names do everywhere.
    r = await bridge.request("GET", client_path.replace("Acme", "ACME"), token=admin)
    assert r.status == 200 and r.body["policy"]["brand_name"] == "Acme IT", r.body

    # --- resolution, field by field, with sources (a technician in scope may read it) ----------------
    r = await bridge.request("GET", f"/api/endpoints/{ep}/policy", token=tech)
    assert r.status == 200, r.body
    eff = r.body["effective"]
    assert (r.body["client"], r.body["site"]) == (client, site)
    assert {k: (v["value"], v["source"]) for k, v in eff.items() if k != "brand_logo_png"} == {
        "expires_in_default": (60, "site"),
        "expires_in_max": (300, "endpoint"),
        "on_no_user_allowed": (["deny", "wait"], "client"),
        "on_no_user_default": ("deny", "client"),
        "escalate_after": (300, "client"),
        "require_reason": (True, "client"),
        "on_locked": ("no_user", "client"),
        "brand_name": ("Acme IT", "client"),
    }
    r = await bridge.request("GET", f"/api/endpoints/{sibling}/policy", token=tech)
    assert (
        r.body["effective"]["expires_in_default"]["value"],
        r.body["effective"]["expires_in_default"]["source"],
    ) == (
        120,
        "client",
    )
    assert r.body["effective"]["expires_in_max"] == {"value": 600, "source": "client"}
    r = await bridge.request("GET", f"/api/endpoints/{foreign}/policy", token=admin)
    assert {v["source"] for v in r.body["effective"].values()} == {"default"}
    assert r.body["effective"]["on_locked"]["value"] is None and r.body["effective"]["require_reason"]["value"] is False

    # Moving an endpoint to another client changes its effective policy for the next create.
    sibling_prompts = f"/api/endpoints/{sibling}/prompts"
    violation(await bridge.request("POST", sibling_prompts, token=admin, body=BASE), "require_reason")
    r = await bridge.request("PATCH", f"/api/endpoints/{sibling}", token=admin, body={"client": other_client})
    assert r.status == 200, r.body
    r = await bridge.request("GET", f"/api/endpoints/{sibling}/policy", token=admin)
    assert r.body["effective"]["require_reason"] == {"value": False, "source": "default"}
    r = await bridge.request("POST", sibling_prompts, token=admin, body=BASE)
    assert r.status == 201 and r.body["brand_name"] is None, r.body

    # --- refusals on the policy routes ----------------------------------------------------------
    r = await bridge.request("GET", f"/api/endpoints/{foreign}/policy", token=tech)  # out of scope: as unknown
    unknown = await bridge.request("GET", f"/api/endpoints/{uid('nope')}/policy", token=admin)
    refused(r, 404, "unknown_endpoint")
    refused(unknown, 404, "unknown_endpoint")
    before = (await bridge.request("GET", client_path, token=admin)).body
    for method, path, body in [
        ("PUT", client_path, {"require_reason": False}),
        ("DELETE", client_path, None),
        ("PUT", site_path, {"require_reason": False}),
        ("PUT", f"/api/endpoints/{ep}/policy", {"expires_in_max": 600000}),
        ("DELETE", f"/api/endpoints/{ep}/policy", None),
        ("GET", client_path, None),
        ("GET", "/api/policies", None),
    ]:
        refused(await bridge.request(method, path, token=tech, body=body), 403, "forbidden")
    refused(await bridge.request("PUT", client_path, body={"require_reason": False}), 401, "missing_token")
    assert (await bridge.request("GET", client_path, token=admin)).body == before  # nothing changed
    bad_bodies: list[tuple[str, Any, str]] = [
        (client_path, {"colour": "red"}, "unknown_field"),
        (client_path, {"expires_in_max": 1}, "invalid_field"),
        (client_path, {"expires_in_max": 8 * 86_400}, "invalid_field"),
        (client_path, {"expires_in_default": 700, "expires_in_max": 600}, "invalid_field"),
        (client_path, {"expires_in_max": "600"}, "invalid_field"),
        (client_path, {"on_no_user_allowed": []}, "invalid_field"),
        (client_path, {"on_no_user_allowed": ["deny", "deny"]}, "invalid_field"),
        (client_path, {"on_no_user_allowed": ["maybe"]}, "invalid_field"),
        (client_path, {"on_no_user_allowed": ["deny"], "on_no_user_default": "wait"}, "invalid_field"),
        (client_path, {"escalate_after": 1}, "invalid_field"),
        (client_path, {"require_reason": "yes"}, "invalid_field"),
        (client_path, {"on_locked": "approve"}, "invalid_field"),
        (client_path, {"brand_name": "Acme\x1b[8m"}, "invalid_field"),
        (client_path, {"brand_name": "x" * (wire.MAX_BRAND_NAME_CHARS + 1)}, "field_too_long"),
        (client_path, {"brand_logo_png": "R0lGODlhAQABAAAAACw="}, "invalid_field"),  # a GIF
        (site_path, {"brand_name": "Site brand"}, "invalid_field"),  # branding is per client
        (f"/api/endpoints/{ep}/policy", {"brand_logo_png": LOGO}, "invalid_field"),
        ("/api/clients/%20bad/policy", {"require_reason": True}, "invalid_field"),  # not a client name
    ]
    for path, body, code in bad_bodies:
        refused(await bridge.request("PUT", path, token=admin, body=body), 400, code)
    refused(await bridge.request("PUT", client_path, token=admin, raw=b"{nope"), 400, "malformed_json")
    refused(await bridge.request("PUT", client_path, token=admin, raw=b"[1]"), 400, "malformed_json")
    refused(
        await bridge.request("PUT", f"/api/endpoints/{uid('nope')}/policy", token=admin, body={}),
        404,
        "unknown_endpoint",
    )
    assert (await bridge.request("GET", client_path, token=admin)).body == before  # still nothing changed
    listed = await bridge.request("GET", "/api/policies", token=admin)
    mine = [p for p in listed.body["policies"] if p["client"] == client or p["endpoint_id"] == ep]
    assert sorted(p["level"] for p in mine) == ["client", "endpoint", "site"], listed.body

    # --- enforcement on create: each rule's 422 -----------------------------------------------------------
    runtime = ScriptedRuntime(bridge, _enrolled(ep, secret))
    await runtime.connect()
    prompts = f"/api/endpoints/{ep}/prompts"
    violation(await bridge.request("POST", prompts, token=tech, body=BASE), "require_reason")
    violation(
        await bridge.request("POST", prompts, token=tech, body=BASE | WHY | {"expires_in": 301}), "expires_in_max"
    )
    violation(
        await bridge.request("POST", prompts, token=tech, body=BASE | WHY | {"on_no_user": "approve"}),
        "on_no_user_allowed",
    )
    # An internal header from outside is stripped: no technician brings a policy of their own.
    forged = json.dumps({"require_reason": False, "expires_in_max": 999999, "on_no_user_allowed": ["approve"]})
    r = await bridge.request("POST", prompts, token=tech, body=BASE, headers={"x-caisey-policy": forged})
    violation(r, "require_reason")
    # Bad reason or ticket: 400, whatever the policy.
    for extra, code in [
        ({"reason": "stuck\x1b]52;c;aGk=\x07"}, "invalid_field"),
        ({"reason": "x" * (wire.MAX_REASON_CHARS + 1)}, "field_too_long"),
        ({"reason": ""}, "invalid_field"),
        ({"reason": "ok", "ticket": {"id": "T-1", "url": "http://tickets.example/1"}}, "invalid_field"),
        ({"reason": "ok", "ticket": {"id": "T-1", "url": "javascript:alert(1)"}}, "invalid_field"),
        ({"reason": "ok", "ticket": {"url": "https://tickets.example/1"}}, "invalid_field"),
        ({"reason": "ok", "ticket": {"id": "T-1", "owner": "bob"}}, "invalid_field"),
        ({"reason": "ok", "ticket": "T-1"}, "invalid_field"),
    ]:
        refused(await bridge.request("POST", prompts, token=tech, body=BASE | extra), 400, code)
    assert (await bridge.request("GET", prompts, token=tech)).body["prompts"] == []  # none was created

    # --- a create inside the policy: defaults applied, everything carried -------------------------
    r = await bridge.request("POST", prompts, token=tech, body=BASE | WHY)
    assert r.status == 201, r.body
    view = r.body
    assert view["on_no_user"] == "deny"  # the client's default
    lifetime_ms = _ms(view["expires_at"]) - _ms(view["created_at"])
    assert lifetime_ms == 60_000  # the site's default
    assert view["request_reason"] == "printer queue stuck"
    assert view["ticket"] == {"id": "T-42", "url": "https://tickets.example/T-42"}
    assert (view["on_locked"], view["brand_name"], view["grant_minutes"]) == ("no_user", "Acme IT", None)
    assert view["reason"] is None  # the final state's reason, unchanged in meaning
    frames = of_type(await runtime.drain(), wire.PromptDeliver)
    # One deliver; this runtime sends no receipt, so a retry of it (full jitter from 0 ms,
    # same event id) may come within the drain.
    assert len(frames) >= 1 and {(f.id, f.prompt) for f in frames} == {(frames[0].id, frames[0].prompt)}
    copy = frames[0].prompt
    assert (copy.reason, copy.ticket_id, copy.ticket_url) == (
        "printer queue stuck",
        "T-42",
        "https://tickets.example/T-42",
    )
    assert (copy.on_locked, copy.brand_name, copy.brand_logo_png, copy.on_no_user) == (
        "no_user",
        "Acme IT",
        LOGO,
        "deny",
    )
    # A ticket without a URL is fine; the explicit values within the policy are kept.
    r = await bridge.request(
        "POST",
        prompts,
        token=tech,
        body=BASE | {"reason": "disk full", "ticket": {"id": "T-7"}, "expires_in": 300, "on_no_user": "wait"},
    )
    assert r.status == 201 and r.body["ticket"] == {"id": "T-7", "url": None} and r.body["on_no_user"] == "wait", r.body
    # A retry keeps the reason and ticket, and is held to the policy too.
    pid = view["prompt_id"]
    violation(
        await bridge.request("POST", f"{prompts}/{pid}/retry", token=tech, body={"expires_in": 400}), "expires_in_max"
    )
    r = await bridge.request("POST", f"{prompts}/{pid}/retry", token=tech, body={})
    assert r.status == 201 and r.body["request_reason"] == "printer queue stuck" and r.body["ticket"]["id"] == "T-42"

    # --- a change takes effect on the next create; deleting a level falls back ----------------------
    r = await bridge.request("DELETE", f"/api/endpoints/{ep}/policy", token=admin)
    assert r.status == 200 and r.body["policy"] == {}, r.body
    refused(await bridge.request("DELETE", f"/api/endpoints/{ep}/policy", token=admin), 404, "unknown_policy")
    r = await bridge.request("GET", f"/api/endpoints/{ep}/policy", token=tech)
    assert r.body["effective"]["expires_in_max"] == {"value": 600, "source": "client"}
    r = await bridge.request("POST", prompts, token=tech, body=BASE | WHY | {"expires_in": 500})
    assert r.status == 201, r.body
    r = await bridge.request("PUT", client_path, token=admin, body={"require_reason": False})
    assert r.status == 200
    r = await bridge.request("POST", prompts, token=tech, body=BASE | {"expires_in": 30})
    assert r.status == 201 and r.body["request_reason"] is None and r.body["brand_name"] is None, r.body
    # A prompt with no extra field at all travels as before (hashed under v1).
    frames = of_type(await runtime.drain(), wire.PromptDeliver)
    last = next(f for f in frames if f.prompt.prompt_id == r.body["prompt_id"]).prompt
    assert all(value is None for value in last.extras().values())

    # --- the audit export carries it and verifies ------------------------------------------------
    audit = await bridge.request("GET", f"/api/endpoints/{ep}/audit", token=admin)
    report = verify_export(audit.body.splitlines(), lambda claim: False)
    assert report.ok, report.problems
    created = [json.loads(x) for x in audit.body.splitlines() if '"kind":"created"' in x.replace(" ", "")]
    first = next(c for c in created if c.get("prompt_id") == pid)["fields"]
    assert (first["reason"], first["ticket_id"], first["ticket_url"], first["on_locked"], first["brand_name"]) == (
        "printer queue stuck",
        "T-42",
        "https://tickets.example/T-42",
        "no_user",
        "Acme IT",
    )
    await runtime.close()


def _ms(rfc3339: str) -> int:
    from caisey.clock import from_rfc3339

    return from_rfc3339(rfc3339)


def _enrolled(endpoint_id: str, secret: str) -> Any:
    from tests.bridge_hosts import Enrolled

    return Enrolled(endpoint_id, secret)


async def test_on_cloudflare_a_create_stays_at_three_invocations_and_a_change_applies_within_30_s() -> None:
    """The Worker keeps each endpoint's effective policy for 30 s (``entry.POLICY_CACHE_MS``): a
    create runs Python three times in steady state (Worker, endpoint object, its fleet line), and a
    change made through another isolate reaches creates once the cached answer is 30 s old."""
    bridge = WorkersBridge(heartbeat_ms=None)
    module = bridge.harness.module
    ep = uid("pol-cf")
    await enroll_for(bridge, ep, uid("Initech"))
    tech = await new_token(bridge)
    prompts = f"/api/endpoints/{ep}/prompts"
    body = BASE | {"expires_in": 60}

    async def invocations_of_create(expect: int) -> int:
        before = bridge.harness.python_invocations
        r = await bridge.request("POST", prompts, token=tech, body=body)
        assert r.status == expect, r.body
        return int(bridge.harness.python_invocations - before)

    await invocations_of_create(201)  # warms the token and policy caches
    assert await invocations_of_create(201) == 3
    # Another isolate sets require_reason: this one still holds the old answer (simulated by
    # putting its cache back after the write, which through this isolate clears it).
    held = dict(module._policy_cache)
    r = await bridge.request(
        "PUT", f"/api/endpoints/{ep}/policy", token=bridge.admin_token, body={"require_reason": True}
    )
    assert r.status == 200, r.body
    module._policy_cache.update(held)
    await invocations_of_create(201)  # within 30 s: the old policy
    await bridge.advance(module.POLICY_CACHE_MS + 1_000)
    await invocations_of_create(422)  # the cached answer is too old: asked again, and refused
    # Through the isolate that made a change, it applies at once.
    await bridge.request("DELETE", f"/api/endpoints/{ep}/policy", token=bridge.admin_token)
    await invocations_of_create(201)


async def test_the_policys_escalate_after_applies_to_a_create_that_gives_none(bridge: BridgeUnderTest) -> None:
    ep = uid("pol-esc")
    await enroll_for(bridge, ep, uid("Umbrella"))
    r = await bridge.request("PUT", f"/api/endpoints/{ep}/policy", token=bridge.admin_token, body={"escalate_after": 5})
    assert r.status == 200, r.body
    prompts = f"/api/endpoints/{ep}/prompts"
    by_policy = await bridge.request("POST", prompts, token=bridge.admin_token, body=BASE | {"expires_in": 120})
    own = await bridge.request(
        "POST", prompts, token=bridge.admin_token, body=BASE | {"expires_in": 120, "escalate_after": 600}
    )
    assert by_policy.status == own.status == 201, (by_policy.body, own.body)
    escalated = None
    for _ in range(40):
        await bridge.advance(500)
        view = (await bridge.request("GET", f"{prompts}/{by_policy.body['prompt_id']}", token=bridge.admin_token)).body
        if view["escalated_at"] is not None:
            escalated = view
            break
    assert escalated is not None, "the policy's escalate_after (5 s) did not escalate the prompt"
    assert escalated["escalations"][0]["auto"] is True
    mine = (await bridge.request("GET", f"{prompts}/{own.body['prompt_id']}", token=bridge.admin_token)).body
    assert mine["escalated_at"] is None  # its own escalate_after (600 s) wins over the policy's
    # A removed endpoint keeps its policy, readable as its prompts are; its actor refuses creates.
    r = await bridge.request("DELETE", f"/api/endpoints/{ep}", token=bridge.admin_token)
    assert r.status == 200, r.body
    r = await bridge.request("GET", f"/api/endpoints/{ep}/policy", token=bridge.admin_token)
    assert r.status == 200 and r.body["effective"]["escalate_after"] == {"value": 5, "source": "endpoint"}, r.body
    r = await bridge.request("POST", prompts, token=bridge.admin_token, body=BASE)
    assert r.status == 410 and r.body["error"]["code"] == "endpoint_removed", r.body


def test_webhook_prompt_data_carries_the_reason_and_ticket() -> None:
    """``prompt.*`` events (DESIGN §11) carry ``request_reason`` and ``ticket`` (issue 16), and
    validate against the document's ``webhooks`` entries."""
    from tests.openapi_contract import event_problem
    from tests.test_hooks import Rig

    rig = Rig()
    rig.create(expires_in=600, reason="printer queue stuck", ticket={"id": "T-42", "url": "https://t.example/42"})
    rig.create(expires_in=600)
    rig.alarm()
    created = [json.loads(s["body"])["data"] for s in rig.sends() if json.loads(s["body"])["type"] == "prompt.created"]
    assert [(d["request_reason"], d["ticket"]) for d in created] == [
        ("printer queue stuck", {"id": "T-42", "url": "https://t.example/42"}),
        (None, None),
    ]
    for send in rig.sends():
        assert event_problem(send["headers"], send["body"].encode()) is None
