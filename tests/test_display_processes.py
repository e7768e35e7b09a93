"""Evidence of display with real processes (DESIGN §13, issue 16): the real agent
(``caisey-agent run``) against the real local bridge (``caisey-bridge serve``).

The session the agent probes is a stand-in: a fake ``loginctl`` first on the agent's PATH
(``FAKE_LOGINCTL``) answering from a file the test writes — a locked graphical session of
``alice``, an unlocked one, or nobody logged in. The agent runs it exactly as it runs the
real one.

- A locked screen with ``--locked no_user`` and nobody logged in are answered by the no-user
  rule and recorded as the distinct outcomes ``locked`` and ``no_user`` — in the API, in the
  audit export and in ``caisey-audit verify``'s verdicts.
- A locked screen under the default rule (``wait``) holds the prompt until the screen is
  unlocked; then it is shown in the user's language (German) and the answer clock starts there:
  ``shown_at`` is after the unlock, and the answer is signed with the text shown (v2).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from caisey.clock import from_rfc3339
from tests.agent_harness import Agent
from tests.bridge_hosts import LocalBridgeProcess
from worker.audit_cli import check

pytestmark = pytest.mark.slow
HEARTBEAT_MS = 1_000

FAKE_LOGINCTL = """\
#!{python}
# A stand-in for systemd's loginctl: the session state comes from the file "state" beside it.
import pathlib, sys
state = (pathlib.Path(__file__).parent / "state").read_text().strip()
if state == "nobody":
    sys.exit(0)  # logind answers, with no session
if sys.argv[1] == "list-sessions":
    print("c2 {uid} alice seat0 tty2")
elif sys.argv[1] == "show-session":
    print("Name=alice\\nType=x11\\nClass=user\\nRemote=no\\nService=gdm-password\\nActive=yes")
    print("LockedHint=" + ("yes" if state == "locked" else "no"))
"""


class FakeSession:
    """The fake loginctl in its own directory, and the state it reports."""

    def __init__(self, directory: Path, state: str) -> None:
        directory.mkdir()
        self.directory = directory
        script = directory / "loginctl"
        script.write_text(FAKE_LOGINCTL.format(python=sys.executable, uid=os.getuid()))
        script.chmod(0o755)
        self.set(state)

    def set(self, state: str) -> None:
        (self.directory / "state").write_text(state)

    def env(self, **more: str) -> dict[str, str]:
        return {"PATH": f"{self.directory}{os.pathsep}{os.environ.get('PATH', '')}", **more}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBridgeProcess]:
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("display") / "data", heartbeat_ms=HEARTBEAT_MS)
    bridge.start()
    yield bridge  # type: ignore[misc]
    bridge.kill()


@pytest.fixture
async def agents() -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.alive():
            await agent.stop()


async def eventually(check_once: Any, what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check_once()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def start_agent(bridge: LocalBridgeProcess, tmp: Path, agents: list[Agent], **kwargs: Any) -> tuple[str, Agent]:
    endpoint_id = "ep-" + uuid.uuid4().hex[:10]
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id})
    assert r.status == 201, r.body
    agent = Agent(tmp, **kwargs)
    agents.append(agent)
    await agent.enroll(bridge.url, r.body["enrollment_token"])
    await agent.start()

    async def online() -> bool:
        e = await bridge.request("GET", f"/api/endpoints/{endpoint_id}", token=bridge.admin_token)
        return bool(e.body.get("online"))

    await eventually(online, f"{endpoint_id} online")
    return endpoint_id, agent


async def create(bridge: LocalBridgeProcess, endpoint_id: str, on_no_user: str = "deny") -> str:
    body = {"title": "Allow remote control?", "message": "Sam from support", "action": "remote_control"}
    body |= {"expires_in": 120, "on_no_user": on_no_user}
    r = await bridge.request("POST", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token, body=body)
    assert r.status == 201, r.body
    return str(r.body["prompt_id"])


async def prompt(bridge: LocalBridgeProcess, endpoint_id: str, prompt_id: str) -> dict[str, Any]:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}", token=bridge.admin_token)
    assert r.status == 200, r.body
    return dict(r.body)


async def decided(bridge: LocalBridgeProcess, endpoint_id: str, prompt_id: str) -> dict[str, Any]:
    async def once() -> dict[str, Any] | None:
        view = await prompt(bridge, endpoint_id, prompt_id)
        return view if view["decision"] is not None else None

    return dict(await eventually(once, f"a decision on {prompt_id}"))


async def verified_export(bridge: LocalBridgeProcess, endpoint_id: str) -> Any:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/audit", token=bridge.admin_token)
    assert r.status == 200
    lines = r.body.splitlines()
    report = check(lines)
    assert report.ok, (report.problems, [p.verdict for p in report.prompts])
    return lines, report


async def test_locked_and_no_user_are_distinct_outcomes_in_api_and_export(
    bridge: LocalBridgeProcess, tmp_path: Path, agents: list[Agent]
) -> None:
    locked_session = FakeSession(tmp_path / "locked-session", "locked")
    nobody_session = FakeSession(tmp_path / "nobody-session", "nobody")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    locked_eid, locked_agent = await start_agent(
        bridge, tmp_path / "a", agents, run_args=("--locked", "no_user"), env=locked_session.env()
    )
    nobody_eid, nobody_agent = await start_agent(bridge, tmp_path / "b", agents, env=nobody_session.env())

    locked_pid = await create(bridge, locked_eid)
    nobody_pid = await create(bridge, nobody_eid)
    locked_view = await decided(bridge, locked_eid, locked_pid)
    nobody_view = await decided(bridge, nobody_eid, nobody_pid)

    # Neither was shown: no presenter ran.
    assert locked_agent.presented() == [] and nobody_agent.presented() == []
    assert (locked_view["state"], locked_view["decided_how"], locked_view["outcome"]) == (
        "denied",
        "no_user_policy",
        "locked",
    )
    assert locked_view["display"] | {"shown_at": None} == {
        "outcome": "locked",
        "user": "alice",
        "session": "console",
        "locked": True,
        "presenter": "none",
        "shown_at": None,
        "locale": None,
        "template_id": None,
        "template_version": None,
        "shown_text": None,
        "shown_sha256": None,
        "answer_ms": None,
    }
    assert (nobody_view["state"], nobody_view["outcome"]) == ("denied", "no_user")
    assert nobody_view["display"]["outcome"] == "no_user" and nobody_view["display"]["user"] is None
    assert nobody_view["decision_signature"] is not None and locked_view["decision_signature"] is not None

    # In the export, each decided fact carries its evidence; verify proves and names them.
    lines, report = await verified_export(bridge, locked_eid)
    assert '"outcome":"locked"' in "".join(lines)
    (verdict,) = report.prompts
    assert (verdict.outcome, verdict.shown) == ("locked", "screen locked — answered by the no-user rule")
    lines, report = await verified_export(bridge, nobody_eid)
    assert '"outcome":"no_user"' in "".join(lines)
    (verdict,) = report.prompts
    assert (verdict.outcome, verdict.shown) == ("no_user", "nobody logged in — answered by the no-user rule")


async def test_a_locked_screen_waits_and_the_answer_clock_starts_at_display(
    bridge: LocalBridgeProcess, tmp_path: Path, agents: list[Agent]
) -> None:
    session = FakeSession(tmp_path / "session", "locked")
    (tmp_path / "agent").mkdir()
    eid, agent = await start_agent(bridge, tmp_path / "agent", agents, env=session.env(LANG="de_DE.UTF-8"))
    pid = await create(bridge, eid, on_no_user="approve")
    await asyncio.sleep(2.5)  # received, but the screen is locked: nothing is shown, nothing decided
    view = await prompt(bridge, eid, pid)
    assert view["decision"] is None and agent.presented() == []
    unlocked_at = bridge.now_ms()
    session.set("unlocked")
    view = await decided(bridge, eid, pid)
    assert (view["state"], view["decided_how"], view["outcome"]) == ("approved", "user", "user")
    display = view["display"]
    assert (display["user"], display["session"], display["locked"], display["presenter"]) == (
        "alice",
        "console",
        False,
        "exec",
    )
    assert from_rfc3339(display["shown_at"]) >= unlocked_at - 1_000  # the clock starts at display
    assert from_rfc3339(display["shown_at"]) <= from_rfc3339(view["decided_at"])
    assert display["answer_ms"] == from_rfc3339(view["decided_at"]) - from_rfc3339(display["shown_at"])
    endpoint = await bridge.request("GET", f"/api/endpoints/{eid}", token=bridge.admin_token)
    assert endpoint.body["locale"] == "de-DE"  # reported in the agent's hello
    # Shown in German: the exec program got the rendered text, and that text is the evidence.
    (shown,) = agent.presented()
    rendered = shown["prompt"]["rendered"]
    assert rendered["locale"] == "de" and rendered["approve"] == "Zulassen"
    assert (display["locale"], display["template_id"], display["template_version"]) == ("de", "remote_control", 1)
    assert "Sam from support" in display["shown_text"] and "[Ablehnen] [Zulassen]" in display["shown_text"]
    # The agent's own record says the same (``caisey-agent status --json``).
    code, output = await agent.cli("status", "--json")
    assert code == 0
    (held,) = json.loads(output)["prompts"]
    assert held["display"]["shown_sha256"] == display["shown_sha256"] and held["display"]["user"] == "alice"
    _, report = await verified_export(bridge, eid)
    (verdict,) = report.prompts
    assert verdict.outcome == "user" and (verdict.shown or "").startswith("shown to alice on the console session at ")
