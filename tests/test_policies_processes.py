"""A policy's prompt end to end with real processes (issue 16, DESIGN §13): the real agent
(``caisey-agent``) against the real local bridge. The client's policy gives the prompt its
branding and locked-screen rule, the technician gives a reason and a ticket; the agent receives
them, answers with a signature over the prompt as delivered (hashed under ``caisey/prompt/v2``),
the bridge verifies it before recording it, and ``caisey-audit verify`` — a real process —
accepts the export, in which the Created fact carries every field.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.store import Store
from caisey import wire
from caisey.signing import copy_sha256
from tests.agent_harness import Agent
from tests.bridge_hosts import LocalBridgeProcess
from tests.test_audit_cli import audit_command
from tests.test_policies import LOGO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBridgeProcess]:
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("policies") / "data", heartbeat_ms=1_000)
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


async def test_a_signed_answer_covers_the_reason_ticket_and_branding_and_the_export_verifies(
    bridge: LocalBridgeProcess, tmp_path: Path
) -> None:
    admin = bridge.admin_token
    client = "Acme " + uuid.uuid4().hex[:6]
    endpoint_id = "ep-" + uuid.uuid4().hex[:10]
    r = await bridge.request(
        "PUT",
        f"/api/clients/{client.replace(' ', '%20')}/policy",
        token=admin,
        body={"require_reason": True, "on_locked": "wait", "brand_name": "Acme IT", "brand_logo_png": LOGO},
    )
    assert r.status == 200, r.body
    r = await bridge.request(
        "POST", "/api/enrollments", token=admin, body={"endpoint_id": endpoint_id, "label": "Desk", "client": client}
    )
    assert r.status == 201, r.body
    agent = Agent(tmp_path)
    await agent.enroll(bridge.url, r.body["enrollment_token"])
    await agent.start()
    try:
        body = {
            "title": "Allow remote control?",
            "action": "remote_control",
            "expires_in": 120,
            "reason": "printer queue stuck",
            "ticket": {"id": "T-42", "url": "https://tickets.example/T-42"},
        }
        prompts = f"/api/endpoints/{endpoint_id}/prompts"
        r = await bridge.request("POST", prompts, token=admin, body=body)
        assert r.status == 201, r.body
        pid = r.body["prompt_id"]

        async def decided() -> dict[str, Any] | None:
            view = (await bridge.request("GET", f"{prompts}/{pid}", token=admin)).body
            return view if view["decision"] is not None else None

        try:
            view = await eventually(decided, "the agent's answer")
        except AssertionError:
            events = (await bridge.request("GET", f"{prompts}/{pid}", token=admin)).body["events"]
            raise AssertionError(f"{events}\n{agent.log_text()[-3000:]}") from None
        assert view["state"] == "approved" and view["decision_signature"] is not None, view
        assert (view["request_reason"], view["on_locked"], view["brand_name"]) == (
            "printer queue stuck",
            "wait",
            "Acme IT",
        )
        assert [shown["prompt"]["prompt_id"] for shown in agent.presented()] == [pid]

        audit = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/audit", token=admin)
        export = tmp_path / "audit.jsonl"
        export.write_text(audit.body)
        created = next(
            json.loads(line)
            for line in audit.body.splitlines()
            if '"created"' in line and json.loads(line).get("prompt_id") == pid
        )
        fields = created["fields"]
        assert (fields["reason"], fields["ticket_id"], fields["ticket_url"]) == (
            "printer queue stuck",
            "T-42",
            "https://tickets.example/T-42",
        )
        assert (fields["on_locked"], fields["brand_name"], fields["brand_logo_png"]) == ("wait", "Acme IT", LOGO)
        run = subprocess.run([*audit_command(), "verify", str(export)], capture_output=True, timeout=60)
        assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
        out = run.stdout.decode()
        assert f"ok  {pid}  approved, signed by the endpoint" in out, out
        assert "1 decision signed by the endpoint" in out, out
    finally:
        await agent.stop()


def test_the_agent_keeps_the_optional_fields_it_was_delivered(tmp_path: Path) -> None:
    """Regression (found by the test above): the agent's store dropped the optional fields, so it
    signed the prompt's v1 hash while the bridge expected v2 and refused every answer."""
    copy = wire.PromptCopy(
        prompt_id="P1",
        title="Allow remote control?",
        message="",
        action="remote_control",
        created_at_ms=1,
        expires_at_ms=2,
        on_no_user="deny",
        requested_by="alice",
        reason="printer queue stuck",
        ticket_id="T-42",
        on_locked="no_user",
        brand_name="Acme IT",
        brand_logo_png=LOGO,
    )
    store = Store.open(tmp_path)
    store.insert_prompt(copy, "D1", 1, "received")
    held = store.get_prompt("P1")
    assert held is not None and held.prompt == copy
    assert copy_sha256(held.prompt) == copy_sha256(copy)
