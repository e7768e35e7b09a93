"""The real agent against the real local bridge, both as processes (DESIGN §9).

``caisey-bridge serve`` (``tests.bridge_hosts.LocalBridgeProcess``) and ``caisey-agent run
--presenter exec:…`` talk over a real socket; the test plays the technician through the
HTTP API and the user through the presenter program. Time is real, so heartbeats are 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_harness import Agent, pid_alive
from tests.bridge_hosts import LocalBridgeProcess

pytestmark = pytest.mark.slow
HEARTBEAT_MS = 1_000


@pytest.fixture(scope="module")
def local_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBridgeProcess]:
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("agent-e2e") / "data", heartbeat_ms=HEARTBEAT_MS)
    bridge.start()
    yield bridge
    bridge.kill()


@pytest.fixture
async def endpoint(local_bridge: LocalBridgeProcess, tmp_path: Path) -> AsyncIterator[tuple[str, Agent]]:
    if local_bridge.proc is None or local_bridge.proc.poll() is not None:
        local_bridge.start()  # a previous test killed it
    endpoint_id = "ep-" + uuid.uuid4().hex[:10]
    r = await local_bridge.request(
        "POST", "/api/enrollments", token=local_bridge.admin_token, body={"endpoint_id": endpoint_id, "label": "e2e"}
    )
    assert r.status == 201, r.body
    agent = Agent(tmp_path)
    await agent.enroll(local_bridge.url, r.body["enrollment_token"])
    yield endpoint_id, agent
    if agent.alive():
        await agent.stop()
    for entry in agent.presented():
        if pid_alive(entry["pid"]):
            os.kill(entry["pid"], signal.SIGKILL)


async def create(bridge: LocalBridgeProcess, endpoint_id: str, **fields: Any) -> str:
    body = {"title": "Allow remote control?", "message": "Sam from support", "action": "remote_control"}
    body.update({"expires_in": 120, "on_no_user": "wait"} | fields)
    r = await bridge.request(
        "POST",
        f"/api/endpoints/{endpoint_id}/prompts",
        token=bridge.admin_token,
        body=body,
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status == 201, r.body
    return str(r.body["prompt_id"])


async def view(bridge: LocalBridgeProcess, endpoint_id: str, prompt_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}", token=bridge.admin_token)
    assert r.status == 200, r.body
    return dict(r.body)


async def until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def state_is(bridge: LocalBridgeProcess, endpoint_id: str, prompt_id: str, state: str) -> bool:
    return (await view(bridge, endpoint_id, prompt_id))["state"] == state


def runtime_events(prompt: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in prompt["events"] if e["source"] == "runtime" and e["type"] == kind]


async def test_prompt_approved_through_the_real_bridge(
    local_bridge: LocalBridgeProcess, endpoint: tuple[str, Agent]
) -> None:
    endpoint_id, agent = endpoint
    await agent.start()
    pid = await create(local_bridge, endpoint_id)
    await until("approved", lambda: state_is(local_bridge, endpoint_id, pid, "approved"))
    prompt = await view(local_bridge, endpoint_id, pid)
    assert prompt["decided_how"] == "user" and prompt["provisional"] is False
    assert prompt["delivery"]["received_at"] and prompt["delivery"]["acknowledged_at"]
    assert len(runtime_events(prompt, "decided")) == 1
    # The agent learns its final update was acked and drops the prompt from its report.
    await until("reported", lambda: _status_prompt(agent, pid, "reported"))


async def test_kill9_after_receipt_restart_reshows_and_approves_once(
    local_bridge: LocalBridgeProcess, endpoint: tuple[str, Agent]
) -> None:
    endpoint_id, agent = endpoint
    agent.answer("hang")
    await agent.start()
    pid = await create(local_bridge, endpoint_id)
    await until("acknowledged", lambda: state_is(local_bridge, endpoint_id, pid, "acknowledged"))
    await until("the program started", lambda: bool(agent.presented()))
    await agent.kill9()
    agent.answer("approve")
    await agent.start()
    await until("approved", lambda: state_is(local_bridge, endpoint_id, pid, "approved"))
    await asyncio.sleep(2 * HEARTBEAT_MS / 1000)  # heartbeats, digests, resends: nothing more may happen
    prompt = await view(local_bridge, endpoint_id, pid)
    assert len(runtime_events(prompt, "decided")) == 1
    assert len(runtime_events(prompt, "received")) == 1
    assert len(agent.presented()) == 2  # shown, killed with it up, shown again after restart


async def test_cancel_from_the_console_withdraws_the_dialog(
    local_bridge: LocalBridgeProcess, endpoint: tuple[str, Agent]
) -> None:
    endpoint_id, agent = endpoint
    agent.answer("hang")
    await agent.start()
    pid = await create(local_bridge, endpoint_id)
    await until("the program started", lambda: bool(agent.presented()))
    r = await local_bridge.request(
        "POST", f"/api/endpoints/{endpoint_id}/prompts/{pid}/cancel", token=local_bridge.admin_token
    )
    assert r.status == 200, r.body
    (presented,) = agent.presented()
    await until("the dialog withdrawn", lambda: not pid_alive(presented["pid"]), timeout=10)
    await until("closed locally", lambda: _status_prompt(agent, pid, "status", "closed"))
    assert (await view(local_bridge, endpoint_id, pid))["state"] == "cancelled"


async def test_laptop_sleeps_between_delivery_and_answer(
    local_bridge: LocalBridgeProcess, endpoint: tuple[str, Agent]
) -> None:
    """The seed's first scenario: the prompt is shown, the laptop sleeps past the bridge's
    liveness window (SIGSTOP), wakes, the user answers — the approval lands once."""
    endpoint_id, agent = endpoint
    agent.answer("after-go:approve")
    await agent.start()
    pid = await create(local_bridge, endpoint_id)
    await until("acknowledged", lambda: state_is(local_bridge, endpoint_id, pid, "acknowledged"))
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGSTOP)
    await asyncio.sleep(4 * HEARTBEAT_MS / 1000)  # the bridge drops the silent socket
    endpoints = await local_bridge.request("GET", "/api/endpoints", token=local_bridge.admin_token)
    (line,) = [e for e in endpoints.body["endpoints"] if e["endpoint_id"] == endpoint_id]
    assert line["online"] is False
    agent.proc.send_signal(signal.SIGCONT)
    (agent.presenter_dir / "go").write_text("")  # the user answers after waking
    await until("approved", lambda: state_is(local_bridge, endpoint_id, pid, "approved"))
    prompt = await view(local_bridge, endpoint_id, pid)
    assert len(runtime_events(prompt, "decided")) == 1 and len(agent.presented()) == 1


async def test_decision_made_while_the_bridge_is_down_lands_when_it_returns(
    local_bridge: LocalBridgeProcess, endpoint: tuple[str, Agent]
) -> None:
    endpoint_id, agent = endpoint
    agent.answer("after-go:deny")
    await agent.start()
    pid = await create(local_bridge, endpoint_id)
    await until("acknowledged", lambda: state_is(local_bridge, endpoint_id, pid, "acknowledged"))
    local_bridge.kill()
    (agent.presenter_dir / "go").write_text("")
    await until("decided locally", lambda: _status_prompt(agent, pid, "status", "decided"))
    local_bridge.start()
    await until("denied", lambda: state_is(local_bridge, endpoint_id, pid, "denied"), timeout=40)
    assert len(agent.presented()) == 1


async def _status_prompt(agent: Agent, prompt_id: str, field: str, value: Any = True) -> bool:
    code, output = await agent.cli("status", "--json")
    if code != 0:
        return False
    for p in json.loads(output)["prompts"]:
        if p["prompt_id"] == prompt_id:
            return bool(p.get(field) == value)
    return False
