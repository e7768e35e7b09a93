"""Issue 12 on the Workers stand-in: what an idle connected endpoint and a technician call cost
the Cloudflare host, and that the cheaper steady state still notices a dead agent in time.

A real ``AgentCore`` (its real store) talks to ``worker/entry.py`` over the stand-in's socket on
the virtual clock; the deployment's own defaults apply (heartbeat 15 s, a full heartbeat every
6 min for agents that ping). The stand-in answers the agent's exact ping frame itself, as the
runtime's auto-response does, without running a handler or constructing an instance, and
counts every handler it does run ("wakes") and every Python invocation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caisey import wire
from tests.bridge_hosts import enroll
from tests.workers_host import ADMIN_TOKEN, RealAgent, WorkersBridge
from tests.workers_standin.harness import AgentClient, ObjectRecord

HOUR_MS = 3_600_000
LIVENESS_MS = 45_000  # BridgeConfig's default: three heartbeats of 15 s
# The brief's targets.
MAX_WAKES_PER_IDLE_HOUR = 12
MAX_INVOCATIONS_PER_CALL = 2


def endpoint_record(bridge: WorkersBridge, endpoint_id: str) -> ObjectRecord:
    return bridge.harness.record("ENDPOINTS", endpoint_id)


async def fleet_line(bridge: WorkersBridge, endpoint_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", "/api/endpoints", token=ADMIN_TOKEN)
    [line] = [e for e in r.body["endpoints"] if e["endpoint_id"] == endpoint_id]
    return dict(line)


async def idle_hour_wakes(tmp_path: Path, *, old: bool) -> tuple[int, dict[str, int], int]:
    bridge = WorkersBridge(heartbeat_ms=None)
    ep = await enroll(bridge, "idle-1")
    agent = RealAgent(bridge, ep, tmp_path, old=old)
    await agent.connect()
    await agent.run(10 * 60_000)  # connected and settled
    record = endpoint_record(bridge, "idle-1")
    wakes, by_handler, answered = record.wakes, dict(record.wakes_by_handler), record.auto_responses
    await agent.run(HOUR_MS)
    assert agent.socket is not None and not agent.socket.closed, "the idle agent stays connected"
    delta = {k: v - by_handler.get(k, 0) for k, v in record.wakes_by_handler.items() if v - by_handler.get(k, 0)}
    return record.wakes - wakes, delta, record.auto_responses - answered


async def test_an_idle_connected_endpoint_wakes_its_object_at_most_12_times_an_hour(tmp_path: Path) -> None:
    wakes, by_handler, answered = await idle_hour_wakes(tmp_path, old=False)
    assert wakes <= MAX_WAKES_PER_IDLE_HOUR, by_handler
    assert by_handler.get("webSocketMessage", 0) == 10  # a full heartbeat every 6 min
    assert by_handler.get("alarm", 0) == 1  # housekeeping, hourly
    assert answered >= 200  # the pings in between, answered by the runtime


async def test_an_agent_installed_before_pings_keeps_working_with_full_heartbeats(tmp_path: Path) -> None:
    # The wire is compatible: an old agent is offered nothing new and heartbeats as before —
    # every 15 s, each one waking the object (today's cost; bench/RESULTS.md compares).
    wakes, by_handler, answered = await idle_hour_wakes(tmp_path, old=True)
    assert answered == 0
    assert by_handler["webSocketMessage"] == 240 and wakes >= 240


async def test_a_silently_dead_agent_is_gone_before_a_delivery_attempt_is_spent(tmp_path: Path) -> None:
    bridge = WorkersBridge(heartbeat_ms=None)
    ep = await enroll(bridge, "sleepy-1")
    agent = RealAgent(bridge, ep, tmp_path)
    await agent.connect()
    await agent.run(7 * 60_000)  # one full heartbeat at 6 min, pings since
    await bridge.advance(2 * 60_000)  # the laptop sleeps: no frame, no ping; the socket stays open
    assert agent.socket is not None and not agent.socket.closed
    r = await bridge.request(
        "POST",
        "/api/endpoints/sleepy-1/prompts",
        token=ADMIN_TOKEN,
        body={"title": "Allow?", "action": "remote_control", "expires_in": 600},
    )
    assert r.status == 201
    assert r.body["state"] == "pending" and r.body["delivery"]["attempts"] == 0  # nothing spent
    assert agent.socket.closed and agent.socket.close_code == 4408
    assert not any('"prompt.deliver"' in f for f in agent.socket.received())
    assert (await fleet_line(bridge, "sleepy-1"))["online"] is False


async def test_a_live_pinging_agent_is_not_mistaken_for_a_dead_one_between_full_heartbeats(tmp_path: Path) -> None:
    bridge = WorkersBridge(heartbeat_ms=None)
    ep = await enroll(bridge, "awake-1")
    agent = RealAgent(bridge, ep, tmp_path)
    await agent.connect()
    await agent.run(6 * 60_000 + 5_000)
    await agent.run(4 * 60_000)  # 4 min since the last full heartbeat: only pings
    r = await bridge.request(
        "POST",
        "/api/endpoints/awake-1/prompts",
        token=ADMIN_TOKEN,
        body={"title": "Allow?", "action": "remote_control", "expires_in": 600},
    )
    assert r.status == 201 and r.body["delivery"]["attempts"] == 1
    await agent.receive()
    assert agent.socket is not None and not agent.socket.closed
    assert [p.prompt_id for p in agent.core.store.open_prompts()] == [r.body["prompt_id"]]
    line = await fleet_line(bridge, "awake-1")
    assert line["online"] is True and line["last_seen"] is not None


async def test_the_fleet_view_says_how_old_it_is_and_drops_a_dead_agent_once_a_heartbeat_is_overdue(
    tmp_path: Path,
) -> None:
    bridge = WorkersBridge(heartbeat_ms=None)
    ep = await enroll(bridge, "sleepy-2")
    agent = RealAgent(bridge, ep, tmp_path)
    await agent.connect()
    await agent.run(7 * 60_000)
    died_at = bridge.now_ms()
    line = await fleet_line(bridge, "sleepy-2")
    assert line["online"] is True
    assert "checked_at" in line  # online and last_seen are as of this time
    offline_at = None
    for _ in range(60):  # nobody asks: only the object's own alarm can notice
        await bridge.advance(10_000)
        if not (await fleet_line(bridge, "sleepy-2"))["online"]:
            offline_at = bridge.now_ms()
            break
    assert offline_at is not None
    # At most one full-heartbeat interval plus the liveness window after the last proof of life.
    assert offline_at - died_at <= 6 * 60_000 + LIVENESS_MS + 10_000
    assert agent.socket is not None and agent.socket.close_code == 4408


# --- item 3: Python invocations per technician call ------------------------------------------------


async def invocations(bridge: WorkersBridge, method: str, path: str, token: str, body: Any = None) -> int:
    before = bridge.harness.python_invocations
    r = await bridge.request(method, path, token=token, body=body)
    assert r.status < 300, r.body
    return bridge.harness.python_invocations - before


async def test_a_technician_call_runs_python_at_most_twice_in_steady_state() -> None:
    bridge = WorkersBridge(heartbeat_ms=None)
    await enroll(bridge, "calls-1")
    tech = await bridge.request("POST", "/api/tokens", token=ADMIN_TOKEN, body={"name": "tina", "role": "technician"})
    token = tech.body["token"]
    path = "/api/endpoints/calls-1/prompts"
    assert await invocations(bridge, "GET", path, token) == 3  # first call: Worker, fleet (token), endpoint
    assert await invocations(bridge, "GET", path, token) <= MAX_INVOCATIONS_PER_CALL  # Worker, endpoint
    assert await invocations(bridge, "GET", "/api/endpoints", token) <= MAX_INVOCATIONS_PER_CALL
    await bridge.advance(61_000)  # the cached verification is too old: checked again
    assert await invocations(bridge, "GET", path, token) == 3


async def test_with_a_pinging_agent_connected_a_read_still_runs_python_twice(tmp_path: Path) -> None:
    # Checking the agent's liveness on a read writes nothing and pushes no fleet line.
    bridge = WorkersBridge(heartbeat_ms=None)
    # Keep the verified token for the whole test: what is measured is the liveness check.
    setattr(bridge.harness.module, "TOKEN_CACHE_MS", HOUR_MS)  # noqa: B010 — loaded at run time
    ep = await enroll(bridge, "calls-3")
    agent = RealAgent(bridge, ep, tmp_path)
    await agent.connect()
    await agent.run(7 * 60_000)
    path = "/api/endpoints/calls-3/prompts"
    await invocations(bridge, "GET", path, ADMIN_TOKEN)  # warms the token cache
    for _ in range(3):
        await agent.run(95_000)  # pings only; the minute of last_seen would have moved
        assert await invocations(bridge, "GET", path, ADMIN_TOKEN) <= MAX_INVOCATIONS_PER_CALL
        assert await invocations(bridge, "GET", "/api/endpoints/calls-3", ADMIN_TOKEN) <= MAX_INVOCATIONS_PER_CALL


async def test_a_revoked_token_stops_working_within_60_s_and_at_once_through_the_revoking_isolate() -> None:
    bridge = WorkersBridge(heartbeat_ms=None)
    await enroll(bridge, "calls-2")
    path = "/api/endpoints/calls-2/prompts"
    tokens = {}
    for name in ("ann", "bob"):
        r = await bridge.request("POST", "/api/tokens", token=ADMIN_TOKEN, body={"name": name, "role": "technician"})
        tokens[name] = r.body["token"]
        assert (await bridge.request("GET", path, token=tokens[name])).status == 200  # now cached
    # Through the Worker (this isolate): forgotten at once.
    assert (await bridge.request("DELETE", "/api/tokens/ann", token=ADMIN_TOKEN)).status == 200
    assert (await bridge.request("GET", path, token=tokens["ann"])).status == 401
    # Revoked elsewhere (another isolate): the fleet object forgets it now, this cache within 60 s.
    fleet = bridge.harness.namespaces["FLEET"]
    stub = fleet.get(fleet.idFromName("fleet"))
    gone = await stub.fetch("https://caisey.internal/api/tokens/bob", method="DELETE", headers={})
    assert gone.status == 200
    await bridge.advance(30_000)
    assert (await bridge.request("GET", path, token=tokens["bob"])).status == 200  # still cached
    await bridge.advance(30_000)
    assert (await bridge.request("GET", path, token=tokens["bob"])).status == 401
    # A technician token never passes an admin check from the cache either.
    carl = await bridge.request("POST", "/api/tokens", token=ADMIN_TOKEN, body={"name": "carl", "role": "technician"})
    assert (await bridge.request("GET", path, token=carl.body["token"])).status == 200
    mint = await bridge.request("POST", "/api/tokens", token=carl.body["token"], body={"name": "x1", "role": "admin"})
    assert mint.status == 403


async def test_pings_reach_no_handler_and_are_answered_with_a_constant_pong() -> None:
    bridge = WorkersBridge(heartbeat_ms=None)
    ep = await enroll(bridge, "pinger")
    sock = await bridge.harness.connect_agent("pinger", ep.secret)
    assert isinstance(sock, AgentClient)
    record = endpoint_record(bridge, "pinger")
    wakes, built = record.wakes, record.constructions
    await sock.send(wire.PING_FRAME)
    assert sock.received() == [wire.PONG_FRAME]
    assert (record.wakes, record.constructions) == (wakes, built)
    # Had the runtime not answered it (the pair unset), the handler answers and stores it.
    # (The connection's endpoint.online event first wakes the object once, at once, to read
    # the webhook subscriptions — issue 13 — and a construction sets the pair again.)
    await bridge.advance(0)
    wakes = record.wakes
    record.auto_response = None
    await bridge.advance(20_000)
    await sock.send(wire.PING_FRAME)
    assert sock.received() == [wire.PONG_FRAME] and record.wakes == wakes + 1
    seen = bridge.harness.sql("ENDPOINTS", "pinger", "SELECT value FROM meta WHERE key = 'last_seen_ms'")
    assert int(seen[0]["value"]) == bridge.now_ms()
    wakes += 1
    await sock.send(wire.PING_FRAME + " ")  # not the exact string: a handler runs, an error comes back
    assert record.wakes == wakes + 1
    [frame] = sock.received()
    assert isinstance(frame, str) and wire.decode(frame).TYPE == "error"
