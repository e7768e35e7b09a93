"""The OpenAPI 3.1 contract (worker/openapi.py, issue 13 item 4) against the code, the README
and both hosts.

- The document is valid OpenAPI 3.1 (openapi-spec-validator) and every schema in it valid
  JSON Schema 2020-12.
- Routes and operations are the same set: every ``worker.api._ROUTES`` entry is documented
  at its path template with its op and auth, and nothing else is documented. A route added
  without documentation fails here, saying what to add.
- Every ``ApiError(status, "code")`` the bridge can raise is documented with that status, and
  every documented code is one the bridge raises.
- The README's API table names exactly the documented operations.
- Both hosts serve the document at ``GET /api/openapi.json`` without a token, and a realistic
  flow on both (enroll, create, list, get, cancel, retry, a decided prompt's 409, audit export,
  tokens, limits, conditional GETs, and administration: whoami, the token list, a scoped token,
  PATCH and DELETE of an endpoint, a removed endpoint's 410s; escalation, webhook subscriptions
  and the fleet settings) answers only what the document says.
"""

from __future__ import annotations

import copy
import http.client
import json
import random
import re
import uuid
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from caisey import wire
from tests.bridge_hosts import (
    BridgeUnderTest,
    LocalBridgeProcess,
    Resp,
    ScriptedRuntime,
    UrlBridge,
    enroll,
    of_type,
)
from tests.conftest import HOSTS, bridge_of_kind
from tests.openapi_contract import conforms, documented_error_codes, event_problem, operations
from tests.test_hooks import ENDPOINT as HOOKS_ENDPOINT
from tests.test_hooks import Rig
from worker.api import _ROUTES, ApiRequest
from worker.host import Entropy
from worker.openapi import DOCUMENT, EVENT_SCHEMAS, JSON_SCHEMA_DIALECT, OPENAPI_PATH
from worker.sqlite_store import SqliteStore
from worker.webhook_subscriptions import MIGRATION as WEBHOOKS_MIGRATION
from worker.webhook_subscriptions import WebhookSubscriptions
from worker.webhooks import EVENT_TYPES

ROOT = Path(__file__).resolve().parent.parent
URL_BRIDGE = UrlBridge.from_env()  # scripts/test-worker: wrangler dev (the real workerd)
HOW_TO = (
    "To document a route: add paths[TEMPLATE][METHOD] = _op(OP, AUTH, summary, responses, errors=…, "
    "parameters=…, body=…) in _operations() of worker/openapi.py, and a README 'HTTP API' table row "
    "naming `METHOD TEMPLATE` (see README 'OpenAPI')."
)


def route_templates() -> dict[tuple[str, str], tuple[str, str]]:
    """``(METHOD, template) → (op, auth)`` from the route table: named groups become ``{name}``."""
    routes = {}
    for method, pattern, _actor, op, auth in _ROUTES:
        template = re.sub(r"\(\?P<([a-z_]+)>[^()]*\)", r"{\1}", pattern.pattern)
        template = template.removeprefix("^").removesuffix("$").replace("\\.", ".")
        assert "(" not in template and "\\" not in template, f"cannot read a template from {pattern.pattern!r}"
        routes[(method, template)] = (op, auth)
    return routes


# --- the document itself ---------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1_with_json_schema_2020_12() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.") and DOCUMENT["jsonSchemaDialect"] == JSON_SCHEMA_DIALECT
    served = json.loads(json.dumps(DOCUMENT))  # what a client gets: JSON, nothing Python-only in it
    validate(served)
    for name, schema in served["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema), name
    # The validator does refuse a broken document (the check can fail).
    broken = copy.deepcopy(served)
    broken["paths"][OPENAPI_PATH]["get"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_route_is_documented_and_every_operation_is_routed() -> None:
    routes = route_templates()
    documented = {(method, template): op for method, template, op in operations()}
    missing = [
        f"  {method} {template}: add paths[{template!r}][{method.lower()!r}] = _op({op!r}, {auth!r}, …)"
        for (method, template), (op, auth) in sorted(routes.items())
        if (method, template) not in documented
    ]
    assert not missing, (
        "routes in worker/api.py _ROUTES without an OpenAPI operation:\n" + "\n".join(missing) + ("\n" + HOW_TO)
    )
    extra = sorted(f"  {m} {t}" for m, t in documented if (m, t) not in routes)
    assert not extra, "operations in worker/openapi.py that no route in _ROUTES serves (remove them):\n" + "\n".join(
        extra
    )
    for key, (op, auth) in routes.items():
        operation = documented[key]
        assert operation["operationId"] == op, f"{key}: operationId must be the route's op {op!r}"
        assert operation["x-caisey-auth"] == auth, f"{key}: x-caisey-auth must be the route's auth {auth!r}"


def raised_error_codes() -> set[tuple[int, str]]:
    """``(status, code)`` of every ``ApiError`` in worker/, and the local host's raw refusals."""
    found: set[tuple[int, str]] = set()
    for path in sorted((ROOT / "worker").rglob("*.py")):
        text = path.read_text()
        found |= {(int(s), c) for s, c in re.findall(r'ApiError\(\s*(\d{3}),\s*"([a-z_]+)"', text)}
        found |= {(int(s), c) for s, c in re.findall(r'_refuse_raw\(\s*\w+,\s*(\d{3}),\s*"[^"]*",\s*"([a-z_]+)"', text)}
    assert len(found) > 20, found  # the patterns still find the calls
    return found


def test_every_error_the_bridge_raises_is_documented_and_no_other() -> None:
    raised, documented = raised_error_codes(), documented_error_codes()
    undocumented = sorted(raised - documented)
    assert not undocumented, (
        f"error (status, code) raised in worker/ but documented on no operation: {undocumented}; "
        "add them to the errors={status: [codes]} of the operations that can answer them (worker/openapi.py)"
    )
    phantom = sorted(documented - raised)
    assert not phantom, f"documented error codes the bridge never raises: {phantom}"


def readme_api_calls() -> set[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    calls = set()
    for row in rows:
        first_cell = row.split(" | ")[0]
        calls |= set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/api/[^\s`?]*)", first_cell))
    return calls


def test_the_readme_api_table_names_exactly_the_documented_operations() -> None:
    readme = readme_api_calls()
    documented = {(method, template) for method, template, _ in operations()}
    missing = sorted(f"  `{m} {t}`" for m, t in documented - readme)
    assert not missing, "README.md 'HTTP API' table has no row for:\n" + "\n".join(missing)
    stale = sorted(f"  `{m} {t}`" for m, t in readme - documented)
    assert not stale, "README.md 'HTTP API' table names calls the document does not have:\n" + "\n".join(stale)


def test_every_documented_error_code_is_in_the_readme_status_table() -> None:
    section = (ROOT / "README.md").read_text().split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    table = {
        (int(line[2:5]), code)
        for line in section.splitlines()
        if re.match(r"\| [1-5][0-9]{2} \|", line)
        for code in re.findall(r"`([a-z_]+)`", line)
    }
    missing = sorted(documented_error_codes() - table)
    assert not missing, f"README's status table (HTTP API, 'Statuses') lacks these (status, code): {missing}"


# --- both hosts -----------------------------------------------------------------------------------------


@pytest.fixture(params=[*HOSTS, "url"] if URL_BRIDGE is not None else HOSTS)
def bridge(request: pytest.FixtureRequest) -> BridgeUnderTest:
    """tests/conftest.py's hosts, and the bridge at ``CAISEY_BRIDGE_URL`` when it is set."""
    if request.param == "url":
        assert URL_BRIDGE is not None
        return URL_BRIDGE
    return bridge_of_kind(request, request.param)


def raw_of(r: Resp) -> bytes:
    if r.body is None:
        return b""
    return r.body.encode() if isinstance(r.body, str) else json.dumps(r.body).encode()


def check(method: str, path: str, r: Resp, status: int) -> Resp:
    assert r.status == status, (method, path, r.status, r.body)
    headers = {k.lower(): v for k, v in dict(r.headers).items()}
    if r.body is not None and "content-type" not in headers:
        headers["content-type"] = "application/json"
    conforms(method, path.split("?")[0], r.status, headers, raw_of(r))
    return r


async def call(bridge: BridgeUnderTest, method: str, path: str, status: int, **kw: object) -> Resp:
    r = await bridge.request(method, path, **kw)  # type: ignore[arg-type]
    return check(method, path, r, status)


async def test_both_hosts_serve_the_document_without_a_token(bridge: BridgeUnderTest) -> None:
    r = await call(bridge, "GET", OPENAPI_PATH, 200)
    assert r.body == json.loads(json.dumps(DOCUMENT))
    headers = {k.lower(): v for k, v in dict(r.headers).items()}
    assert headers["content-type"].startswith("application/json")
    assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"
    again = await call(bridge, "GET", OPENAPI_PATH, 304, headers={"If-None-Match": headers["etag"]})
    assert again.body is None
    await call(bridge, "GET", OPENAPI_PATH, 200, token="cst_not-a-token")  # a token is not looked at
    await call(bridge, "POST", OPENAPI_PATH, 405, body={})
    harness = getattr(bridge, "harness", None)
    if harness is not None:  # the Workers stand-in: the Worker answered it, no object got storage
        assert harness.objects_with_storage() == []


async def test_a_realistic_flow_answers_only_what_the_document_says(bridge: BridgeUnderTest) -> None:
    admin = bridge.admin_token
    suffix = uuid.uuid4().hex[:8]
    eid = f"oa-{suffix}"
    # tokens
    tech = (await call(bridge, "POST", "/api/tokens", 201, token=admin, body={"name": f"tech-{suffix}"})).body
    await call(bridge, "POST", "/api/tokens", 409, token=admin, body={"name": f"TECH-{suffix}"})
    await call(bridge, "POST", "/api/tokens", 400, token=admin, body={"name": "Admin"})
    await call(bridge, "POST", "/api/tokens", 403, token=tech["token"], body={"name": "x"})
    await call(bridge, "POST", "/api/tokens", 401, body={"name": "x"})
    # enrollment and the agent's exchange
    await call(bridge, "POST", "/api/enrollments", 400, token=tech["token"], body={"endpoint_id": "nul.txt"})
    enrollment = await call(
        bridge, "POST", "/api/enrollments", 201, token=tech["token"], body={"endpoint_id": eid, "label": "Front desk"}
    )
    await call(
        bridge,
        "POST",
        "/api/agent/enroll",
        400,
        body={"enrollment_token": enrollment.body["enrollment_token"], "public_key": "x"},
    )
    secret = (
        await call(
            bridge, "POST", "/api/agent/enroll", 200, body={"enrollment_token": enrollment.body["enrollment_token"]}
        )
    ).body["agent_secret"]
    await call(bridge, "POST", "/api/agent/enroll", 401, body={"enrollment_token": enrollment.body["enrollment_token"]})
    await call(bridge, "POST", "/api/enrollments", 403, token=tech["token"], body={"endpoint_id": eid})
    await call(bridge, "GET", f"/api/endpoints/{eid}/agent", 426, token=secret)
    # the fleet, the endpoint, limits
    fleet = await call(bridge, "GET", "/api/endpoints", 200, token=tech["token"])
    await call(
        bridge, "GET", "/api/endpoints", 304, token=tech["token"], headers={"If-None-Match": fleet.headers["etag"]}
    )
    endpoint = await call(bridge, "GET", f"/api/endpoints/{eid}", 200, token=tech["token"])
    assert endpoint.body["endpoint_id"] == eid
    await call(bridge, "GET", "/api/endpoints/oa-unknown-endpoint", 404, token=tech["token"])
    await call(bridge, "GET", "/api/limits", 200, token=tech["token"])
    await call(bridge, "PUT", "/api/limits", 403, token=tech["token"], body={"max_endpoints": 5})
    await call(bridge, "PUT", "/api/limits", 400, token=admin, body={"max_endpoints": 0})
    # prompts
    base = f"/api/endpoints/{eid}/prompts"
    body = {
        "title": "Allow remote control?",
        "message": "Alice\nhelp desk",
        "action": "remote_control",
        "expires_in": 120,
    }
    first = await call(bridge, "POST", base, 201, token=tech["token"], body=body, headers={"Idempotency-Key": "k1"})
    await call(bridge, "POST", base, 200, token=tech["token"], body=body, headers={"Idempotency-Key": "k1"})
    await call(
        bridge,
        "POST",
        base,
        422,
        token=tech["token"],
        body={**body, "title": "other"},
        headers={"Idempotency-Key": "k1"},
    )
    await call(bridge, "POST", base, 400, token=tech["token"], body={**body, "expires_in": 3})
    await call(bridge, "POST", base, 400, token=tech["token"], raw=b'{"title": "t", "action": "a", "expires_in": NaN}')
    await call(
        bridge, "POST", base, 404, token=tech["token"], body={**body, "supersedes": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}
    )
    pid = first.body["prompt_id"]
    listed = await call(bridge, "GET", base + "?limit=10", 200, token=tech["token"])
    await call(
        bridge, "GET", base + "?limit=10", 304, token=tech["token"], headers={"If-None-Match": listed.headers["etag"]}
    )
    await call(bridge, "GET", base + "?limit=0", 400, token=tech["token"])
    await call(bridge, "GET", f"{base}/{pid}", 200, token=tech["token"])
    await call(bridge, "GET", f"{base}/01HZZZZZZZZZZZZZZZZZZZZZZZ", 404, token=tech["token"])
    await call(bridge, "POST", f"{base}/{pid}/cancel", 200, token=tech["token"])
    await call(bridge, "POST", f"{base}/{pid}/cancel", 200, token=tech["token"])  # already withdrawn: unchanged
    retried = await call(bridge, "POST", f"{base}/{pid}/retry", 201, token=tech["token"], body={"expires_in": 300})
    # a decided prompt cannot be cancelled: 409 with the prompt
    runtime = ScriptedRuntime(bridge, await enroll(bridge, f"oa2-{suffix}"))
    other = f"/api/endpoints/{runtime.endpoint.endpoint_id}/prompts"
    decided = await call(bridge, "POST", other, 201, token=tech["token"], body=body)
    delivers = of_type(await runtime.connect(), wire.PromptDeliver)
    assert delivers, "the prompt was not delivered"
    await runtime.send(
        wire.Heartbeat(id=runtime.new_id(), sent_at_ms=runtime.local_now(), digest="x" * 64, time_zone="Europe/Berlin")
    )
    assert of_type(await runtime.drain(), wire.Ack)
    await runtime.receipt(delivers[0])
    await runtime.decide(decided.body["prompt_id"], "approve")
    view = await call(bridge, "GET", f"{other}/{decided.body['prompt_id']}", 200, token=tech["token"])
    assert view.body["state"] == "approved", view.body
    await call(bridge, "POST", f"{other}/{decided.body['prompt_id']}/cancel", 409, token=tech["token"])
    await stats_calls(bridge, suffix, eid, runtime.endpoint.endpoint_id, tech["token"])
    await runtime.close()
    await call(bridge, "GET", f"/api/endpoints/{runtime.endpoint.endpoint_id}", 200, token=tech["token"])
    # the audit export (JSON Lines), every line against the document
    audit = await call(bridge, "GET", f"/api/endpoints/{eid}/audit", 200, token=tech["token"])
    assert len(audit.body.splitlines()) >= 4
    await call(bridge, "GET", f"{base}/{retried.body['prompt_id']}", 200, token=tech["token"])
    await admin_calls(bridge, suffix, eid, tech["token"], body)
    await webhook_calls(bridge, eid, tech["token"], body, retried.body["prompt_id"])
    # revocation, unknown paths and methods
    await call(bridge, "DELETE", f"/api/tokens/tech-{suffix}", 200, token=admin)
    await call(bridge, "DELETE", f"/api/tokens/tech-{suffix}", 404, token=admin)
    await call(bridge, "GET", "/api/endpoints", 401, token=tech["token"])
    await call(bridge, "PATCH", base, 405, token=admin, body={})
    await call(bridge, "GET", "/api/nothing-here", 404, token=admin)


async def stats_calls(bridge: BridgeUnderTest, suffix: str, eid: str, answering: str, tech: str) -> None:
    """Statistics and fleet patterns (issue 14): ``eid`` whose agent never reported a zone (one
    prompt withdrawn before delivery), ``answering`` in Europe/Berlin (one prompt approved by the
    user) — the endpoint's ``time_zone``, the fleet line's, stats, patterns with and without
    filters, conditional reads and refusals, each against the document."""
    admin = bridge.admin_token
    zone = (await call(bridge, "GET", f"/api/endpoints/{answering}", 200, token=tech)).body["time_zone"]
    assert zone == {"name": "Europe/Berlin", "effective": "Europe/Berlin", "note": None}, zone
    silent = (await call(bridge, "GET", f"/api/endpoints/{eid}", 200, token=tech)).body["time_zone"]
    assert silent["name"] is None and silent["effective"] == "UTC" and silent["note"], silent
    lines = (await call(bridge, "GET", "/api/endpoints", 200, token=tech)).body["endpoints"]
    assert {line["endpoint_id"]: line["time_zone"] for line in lines if line["endpoint_id"] in (eid, answering)} == {
        eid: None,
        answering: "Europe/Berlin",
    }
    stats = await call(bridge, "GET", f"/api/endpoints/{answering}/stats", 200, token=tech)
    assert stats.body["outcomes"]["90d"]["answered"] == 1 and stats.body["latency"]["answer"]["90d"]["n"] == 1
    await call(
        bridge,
        "GET",
        f"/api/endpoints/{answering}/stats",
        304,
        token=tech,
        headers={"If-None-Match": stats.headers["etag"]},
    )
    week = await call(bridge, "GET", f"/api/endpoints/{eid}/stats?days=7", 200, token=tech)
    assert week.body["days"] == 7 and week.body["outcomes"]["90d"]["withdrawn"] == 1, week.body
    for bad in ("0", "91", "x", "-1", "1.5"):
        refused = await call(bridge, "GET", f"/api/endpoints/{eid}/stats?days={bad}", 400, token=tech)
        assert refused.body["error"]["code"] == "invalid_field", (bad, refused.body)
    await call(bridge, "GET", "/api/endpoints/oa-unknown-endpoint/stats", 404, token=tech)
    await call(bridge, "GET", "/api/endpoints/bad%20id/stats", 400, token=tech)
    await call(bridge, "GET", f"/api/endpoints/{eid}/stats", 401)
    # the fleet's patterns: unfiltered, then by the client and site an admin gives the endpoint
    everything = await call(bridge, "GET", "/api/patterns?limit=10000&findings=60000", 200, token=tech)
    row = next(r for r in everything.body["ranking"] if r["endpoint_id"] == answering)
    assert (row["answered"], row["time_zone"]) == (1, "Europe/Berlin"), row
    await call(bridge, "GET", "/api/patterns", 304, token=tech, headers={"If-None-Match": everything.headers["etag"]})
    await call(
        bridge,
        "PATCH",
        f"/api/endpoints/{answering}",
        200,
        token=admin,
        body={"client": f"Stats {suffix}", "site": "Lab"},
    )
    mine = await call(
        bridge, "GET", f"/api/patterns?client=STATS%20{suffix}&site=lab&limit=1&findings=1", 200, token=tech
    )
    assert mine.body["endpoints"] == 1 and [r["endpoint_id"] for r in mine.body["ranking"]] == [answering], mine.body
    assert mine.body["filter"] == {"client": f"STATS {suffix}", "site": "lab"} and mine.body["totals"]["answered"] == 1
    none = await call(bridge, "GET", f"/api/patterns?client=nobody-{suffix}", 200, token=tech)
    assert none.body["endpoints"] == 0 and none.body["ranking"] == [] and none.body["heat"] == [], none.body
    for query, code in [
        ("limit=0", "invalid_limit"),
        ("limit=10001", "invalid_limit"),
        ("findings=abc", "invalid_limit"),
        ("client=", "invalid_field"),
        ("client=%1B%5B2J", "invalid_field"),
        ("site=" + "s" * 129, "invalid_field"),
    ]:
        refused = await call(bridge, "GET", f"/api/patterns?{query}", 400, token=tech)
        assert refused.body["error"]["code"] == code, (query, refused.body)
    await call(bridge, "GET", "/api/patterns", 401, token="cst_not-a-token")
    await call(bridge, "POST", "/api/patterns", 405, token=tech, body={})


async def admin_calls(bridge: BridgeUnderTest, suffix: str, eid: str, tech: str, body: dict[str, object]) -> None:
    """Administration (issue 17, DESIGN §12): whoami, the token list, a scoped token, a client's
    endpoint, PATCH and DELETE, and what a removed endpoint answers — each against the document."""
    admin = bridge.admin_token
    me = await call(bridge, "GET", "/api/whoami", 200, token=tech)
    assert me.body == {"name": f"tech-{suffix}", "role": "technician", "clients": None}, me.body
    assert (await call(bridge, "GET", "/api/whoami", 200, token=admin)).body["role"] == "admin"
    await call(bridge, "GET", "/api/whoami", 401)
    client, ceid = f"Acme {suffix}", f"oa-c-{suffix}"
    await call(
        bridge,
        "POST",
        "/api/tokens",
        400,
        token=admin,
        body={"name": f"a-{suffix}", "role": "admin", "clients": [client]},
    )
    await call(bridge, "POST", "/api/tokens", 400, token=admin, body={"name": f"s-{suffix}", "clients": []})
    created = await call(
        bridge, "POST", "/api/tokens", 201, token=admin, body={"name": f"scoped-{suffix}", "clients": [client]}
    )
    scoped = created.body["token"]
    assert created.body["clients"] == [client]
    tokens = await call(bridge, "GET", "/api/tokens", 200, token=admin)
    listed = {t["name"]: t for t in tokens.body["tokens"]}
    assert listed[f"scoped-{suffix}"]["clients"] == [client] and listed[f"tech-{suffix}"]["last_used"] is not None
    await call(bridge, "GET", "/api/tokens", 304, token=admin, headers={"If-None-Match": tokens.headers["etag"]})
    await call(bridge, "GET", "/api/tokens", 403, token=tech)
    assert (await call(bridge, "GET", "/api/whoami", 200, token=scoped)).body["clients"] == [client]
    # the scoped token: an endpoint without its client is unknown to it, on every route naming one
    await call(bridge, "GET", f"/api/endpoints/{eid}", 404, token=scoped)
    await call(bridge, "GET", f"/api/endpoints/{eid}/prompts", 404, token=scoped)
    await call(bridge, "POST", f"/api/endpoints/{eid}/prompts", 404, token=scoped, body=body)
    await call(bridge, "GET", f"/api/endpoints/{eid}/audit", 404, token=scoped)
    await call(bridge, "GET", f"/api/endpoints/{eid}/stats", 404, token=scoped)
    await call(bridge, "POST", "/api/enrollments", 400, token=scoped, body={"endpoint_id": ceid})
    await call(bridge, "POST", "/api/enrollments", 403, token=scoped, body={"endpoint_id": ceid, "client": "Other"})
    await call(bridge, "POST", "/api/enrollments", 409, token=scoped, body={"endpoint_id": eid, "client": client})
    enrollment = await call(
        bridge,
        "POST",
        "/api/enrollments",
        201,
        token=scoped,
        body={"endpoint_id": ceid, "client": client, "site": "HQ"},
    )
    secret = (
        await call(
            bridge, "POST", "/api/agent/enroll", 200, body={"enrollment_token": enrollment.body["enrollment_token"]}
        )
    ).body["agent_secret"]
    mismatch = {"endpoint_id": ceid, "client": client, "site": "Branch"}
    assert (await call(bridge, "POST", "/api/enrollments", 409, token=admin, body=mismatch)).body["error"]["code"] == (
        "site_mismatch"
    )
    mismatch = {"endpoint_id": ceid, "client": "Other"}
    assert (await call(bridge, "POST", "/api/enrollments", 409, token=admin, body=mismatch)).body["error"]["code"] == (
        "client_mismatch"
    )
    # the fleet, filtered
    fleet = await call(bridge, "GET", "/api/endpoints?client=ACME%20" + suffix, 200, token=tech)
    assert [line["endpoint_id"] for line in fleet.body["endpoints"]] == [ceid], fleet.body
    assert [
        line["endpoint_id"]
        for line in (await call(bridge, "GET", "/api/endpoints", 200, token=scoped)).body["endpoints"]
    ] == [ceid]
    seen = (await call(bridge, "GET", "/api/patterns", 200, token=scoped)).body
    assert seen["endpoints"] == 1 and [r["endpoint_id"] for r in seen["ranking"]] == [ceid], seen  # its client's only
    await call(bridge, "GET", "/api/endpoints?include_removed=2", 400, token=tech)
    await call(bridge, "GET", "/api/endpoints?site=%20HQ", 400, token=tech)
    # PATCH
    patched = await call(
        bridge, "PATCH", f"/api/endpoints/{ceid}", 200, token=admin, body={"label": "Reception", "site": None}
    )
    assert (patched.body["label"], patched.body["client"], patched.body["site"]) == ("Reception", client, None)
    await call(bridge, "PATCH", f"/api/endpoints/{ceid}", 403, token=tech, body={"label": "x"})
    await call(bridge, "PATCH", f"/api/endpoints/{ceid}", 400, token=admin, body={})
    await call(bridge, "PATCH", f"/api/endpoints/{ceid}", 400, token=admin, body={"owner": "x"})
    await call(bridge, "PATCH", f"/api/endpoints/{ceid}", 400, token=admin, body={"client": " x"})
    await call(bridge, "PATCH", "/api/endpoints/oa-unknown-endpoint", 404, token=admin, body={"label": "x"})
    # DELETE, and what a removed endpoint answers
    prompt = (await call(bridge, "POST", f"/api/endpoints/{ceid}/prompts", 201, token=scoped, body=body)).body
    await call(bridge, "DELETE", f"/api/endpoints/{ceid}", 403, token=scoped)
    await call(bridge, "DELETE", "/api/endpoints/oa-unknown-endpoint", 404, token=admin)
    removed = await call(bridge, "DELETE", f"/api/endpoints/{ceid}", 200, token=admin)
    assert removed.body["removed_by"] == "admin" and removed.body["removed_at"] is not None, removed.body
    again = await call(bridge, "DELETE", f"/api/endpoints/{ceid}", 200, token=admin)
    assert again.body["removed_at"] == removed.body["removed_at"]
    view = await call(bridge, "GET", f"/api/endpoints/{ceid}/prompts/{prompt['prompt_id']}", 200, token=scoped)
    assert view.body["state"] == "cancelled" and view.body["endpoint_removed_at"] == removed.body["removed_at"]
    await call(bridge, "GET", f"/api/endpoints/{ceid}/prompts", 200, token=scoped)
    for method, path, sent in [
        ("POST", f"/api/endpoints/{ceid}/prompts", body),
        ("POST", f"/api/endpoints/{ceid}/prompts/{prompt['prompt_id']}/retry", {}),
        ("PATCH", f"/api/endpoints/{ceid}", {"label": "x"}),
        ("POST", "/api/enrollments", {"endpoint_id": ceid}),
    ]:
        refused = await call(bridge, method, path, 410, token=admin, body=sent)
        assert refused.body["error"]["code"] == "endpoint_removed", (path, refused.body)
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    await call(bridge, "GET", f"/api/endpoints/{ceid}/agent", 410, token=secret, headers=upgrade)
    assert ceid not in {
        line["endpoint_id"] for line in (await call(bridge, "GET", "/api/endpoints", 200, token=tech)).body["endpoints"]
    }
    with_removed = await call(bridge, "GET", "/api/endpoints?include_removed=1", 200, token=tech)
    line = next(line for line in with_removed.body["endpoints"] if line["endpoint_id"] == ceid)
    assert line["removed_at"] == removed.body["removed_at"], line


async def webhook_calls(bridge: BridgeUnderTest, eid: str, tech: str, body: dict[str, object], pid: str) -> None:
    """Escalation, webhook subscriptions and the fleet settings (issue 13), each against the
    document. The hosts refuse private targets here; the one subscription made points at a
    ``.invalid`` name (RFC 6761: never resolves), so its test send fails at once, harmlessly."""
    admin = bridge.admin_token
    # settings
    await call(bridge, "GET", "/api/settings", 200, token=tech)
    await call(bridge, "PUT", "/api/settings", 403, token=tech, body={"escalate_after": 60})
    await call(bridge, "PUT", "/api/settings", 400, token=admin, body={})
    await call(bridge, "PUT", "/api/settings", 400, token=admin, body={"escalate_after": 4})
    await call(bridge, "PUT", "/api/settings", 400, token=admin, raw=b"[]")
    set_ = await call(bridge, "PUT", "/api/settings", 200, token=admin, body={"escalate_after": 600.5})
    assert set_.body == {"escalate_after": 600}, set_.body
    # prompts with escalate_after, escalation by hand
    base = f"/api/endpoints/{eid}/prompts"
    created = await call(bridge, "POST", base, 201, token=tech, body={**body, "escalate_after": 30})
    assert created.body["escalations"] == [] and created.body["escalated_at"] is None
    await call(bridge, "POST", base, 400, token=tech, body={**body, "escalate_after": 10**9})
    await call(bridge, "POST", f"{base}/{pid}/retry", 400, token=tech, body={"escalate_after": "soon"})
    assert (await call(bridge, "PUT", "/api/settings", 200, token=admin, body={"escalate_after": None})).body == {
        "escalate_after": None
    }
    escalate = f"{base}/{created.body['prompt_id']}/escalate"
    escalated = await call(bridge, "POST", escalate, 200, token=tech, body={"note": "VIP\ncall them"})
    assert escalated.body["escalated_at"] is not None and escalated.body["escalations"][0]["auto"] is False
    assert any(e["type"] == "escalated" for e in escalated.body["events"])
    await call(bridge, "POST", escalate, 200, token=tech)  # no body: no note
    await call(bridge, "POST", escalate, 400, token=tech, body={"note": " "})
    await call(bridge, "POST", escalate, 400, token=tech, body={"note": "x" * (wire.MAX_TEXT_CHARS + 1)})
    await call(bridge, "POST", escalate, 400, token=tech, raw=b"{")
    await call(bridge, "POST", escalate, 401, body={})
    await call(bridge, "POST", f"{base}/01HZZZZZZZZZZZZZZZZZZZZZZZ/escalate", 404, token=tech, body={})
    await call(bridge, "POST", "/api/endpoints/-bad/prompts/x/escalate", 400, token=tech, body={})
    for _ in range(18):
        await call(bridge, "POST", escalate, 200, token=tech, body={})
    full = await call(bridge, "POST", escalate, 409, token=tech, body={})
    assert full.body["error"]["code"] == "too_many_escalations", full.body
    listed = await call(bridge, "GET", base, 200, token=tech)
    assert any(len(p["escalations"]) == 20 for p in listed.body["prompts"])
    # subscriptions
    hook_body = {"url": "https://hooks.caisey.invalid/in", "events": ["prompt.final"], "description": "PSA"}
    await call(bridge, "POST", "/api/webhooks", 403, token=tech, body=hook_body)
    await call(bridge, "POST", "/api/webhooks", 401, body=hook_body)
    for url in ("http://hooks.example.com/in", "https://127.0.0.1/in", "https://[::1]/in", "https://localhost/in"):
        refused = await call(bridge, "POST", "/api/webhooks", 400, token=admin, body={**hook_body, "url": url})
        assert refused.body["error"]["code"] == "webhook_target_refused", (url, refused.body)
    await call(bridge, "POST", "/api/webhooks", 400, token=admin, body={**hook_body, "url": 7})
    await call(bridge, "POST", "/api/webhooks", 400, token=admin, body={**hook_body, "events": []})
    await call(bridge, "POST", "/api/webhooks", 400, token=admin, body={**hook_body, "events": ["prompt.nope"]})
    await call(bridge, "POST", "/api/webhooks", 400, token=admin, body={**hook_body, "description": "\x00"})
    hook = (await call(bridge, "POST", "/api/webhooks", 201, token=admin, body=hook_body)).body
    assert hook["secret"].startswith("whsec_") and hook["enabled"] is True
    await call(bridge, "GET", "/api/webhooks", 403, token=tech)
    listed = await call(bridge, "GET", "/api/webhooks", 200, token=admin)
    assert hook["id"] in {h["id"] for h in listed.body["webhooks"]} and "secret" not in json.dumps(listed.body)
    tested = await call(bridge, "POST", f"/api/webhooks/{hook['id']}/test", 200, token=admin)
    assert tested.body["delivered"] is False and tested.body["error"], tested.body  # .invalid never resolves
    listed = await call(bridge, "GET", "/api/webhooks", 200, token=admin)
    (entry,) = [h for h in listed.body["webhooks"] if h["id"] == hook["id"]]
    assert entry["delivery"]["last_outcome"] == "test_failed", entry
    await call(bridge, "POST", "/api/webhooks/wh_unknown/test", 404, token=admin)
    await call(bridge, "POST", f"/api/webhooks/{hook['id']}/test", 403, token=tech)
    await call(bridge, "DELETE", f"/api/webhooks/{hook['id']}", 200, token=admin)
    await call(bridge, "DELETE", f"/api/webhooks/{hook['id']}", 404, token=admin)
    await call(bridge, "DELETE", "/api/webhooks/not%20an%20id", 404, token=admin)
    await call(bridge, "PUT", "/api/webhooks", 405, token=admin, body=hook_body)


async def test_a_repeated_query_parameter_counts_its_last_value_on_both_hosts(bridge: BridgeUnderTest) -> None:
    """The local host kept a repeated parameter's first value (aiohttp's MultiDict), the Worker its
    last (``parse_qsl``): ``?include_removed=0&include_removed=1`` listed removed endpoints on one
    host only. Now the last counts on both."""
    admin, eid = bridge.admin_token, f"oa-rep-{uuid.uuid4().hex[:8]}"
    await call(bridge, "POST", "/api/enrollments", 201, token=admin, body={"endpoint_id": eid})
    await call(bridge, "DELETE", f"/api/endpoints/{eid}", 200, token=admin)
    shown = await call(bridge, "GET", "/api/endpoints?include_removed=0&include_removed=1", 200, token=admin)
    assert eid in {line["endpoint_id"] for line in shown.body["endpoints"]}
    hidden = await call(bridge, "GET", "/api/endpoints?include_removed=1&include_removed=0", 200, token=admin)
    assert eid not in {line["endpoint_id"] for line in hidden.body["endpoints"]}
    await call(bridge, "GET", "/api/endpoints?include_removed=1&include_removed=2", 400, token=admin)
    await call(bridge, "GET", "/api/endpoints?include_removed=2&include_removed=1", 200, token=admin)


def test_the_check_refuses_what_the_document_does_not_say() -> None:
    """``conforms`` can fail: an undocumented status, field or error code, a wrong type."""
    error = json.dumps({"error": {"code": "invalid_limit", "message": "m"}}).encode()
    json_type = {"content-type": "application/json"}
    conforms("GET", "/api/endpoints/e1/prompts", 400, json_type, error)
    bad = [
        ("GET", "/api/endpoints/e1/prompts", 409, error),  # status not documented there
        ("GET", "/api/endpoints/e1", 400, error),  # code not documented for that status
        ("GET", "/api/limits", 200, json.dumps({"max_endpoints": 3, "endpoints": 1, "extra": 1}).encode()),
        ("GET", "/api/limits", 200, json.dumps({"max_endpoints": "3", "endpoints": 1}).encode()),
        ("PATCH", "/api/limits", 400, error),  # an undocumented method must be 405
    ]
    for method, path, status, raw in bad:
        with pytest.raises(AssertionError):
            conforms(method, path, status, json_type, raw)


def raw_call(bridge: LocalBridgeProcess, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Resp:
    """Over http.client: header values go out as the latin-1 bytes they are (aiohttp's client would not)."""
    conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    conforms(method, path, response.status, headers, raw)
    return Resp(response.status, headers, json.loads(raw) if raw else None)


async def test_local_host_bugs_the_property_test_found_answer_documented_4xx(local_bridge: LocalBridgeProcess) -> None:
    """Found by tests/test_openapi_property.py on the local host: an Idempotency-Key byte that is
    not UTF-8 (aiohttp makes it a lone surrogate, which SQLite refused: 500), and an agent upgrade
    without a WebSocket handshake (aiohttp's own text/plain 400)."""
    ep = await enroll(local_bridge, f"oa-bugs-{uuid.uuid4().hex[:6]}")
    admin = {"Authorization": f"Bearer {local_bridge.admin_token}"}
    body = json.dumps({"title": "t", "action": "a", "expires_in": 60}).encode()
    path = f"/api/endpoints/{ep.endpoint_id}/prompts"
    r = raw_call(local_bridge, "POST", path, {**admin, "Idempotency-Key": "caf\xe9"}, body)
    assert r.status == 400 and r.body["error"]["code"] == "invalid_idempotency_key", r
    created = raw_call(
        local_bridge, "POST", path, {**admin, "Idempotency-Key": "caf\u00e9".encode().decode("latin-1")}, body
    )
    assert created.status == 201, created  # the same key in UTF-8 is a key
    retry = f"{path}/{created.body['prompt_id']}/retry"
    r = raw_call(local_bridge, "POST", retry, {**admin, "Idempotency-Key": "\xff"}, b"{}")
    assert r.status == 400 and r.body["error"]["code"] == "invalid_idempotency_key", r
    upgrade = {"Authorization": f"Bearer {ep.secret}", "Upgrade": "websocket", "Connection": "Upgrade"}
    r = raw_call(local_bridge, "GET", f"/api/endpoints/{ep.endpoint_id}/agent", upgrade)
    assert r.status == 400 and r.body["error"]["code"] == "invalid_websocket_handshake", r
    r = raw_call(
        local_bridge, "GET", f"/api/endpoints/{ep.endpoint_id}/agent", {**upgrade, "Authorization": "Bearer x"}
    )
    assert r.status == 401, r  # credentials are still checked first


# --- the events (the document's top-level ``webhooks``) -------------------------------------------------


def test_every_event_type_is_documented_with_its_schema() -> None:
    assert set(DOCUMENT["webhooks"]) == {*EVENT_TYPES, "webhook.test"} == set(EVENT_SCHEMAS)
    for event_type, entry in DOCUMENT["webhooks"].items():
        schema = entry["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{EVENT_SCHEMAS[event_type]}"}
        headers = {p["name"] for p in entry["post"]["parameters"] if p.get("required")}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}, event_type


def test_the_events_the_actor_produces_are_the_documented_ones() -> None:
    """Every event type, as ``worker.hooks`` builds it at actor level (and the test event as the
    fleet's ``WebhookSubscriptions`` prepares it), validates against its ``webhooks`` entry:
    headers and body. tests/test_webhooks.py checks the same of every request its real receiver got."""
    rig = Rig()
    rig.connect()
    decided = rig.create(expires_in=600, escalate_after=5)
    deliver = next(wire.decode(f) for e in rig.effects for f in e.send if '"prompt.deliver"' in f)
    assert isinstance(deliver, wire.PromptDeliver)
    rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), decided, deliver.id, rig.now))
    rig.run_until(rig.now + 6_000)  # not answered in 5 s: escalated by the bridge
    rig.api("POST", f"/api/endpoints/{HOOKS_ENDPOINT}/prompts/{decided}/escalate", {"note": "call\nthem"})
    rig.frame(
        wire.PromptUpdate(
            rig.ids.new(rig.now), decided, "decided", how="user", decision="approve", decided_at_ms=rig.now
        )
    )
    rig.alarm()
    for minutes in (5, 1):  # issue 16: a window revoked by the technician, and one that ends
        windowed = rig.create(expires_in=600, grant_minutes=minutes)
        sent = [wire.decode(f) for f in rig.effects[-1].send]
        deliver = next(m for m in sent if isinstance(m, wire.PromptDeliver))
        rig.frame(wire.PromptReceipt(rig.ids.new(rig.now), windowed, deliver.id, rig.now))
        at = rig.now
        rig.frame(
            wire.PromptUpdate(rig.ids.new(at), windowed, "decided", how="user", decision="approve", decided_at_ms=at)
        )
        rig.frame(wire.WindowUpdate(rig.ids.new(at), windowed, "start", minutes, at))
        if minutes == 5:
            rig.api("POST", f"/api/endpoints/{HOOKS_ENDPOINT}/prompts/{windowed}/revoke")
    rig.connected = False
    rig.actor.agent_closed(rig.now, False)
    rig.create(expires_in=5, escalate_after=600)  # never delivered: failed_to_deliver, escalated
    rig.run_until(rig.now + 61_000)
    sends = rig.sends()
    store = SqliteStore(":memory:")
    for statement in [*WEBHOOKS_MIGRATION, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)"]:
        store.execute(statement, ())
    fleet = WebhookSubscriptions(store, Entropy(random.Random(5)))
    created = fleet.create(
        ApiRequest(
            "POST",
            "/api/webhooks",
            {},
            json.dumps({"url": "https://h.example.com/in", "events": ["prompt.final"]}).encode(),
        ),
        rig.now,
    )
    sends.append(fleet.prepare_test(created.body["id"], rig.now).body["send"])
    seen = {json.loads(s["body"])["type"] for s in sends}
    assert seen == {*EVENT_TYPES, "webhook.test"}, seen
    for send in sends:
        problem = event_problem(send["headers"], send["body"].encode())
        assert problem is None, f"{problem}\n{send['body'][:600]}"
    # ... and the check can fail: an undocumented field, a wrong type, a missing header, an unknown type
    final = next(s for s in sends if json.loads(s["body"])["type"] == "prompt.final")
    event = json.loads(final["body"])
    for bad in (
        {**event, "data": {**event["data"], "message": "left out of events"}},
        {**event, "data": {**event["data"], "final": "yes"}},
        {**event, "type": "prompt.nothing"},
        {**event, "timestamp": "yesterday"},
    ):
        assert event_problem(final["headers"], json.dumps(bad).encode()) is not None, bad
    headers = {k: v for k, v in final["headers"].items() if k != "webhook-signature"}
    assert event_problem(headers, final["body"].encode()) is not None
