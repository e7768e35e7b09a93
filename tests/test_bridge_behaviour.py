"""One behavioural suite for the bridge, run against every host (DESIGN §4, §5, §7, §8).

Each test uses its own endpoint, so one bridge serves the whole module. The ``bridge``
fixture is parametrised by host: the local host as a real process on 127.0.0.1 with real
SQLite files, the Cloudflare adapter on the Workers stand-in when it is available
(tests/conftest.py), and — with ``CAISEY_BRIDGE_URL`` and ``CAISEY_BRIDGE_ADMIN_TOKEN`` set —
whatever bridge runs at that URL (``url``; ``scripts/test-worker`` runs it against
``wrangler dev``, ``tests/test_bridge_by_url.py`` against a local host process). Time is real
for ``url``: the bridge should run with a short heartbeat (2 s here). A test that must kill or
inspect its host calls ``skip_without_host_access`` first.
"""

from __future__ import annotations

import random
import uuid

import pytest

from caisey import wire
from caisey.digest import held_digest
from caisey.ids import IdSource
from tests.bridge_hosts import (
    BridgeUnderTest,
    Resp,
    ScriptedRuntime,
    UrlBridge,
    enroll,
    of_type,
)
from tests.conftest import HOSTS, bridge_of_kind

URL_BRIDGE = UrlBridge.from_env()


@pytest.fixture(params=[*HOSTS, "url"] if URL_BRIDGE is not None else HOSTS)
def bridge(request: pytest.FixtureRequest) -> BridgeUnderTest:
    """tests/conftest.py's hosts, and the bridge at ``CAISEY_BRIDGE_URL`` when it is set."""
    if request.param == "url":
        assert URL_BRIDGE is not None
        return URL_BRIDGE
    return bridge_of_kind(request, request.param)


def one_deliver(frames: list[wire.Message]) -> wire.PromptDeliver:
    """The one prompt delivered; a retry of it (same event id) may ride along."""
    delivers = of_type(frames, wire.PromptDeliver)
    assert delivers and {d.id for d in delivers} == {delivers[0].id}, delivers
    return delivers[0]


def eid() -> str:
    return "ep-" + uuid.uuid4().hex[:10]


async def create(bridge: BridgeUnderTest, endpoint_id: str, key: str | None = None, **fields: object) -> Resp:
    body = {
        "title": "Allow remote control?",
        "message": "Alice from the help desk",
        "action": "remote_control",
        "expires_in": 120,
    }
    body.update(fields)
    headers = {"Idempotency-Key": key} if key else {}
    return await bridge.request(
        "POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=body, headers=headers
    )


async def prompt(bridge: BridgeUnderTest, endpoint_id: str, prompt_id: str) -> dict:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}", token=bridge.admin_token)
    assert r.status == 200, r.body
    return r.body


# --- the happy path and its timeline -----------------------------------------------------------


async def test_deliver_receipt_decide_shows_approved_with_timeline(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    created = await create(bridge, ep.endpoint_id)
    assert created.status == 201 and created.body["state"] == "pending"
    runtime = ScriptedRuntime(bridge, ep)
    frames = await runtime.connect()
    assert len(of_type(frames, wire.HelloOk)) == 1
    deliver = one_deliver(frames)
    assert deliver.prompt.prompt_id == created.body["prompt_id"]
    acks = await runtime.receipt(deliver)
    assert [a.of for a in of_type(acks, wire.Ack)]
    assert (await prompt(bridge, ep.endpoint_id, deliver.prompt.prompt_id))["state"] == "delivered"
    await runtime.decide(deliver.prompt.prompt_id, "approve")
    view = await prompt(bridge, ep.endpoint_id, deliver.prompt.prompt_id)
    assert view["state"] == "approved" and view["decision"] == "approve" and view["final"]
    sources = {(e["source"], e["type"]) for e in view["events"]}
    assert {
        ("console", "created"),
        ("bridge", "delivery_attempted"),
        ("runtime", "received"),
        ("runtime", "decided"),
    } <= sources
    await runtime.close()


async def test_no_attempt_is_burned_while_disconnected_and_reconnect_flushes(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    ids = [(await create(bridge, ep.endpoint_id)).body["prompt_id"] for _ in range(3)]
    await bridge.advance(1_500)
    for pid in ids:
        assert (await prompt(bridge, ep.endpoint_id, pid))["delivery"]["attempts"] == 0
    runtime = ScriptedRuntime(bridge, ep)
    frames = await runtime.connect()
    assert {d.prompt.prompt_id for d in of_type(frames, wire.PromptDeliver)} == set(ids)  # retries may repeat some
    await runtime.close()


async def test_an_owed_prompt_is_delivered_once_per_reconnect_after_hello_ok(bridge: BridgeUnderTest) -> None:
    """The alarm armed when the socket opens must not deliver before the hello, whose flush
    delivers everything owed: that was two deliveries, 2-11 ms apart, on every reconnect."""
    ep = await enroll(bridge, eid())
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    [deliver] = {d.id: d for d in of_type(await runtime.drain(), wire.PromptDeliver)}.values()
    await runtime.close()  # no receipt: the prompt is still owed
    await bridge.advance(2_500)  # its retry falls due while the agent is away
    await runtime.connect(hello=False)
    await bridge.advance(100)  # the socket is open; the agent's hello is on its way
    hello = wire.Hello(
        id=runtime.new_id(), endpoint_id=ep.endpoint_id, agent_version="scripted", sent_at_ms=runtime.local_now()
    )
    await runtime.send(hello)
    assert runtime.socket is not None
    before: list[wire.Message] = []
    while not isinstance(frame := wire.decode(await runtime.socket.recv(timeout=5)), wire.PromptDeliver):
        before.append(frame)
    assert [type(m) for m in before] == [wire.HelloOk], before  # nothing delivered before hello.ok
    delivered = [*of_type(before, wire.PromptDeliver), frame]
    assert len(delivered) == 1 and frame.id == deliver.id and frame.prompt.prompt_id == pid  # once, by the flush
    # (A retry after the flush would be the backoff's, due 0-2 s later: not this reconnect's.)
    await runtime.receipt(frame)
    assert (await prompt(bridge, ep.endpoint_id, pid))["state"] == "delivered"
    await runtime.close()


async def test_unreceipted_deliver_is_retried_with_the_same_event_id(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    first = of_type(await runtime.drain(), wire.PromptDeliver)
    await bridge.advance(2_500)  # backoff base 1 s, full jitter: the retry is due within 2 s
    again = of_type(await runtime.drain(), wire.PromptDeliver)
    assert first and again and {d.id for d in first} == {d.id for d in again}
    assert (await prompt(bridge, ep.endpoint_id, pid))["delivery"]["attempts"] >= 2
    await runtime.close()


# --- idempotency ---------------------------------------------------------------------------------


async def test_idempotency_key_returns_the_same_prompt_and_refuses_another_body(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    first = await create(bridge, ep.endpoint_id, key="k-1")
    again = await create(bridge, ep.endpoint_id, key="k-1")
    assert (first.status, again.status) == (201, 200)
    assert first.body["prompt_id"] == again.body["prompt_id"]
    other = await create(bridge, ep.endpoint_id, key="k-1", title="Something else")
    assert other.status == 422 and other.body["error"]["code"] == "idempotency_key_reused"
    listing = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}/prompts", token=bridge.admin_token)
    assert len(listing.body["prompts"]) == 1


async def test_duplicate_runtime_frames_change_nothing(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    deliver = one_deliver(await runtime.connect())
    await runtime.receipt(deliver)
    update_id = runtime.new_id()
    await runtime.decide(pid, "deny", event_id=update_id)
    before = await prompt(bridge, ep.endpoint_id, pid)
    replies = await runtime.decide(pid, "deny", event_id=update_id)  # the same frame again
    assert [a.of for a in of_type(replies, wire.Ack)] == [update_id]  # acked again, so it stops resending
    after = await prompt(bridge, ep.endpoint_id, pid)
    assert after["state"] == "denied" and len(after["events"]) == len(before["events"])
    await runtime.close()


# --- R3: cancel is safe ------------------------------------------------------------------------------


async def test_cancel_then_late_decision_stays_cancelled(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    deliver = one_deliver(await runtime.connect())
    await runtime.receipt(deliver)
    cancel = await bridge.request(
        "POST", f"/api/endpoints/{ep.endpoint_id}/prompts/{pid}/cancel", token=bridge.admin_token
    )
    assert cancel.status == 200 and cancel.body["state"] == "cancelled"
    assert of_type(await runtime.drain(), wire.PromptCancel)
    await runtime.decide(pid, "approve", decided_at_ms=bridge.now_ms() - 5_000)
    view = await prompt(bridge, ep.endpoint_id, pid)
    assert view["state"] == "cancelled" and view["decision"] is None
    assert view["late_decision"]["decision"] == "approve"
    await runtime.close()


async def test_cancel_of_a_decided_prompt_is_a_409_with_the_state(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    deliver = one_deliver(await runtime.connect())
    await runtime.receipt(deliver)
    await runtime.decide(pid, "approve")
    r = await bridge.request("POST", f"/api/endpoints/{ep.endpoint_id}/prompts/{pid}/cancel", token=bridge.admin_token)
    assert r.status == 409 and r.body["error"]["code"] == "already_final" and r.body["prompt"]["state"] == "approved"
    await runtime.close()


async def test_retry_supersedes_and_links_both_prompts(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    old = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    r = await bridge.request(
        "POST", f"/api/endpoints/{ep.endpoint_id}/prompts/{old}/retry", token=bridge.admin_token, body={}
    )
    assert r.status == 201 and r.body["supersedes"] == old
    old_view = await prompt(bridge, ep.endpoint_id, old)
    assert old_view["state"] == "superseded" and old_view["superseded_by"] == r.body["prompt_id"]


# --- R4, R5, R6 -----------------------------------------------------------------------------------------


async def test_decision_made_before_expiry_is_honoured_when_it_arrives_after(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id, expires_in=6)).body["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    deliver = one_deliver(await runtime.connect())
    await runtime.receipt(deliver)
    decided_at = bridge.now_ms()  # the user answers now; the update is "lost" until after expiry
    await runtime.close()
    await bridge.advance(7_000)
    assert (await prompt(bridge, ep.endpoint_id, pid))["state"] == "expired"
    await runtime.connect()
    await runtime.decide(pid, "approve", decided_at_ms=decided_at)
    view = await prompt(bridge, ep.endpoint_id, pid)
    assert view["state"] == "approved" and "R4" in view["reason"]
    await runtime.close()


async def test_r5_prompt_missing_from_the_runtime_report_is_replayed_with_its_id(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    deliver = one_deliver(await runtime.connect())
    await runtime.receipt(deliver)
    await runtime.close()
    # The runtime lost its store: it reconnects and reports that it holds nothing.
    await runtime.connect()
    await runtime.send(wire.StateReport(id=runtime.new_id(), prompts=(), digest=held_digest([])))
    replayed = of_type(await runtime.drain(), wire.PromptDeliver)
    assert replayed and {d.id for d in replayed} == {deliver.id}  # the original id; a retry of it may ride along
    view = await prompt(bridge, ep.endpoint_id, pid)
    assert view["delivery"]["replays"] == 1 and view["state"] == "delivered"
    await runtime.close()


async def test_r6_prompt_unknown_to_the_bridge_is_adopted_from_the_report(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    now = bridge.now_ms()
    # An id the bridge could have made (before its storage was lost): a crafted one is refused.
    adopted_id = IdSource(random.Random(6).getrandbits).new(now - 1000)
    copy = wire.PromptCopy(adopted_id, "Restored", "", "remote_control", now - 1000, now + 60_000, "wait", "bob")
    held = wire.HeldPrompt(prompt=copy, status="decided", decision="approve", decided_at_ms=now - 500, how="user")
    await runtime.send(wire.StateReport(id=runtime.new_id(), prompts=(held,), digest=held_digest([])))
    await runtime.drain()
    view = await prompt(bridge, ep.endpoint_id, copy.prompt_id)
    # The requester is the endpoint's claim, never shown as a technician (issue 11 item 3).
    assert view["adopted"] and view["state"] == "approved" and view["created_by"] == "endpoint (claimed: bob)"
    await runtime.close()


async def test_heartbeat_digest_mismatch_asks_for_a_full_report(bridge: BridgeUnderTest) -> None:

    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    deliver = one_deliver(await runtime.connect())
    await runtime.receipt(deliver)
    await runtime.send(
        wire.Heartbeat(id=runtime.new_id(), sent_at_ms=runtime.local_now(), digest=held_digest([(pid, "received")]))
    )
    replies = await runtime.drain()
    assert of_type(replies, wire.Ack) and not of_type(replies, wire.StateRequest)
    await runtime.send(wire.Heartbeat(id=runtime.new_id(), sent_at_ms=runtime.local_now(), digest=held_digest([])))
    assert of_type(await runtime.drain(), wire.StateRequest)
    await runtime.close()


# --- R7 and I7 -------------------------------------------------------------------------------------------


async def test_endpoint_never_connected_ends_failed_to_deliver_at_expiry(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id, expires_in=5)).body["prompt_id"]
    await bridge.advance(3_000)
    assert (await prompt(bridge, ep.endpoint_id, pid))["state"] == "pending"  # silence is not a fact (R7)
    await bridge.advance(3_000)
    view = await prompt(bridge, ep.endpoint_id, pid)
    assert view["state"] == "failed_to_deliver" and view["reason"] == "endpoint_unreachable"
    fleet = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    [line] = [e for e in fleet.body["endpoints"] if e["endpoint_id"] == ep.endpoint_id]
    assert line["open_prompts"] == 0 and line["last_outcome"]["state"] == "failed_to_deliver"


# --- polling -------------------------------------------------------------------------------------------------


async def test_list_etag_gives_304_until_something_changes(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    await create(bridge, ep.endpoint_id)
    path = f"/api/endpoints/{ep.endpoint_id}/prompts"
    first = await bridge.request("GET", path, token=bridge.admin_token)
    etag = first.headers["etag"]
    same = await bridge.request("GET", path, token=bridge.admin_token, headers={"If-None-Match": etag})
    assert same.status == 304 and same.body is None
    await create(bridge, ep.endpoint_id, title="Another")
    changed = await bridge.request("GET", path, token=bridge.admin_token, headers={"If-None-Match": etag})
    assert changed.status == 200 and len(changed.body["prompts"]) == 2


# --- bad input: a precise error, the server keeps serving, nothing stored changes ----------------------------


async def test_bad_http_input_gets_precise_errors_and_changes_nothing(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    other = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id, key="stable")).body["prompt_id"]
    path = f"/api/endpoints/{ep.endpoint_id}/prompts"
    before = (await bridge.request("GET", path, token=bridge.admin_token)).body

    async def expect(status: int, code: str, r: Resp) -> None:
        assert (r.status, r.body["error"]["code"]) == (status, code), r.body

    await expect(400, "malformed_json", await bridge.request("POST", path, token=bridge.admin_token, raw=b"{not json"))
    await expect(
        413,
        "body_too_large",
        await bridge.request("POST", path, token=bridge.admin_token, raw=b"{" + b" " * 70_000 + b"}"),
    )
    await expect(400, "invalid_field", await bridge.request("POST", path, token=bridge.admin_token, body={"title": ""}))
    await expect(400, "invalid_expiry", await create(bridge, ep.endpoint_id, expires_in=10**9))
    await expect(404, "unknown_endpoint", await create(bridge, "never-registered"))
    await expect(401, "missing_token", await bridge.request("GET", path))
    await expect(401, "invalid_token", await bridge.request("GET", path, token="cst_wrong"))
    await expect(422, "idempotency_key_reused", await create(bridge, ep.endpoint_id, key="stable", title="changed"))
    await expect(404, "unknown_prompt", await bridge.request("POST", f"{path}/NOPE/cancel", token=bridge.admin_token))
    await expect(404, "not_found", await bridge.request("GET", "/api/nothing-here", token=bridge.admin_token))
    # an agent secret opens only its own endpoint
    refused = await bridge.connect_agent(other.endpoint_id, ep.secret)
    assert isinstance(refused, Resp) and refused.status == 401
    refused = await bridge.connect_agent(ep.endpoint_id, None)
    assert isinstance(refused, Resp) and refused.status == 401
    # a technician token cannot mint tokens; a revoked token stops working
    tech = await bridge.request(
        "POST", "/api/tokens", token=bridge.admin_token, body={"name": f"t{uuid.uuid4().hex[:6]}", "role": "technician"}
    )
    assert tech.status == 201
    await expect(
        403,
        "forbidden",
        await bridge.request("POST", "/api/tokens", token=tech.body["token"], body={"name": "x", "role": "admin"}),
    )
    assert (await bridge.request("GET", path, token=tech.body["token"])).status == 200
    assert (await bridge.request("DELETE", f"/api/tokens/{tech.body['name']}", token=bridge.admin_token)).status == 200
    await expect(401, "invalid_token", await bridge.request("GET", path, token=tech.body["token"]))
    after = (await bridge.request("GET", path, token=bridge.admin_token)).body
    assert after == before and after["prompts"][0]["prompt_id"] == pid


async def test_enrollment_token_is_one_time(bridge: BridgeUnderTest) -> None:
    r = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": eid(), "label": "x"}
    )
    token = r.body["enrollment_token"]
    assert (await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": token})).status == 200
    again = await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": token})
    assert again.status == 401 and again.body["error"]["code"] == "invalid_enrollment_token"


async def test_bad_frames_get_error_frames_and_the_socket_stays_up(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    pid = (await create(bridge, ep.endpoint_id)).body["prompt_id"]
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    cases = {
        "malformed_json": "{nope",
        "unsupported_version": '{"v": 9, "type": "hello", "id": "a"}',
        "unknown_type": '{"v": 1, "type": "launch.missiles", "id": "a"}',
        "frame_too_large": "x" * (wire.MAX_FRAME_BYTES + 1),
        "missing_field": '{"v": 1, "type": "prompt.update", "id": "a"}',
        "unexpected_type": wire.encode(wire.StateRequest(id="zz")),
    }
    for code, text in cases.items():
        await runtime.send_raw(text)
        errors = of_type(await runtime.drain(), wire.Error)
        assert [e.code for e in errors] == [code]
        if code == "unsupported_version":
            assert errors[0].supported_versions == (1,)
    assert runtime.socket is not None and not runtime.socket.closed
    # and the socket still works for real frames
    await runtime.decide(pid, "deny")
    assert (await prompt(bridge, ep.endpoint_id, pid))["state"] == "denied"
    await runtime.close()


async def test_a_ping_gets_the_constant_pong_on_both_hosts_and_digest_ms_only_when_asked(
    bridge: BridgeUnderTest,
) -> None:
    # Issue 12: the Worker's runtime answers the exact ping frame itself (auto-response); the
    # local host answers it in its socket loop. Either way the agent hears a pong.
    ep = await enroll(bridge, eid())
    runtime = ScriptedRuntime(bridge, ep)
    [ok] = of_type(await runtime.connect(), wire.HelloOk)
    assert ok.digest_ms is None  # this peer's hello did not say it pings: nothing new offered
    assert runtime.socket is not None
    await runtime.socket.send(wire.PING_FRAME)
    assert await runtime.socket.recv() == wire.PONG_FRAME
    assert not runtime.socket.closed
    await runtime.close()
