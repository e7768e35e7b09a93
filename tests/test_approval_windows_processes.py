"""An approval window with real processes (DESIGN §13, issue 16's "Show"): the real agent
(``caisey-agent run``, an ``exec:`` presenter answering ``approve:10``) against the real
local bridge (``caisey-bridge serve``) on 127.0.0.1.

The technician asks for 30 minutes; the user grants 10; the API shows the window with its
end; the user runs ``caisey-agent revoke``; the revocation reaches the API within one
heartbeat of the command's return; the audit export holds all of it, and the installed
``caisey-audit verify`` accepts it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from caisey.clock import from_rfc3339
from tests.agent_harness import Agent
from tests.bridge_hosts import LocalBridgeProcess
from tests.test_audit_cli import ROOT, audit_command, relinked
from tests.test_consent_processes import eventually, prompt, registered

pytestmark = pytest.mark.slow
HEARTBEAT_MS = 2_000


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBridgeProcess]:
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("windows") / "data", heartbeat_ms=HEARTBEAT_MS)
    bridge.start()
    yield bridge
    bridge.kill()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    agent = Agent(tmp_path)
    yield agent
    if agent.alive():
        await agent.stop()


async def window_of(bridge: LocalBridgeProcess, endpoint_id: str, prompt_id: str, state: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        view = await prompt(bridge, endpoint_id, prompt_id)
        window = view["window"]
        return view if window is not None and window["state"] == state else None

    return dict(await eventually(check, f"the window of {prompt_id} {state}"))


async def test_a_window_granted_shortened_and_revoked_by_the_user_all_verified(
    bridge: LocalBridgeProcess, agent: Agent
) -> None:
    endpoint_id, token = await registered(bridge, "Reception")
    await agent.enroll(bridge.url, token)
    agent.answer("approve:10")  # the user shortens the 30 minutes asked to 10
    await agent.start()
    body = {"title": "Allow remote control?", "message": "Sam from support", "action": "remote_control"}
    body |= {"expires_in": 120, "grant_minutes": 30}
    r = await bridge.request("POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=body)
    assert r.status == 201, r.body
    prompt_id = str(r.body["prompt_id"])

    view = await window_of(bridge, endpoint_id, prompt_id, "active")
    window = view["window"]
    assert view["state"] == "approved" and window["minutes_asked"] == 30 and window["minutes_granted"] == 10
    assert from_rfc3339(window["ends_at"]) - from_rfc3339(window["started_at"]) == 10 * 60_000
    assert agent.presented()[0]["prompt"]["grant_minutes"] == 30  # the dialog was told what was asked
    code, out = await agent.cli("status")
    assert code == 0 and f"window     {prompt_id}  active  10 min until" in out, out

    code, out = await agent.cli("revoke")
    returned = time.monotonic()
    assert code == 0, out + agent.log_text()[-3000:]
    assert f"revoked: {prompt_id}" in out
    view = await window_of(bridge, endpoint_id, prompt_id, "revoked")
    assert time.monotonic() - returned < HEARTBEAT_MS / 1000, "the revocation took longer than one heartbeat"
    window = view["window"]
    assert window["revoked_by"] == "user" and window["revoked_by_user"] is True
    assert from_rfc3339(window["revoked_at"]) < from_rfc3339(window["ends_at"])
    # Again: nothing is active any more, and the command says so.
    code, out = await agent.cli("revoke", prompt_id)
    assert code == 1 and "already revoked" in out

    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/audit", token=bridge.admin_token)
    assert r.status == 200
    run = subprocess.run(
        [*audit_command(), "verify", "--json", "-"],
        input=str(r.body).encode(),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
    report = json.loads(run.stdout)
    (line,) = [p for p in report["prompts"] if p["prompt_id"] == prompt_id]
    assert line["ok"] and line["signed_by"] is not None and line["windows"] == ["window_started", "window_revoked"]
    # The window's signature is checked: a longer grant, even with the chain relinked, fails on it.
    forged = relinked(str(r.body).replace('"minutes":10', '"minutes":30', 1).splitlines(), endpoint_id)
    run = subprocess.run(
        [*audit_command(), "verify", "-"], input="\n".join(forged).encode(), capture_output=True, timeout=60
    )
    assert run.returncode == 1 and b"the signature of the window start" in run.stdout, run.stdout.decode()
