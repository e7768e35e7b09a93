"""Issue 14 on both hosts: the endpoint's zone, ``GET /api/endpoints/{eid}/stats`` and
``GET /api/patterns`` — answers and refusals (tests/bridge_hosts.py: the local host as a real
process with real SQLite files, the Worker adapter on the Workers stand-in)."""

from __future__ import annotations

import uuid
from typing import Any

from caisey import wire
from tests.bridge_hosts import BridgeUnderTest, ScriptedRuntime, enroll, of_type

BODY = {"title": "Allow remote control?", "message": "Alice", "action": "remote_control", "expires_in": 120}


def eid() -> str:
    return "pt-" + uuid.uuid4().hex[:10]


async def hello(runtime: ScriptedRuntime, time_zone: str | None) -> list[wire.Message]:
    await runtime.connect(hello=False)
    return await runtime.hello(time_zone=time_zone)


async def answered_prompt(bridge: BridgeUnderTest, runtime: ScriptedRuntime, endpoint_id: str) -> str:
    r = await bridge.request("POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=BODY)
    assert r.status == 201, r.body
    frames = await runtime.drain()
    deliver = of_type(frames, wire.PromptDeliver)[0]
    await runtime.receipt(deliver)
    await runtime.send(
        wire.PromptUpdate(id=runtime.new_id(), prompt_id=deliver.prompt.prompt_id, status="acknowledged", how="shown")
    )
    await runtime.drain()
    await runtime.decide(deliver.prompt.prompt_id, "approve")
    return str(r.body["prompt_id"])


async def test_stats_count_a_prompt_answered_in_the_endpoints_zone(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid(), label="Front desk")
    runtime = ScriptedRuntime(bridge, ep)
    frames = await hello(runtime, "Europe/Berlin")
    assert of_type(frames, wire.HelloOk) and not of_type(frames, wire.Error)
    await answered_prompt(bridge, runtime, ep.endpoint_id)

    r = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}/stats", token=bridge.admin_token)
    assert r.status == 200, r.body
    body = r.body
    assert body["time_zone"] == {"name": "Europe/Berlin", "effective": "Europe/Berlin", "note": None}
    assert body["outcomes"]["30d"]["answered"] == 1 and body["outcomes"]["90d"]["counted"] == 1
    assert sum(h["answered"] for h in body["by_hour"]) == 1 and len(body["by_hour"]) == 24
    assert len(body["by_weekday"]) == 7 and body["first_vs_reissued"]["first"]["answered"] == 1
    for metric in ("deliver", "present", "answer"):
        window = body["latency"][metric]["30d"]
        assert window["n"] == 1 and window["p50_ms"] is not None and window["p95_ms"] >= window["p50_ms"], metric
    assert len(body["answer_p95_by_week"]) == 13 and body["answer_p95_by_week"][-1]["n"] == 1
    assert body["findings"] == []

    endpoint = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}", token=bridge.admin_token)
    assert endpoint.body["time_zone"]["name"] == "Europe/Berlin"
    fleet = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    line = next(e for e in fleet.body["endpoints"] if e["endpoint_id"] == ep.endpoint_id)
    assert line["time_zone"] == "Europe/Berlin"
    patterns = await bridge.request("GET", "/api/patterns?limit=1000", token=bridge.admin_token)
    assert patterns.status == 200, patterns.body
    row = next(e for e in patterns.body["ranking"] if e["endpoint_id"] == ep.endpoint_id)
    assert row["answered"] == 1 and row["counted"] == 1 and row["time_zone"] == "Europe/Berlin"
    assert row["label"] == "Front desk" and row["client"] is None
    assert patterns.body["rules"]["min_sample"] >= 10
    await runtime.close()


async def test_an_unknown_zone_is_kept_and_read_as_utc_with_a_note(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    runtime = ScriptedRuntime(bridge, ep)
    frames = await hello(runtime, "Mars/Olympus_Mons")
    assert of_type(frames, wire.HelloOk) and not of_type(frames, wire.Error)
    r = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}/stats", token=bridge.admin_token)
    assert r.status == 200, r.body
    zone = r.body["time_zone"]
    assert zone["name"] == "Mars/Olympus_Mons" and zone["effective"] == "UTC" and "unknown" in zone["note"]
    await runtime.close()


async def test_a_zone_change_rides_on_a_heartbeat_and_a_malformed_one_is_refused(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    runtime = ScriptedRuntime(bridge, ep)
    await hello(runtime, None)
    r = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}", token=bridge.admin_token)
    assert r.body["time_zone"]["name"] is None and r.body["time_zone"]["effective"] == "UTC"
    await runtime.send(
        wire.Heartbeat(
            id=runtime.new_id(), sent_at_ms=runtime.local_now(), digest="x" * 64, time_zone="America/New_York"
        )
    )
    assert of_type(await runtime.drain(), wire.Ack)
    r = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}", token=bridge.admin_token)
    assert r.body["time_zone"]["name"] == "America/New_York"
    frame = '{"v":1,"type":"heartbeat","id":"hb-bad","sent_at_ms":1,"digest":"x","time_zone":"../../etc/passwd"}'
    await runtime.send_raw(frame)
    errors = of_type(await runtime.drain(), wire.Error)
    assert errors and errors[0].code == "invalid_field" and errors[0].of == "hb-bad"
    r = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}", token=bridge.admin_token)
    assert r.body["time_zone"]["name"] == "America/New_York"  # nothing changed
    await runtime.close()


async def test_stats_and_patterns_refusals(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    path = f"/api/endpoints/{ep.endpoint_id}/stats"
    cases = [
        ("GET", path, None, 401, "missing_token"),
        ("GET", path, "cst_not-a-token", 401, "invalid_token"),
        ("GET", path, ep.secret, 401, "invalid_token"),  # an agent secret is not a technician token
        ("GET", "/api/endpoints/no-such-endpoint-x/stats", bridge.admin_token, 404, "unknown_endpoint"),
        ("GET", "/api/endpoints/bad%20id/stats", bridge.admin_token, 400, "invalid_endpoint_id"),
        ("GET", path + "?days=0", bridge.admin_token, 400, "invalid_field"),
        ("GET", path + "?days=91", bridge.admin_token, 400, "invalid_field"),
        ("GET", path + "?days=%C2%B2", bridge.admin_token, 400, "invalid_field"),
        ("POST", path, bridge.admin_token, 405, "method_not_allowed"),
        ("GET", "/api/patterns", None, 401, "missing_token"),
        ("GET", "/api/patterns", "cst_not-a-token", 401, "invalid_token"),
        ("GET", "/api/patterns?client=%1B%5B2J", bridge.admin_token, 400, "invalid_field"),
        ("GET", "/api/patterns?site=" + "s" * 129, bridge.admin_token, 400, "invalid_field"),
        ("GET", "/api/patterns?client=", bridge.admin_token, 400, "invalid_field"),
        ("GET", "/api/patterns?limit=0", bridge.admin_token, 400, "invalid_limit"),
        ("GET", "/api/patterns?limit=abc", bridge.admin_token, 400, "invalid_limit"),
        ("GET", "/api/patterns?limit=10001", bridge.admin_token, 400, "invalid_limit"),
        ("GET", "/api/patterns?findings=0", bridge.admin_token, 400, "invalid_limit"),
        ("DELETE", "/api/patterns", bridge.admin_token, 405, "method_not_allowed"),
    ]
    for method, url, token, status, code in cases:
        r = await bridge.request(method, url, token=token)
        assert (r.status, r.body["error"]["code"]) == (status, code), (method, url, r.status, r.body)
    ok = await bridge.request("GET", path + "?days=7", token=bridge.admin_token)
    assert ok.status == 200 and ok.body["days"] == 7
    # No line has a client until issue 14 item 5 adds them: a client filter matches none.
    r = await bridge.request("GET", "/api/patterns?client=acme&site=hq", token=bridge.admin_token)
    assert r.status == 200 and r.body["ranking"] == [] and r.body["endpoints"] == 0
    assert r.body["filter"] == {"client": "acme", "site": "hq"}


async def test_stats_and_patterns_answer_304_later_when_only_as_of_moved(bridge: BridgeUnderTest) -> None:
    """The ETag covered ``as_of`` (the read's own time), so on a real clock no re-read was a 304."""
    ep = await enroll(bridge, eid())
    for path in (f"/api/endpoints/{ep.endpoint_id}/stats", "/api/patterns"):
        first = await bridge.request("GET", path, token=bridge.admin_token)
        assert first.status == 200, first.body
        await bridge.advance(50)
        again = await bridge.request(
            "GET", path, token=bridge.admin_token, headers={"If-None-Match": first.headers["etag"]}
        )
        assert again.status == 304 and again.body is None, (path, again.status, again.body)


def test_patterns_are_computed_once_between_line_changes(tmp_path: Any, monkeypatch: Any) -> None:
    """Review F1: the fleet-wide sum is computed once per (query, scope) until a line changes;
    a repeated read and a 304 cost a lookup, and a changed line is seen by the next read."""
    from worker import patterns as patterns_module
    from worker.api import ApiRequest
    from worker.fleet import FleetIndex
    from worker.host import Entropy
    from worker.sqlite_store import SqliteStore

    calls = []
    compute = patterns_module._patterns_body
    monkeypatch.setattr(patterns_module, "_patterns_body", lambda *a: calls.append(a) or compute(*a))
    store = SqliteStore(tmp_path / "fleet.sqlite3")
    fleet = FleetIndex(store, Entropy(), None)
    fleet.update_endpoint({"endpoint_id": "pc", "label": "PC", "online": True, "open_prompts": 0}, 1_000)

    def read(etag: str | None = None, query: dict[str, str] | None = None) -> Any:
        headers = {"if-none-match": etag} if etag else {}
        return patterns_module.patterns(
            store, ApiRequest("GET", "/api/patterns", headers, query=query or {}), 5_000, fleet.patterns_cache
        )

    first = read()
    assert first.status == 200 and first.body["endpoints"] == 1 and len(calls) == 1
    again = read()
    assert again.headers["etag"] == first.headers["etag"] and again.body == first.body and len(calls) == 1
    assert read(first.headers["etag"]).status == 304 and len(calls) == 1
    assert read(query={"client": "acme"}).body["endpoints"] == 0 and len(calls) == 2  # another query
    fleet.update_endpoint({"endpoint_id": "pc2", "label": "PC 2", "online": False, "open_prompts": 0}, 6_000)
    changed = read(first.headers["etag"])
    assert changed.status == 200 and changed.body["endpoints"] == 2 and len(calls) == 3
    assert changed.headers["etag"] != first.headers["etag"]
    store.close()
