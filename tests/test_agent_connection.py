"""The real agent process over a real socket, against a fake bridge (DESIGN §5–§7).

``FakeBridge`` is a small aiohttp server written for these tests — not the bridge in
``worker/``. It speaks the wire protocol as the bridge does (hello.ok, acks with times for
heartbeats, a flush of owed frames after hello) and records every frame the agent sends, so
a test can script deliveries, withhold acks, or misbehave on purpose. The agent under test is
``python -m agent run --presenter exec:…`` in a subprocess, so kill -9 is a real kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from caisey import wire
from caisey.wire import PromptCopy, PromptDeliver, encode
from tests.agent_harness import TIMEOUT_S, Agent, pid_alive

SECRET = "cas_fake-agent-secret"
ENDPOINT = "ep-fake-1"


def now_ms() -> int:
    return int(time.time() * 1000)


class FakeBridge:
    """A scriptable stand-in for the bridge; records what the agent sends."""

    def __init__(self, *, heartbeat_ms: int = 1_000) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.frames: list[dict[str, Any]] = []  # every text frame from the agent, parsed
        self.hellos = 0
        self.ack_runtime = True  # ack receipts, updates and reports
        self.on_hello: list[str] = []  # frames sent right after every hello.ok (the flush)
        self.ws: web.WebSocketResponse | None = None
        self.unauthorized = 0
        self.silent = False  # stop answering anything (a bridge behind a dead NAT mapping)
        self._ids = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def new_id(self) -> str:
        self._ids += 1
        return f"FB{self._ids:05d}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/agent/enroll", self._enroll)
        app.router.add_get("/api/endpoints/{eid}/agent", self._agent)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _enroll(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("enrollment_token") != "cet_good":
            return web.json_response({"error": {"code": "invalid_token", "message": "no such token"}}, status=401)
        return web.json_response({"endpoint_id": ENDPOINT, "agent_secret": SECRET})

    async def _agent(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {SECRET}" or request.match_info["eid"] != ENDPOINT:
            self.unauthorized += 1
            return web.json_response({"error": {"code": "invalid_agent_secret", "message": "no"}}, status=401)
        ws = web.WebSocketResponse(max_msg_size=8 * wire.MAX_FRAME_BYTES)
        await ws.prepare(request)
        self.ws = ws
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            self.frames.append(frame)
            await self._answer(ws, frame)
        return ws

    async def _answer(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if self.silent and kind != "hello":
            return
        if kind == "hello":
            self.hellos += 1
            t = now_ms()
            await ws.send_str(encode(wire.HelloOk(self.new_id(), frame["id"], t, t, self.heartbeat_ms)))
            for text in self.on_hello:
                await ws.send_str(text)
        elif kind == "heartbeat":
            t = now_ms()
            await ws.send_str(encode(wire.Ack(self.new_id(), frame["id"], received_at_ms=t, sent_at_ms=t)))
        elif kind in ("prompt.receipt", "prompt.update", "state.report") and self.ack_runtime:
            await ws.send_str(encode(wire.Ack(self.new_id(), frame["id"])))

    async def send(self, text: str | bytes) -> None:
        assert self.ws is not None and not self.ws.closed
        if isinstance(text, bytes):
            await self.ws.send_bytes(text)
        else:
            await self.ws.send_str(text)

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind and all(f.get(k) == v for k, v in match.items())]

    async def wait_for(self, what: str, check: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; agent sent {[f.get('type') for f in self.frames]}")
            await asyncio.sleep(0.02)


def make_prompt(prompt_id: str, *, expires_in_ms: int = 120_000, on_no_user: str = "wait") -> PromptCopy:
    t = now_ms()
    return PromptCopy(
        prompt_id=prompt_id,
        title="Allow remote control?",
        message="Sam from support wants to take control of this computer.",
        action="remote_control",
        created_at_ms=t,
        expires_at_ms=t + expires_in_ms,
        on_no_user=on_no_user,
        requested_by="sam",
    )


@pytest.fixture
async def bridge() -> AsyncIterator[FakeBridge]:
    fake = FakeBridge()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def agent(tmp_path: Path, bridge: FakeBridge) -> AsyncIterator[Agent]:
    a = Agent(tmp_path)
    await a.enroll(bridge.url, "cet_good")
    yield a
    if a.alive():
        await a.stop()
    for entry in a.presented():
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry["pid"], signal.SIGKILL)


def _updates(bridge: FakeBridge, prompt_id: str, status: str) -> list[dict[str, Any]]:
    return bridge.of("prompt.update", prompt_id=prompt_id, status=status)


# --- tests ---------------------------------------------------------------------------------------


async def test_enroll_stores_the_secret_0600_and_a_bad_token_fails(tmp_path: Path, bridge: FakeBridge) -> None:
    a = Agent(tmp_path)
    code, output = await a.cli("enroll", "--bridge", bridge.url, "--token", "cet_bad")
    assert code == 1 and "invalid_token" in output
    await a.enroll(bridge.url, "cet_good")
    assert oct((a.state / "agent_secret").stat().st_mode & 0o777) == "0o600"
    assert (a.state / "agent_secret").read_text() == SECRET
    code, output = await a.cli("status", "--json")
    info = json.loads(output)
    assert info["endpoint_id"] == ENDPOINT and info["bridge"] == bridge.url and info["running"] is False


async def test_exec_presenter_receipt_acknowledged_decided(bridge: FakeBridge, agent: Agent) -> None:
    prompt = make_prompt("P-exec-1")
    bridge.on_hello = [encode(PromptDeliver("D-exec-1", prompt))]
    await agent.start()
    await bridge.wait_for("the decision", lambda: bool(_updates(bridge, "P-exec-1", "decided")))
    kinds = [(f["type"], f.get("status")) for f in bridge.frames if f.get("prompt_id") == "P-exec-1"]
    assert kinds == [("prompt.receipt", None), ("prompt.update", "acknowledged"), ("prompt.update", "decided")]
    (receipt,) = bridge.of("prompt.receipt")
    assert receipt["deliver_id"] == "D-exec-1"
    (decided,) = _updates(bridge, "P-exec-1", "decided")
    assert decided["decision"] == "approve" and decided["how"] == "user"
    assert abs(decided["decided_at_ms"] - now_ms()) < 10_000
    (shown,) = _updates(bridge, "P-exec-1", "acknowledged")
    assert shown["how"] == "shown"
    # The program got the prompt JSON the design promises.
    (presented,) = agent.presented()
    sent = presented["prompt"]
    assert {
        "prompt_id",
        "title",
        "message",
        "action",
        "expires_at",
        "expires_at_ms",
        "requested_by",
        "on_no_user",
    } <= set(sent)
    assert sent["expires_at"].endswith("Z") and sent["expires_at_ms"] == prompt.expires_at_ms
    # Heartbeats flow and status sees the agent online with the decided prompt.
    await bridge.wait_for("a heartbeat", lambda: bool(bridge.of("heartbeat")))
    code, output = await agent.cli("status", "--json")
    info = json.loads(output)
    assert code == 0 and info["running"] and info["online"]
    assert [(p["prompt_id"], p["status"], p["decision"]) for p in info["prompts"]] == [
        ("P-exec-1", "decided", "approve")
    ]
    assert await agent.stop() == 0


async def test_kill9_after_receipt_then_restart_reshows_and_the_answer_lands_once(
    bridge: FakeBridge, agent: Agent
) -> None:
    deliver = encode(PromptDeliver("D-k9", make_prompt("P-k9")))
    bridge.on_hello = [deliver]  # the bridge keeps replaying it: it never got an ack through
    bridge.ack_runtime = False
    agent.answer("hang")
    await agent.start()
    await bridge.wait_for("receipt and shown", lambda: bool(_updates(bridge, "P-k9", "acknowledged")))
    await bridge.wait_for("the program to start", lambda: bool(agent.presented()))
    (receipt,) = bridge.of("prompt.receipt")
    (shown,) = _updates(bridge, "P-k9", "acknowledged")
    await agent.kill9()

    agent.answer("approve")
    bridge.ack_runtime = True
    await agent.start()
    await bridge.wait_for("the decision", lambda: bool(_updates(bridge, "P-k9", "decided")))
    await bridge.wait_for("the fresh receipt", lambda: len(bridge.of("prompt.receipt")) >= 2)
    await asyncio.sleep(1.5)  # let resends and heartbeats run: nothing may be shown again

    first, _second = agent.presented()  # once before the kill, once re-displayed after it
    if sys.platform.startswith("linux"):
        assert not pid_alive(first["pid"])  # the kernel took the dead agent's dialog down
    assert bridge.hellos == 2
    # The acknowledged update was resent with its original id, never made twice.
    assert {f["id"] for f in _updates(bridge, "P-k9", "acknowledged")} == {shown["id"]}
    assert receipt["id"] in {f["id"] for f in bridge.of("prompt.receipt")}
    decided_ids = {f["id"] for f in _updates(bridge, "P-k9", "decided")}
    assert len(decided_ids) == 1
    # The report after the restart told the bridge what the agent held.
    first, after_restart = bridge.of("state.report")[:2]
    assert first["prompts"] == []
    assert [line["prompt"]["prompt_id"] for line in after_restart["prompts"]] == ["P-k9"]


async def test_hostile_bridge_never_crashes_the_agent_nor_shows_twice(bridge: FakeBridge, agent: Agent) -> None:
    await agent.start()
    await bridge.wait_for("hello", lambda: bridge.hellos == 1 and bool(bridge.of("state.report")))
    prompt = make_prompt("P-hostile")
    bad: list[tuple[str | bytes, str]] = [
        ("x" * (wire.MAX_FRAME_BYTES + 10), "frame_too_large"),
        ("{definitely not json", "malformed_json"),
        ('{"v": 1, "type": "prompt.detonate", "id": "H1"}', "unknown_type"),
        (
            '{"v": 7, "type": "prompt.cancel", "id": "H2", "prompt_id": "P", "reason": "cancelled"}',
            "unsupported_version",
        ),
        (encode(PromptDeliver("H3", prompt)).replace('"P-hostile"', '"bad id!"'), "invalid_field"),
        ('{"v": 1, "type": "prompt.deliver", "id": "H6", "prompt": {"prompt_id": "P"}}', "missing_field"),
        (
            '{"v": 1, "type": "hello", "id": "H4", "endpoint_id": "e", "agent_version": "x", "sent_at_ms": 1}',
            "unexpected_type",
        ),
        (b"\x00\x01binary junk", "malformed_json"),
        ("[" * 100_000 + "]" * 100_000, "malformed_json"),
    ]
    for raw, _ in bad:
        await bridge.send(raw)
    await bridge.send(encode(PromptDeliver("D-h1", prompt)))
    await bridge.send(encode(PromptDeliver("D-h1", prompt)))  # replay, same id
    await bridge.send(encode(PromptDeliver("D-h2", prompt)))  # same prompt, another id
    await bridge.send(encode(wire.Error("H5", "internal", "the bridge is having a day")))
    await bridge.wait_for("the decision", lambda: bool(_updates(bridge, "P-hostile", "decided")))
    await bridge.wait_for("every error reply", lambda: len(bridge.of("error")) >= len(bad))
    await asyncio.sleep(1.0)

    assert [e["code"] for e in bridge.of("error")] == [code for _, code in bad]
    assert bridge.of("error", code="unknown_type")[0]["of"] == "H1"
    assert agent.alive() and bridge.hellos == 1  # same connection throughout
    assert len(agent.presented()) == 1
    assert len(bridge.of("prompt.receipt")) == 3  # every deliver answered
    assert len({f["id"] for f in _updates(bridge, "P-hostile", "decided")}) == 1
    assert "the bridge is having a day" in agent.log_text()


async def test_cancel_withdraws_a_waiting_presenter(bridge: FakeBridge, agent: Agent) -> None:
    agent.answer("hang")
    await agent.start()
    await bridge.wait_for("hello", lambda: bool(bridge.of("state.report")))
    await bridge.send(encode(PromptDeliver("D-c1", make_prompt("P-c1"))))
    await bridge.wait_for("shown", lambda: bool(_updates(bridge, "P-c1", "acknowledged")))
    await bridge.wait_for("the program to start", lambda: bool(agent.presented()))
    (presented,) = agent.presented()
    await bridge.send(encode(wire.PromptCancel("C-1", "P-c1", "cancelled")))
    await bridge.wait_for("the cancel's ack", lambda: bool(bridge.of("ack", of="C-1")))
    await bridge.wait_for("the presenter to be killed", lambda: not pid_alive(presented["pid"]), timeout=5)
    _, output = await agent.cli("status", "--json")
    (held,) = json.loads(output)["prompts"]
    assert held["status"] == "closed" and held["detail"] == "cancelled"
    assert not _updates(bridge, "P-c1", "closed")  # the ack is the answer


async def test_local_expiry_closes_and_withdraws(bridge: FakeBridge, agent: Agent) -> None:
    agent.answer("hang")
    await agent.start()
    await bridge.wait_for("hello", lambda: bool(bridge.of("state.report")))
    await bridge.send(encode(PromptDeliver("D-x1", make_prompt("P-x1", expires_in_ms=1_500))))
    await bridge.wait_for("shown", lambda: bool(agent.presented()))
    await bridge.wait_for("closed as expired", lambda: bool(_updates(bridge, "P-x1", "closed")), timeout=8)
    (closed,) = _updates(bridge, "P-x1", "closed")
    assert closed["detail"] == "expired"
    await bridge.wait_for("presenter killed", lambda: not pid_alive(agent.presented()[0]["pid"]), timeout=5)


async def test_a_refused_secret_is_logged_and_retried(bridge: FakeBridge, agent: Agent) -> None:
    (agent.state / "agent_secret").write_text("cas_wrong")
    await agent.start()
    await bridge.wait_for("two refused attempts", lambda: bridge.unauthorized >= 2)
    assert agent.alive()
    assert "refused the agent secret" in agent.log_text()


async def test_reconnects_after_the_bridge_drops_the_socket(bridge: FakeBridge, agent: Agent) -> None:
    bridge.ack_runtime = False
    await agent.start()
    await bridge.wait_for("hello", lambda: bool(bridge.of("state.report")))
    await bridge.send(encode(PromptDeliver("D-r1", make_prompt("P-r1"))))
    await bridge.wait_for("decided", lambda: bool(_updates(bridge, "P-r1", "decided")))
    (decided,) = _updates(bridge, "P-r1", "decided")
    assert bridge.ws is not None
    await bridge.ws.close()
    bridge.ack_runtime = True
    await bridge.wait_for("a second hello", lambda: bridge.hellos >= 2)
    await bridge.wait_for("the decision resent", lambda: len(_updates(bridge, "P-r1", "decided")) >= 2)
    assert {f["id"] for f in _updates(bridge, "P-r1", "decided")} == {decided["id"]}
    assert len(agent.presented()) == 1


async def test_a_silent_bridge_is_detected_and_the_agent_reconnects(bridge: FakeBridge, agent: Agent) -> None:
    await agent.start()
    await bridge.wait_for("hello", lambda: bridge.hellos == 1)
    bridge.silent = True  # heartbeats go unanswered from now on
    started = time.monotonic()
    await bridge.wait_for("a new connection", lambda: bridge.hellos == 2, timeout=15)
    # Three missed heartbeat intervals (1 s each here), a short close, a jittered first retry.
    assert time.monotonic() - started < 12
    assert "no frame from the bridge" in agent.log_text()
