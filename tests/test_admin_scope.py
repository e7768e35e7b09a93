"""Console administration and scoped technicians, on both hosts (issue 17; issue 14 item 5; DESIGN §12).

Named tokens (list with ``last_used``, scoped creation, ``whoami``), endpoints with client and
site, an admin's relabel/move (``PATCH``) and removal (``DELETE``), and the scope rule on
every route: a technician scoped to some clients can neither list, read, create, cancel,
retry nor export another client's endpoint, and such an endpoint answers exactly as an unknown
one. Every new route is also refused without a token, with a technician's token where an admin
is needed, with a bad body, and for an unknown endpoint.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from caisey import wire
from caisey.audit import verify_export
from tests.bridge_hosts import BridgeUnderTest, Resp, ScriptedRuntime, enroll


def eid(prefix: str = "ep") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


PROMPT = {"title": "Allow remote control?", "message": "help desk", "action": "remote_control", "expires_in": 120}


async def enroll_for(bridge: BridgeUnderTest, endpoint_id: str, client: str | None, site: str | None = None) -> Any:
    body: dict[str, Any] = {"endpoint_id": endpoint_id, "label": f"Laptop {endpoint_id}"}
    if client is not None:
        body["client"] = client
    if site is not None:
        body["site"] = site
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body=body)
    assert r.status == 201, r.body
    r2 = await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": r.body["enrollment_token"]})
    assert r2.status == 200, r2.body
    return r2.body["agent_secret"]


async def new_token(bridge: BridgeUnderTest, role: str = "technician", clients: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": name("tech"), "role": role}
    if clients is not None:
        body["clients"] = clients
    r = await bridge.request("POST", "/api/tokens", token=bridge.admin_token, body=body)
    assert r.status == 201, r.body
    return str(r.body["token"])


def unknown_body(endpoint_id: str) -> dict[str, Any]:
    return {"error": {"code": "unknown_endpoint", "message": f"endpoint {endpoint_id!r} is not registered"}}


@dataclass
class Fleet:
    """Three endpoints: one of client A (in scope), one of client B, one without a client."""

    client_a: str
    client_b: str
    mine: str
    theirs: str
    unowned: str
    scoped: str  # technician token scoped to client A
    their_prompt: str  # a prompt on ``theirs``
    my_prompt: str


async def make_fleet(bridge: BridgeUnderTest) -> Fleet:
    client_a, client_b = name("Acme"), name("Globex")
    mine, theirs, unowned = eid("mine"), eid("theirs"), eid("unowned")
    await enroll_for(bridge, mine, client_a, "HQ")
    await enroll_for(bridge, theirs, client_b, "Plant 2")
    await enroll_for(bridge, unowned, None)
    scoped = await new_token(bridge, clients=[client_a])
    prompts = []
    for endpoint_id in (theirs, mine):
        r = await bridge.request("POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=PROMPT)
        assert r.status == 201, r.body
        prompts.append(r.body["prompt_id"])
    return Fleet(client_a, client_b, mine, theirs, unowned, scoped, prompts[0], prompts[1])


# Every route that names an endpoint, as (method, path template, body). ``{pid}`` is a prompt of that endpoint.
ENDPOINT_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/endpoints/{eid}", None),
    ("GET", "/api/endpoints/{eid}/audit", None),
    ("GET", "/api/endpoints/{eid}/prompts", None),
    ("POST", "/api/endpoints/{eid}/prompts", PROMPT),
    ("GET", "/api/endpoints/{eid}/prompts/{pid}", None),
    ("POST", "/api/endpoints/{eid}/prompts/{pid}/cancel", {}),
    ("POST", "/api/endpoints/{eid}/prompts/{pid}/retry", {}),
    ("POST", "/api/endpoints/{eid}/prompts/{pid}/escalate", {"note": "scope check"}),
    ("GET", "/api/endpoints/{eid}/stats", None),
    ("GET", "/api/endpoints/{eid}/policy", None),  # issue 16: the effective policy
    ("POST", "/api/endpoints/{eid}/prompts/{pid}/revoke", {}),  # issue 16: an approval window
]


def test_every_route_naming_an_endpoint_is_in_the_scope_table() -> None:
    """A route added later that names an endpoint must join ENDPOINT_ROUTES (or be admin-only)."""
    from worker.api import _ROUTES

    covered = {(m, t.replace("{pid}", "x")) for m, t, _ in ENDPOINT_ROUTES}
    for method, pattern, _actor, _op, auth in _ROUTES:
        if "(?P<eid>" not in pattern.pattern or auth not in ("technician",):
            continue
        path = pattern.pattern.strip("^$").replace("(?P<eid>[^/]+)", "{eid}").replace("(?P<pid>[^/]+)", "x")
        assert (method, path) in covered, f"{method} {path}: add it to ENDPOINT_ROUTES"


async def test_scoped_patterns_count_only_the_callers_clients(bridge: BridgeUnderTest) -> None:
    fleet = await make_fleet(bridge)
    r = await bridge.request("GET", "/api/patterns", token=fleet.scoped)
    assert r.status == 200, r.body
    assert r.body["endpoints"] == 1  # ``mine``: not ``theirs``, not the one without a client
    listed = {e["endpoint_id"] for e in r.body["ranking"]} | {f["endpoint_id"] for f in r.body["findings"]}
    assert fleet.theirs not in listed and fleet.unowned not in listed
    r = await bridge.request("GET", f"/api/patterns?client={fleet.client_b}", token=fleet.scoped)
    assert r.status == 200 and r.body["endpoints"] == 0
    r = await bridge.request("GET", f"/api/patterns?client={fleet.client_b.upper()}", token=bridge.admin_token)
    assert r.status == 200 and r.body["endpoints"] == 1  # names compare without case, as the fleet list's


@pytest.mark.parametrize(
    ("method", "template", "body"), ENDPOINT_ROUTES, ids=[f"{m} {p}" for m, p, _ in ENDPOINT_ROUTES]
)
async def test_out_of_scope_endpoint_answers_exactly_as_an_unknown_one(
    bridge: BridgeUnderTest, method: str, template: str, body: Any
) -> None:
    fleet = await make_fleet(bridge)
    for endpoint_id, prompt_id in ((fleet.theirs, fleet.their_prompt), (fleet.unowned, fleet.their_prompt)):
        path = template.format(eid=endpoint_id, pid=prompt_id)
        refused = await bridge.request(method, path, token=fleet.scoped, body=body)
        ghost = eid("ghost")
        unknown = await bridge.request(method, template.format(eid=ghost, pid=prompt_id), token=fleet.scoped, body=body)
        assert refused.status == unknown.status == 404, (refused, unknown)
        assert refused.body == unknown_body(endpoint_id)
        # Byte for byte the unknown one's answer, once the id it names is swapped.
        assert json.dumps(refused.body).replace(endpoint_id, ghost) == json.dumps(unknown.body)
        assert refused.headers.get("content-type") == unknown.headers.get("content-type")
    # Nothing happened to their endpoint: its prompt is as it was, no second one was made.
    r = await bridge.request("GET", f"/api/endpoints/{fleet.theirs}/prompts", token=bridge.admin_token)
    assert [p["prompt_id"] for p in r.body["prompts"]] == [fleet.their_prompt]
    assert r.body["prompts"][0]["state"] == "pending"
    # The same route on the endpoint in scope works for the scoped technician.
    path = template.format(eid=fleet.mine, pid=fleet.my_prompt)
    ok = await bridge.request(method, path, token=fleet.scoped, body=body)
    if template.endswith("/revoke"):  # reached the endpoint: its prompt asked for no window
        assert ok.status == 409 and ok.body["error"]["code"] == "no_window", ok.body
    else:
        assert ok.status in (200, 201), ok.body


async def test_scoped_fleet_list_filters_and_whoami(bridge: BridgeUnderTest) -> None:
    fleet = await make_fleet(bridge)
    r = await bridge.request("GET", "/api/endpoints", token=fleet.scoped)
    assert r.status == 200
    ids = {e["endpoint_id"] for e in r.body["endpoints"]}
    assert fleet.mine in ids and fleet.theirs not in ids and fleet.unowned not in ids
    assert {e["client"] for e in r.body["endpoints"]} == {fleet.client_a}
    line = next(e for e in r.body["endpoints"] if e["endpoint_id"] == fleet.mine)
    assert (line["client"], line["site"], line["removed_at"]) == (fleet.client_a, "HQ", None)
    # Filters, for anyone; ignoring case. A scoped token asking for another client sees nothing.
    r = await bridge.request("GET", f"/api/endpoints?client={fleet.client_b.upper()}", token=bridge.admin_token)
    assert [e["endpoint_id"] for e in r.body["endpoints"]] == [fleet.theirs]
    r = await bridge.request("GET", f"/api/endpoints?client={fleet.client_a}&site=hq", token=bridge.admin_token)
    assert [e["endpoint_id"] for e in r.body["endpoints"]] == [fleet.mine]
    r = await bridge.request("GET", f"/api/endpoints?client={fleet.client_b}", token=fleet.scoped)
    assert r.status == 200 and r.body["endpoints"] == []
    for query in ("client=", "client=%0Abad", "site=" + "x" * 65, "include_removed=yes"):
        r = await bridge.request("GET", f"/api/endpoints?{query}", token=bridge.admin_token)
        assert r.status == 400 and r.body["error"]["code"] == "invalid_query", (query, r.body)
    # The unscoped admin sees all three.
    r = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    assert {fleet.mine, fleet.theirs, fleet.unowned} <= {e["endpoint_id"] for e in r.body["endpoints"]}
    # whoami: the console learns its role and scope from it.
    r = await bridge.request("GET", "/api/whoami", token=fleet.scoped)
    assert r.status == 200 and r.body["role"] == "technician" and r.body["clients"] == [fleet.client_a]
    r = await bridge.request("GET", "/api/whoami", token=bridge.admin_token)
    assert r.body == {"name": "admin", "role": "admin", "clients": None}
    assert (await bridge.request("GET", "/api/whoami")).status == 401
    assert (await bridge.request("GET", "/api/whoami", token="cst_junk-junk-junk-junk")).status == 401


async def test_a_technician_enrollment_keeps_the_label_and_a_removed_prompt_is_not_escalated(
    bridge: BridgeUnderTest,
) -> None:
    """Review findings F4 and F2: relabelling is an admin's (PATCH), not a side effect of a
    technician re-issuing an enrollment; a removed endpoint's prompt pages nobody."""
    fleet = await make_fleet(bridge)
    waiting = eid("waiting")  # registered, its agent not yet enrolled: a technician may re-issue
    r = await bridge.request(
        "POST",
        "/api/enrollments",
        token=bridge.admin_token,
        body={"endpoint_id": waiting, "label": "Front desk", "client": fleet.client_a},
    )
    assert r.status == 201, r.body
    r = await bridge.request(
        "POST",
        "/api/enrollments",
        token=fleet.scoped,
        body={"endpoint_id": waiting, "label": "hijacked", "client": fleet.client_a.upper()},
    )
    assert r.status == 403 and r.body["error"]["code"] == "forbidden", r.body
    assert "relabel" in r.body["error"]["message"]
    label = (await bridge.request("GET", f"/api/endpoints/{waiting}", token=bridge.admin_token)).body["label"]
    assert label == "Front desk"
    for body in ({}, {"label": "Front desk"}):  # no label, or the same: a re-issued enrollment, as before
        r = await bridge.request(
            "POST",
            "/api/enrollments",
            token=fleet.scoped,
            body={"endpoint_id": waiting, "client": fleet.client_a, **body},
        )
        assert r.status == 201, r.body
    escalate = f"/api/endpoints/{fleet.mine}/prompts/{fleet.my_prompt}/escalate"
    assert (await bridge.request("POST", escalate, token=fleet.scoped, body={})).status == 200
    assert (await bridge.request("DELETE", f"/api/endpoints/{fleet.mine}", token=bridge.admin_token)).status == 200
    r = await bridge.request("POST", escalate, token=fleet.scoped, body={"note": "after removal"})
    assert r.status == 410 and r.body["error"]["code"] == "endpoint_removed", r.body
    prompt = await bridge.request("GET", f"/api/endpoints/{fleet.mine}/prompts/{fleet.my_prompt}", token=fleet.scoped)
    assert len(prompt.body["escalations"]) == 1


async def test_scoped_enrollment_rules(bridge: BridgeUnderTest) -> None:
    fleet = await make_fleet(bridge)

    async def enroll_as(token: str, body: dict[str, Any]) -> Resp:
        return await bridge.request("POST", "/api/enrollments", token=token, body=body)

    r = await enroll_as(fleet.scoped, {"endpoint_id": eid(), "label": "x"})
    assert (r.status, r.body["error"]["code"]) == (400, "missing_field")
    r = await enroll_as(fleet.scoped, {"endpoint_id": eid(), "label": "x", "client": fleet.client_b})
    assert (r.status, r.body["error"]["code"]) == (403, "client_out_of_scope")
    # Another client's id, or one without a client: "taken", never "belongs to ...".
    for taken in (fleet.theirs, fleet.unowned, fleet.theirs.upper()):
        r = await enroll_as(fleet.scoped, {"endpoint_id": taken, "label": "x", "client": fleet.client_a})
        assert (r.status, r.body["error"]["code"]) == (409, "endpoint_id_conflict"), r.body
        assert fleet.client_b not in r.body["error"]["message"]
    new = eid("new")
    r = await enroll_as(fleet.scoped, {"endpoint_id": new, "label": "x", "client": fleet.client_a.lower(), "site": "S"})
    assert r.status == 201, r.body
    r = await bridge.request("GET", f"/api/endpoints/{new}", token=fleet.scoped)
    assert (r.status, r.body["client"], r.body["site"]) == (200, fleet.client_a.lower(), "S")
    # An existing endpoint keeps its client: naming another is refused, for an admin too.
    r = await enroll_as(bridge.admin_token, {"endpoint_id": fleet.mine, "label": "x", "client": fleet.client_b})
    assert (r.status, r.body["error"]["code"]) == (409, "client_mismatch")
    # Bad client and site names.
    for bad in ("", " lead", "trail ", "a" * 65, "tab\there", "Ünïcode", 7, ["x"]):
        r = await enroll_as(bridge.admin_token, {"endpoint_id": eid(), "label": "x", "client": bad})
        assert (r.status, r.body["error"]["code"]) == (400, "invalid_field"), (bad, r.body)
        r = await enroll_as(bridge.admin_token, {"endpoint_id": eid(), "label": "x", "site": bad})
        assert (r.status, r.body["error"]["code"]) == (400, "invalid_field"), (bad, r.body)


async def test_token_list_scoped_creation_and_last_used(bridge: BridgeUnderTest) -> None:
    tech_name, client = name("tech"), name("Acme")
    r = await bridge.request(
        "POST",
        "/api/tokens",
        token=bridge.admin_token,
        body={"name": tech_name, "role": "technician", "clients": [client]},
    )
    assert r.status == 201 and r.body["clients"] == [client]
    token = r.body["token"]
    r = await bridge.request("GET", "/api/tokens", token=bridge.admin_token)
    assert r.status == 200
    row = next(t for t in r.body["tokens"] if t["name"] == tech_name)
    assert row == {
        "name": tech_name,
        "role": "technician",
        "clients": [client],
        "created_at": row["created_at"],
        "created_by": "admin",
        "last_used": None,
    }
    assert token not in json.dumps(r.body) and "hash" not in json.dumps(r.body)
    assert (await bridge.request("GET", "/api/endpoints", token=token)).status == 200
    r = await bridge.request("GET", "/api/tokens", token=bridge.admin_token)
    row = next(t for t in r.body["tokens"] if t["name"] == tech_name)
    assert row["last_used"] is not None
    # Refusals.
    assert (await bridge.request("GET", "/api/tokens")).status == 401
    r = await bridge.request("GET", "/api/tokens", token=token)
    assert (r.status, r.body["error"]["code"]) == (403, "forbidden")
    bad_bodies: list[dict[str, Any]] = [
        {"name": name("a"), "role": "admin", "clients": [client]},
        {"name": name("a"), "role": "technician", "clients": []},
        {"name": name("a"), "role": "technician", "clients": "Acme"},
        {"name": name("a"), "role": "technician", "clients": ["ok", " bad"]},
        {"name": name("a"), "role": "technician", "clients": [f"c{i}" for i in range(101)]},
    ]
    for body in bad_bodies:
        r = await bridge.request("POST", "/api/tokens", token=bridge.admin_token, body=body)
        assert (r.status, r.body["error"]["code"]) == (400, "invalid_field"), (body, r.body)
    r = await bridge.request("POST", "/api/tokens", token=token, body={"name": name("a"), "role": "technician"})
    assert r.status == 403
    # Revoked: gone from the list, and refused.
    r = await bridge.request("DELETE", f"/api/tokens/{tech_name}", token=bridge.admin_token)
    assert r.status == 200
    r = await bridge.request("GET", "/api/tokens", token=bridge.admin_token)
    assert tech_name not in {t["name"] for t in r.body["tokens"]}


async def test_patch_relabels_and_moves_out_of_scope_at_once(bridge: BridgeUnderTest) -> None:
    fleet = await make_fleet(bridge)
    path = f"/api/endpoints/{fleet.mine}"
    r = await bridge.request("PATCH", path, token=bridge.admin_token, body={"label": "Front desk", "site": "Annex"})
    assert r.status == 200 and (r.body["label"], r.body["client"], r.body["site"]) == (
        "Front desk",
        fleet.client_a,
        "Annex",
    )
    r = await bridge.request("GET", "/api/endpoints", token=fleet.scoped)
    line = next(e for e in r.body["endpoints"] if e["endpoint_id"] == fleet.mine)
    assert (line["label"], line["site"]) == ("Front desk", "Annex")
    # Moved to client B: out of the scoped technician's sight on the very next call.
    r = await bridge.request("PATCH", path, token=bridge.admin_token, body={"client": fleet.client_b})
    assert r.status == 200 and r.body["client"] == fleet.client_b
    r = await bridge.request("GET", path, token=fleet.scoped)
    assert (r.status, r.body) == (404, unknown_body(fleet.mine))
    # A change always answers in full, whatever If-None-Match says.
    etag = (await bridge.request("GET", path, token=bridge.admin_token)).headers["etag"]
    r = await bridge.request(
        "PATCH", path, token=bridge.admin_token, body={"label": "Front desk 2"}, headers={"If-None-Match": etag}
    )
    assert r.status == 200 and r.body["label"] == "Front desk 2"
    # Taking the client away leaves it to unscoped tokens only.
    r = await bridge.request("PATCH", path, token=bridge.admin_token, body={"client": None, "site": None})
    assert r.status == 200 and (r.body["client"], r.body["site"]) == (None, None)
    # Recorded in the chain, which still verifies.
    audit = await bridge.request("GET", f"{path}/audit", token=bridge.admin_token)
    report = verify_export(audit.body.splitlines(), lambda claim: False)
    assert report.ok, report.problems
    updates = [json.loads(x) for x in audit.body.splitlines() if '"endpoint_updated"' in x]
    assert [u["fields"] for u in updates] == [
        {"by": "admin", "label": "Front desk", "site": "Annex"},
        {"by": "admin", "client": fleet.client_b},
        {"by": "admin", "label": "Front desk 2"},
        {"by": "admin", "client": None, "site": None},
    ]
    # Refusals.
    assert (await bridge.request("PATCH", path, body={"label": "x"})).status == 401
    r = await bridge.request("PATCH", path, token=fleet.scoped, body={"label": "x"})
    assert (r.status, r.body["error"]["code"]) == (403, "forbidden")
    for body in ({}, {"label": 5}, {"label": "a\x1bb"}, {"client": " x"}, {"site": ""}, {"owner": "x"}):
        r = await bridge.request("PATCH", path, token=bridge.admin_token, body=body)
        assert r.status == 400 and r.body["error"]["code"] in ("invalid_field", "missing_field"), (body, r.body)
    r = await bridge.request("PATCH", path, token=bridge.admin_token, raw=b"[1,")
    assert (r.status, r.body["error"]["code"]) == (400, "malformed_json")
    ghost = eid("ghost")
    r = await bridge.request("PATCH", f"/api/endpoints/{ghost}", token=bridge.admin_token, body={"label": "x"})
    assert (r.status, r.body) == (404, unknown_body(ghost))


async def test_remove_endpoint_keeps_prompts_refuses_its_agent_and_verifies(bridge: BridgeUnderTest) -> None:
    endpoint_id = eid("gone")
    ep = await enroll(bridge, endpoint_id, "To be removed")
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    created = await bridge.request(
        "POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=PROMPT
    )
    prompt_id = created.body["prompt_id"]
    await runtime.drain()
    tech = await new_token(bridge)
    path = f"/api/endpoints/{endpoint_id}"
    # Refusals first: no token, a technician, an unknown endpoint.
    assert (await bridge.request("DELETE", path)).status == 401
    r = await bridge.request("DELETE", path, token=tech)
    assert (r.status, r.body["error"]["code"]) == (403, "forbidden")
    ghost = eid("ghost")
    r = await bridge.request("DELETE", f"/api/endpoints/{ghost}", token=bridge.admin_token)
    assert (r.status, r.body) == (404, unknown_body(ghost))

    r = await bridge.request("DELETE", path, token=bridge.admin_token)
    assert r.status == 200 and r.body["removed_at"] is not None and r.body["removed_by"] == "admin"
    again = await bridge.request("DELETE", path, token=bridge.admin_token)
    assert again.status == 200 and again.body["removed_at"] == r.body["removed_at"]
    # Its agent is closed with the removal's code, and refused from then on.
    assert runtime.socket is not None
    with pytest.raises(ConnectionError, match="4410"):
        while True:
            await runtime.socket.recv(timeout=2.0)
    assert runtime.socket.closed  # the close frame above carried 4410
    refused = await bridge.connect_agent(endpoint_id, ep.secret)
    assert isinstance(refused, Resp) and refused.status == 410
    wrong = await bridge.connect_agent(endpoint_id, "csa_" + "A" * 43)
    assert isinstance(wrong, Resp) and wrong.status == 401
    # Its prompts stay readable, marked; the open one was cancelled by the admin.
    r = await bridge.request("GET", f"{path}/prompts/{prompt_id}", token=tech)
    assert r.status == 200 and r.body["state"] == "cancelled" and r.body["endpoint_removed_at"] is not None
    r = await bridge.request("GET", f"{path}/prompts", token=tech)
    assert [p["prompt_id"] for p in r.body["prompts"]] == [prompt_id]
    # Nothing new: prompts, retries, enrollments, edits.
    for method, sub, body in (
        ("POST", "/prompts", PROMPT),
        ("POST", f"/prompts/{prompt_id}/retry", {}),
        ("PATCH", "", {"label": "back"}),
    ):
        r = await bridge.request(method, path + sub, token=bridge.admin_token, body=body)
        assert (r.status, r.body["error"]["code"]) == (410, "endpoint_removed"), (sub, r.body)
    r = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id, "label": "x"}
    )
    assert (r.status, r.body["error"]["code"]) == (410, "endpoint_removed")
    # Hidden from the fleet unless asked.
    r = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    assert endpoint_id not in {e["endpoint_id"] for e in r.body["endpoints"]}
    r = await bridge.request("GET", "/api/endpoints?include_removed=1", token=bridge.admin_token)
    line = next(e for e in r.body["endpoints"] if e["endpoint_id"] == endpoint_id)
    assert line["removed_at"] is not None and line["online"] is False
    # The chain records the cancel and the removal, and verifies.
    audit = await bridge.request("GET", f"{path}/audit", token=bridge.admin_token)
    report = verify_export(audit.body.splitlines(), lambda claim: False)
    assert report.ok, report.problems
    assert report.removed_at_ms is not None
    removal = [json.loads(x) for x in audit.body.splitlines() if '"endpoint_removed"' in x]
    assert [x["fields"] for x in removal] == [{"by": "admin", "cancelled": [prompt_id]}]
    await runtime.close()


async def test_technician_rekey_still_refused(bridge: BridgeUnderTest) -> None:
    """Re-keying stays admin-only, for scoped technicians too."""
    client = name("Acme")
    endpoint_id = eid()
    await enroll_for(bridge, endpoint_id, client)
    scoped = await new_token(bridge, clients=[client])
    r = await bridge.request(
        "POST", "/api/enrollments", token=scoped, body={"endpoint_id": endpoint_id, "label": "x", "client": client}
    )
    assert (r.status, r.body["error"]["code"]) == (403, "forbidden")


def test_wire_close_code_is_private_use() -> None:
    from worker.endpoint_admin import REMOVED_CLOSE

    assert 4000 <= REMOVED_CLOSE[0] <= 4999 and len(REMOVED_CLOSE[1]) < wire.MAX_NAME_CHARS


def test_an_older_fleet_line_never_undoes_a_move_or_a_removal(tmp_path: Any) -> None:
    """On Cloudflare two lines of one endpoint may reach the fleet object out of order: the one
    computed before a move (or removal) must not restore the old client after it."""
    from worker.fleet import FleetIndex
    from worker.host import Entropy
    from worker.sqlite_store import SqliteStore

    store = SqliteStore(tmp_path / "fleet.sqlite3")
    fleet = FleetIndex(store, Entropy(), None)
    base = {"endpoint_id": "pc", "label": "PC", "online": True, "open_prompts": 0}
    fleet.update_endpoint(dict(base, client="Acme", site="HQ", record_seq=1), 1_000)
    fleet.update_endpoint(dict(base, client="Globex", site=None, removed_at_ms=None, record_seq=5), 2_000)
    fleet.update_endpoint(dict(base, label="PC (late line)", client="Acme", site="HQ", record_seq=1), 3_000)
    row = store.execute("SELECT label, client, site, record_seq FROM endpoints")[0]
    assert (row["client"], row["site"], row["record_seq"]) == ("Globex", None, 5)
    assert row["label"] == "PC (late line)"  # the rest of the line is as before: last write wins
    fleet.update_endpoint(dict(base, client="Globex", removed_at_ms=9_000, record_seq=7), 4_000)
    fleet.update_endpoint(dict(base, client="Globex", removed_at_ms=None, record_seq=5), 5_000)
    assert store.execute("SELECT removed_at_ms FROM endpoints")[0]["removed_at_ms"] == 9_000
    store.close()
