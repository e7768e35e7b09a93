"""Issue 13 item 4: a property-based client drives every documented operation against a running
local host (``caisey-bridge serve``, a real process on 127.0.0.1 with real SQLite files) and every
answer must be one the OpenAPI document (worker/openapi.py) describes: no 5xx, the status
documented for that operation, the body valid against the documented schema (the error
envelope's code one of those listed for that operation and status).

Requests come from the document itself (tests/openapi_contract.py ``values``): an operation
(or a method or path it does not have), path parameters that exist (the enrolled endpoint, a
real prompt, a real token name, a real webhook subscription; a DELETE removes only a victim
endpoint), that the schema allows,
or hostile text; the admin's, a technician's, a scoped technician's, a wrong, no, or an agent's
token; bodies the schema allows, the documented fields holding any JSON value, any JSON, raw
bytes or nothing; an ``Idempotency-Key`` and
``If-None-Match`` (sometimes the current ``ETag``, to reach 304); for the agent's enroll, a
fresh real enrollment token. ``CAISEY_API_EXAMPLES`` sets the number of examples (default
400: about 15 s); the existing tests/security/test_01_api_property.py still covers
transport-level hostility. The same requests also go to the Worker on the Workers stand-in
(a quarter as many; no fresh enrollment tokens there).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.bridge_hosts import LocalBridgeProcess
from tests.openapi_contract import conforms, invalid, operations, pointer, resolve, values

EXAMPLES = int(os.environ.get("CAISEY_API_EXAMPLES", "400"))
ENDPOINT = "oa-prop"
VICTIM = "oa-victim"  # the one token name a DELETE may hit: the technician's own stays valid
VICTIM_ENDPOINT = "oa-victim-ep"  # the one endpoint a DELETE may remove: ENDPOINT keeps taking prompts
SCOPED_CLIENT = "Oa Client"  # a scoped technician's only client (no endpoint has it unless a PATCH moves one)
# The one subscription the fixture makes (a DELETE may remove it). Its name is under .invalid
# (RFC 6761: never resolves), so a send to it — events, the test route, which waits for its
# send — fails at once. Subscriptions the examples make go to whatever public URL the schema
# allowed: the local host sends in background tasks no request waits for (and this sandbox has no
# network: a name fails to resolve at once); the stand-in sends only from alarms, which do not
# fire here. Private targets are refused (the hosts run without --allow-private-webhooks).
WEBHOOK_URL = "https://hooks.caisey.invalid/in"
OPERATIONS = operations()


@dataclass
class Live:
    bridge: LocalBridgeProcess
    tech: str
    secret: str
    prompt_id: str
    scoped: str = ""
    webhook: str = ""
    enrolled: int = 0

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.bridge.port, timeout=15)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def admin(self, method: str, path: str, body: Any) -> Any:
        status, _, raw = self.call(
            method, path, json.dumps(body).encode(), {"Authorization": f"Bearer {self.bridge.admin_token}"}
        )
        return status, json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    bridge = LocalBridgeProcess(Path(tmp_path_factory.mktemp("openapi-prop")) / "data")
    bridge.start()
    try:
        setup = Live(bridge, "", "", "")
        status, tech = setup.admin("POST", "/api/tokens", {"name": "oa-tech"})
        assert status == 201, tech
        assert setup.admin("POST", "/api/tokens", {"name": VICTIM})[0] == 201
        status, scoped = setup.admin("POST", "/api/tokens", {"name": "oa-scoped", "clients": [SCOPED_CLIENT]})
        assert status == 201, scoped
        assert setup.admin("POST", "/api/enrollments", {"endpoint_id": VICTIM_ENDPOINT})[0] == 201
        status, enrollment = setup.admin("POST", "/api/enrollments", {"endpoint_id": ENDPOINT, "label": "prop"})
        assert status == 201, enrollment
        status, _, raw = setup.call(
            "POST", "/api/agent/enroll", json.dumps({"enrollment_token": enrollment["enrollment_token"]}).encode()
        )
        assert status == 200, raw
        body = {"title": "Allow?", "action": "remote_control", "expires_in": 600}
        status, created = setup.admin("POST", f"/api/endpoints/{ENDPOINT}/prompts", body)
        assert status == 201, created
        status, hook = setup.admin("POST", "/api/webhooks", {"url": WEBHOOK_URL, "events": ["prompt.final"]})
        assert status == 201, hook
        yield Live(
            bridge, tech["token"], json.loads(raw)["agent_secret"], created["prompt_id"], scoped["token"], hook["id"]
        )
    finally:
        bridge.kill()


# --- what a request is made of -------------------------------------------------------------------

hostile_text = st.text(st.characters(codec=None, categories=None, exclude_categories=()), max_size=30)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**20), max_value=10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        hostile_text,
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=6,
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=140)


def latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def segment_ok(value: str) -> bool:
    """A path segment that stays one segment of the same path (no '/', not '.' or '..')."""
    return bool(value) and "/" not in value and value not in (".", "..")


def _body_schema(method: str, template: str, op: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    body = op.get("requestBody")
    if body is None:
        return None
    at = pointer("paths", template, method.lower(), "requestBody", "content", "application/json", "schema")
    return at, body["content"]["application/json"]["schema"]


@dataclass
class Request:
    method: str
    template: str
    path: str  # as sent (percent-encoded, with the query)
    headers: dict[str, str]
    body: bytes | None
    fresh_enrollment: bool = False  # replace the body's enrollment_token with a real, unused one
    conditional: bool = False  # send If-None-Match with the ETag this request gets first


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method, template, op = draw(st.sampled_from(OPERATIONS))
    documented = True
    if draw(st.integers(0, 19)) == 0:  # a method the path does not have, or a path that is none
        method, documented = draw(st.sampled_from(["PATCH", "PUT", "DELETE"])), False
        if draw(st.booleans()):
            template = "/api/nothing/{eid}"
    parameters = {p["name"]: p for p in map(resolve, op.get("parameters", []))}
    segments: dict[str, str] = {}
    for name in re.findall(r"\{([a-z_]+)\}", template):
        kind = draw(st.sampled_from(["existing", "existing", "schema", "hostile"]))
        eid = VICTIM_ENDPOINT if op["operationId"] == "remove_endpoint" else ENDPOINT
        name_of = "{webhook}" if template.startswith("/api/webhooks/") else VICTIM
        existing = {"eid": eid, "pid": "{pid}", "name": name_of}.get(name)
        if kind == "existing" and existing is not None:
            value = existing
        elif kind != "hostile" and name in parameters:
            value = draw(values(parameters[name]["schema"]))
        else:
            value = draw(hostile_text.filter(segment_ok))
        placeholder = value in ("{pid}", "{webhook}")
        segments[name] = value if placeholder else quote(value.encode("utf-8", "surrogatepass"), safe="")
    path = template
    for name, value in segments.items():
        path = path.replace("{" + name + "}", value, 1)
    query: dict[str, str] = {}
    if template.endswith("/prompts") and method == "GET" and draw(st.booleans()):
        query["limit"] = draw(
            st.one_of(values({"$ref": "#/components/parameters/limit/schema"}).map(str), hostile_text)
        )
    if template == "/api/endpoints" and method == "GET":
        for name in ("client", "site", "include_removed"):
            if draw(st.integers(0, 2)) == 0:
                schema_value = values(parameters[name]["schema"]) if name in parameters else hostile_text
                query[name] = draw(st.one_of(schema_value, hostile_text))
    if template in ("/api/endpoints/{eid}/stats", "/api/patterns") and method == "GET":
        for name, parameter in parameters.items():  # days; client, site, limit, findings
            if parameter["in"] == "query" and draw(st.integers(0, 2)) == 0:
                query[name] = draw(st.one_of(values(parameter["schema"]).map(str), hostile_text))
    if draw(st.integers(0, 9)) == 0:
        query["x"] = draw(hostile_text)
    if query:
        path += "?" + urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in query.items()})
    headers: dict[str, str] = {}
    auth = draw(
        st.sampled_from(["admin", "technician", "technician", "admin", "scoped", "wrong", "none", "agent", "scheme"])
    )
    headers["Authorization"] = {
        "admin": "Bearer {admin}",
        "technician": "Bearer {tech}",
        "scoped": "Bearer {scoped}",
        "wrong": "Bearer cst_" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=40)),
        "none": "",
        "agent": "Bearer {secret}",
        "scheme": draw(header_text),
    }[auth]
    if not headers["Authorization"]:
        del headers["Authorization"]
    if draw(st.integers(0, 3)) == 0:
        schema_key = values({"$ref": "#/components/parameters/idempotencyKey/schema"}).filter(latin1)
        headers["Idempotency-Key"] = draw(st.one_of(schema_key, header_text))
    conditional = method == "GET" and draw(st.integers(0, 3)) == 0
    if not conditional and draw(st.integers(0, 7)) == 0:
        headers["If-None-Match"] = draw(header_text)
    if template.endswith("/agent") and draw(st.integers(0, 3)) == 0:
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
    body: bytes | None = None
    fresh = False
    schema = _body_schema(method, template, op) if documented else None
    shape = draw(st.sampled_from(["valid", "valid", "valid", "fields", "json", "bytes", "none"]))
    if schema is not None and shape == "valid":
        at, body_schema = schema
        value = draw(values(body_schema).filter(lambda v: invalid(at, v) is None))
        if "supersedes" in value and draw(st.booleans()):
            value["supersedes"] = "{pid}"  # a real prompt of the endpoint
        body = json.dumps(value).encode()
        fresh = op["operationId"] == "agent_enroll" and draw(st.booleans())
    elif shape == "fields" and schema is not None:
        names = sorted(schema[1].get("properties", {}))
        body = json.dumps(draw(st.dictionaries(st.sampled_from(names), json_values, max_size=5))).encode()
    elif shape == "json":
        body = json.dumps(draw(json_values)).encode()
    elif shape == "bytes":
        body = draw(st.binary(max_size=100))
    if method == "GET" and draw(st.integers(0, 4)) != 0:
        body = None
    return Request(method, template, path, headers, body, fresh, conditional)


def _decoded(path: str) -> str:
    return unquote(path.split("?", 1)[0], errors="replace")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(request=requests())
@example(
    request=Request("POST", "/api/endpoints/{eid}/prompts", f"/api/endpoints/{ENDPOINT}/prompts", {}, b"{" * 70_000)
)
@example(
    request=Request(
        "POST",
        "/api/endpoints/{eid}/prompts",
        f"/api/endpoints/{ENDPOINT}/prompts",
        {"Authorization": "Bearer {tech}"},
        b'{"title": "t", "action": "a", "expires_in": 1e308}',
    )
)
@example(
    request=Request(
        "GET",
        "/api/endpoints/{eid}/agent",
        f"/api/endpoints/{ENDPOINT}/agent",
        {"Authorization": "Bearer {secret}", "Upgrade": "websocket", "Connection": "Upgrade"},
        None,
    )
)
@example(  # a header byte that is not UTF-8 reached SQLite as a lone surrogate: 500 (now 400)
    request=Request(
        "POST",
        "/api/endpoints/{eid}/prompts/{pid}/retry",
        f"/api/endpoints/{ENDPOINT}/prompts/{{pid}}/retry",
        {"Authorization": "Bearer {tech}", "Idempotency-Key": "\xe9"},
        b"{}",
    )
)
@example(  # the schema's URLs are rarely accepted targets: one that is (201), and an escalation
    request=Request(
        "POST",
        "/api/webhooks",
        "/api/webhooks",
        {"Authorization": "Bearer {admin}"},
        json.dumps({"url": WEBHOOK_URL + "/2", "events": ["prompt.created"], "description": "x"}).encode(),
    )
)
@example(
    request=Request(
        "POST",
        "/api/endpoints/{eid}/prompts/{pid}/escalate",
        f"/api/endpoints/{ENDPOINT}/prompts/{{pid}}/escalate",
        {"Authorization": "Bearer {tech}"},
        b'{"note": "VIP"}',
    )
)
def test_every_answer_is_one_the_document_describes(live: Live, request: Request) -> None:
    values_of = {
        "{admin}": live.bridge.admin_token,
        "{tech}": live.tech,
        "{secret}": live.secret,
        "{scoped}": live.scoped,
    }
    headers = dict(request.headers)
    for name, value in headers.items():
        for placeholder, real in values_of.items():
            value = value.replace(placeholder, real)
        headers[name] = value
    path = request.path.replace("{pid}", live.prompt_id).replace("{webhook}", live.webhook)
    body = request.body.replace(b'"{pid}"', json.dumps(live.prompt_id).encode()) if request.body else request.body
    if request.fresh_enrollment and body is not None:
        live.enrolled += 1
        fresh = {"endpoint_id": f"oa-new-{live.enrolled}"}
        status, created = live.admin("POST", "/api/enrollments", fresh)
        if status == 429:  # the quota an example set
            live.admin("PUT", "/api/limits", {"max_endpoints": 10**6})
            status, created = live.admin("POST", "/api/enrollments", fresh)
        if status == 201:
            sent = json.loads(body)
            sent["enrollment_token"] = created["enrollment_token"]
            body = json.dumps(sent).encode()
    if request.conditional:
        _, first_headers, _ = live.call(request.method, path, body, headers)
        if "etag" in first_headers:
            headers["If-None-Match"] = first_headers["etag"]
    status, response_headers, raw = live.call(request.method, path, body, headers)
    assert status < 500, (request, status, raw[:300])
    conforms(request.method, _decoded(path), status, response_headers, raw)


# --- the same requests to the Worker, on the Workers stand-in ----------------------------------------


@dataclass
class Standin:
    """The Worker (worker/entry.py) on the Workers stand-in, driven from one event loop."""

    bridge: Any  # tests.workers_host.WorkersBridge
    loop: asyncio.AbstractEventLoop
    live: Live

    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        hdrs = {k.lower(): v for k, v in headers.items()}
        if method in ("GET", "HEAD"):
            body = None  # a Request cannot carry one there (the runtime's fetch API)
        r = self.loop.run_until_complete(self.bridge.harness.fetch(method, path, headers=hdrs, body=body))
        return r.status, {k.lower(): v for k, v in dict(r.headers).items()}, r.body


@pytest.fixture(scope="module")
def standin() -> Iterator[Standin]:
    workers_host = pytest.importorskip("tests.workers_host")
    loop = asyncio.new_event_loop()
    bridge = workers_host.WorkersBridge()
    admin = {"Authorization": f"Bearer {bridge.admin_token}"}
    setup = Standin(bridge, loop, Live(None, "", "", ""))  # type: ignore[arg-type]

    def call(method: str, path: str, body: Any, headers: dict[str, str] = admin) -> Any:
        status, _, raw = setup.call(method, path, json.dumps(body).encode(), headers)
        return status, json.loads(raw) if raw else None

    status, tech = call("POST", "/api/tokens", {"name": "oa-tech"})
    assert status == 201, tech
    assert call("POST", "/api/tokens", {"name": VICTIM})[0] == 201
    status, scoped = call("POST", "/api/tokens", {"name": "oa-scoped", "clients": [SCOPED_CLIENT]})
    assert status == 201, scoped
    assert call("POST", "/api/enrollments", {"endpoint_id": VICTIM_ENDPOINT})[0] == 201
    status, enrollment = call("POST", "/api/enrollments", {"endpoint_id": ENDPOINT, "label": "prop"})
    assert status == 201, enrollment
    status, enrolled = call("POST", "/api/agent/enroll", {"enrollment_token": enrollment["enrollment_token"]}, {})
    assert status == 200, enrolled
    body = {"title": "Allow?", "action": "remote_control", "expires_in": 600}
    status, created = call("POST", f"/api/endpoints/{ENDPOINT}/prompts", body)
    assert status == 201, created
    status, hook = call("POST", "/api/webhooks", {"url": WEBHOOK_URL, "events": ["prompt.final"]})
    assert status == 201, hook
    setup.live = Live(None, tech["token"], enrolled["agent_secret"], created["prompt_id"], scoped["token"], hook["id"])  # type: ignore[arg-type]
    try:
        yield setup
    finally:
        loop.close()


@settings(
    max_examples=max(20, EXAMPLES // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(request=requests())
def test_the_worker_on_the_stand_in_answers_only_what_the_document_describes(
    standin: Standin, request: Request
) -> None:
    """The same property for the Cloudflare host (a quarter of the examples: it runs in-process)."""
    live, admin = standin.live, standin.bridge.admin_token
    values_of = {"{admin}": admin, "{tech}": live.tech, "{secret}": live.secret, "{scoped}": live.scoped}
    headers = {}
    for name, value in request.headers.items():
        for placeholder, real in values_of.items():
            value = value.replace(placeholder, real)
        headers[name] = value
    path = request.path.replace("{pid}", live.prompt_id).replace("{webhook}", live.webhook)
    body = request.body.replace(b'"{pid}"', json.dumps(live.prompt_id).encode()) if request.body else request.body
    if request.conditional:
        _, first_headers, _ = standin.call(request.method, path, body, headers)
        if "etag" in first_headers:
            headers["If-None-Match"] = first_headers["etag"]
    status, response_headers, raw = standin.call(request.method, path, body, headers)
    assert status < 500, (request, status, raw[:300])
    conforms(request.method, _decoded(path), status, response_headers, raw)
