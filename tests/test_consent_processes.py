"""Consent you can prove with real processes (DESIGN §10): the real agent (``caisey-agent``)
against the real local bridge (``caisey-bridge serve``), over real sockets.

- A technician cannot take an online endpoint over by re-enrolling it; an admin re-key is
  recorded, the old agent is refused, the new agent's signed answers land, and an answer
  signed by the old key is refused.
- With no display and no TTY (a service install), the endpoint's own cap answers a requested
  unattended approve with deny; ``--unattended approve`` lets it stand.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.identity import load_key
from caisey import wire
from caisey.signing import answer_message, b64encode
from tests.agent_harness import Agent
from tests.bridge_hosts import Enrolled, LocalBridgeProcess, ScriptedRuntime

pytestmark = pytest.mark.slow
HEARTBEAT_MS = 1_000


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBridgeProcess]:
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("consent") / "data", heartbeat_ms=HEARTBEAT_MS)
    bridge.start()
    yield bridge  # type: ignore[misc]
    bridge.kill()


async def eventually(check: Any, what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def endpoint_line(bridge: LocalBridgeProcess, endpoint_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    return next(e for e in r.body["endpoints"] if e["endpoint_id"] == endpoint_id)


async def prompt(bridge: LocalBridgeProcess, endpoint_id: str, prompt_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}", token=bridge.admin_token)
    assert r.status == 200, r.body
    return dict(r.body)


async def create(bridge: LocalBridgeProcess, endpoint_id: str, on_no_user: str = "wait") -> str:
    body = {"title": "Allow remote control?", "message": "Sam from support", "action": "remote_control"}
    body |= {"expires_in": 120, "on_no_user": on_no_user}
    r = await bridge.request("POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=body)
    assert r.status == 201, r.body
    return str(r.body["prompt_id"])


async def decided(bridge: LocalBridgeProcess, endpoint_id: str, prompt_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        view = await prompt(bridge, endpoint_id, prompt_id)
        return view if view["decision"] is not None else None

    return dict(await eventually(check, f"a decision on {prompt_id}"))


async def registered(bridge: LocalBridgeProcess, label: str) -> tuple[str, str]:
    endpoint_id = "ep-" + uuid.uuid4().hex[:10]
    r = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id, "label": label}
    )
    assert r.status == 201, r.body
    return endpoint_id, str(r.body["enrollment_token"])


@pytest.fixture
async def agents() -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.alive():
            await agent.stop()


async def test_a_technician_cannot_take_over_an_online_endpoint_and_an_admin_re_key_is_recorded(
    bridge: LocalBridgeProcess, tmp_path: Path, agents: list[Agent]
) -> None:
    endpoint_id, token = await registered(bridge, "Front desk")
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = Agent(tmp_path / "first")
    agents.append(first)
    await first.enroll(bridge.url, token)
    first_key = load_key(first.state)
    assert first_key is not None
    code, status = await first.cli("status")
    assert code == 0 and f"key        {first_key.key_id}" in status
    await first.start()
    await eventually(lambda: _online(bridge, endpoint_id), "the first agent online")

    # The attack of issue 10: a technician re-enrolls the online endpoint.
    r = await bridge.request(
        "POST", "/api/tokens", token=bridge.admin_token, body={"name": "mallory", "role": "technician"}
    )
    mallory = r.body["token"]
    before = await bridge.request("GET", f"/api/endpoints/{endpoint_id}", token=bridge.admin_token)
    r = await bridge.request(
        "POST", "/api/enrollments", token=mallory, body={"endpoint_id": endpoint_id, "label": "Mallory's"}
    )
    assert r.status == 403 and r.body["error"]["code"] == "forbidden", r.body
    await asyncio.sleep(3 * HEARTBEAT_MS / 1000)  # a few heartbeats: the agent stays connected
    assert first.alive() and (await endpoint_line(bridge, endpoint_id))["online"]
    after = await bridge.request("GET", f"/api/endpoints/{endpoint_id}", token=bridge.admin_token)
    assert (
        (after.body["label"], after.body["keys"])
        == (before.body["label"], before.body["keys"])
        == (
            "Front desk",
            before.body["keys"],
        )
    )
    # The first agent's answers are signed by its key.
    pid = await create(bridge, endpoint_id)
    view = await decided(bridge, endpoint_id, pid)
    assert view["state"] == "approved" and view["decision_signature"]["key_id"] == first_key.key_id

    # An admin re-keys: a new agent (a reinstalled machine) enrolls with a new key.
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id})
    assert r.status == 201
    second = Agent(tmp_path / "second")
    agents.append(second)
    await second.enroll(bridge.url, r.body["enrollment_token"])
    second_key = load_key(second.state)
    assert second_key is not None and second_key.key_id != first_key.key_id
    # The old agent is closed and refused from then on (it keeps retrying, never admitted).
    await eventually(lambda: _refused_in_log(first), "the old agent refused")
    await second.start()
    await eventually(lambda: _online(bridge, endpoint_id), "the second agent online")
    pid2 = await create(bridge, endpoint_id)
    view2 = await decided(bridge, endpoint_id, pid2)
    assert view2["state"] == "approved" and view2["decision_signature"]["key_id"] == second_key.key_id
    endpoint = (await bridge.request("GET", f"/api/endpoints/{endpoint_id}", token=bridge.admin_token)).body
    assert [(k["key_id"], k["valid_until"] is None) for k in endpoint["keys"]] == [
        (first_key.key_id, False),
        (second_key.key_id, True),
    ]
    lines = (await bridge.request("GET", f"/api/endpoints/{endpoint_id}/audit", token=bridge.admin_token)).body
    assert '"rekey":true' in lines and f'"previous_key_id":"{first_key.key_id}"' in lines

    # Someone holding the new secret sends an answer signed with the retired key: refused.
    await second.stop()
    await eventually(lambda: _offline(bridge, endpoint_id), "the second agent gone")
    secret = (second.state / "agent_secret").read_text().strip()
    pid3 = await create(bridge, endpoint_id)
    runtime = ScriptedRuntime(bridge, Enrolled(endpoint_id, secret))
    frames = await runtime.connect()
    deliver = next(
        f for f in frames + await runtime.drain() if isinstance(f, wire.PromptDeliver) and f.prompt.prompt_id == pid3
    )
    await runtime.receipt(deliver)
    at = bridge.now_ms()
    copy = deliver.prompt
    message = answer_message(endpoint_id, copy, "approve", "user", at)
    stale = wire.PromptUpdate(
        id=runtime.new_id(),
        prompt_id=pid3,
        status="decided",
        decision="approve",
        decided_at_ms=at,
        how="user",
        key_id=first_key.key_id,
        sig=b64encode(first_key.sign(message)),
    )
    await runtime.send(stale)
    answers = await runtime.drain(quiet=1.0)
    assert [(e.code, e.of) for e in answers if isinstance(e, wire.Error)] == [("signature_refused", stale.id)]
    assert "retired_key" in next(e.message for e in answers if isinstance(e, wire.Error))
    view3 = await prompt(bridge, endpoint_id, pid3)
    assert view3["state"] == "delivered" and view3["decision"] is None
    assert [e["detail"]["reason"] for e in view3["events"] if e["type"] == "signature_refused"] == ["retired_key"]
    await runtime.close()


@pytest.mark.parametrize(
    ("unattended", "state", "how"), [(None, "denied", "endpoint_policy"), ("approve", "approved", "no_user_policy")]
)
async def test_no_display_no_tty_an_unattended_approve_is_capped_by_the_endpoint(
    bridge: LocalBridgeProcess, tmp_path: Path, agents: list[Agent], unattended: str | None, state: str, how: str
) -> None:
    endpoint_id, token = await registered(bridge, "Server room")
    run_args = ("--unattended", unattended) if unattended else ()
    agent = Agent(tmp_path, presenter="auto", run_args=run_args)  # no DISPLAY, stdin not a TTY
    agents.append(agent)
    await agent.enroll(bridge.url, token)
    await agent.start()
    pid = await create(bridge, endpoint_id, on_no_user="approve")
    view = await decided(bridge, endpoint_id, pid)
    key = load_key(agent.state)
    assert key is not None
    assert (view["state"], view["decided_how"]) == (state, how)
    assert view["decision_signature"]["key_id"] == key.key_id  # the policy's answer is signed too
    code, status = await agent.cli("status")
    assert code == 0 and f"unattended {unattended or 'deny'}" in status


async def _online(bridge: LocalBridgeProcess, endpoint_id: str) -> bool:
    return bool((await endpoint_line(bridge, endpoint_id))["online"])


async def _offline(bridge: LocalBridgeProcess, endpoint_id: str) -> bool:
    return not (await endpoint_line(bridge, endpoint_id))["online"]


async def _refused_in_log(agent: Agent) -> bool:
    """Closed with 4001 (secret rotated), then refused at every reconnect."""
    text = agent.log_text()
    return "(code 4001)" in text and "the bridge refused the agent secret (401)" in text
