"""After a restart, a returning agent's socket is recorded with its first frame (issue 15).

The local host starts an actor first touched by its agent's socket with no alarm armed, so
nothing can reach the agent before it speaks: ``agent_frame(..., opened=True)`` records the
acceptance and the hello in one event. These run the host in this process (a real aiohttp
server on 127.0.0.1, real shard files) with the start's background pass held back — after a
restart with thousands of endpoints, most agents return before that pass reaches them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from caisey import wire
from tests.bridge_hosts import Enrolled, ScriptedRuntime, _HttpBridge, enroll, free_port, of_type
from worker.credentials import secret_hash
from worker.endpoint import BridgeConfig, EndpointBridge
from worker.local_host import LocalBridge

ADMIN = "cst_test-admin-token"


class InProcessBridge(_HttpBridge):
    """``LocalBridge`` served by aiohttp in this process; ``hold_back_start``: its start pass
    opens no actor (as when agents return before it reaches theirs)."""

    def __init__(self, data: Path, *, hold_back_start: bool, heartbeat_ms: int = 15_000) -> None:
        self.data = data
        self.admin_token = ADMIN
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = BridgeConfig(heartbeat_ms=heartbeat_ms, liveness_ms=3 * heartbeat_ms)
        self.host = LocalBridge(data, secret_hash(ADMIN), config=config)
        if hold_back_start:

            async def opens_nothing() -> None:
                self.host.started.set()

            self.host._open_all = opens_nothing  # type: ignore[method-assign]
        self.runner = web.AppRunner(self.host.app())

    async def __aenter__(self) -> InProcessBridge:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def create_prompt(bridge: InProcessBridge, title: str) -> str:
    r = await bridge.request(
        "POST",
        "/api/endpoints/laptop-first-frame/prompts",
        token=ADMIN,
        body={"title": title, "action": "remote_control", "expires_in": 300},
    )
    assert r.status == 201, r.body
    return str(r.body["prompt_id"])


@pytest.fixture
async def enrolled_with_a_prompt(tmp_path: Path) -> AsyncIterator[tuple[Path, Enrolled, str]]:
    """An endpoint enrolled and a prompt created for it, then the bridge stopped."""
    async with InProcessBridge(tmp_path, hold_back_start=False) as bridge:
        ep = await enroll(bridge, "laptop-first-frame")
        prompt_id = await create_prompt(bridge, "Allow?")
    yield tmp_path, ep, prompt_id


async def say_hello(runtime: ScriptedRuntime) -> list[wire.Message]:
    """The hello on a socket already open: what came back, ``hello.ok`` first."""
    got = await runtime.hello()
    assert isinstance(got[0], wire.HelloOk)
    return got


def count_agent_opened(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = EndpointBridge.agent_opened

    def counted(self: EndpointBridge, now_ms: int) -> Any:
        calls.append(now_ms)
        return original(self, now_ms)

    monkeypatch.setattr(EndpointBridge, "agent_opened", counted)
    return calls


async def test_a_returning_agent_is_opened_with_its_hello_in_one_event(
    enrolled_with_a_prompt: tuple[Path, Enrolled, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ep, prompt_id = enrolled_with_a_prompt
    opened = count_agent_opened(monkeypatch)
    async with InProcessBridge(data, hold_back_start=True) as bridge:
        runtime = ScriptedRuntime(bridge, ep)
        got = await runtime.connect()
        assert isinstance(got[0], wire.HelloOk)
        assert {d.prompt.prompt_id for d in of_type(got, wire.PromptDeliver)} == {prompt_id}
        assert opened == [], "the acceptance is recorded with the hello, not in an event of its own"
        actor = bridge.host.endpoints["laptop-first-frame"]
        assert actor.connected and not actor.unopened
        fleet = await bridge.request("GET", "/api/endpoints", token=ADMIN)
        assert [line["online"] for line in fleet.body["endpoints"]] == [True]
        await runtime.close()


async def test_a_create_before_the_first_frame_is_delivered_after_hello_ok_once(
    enrolled_with_a_prompt: tuple[Path, Enrolled, str],
) -> None:
    """A request that reaches the actor between the acceptance and the hello sees no agent:
    nothing is sent to a socket the actor has not recorded; the hello's flush sends it."""
    data, ep, first_prompt = enrolled_with_a_prompt
    async with InProcessBridge(data, hold_back_start=True) as bridge:
        runtime = ScriptedRuntime(bridge, ep)
        await runtime.connect(hello=False)
        second = await create_prompt(bridge, "Allow this too?")
        assert await runtime.drain(quiet=0.3) == []  # not before hello
        got = await say_hello(runtime)
        # (an unanswered deliver is retried with full jitter: a repeat may follow within the drain)
        assert {d.prompt.prompt_id for d in of_type(got, wire.PromptDeliver)} == {first_prompt, second}
        await runtime.close()


async def test_an_agent_silent_after_its_socket_opened_is_closed(
    enrolled_with_a_prompt: tuple[Path, Enrolled, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket that never speaks is recorded once a liveness window has passed, and its alarm,
    finding the agent silent since the acceptance, closes it (as before the deferral)."""
    data, ep, _ = enrolled_with_a_prompt
    opened = count_agent_opened(monkeypatch)
    async with InProcessBridge(data, hold_back_start=True, heartbeat_ms=200) as bridge:
        runtime = ScriptedRuntime(bridge, ep)
        await runtime.connect(hello=False)
        assert runtime.socket is not None
        with pytest.raises(ConnectionError, match="4408"):  # no heartbeat within the liveness window
            for _ in range(60):
                await runtime.drain(quiet=0.1)
        assert len(opened) == 1
        await runtime.close()


async def test_a_ping_before_the_hello_records_the_socket_and_gets_its_pong(
    enrolled_with_a_prompt: tuple[Path, Enrolled, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ep, prompt_id = enrolled_with_a_prompt
    opened = count_agent_opened(monkeypatch)
    async with InProcessBridge(data, hold_back_start=True) as bridge:
        runtime = ScriptedRuntime(bridge, ep)
        await runtime.connect(hello=False)
        assert runtime.socket is not None
        await runtime.send_raw(wire.PING_FRAME)
        assert await runtime.socket.recv(timeout=5) == wire.PONG_FRAME
        assert len(opened) == 1 and bridge.host.endpoints["laptop-first-frame"].connected
        got = await say_hello(runtime)
        assert {d.prompt.prompt_id for d in of_type(got, wire.PromptDeliver)} == {prompt_id}
        assert len(opened) == 1  # the hello is an ordinary frame now
        await runtime.close()
