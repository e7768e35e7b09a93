"""The bridge under test, on either host, behind one small interface.

``LocalBridgeProcess`` runs the real ``caisey-bridge serve`` in a subprocess on 127.0.0.1
with real SQLite files; time is real. Other hosts (the Worker adapter on the Workers
stand-in) implement the same ``BridgeUnderTest`` shape, so ``test_bridge_behaviour.py`` runs
unchanged against each.

``UrlBridge`` is any bridge already running at a URL (``CAISEY_BRIDGE_URL`` with
``CAISEY_BRIDGE_ADMIN_TOKEN``): ``scripts/test-worker`` points it at ``wrangler dev``, CI at a
local host started as a separate process. It can only talk to the bridge: a test that must
kill or look inside its host skips for it (``skip_without_host_access``), saying why.

``ScriptedRuntime`` is a stand-in for the endpoint agent that speaks the wire protocol frame
by frame as a test dictates — it is not the real agent (``agent/``), which has its own tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from caisey import wire
from caisey.ids import IdSource

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: Any


class AgentSocket(Protocol):
    async def send(self, text: str) -> None: ...
    async def recv(self, timeout: float = 5.0) -> str: ...
    async def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...


class BridgeUnderTest(Protocol):
    admin_token: str

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Resp: ...

    async def connect_agent(self, endpoint_id: str, secret: str | None) -> AgentSocket | Resp: ...

    async def advance(self, ms: int) -> None:
        """Let ``ms`` of bridge time pass (real sleep locally, virtual clock elsewhere)."""
        ...

    def now_ms(self) -> int: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _AiohttpSocket:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def recv(self, timeout: float = 5.0) -> str:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type.name} {msg.data!r} {msg.extra!r}")
        return str(msg.data)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code


def parse_body(content_type: str, raw: bytes) -> Any:
    """JSON bodies parsed; anything else (the audit export's JSON Lines) as text."""
    if not raw:
        return None
    if "json" in content_type and "ndjson" not in content_type:
        return json.loads(raw)
    return raw.decode("utf-8")


class _HttpBridge:
    """A bridge reached over HTTP and WebSocket at ``self.url``; time is real."""

    url: str
    admin_token: str

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Resp:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, data=data, headers=hdrs) as r,
        ):
            text = await r.read()
            return Resp(r.status, {k.lower(): v for k, v in r.headers.items()}, parse_body(r.content_type, text))

    async def connect_agent(self, endpoint_id: str, secret: str | None) -> AgentSocket | Resp:
        session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        try:
            ws = await session.ws_connect(f"{self.url}/api/endpoints/{endpoint_id}/agent", headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            await session.close()
            return Resp(exc.status, {}, None)
        return _AiohttpSocket(session, ws)

    async def advance(self, ms: int) -> None:
        await asyncio.sleep(ms / 1000)

    def now_ms(self) -> int:
        return int(time.time() * 1000)


class LocalBridgeProcess(_HttpBridge):
    """``caisey-bridge serve`` as a real process. ``kill()`` is kill -9; ``start()`` again reuses the data."""

    def __init__(
        self,
        data: Path,
        admin_token: str = "cst_test-admin-token",
        heartbeat_ms: int = 15_000,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data = data
        self.extra_args = list(extra_args or [])
        self.admin_token = admin_token
        self.heartbeat_ms = heartbeat_ms
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"{data.name}-bridge.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, CAISEY_ADMIN_TOKEN=self.admin_token)
        cmd = [sys.executable, "-m", "worker.local_host", "serve", "--data", str(self.data), "--port", str(self.port)]
        cmd += ["--heartbeat-ms", str(self.heartbeat_ms), *self.extra_args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bridge did not start listening within 15 s")

    def kill(self) -> None:
        """kill -9: no shutdown handler runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


BRIDGE_URL_ENV = "CAISEY_BRIDGE_URL"
BRIDGE_ADMIN_TOKEN_ENV = "CAISEY_BRIDGE_ADMIN_TOKEN"
# scripts/test-worker sets it: wrangler dev's local proxy may answer the request after a 413
# (answered without reading the body) with this 503 (docs/WORKERS_RUNTIME.md, "wrangler dev only").
WRANGLER_DEV_ENV = "CAISEY_BRIDGE_WRANGLER_DEV"
WRANGLER_RESTARTED = b"Your worker restarted mid-request"


class UrlBridge(_HttpBridge):
    """A bridge already running somewhere, known only by its URL and admin token."""

    def __init__(self, url: str, admin_token: str, *, wrangler_dev: bool = False) -> None:
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self.wrangler_dev = wrangler_dev
        self.wrangler_retries = 0

    @classmethod
    def from_env(cls) -> UrlBridge | None:
        url, token = os.environ.get(BRIDGE_URL_ENV), os.environ.get(BRIDGE_ADMIN_TOKEN_ENV)
        if not url:
            return None
        if not token:
            raise RuntimeError(f"{BRIDGE_URL_ENV} is set but {BRIDGE_ADMIN_TOKEN_ENV} is not")
        return cls(url, token, wrangler_dev=os.environ.get(WRANGLER_DEV_ENV) == "1")

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Resp:
        r = await super().request(method, path, token=token, body=body, raw=raw, headers=headers)
        if self.wrangler_dev and r.status == 503 and WRANGLER_RESTARTED in str(r.body).encode():
            self.wrangler_retries += 1  # wrangler dev's proxy, not the bridge: once more
            r = await super().request(method, path, token=token, body=body, raw=raw, headers=headers)
        return r


def skip_without_host_access(bridge: BridgeUnderTest, why: str) -> None:
    """Skip a test that must kill or inspect its host when the bridge is only a URL."""
    if isinstance(bridge, UrlBridge):
        import pytest

        pytest.skip(f"{why}: the bridge at {BRIDGE_URL_ENV} can only be talked to")


@dataclass
class Enrolled:
    endpoint_id: str
    secret: str


async def enroll(bridge: BridgeUnderTest, endpoint_id: str, label: str = "") -> Enrolled:
    r = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id, "label": label}
    )
    assert r.status == 201, r.body
    r2 = await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": r.body["enrollment_token"]})
    assert r2.status == 200, r2.body
    return Enrolled(endpoint_id, r2.body["agent_secret"])


@dataclass
class ScriptedRuntime:
    """A wire-protocol peer driven step by step by a test (not the real agent)."""

    bridge: BridgeUnderTest
    endpoint: Enrolled
    clock_skew_ms: int = 0
    socket: AgentSocket | None = None
    ids: IdSource = field(default_factory=lambda: IdSource(lambda n: int.from_bytes(os.urandom(10), "big") >> (80 - n)))
    inbox: list[wire.Message] = field(default_factory=list)

    def local_now(self) -> int:
        return self.bridge.now_ms() + self.clock_skew_ms

    def new_id(self) -> str:
        return self.ids.new(self.local_now())

    async def connect(self, *, hello: bool = True) -> list[wire.Message]:
        sock = await self.bridge.connect_agent(self.endpoint.endpoint_id, self.endpoint.secret)
        assert not isinstance(sock, Resp), f"agent socket refused: {sock}"
        self.socket = sock
        if not hello:
            return []
        return await self.hello()

    async def hello(self, **fields: Any) -> list[wire.Message]:
        """Send ``hello`` (with optional fields such as ``time_zone``); what came back."""
        await self.send(
            wire.Hello(
                id=self.new_id(),
                endpoint_id=self.endpoint.endpoint_id,
                agent_version="scripted",
                sent_at_ms=self.local_now(),
                **fields,
            )
        )
        return await self.drain()

    async def send(self, message: wire.Message) -> None:
        assert self.socket is not None
        await self.socket.send(wire.encode(message))

    async def send_raw(self, text: str) -> None:
        assert self.socket is not None
        await self.socket.send(text)

    async def drain(self, quiet: float = 0.3) -> list[wire.Message]:
        """Frames that arrive until the socket is quiet for ``quiet`` seconds."""
        assert self.socket is not None
        got: list[wire.Message] = []
        while True:
            try:
                got.append(wire.decode(await self.socket.recv(timeout=quiet)))
            except TimeoutError:
                break
        self.inbox.extend(got)
        return got

    async def receipt(self, deliver: wire.PromptDeliver) -> list[wire.Message]:
        await self.send(
            wire.PromptReceipt(
                id=self.new_id(),
                prompt_id=deliver.prompt.prompt_id,
                deliver_id=deliver.id,
                received_at_ms=self.local_now(),
            )
        )
        return await self.drain()

    async def decide(
        self, prompt_id: str, decision: str, decided_at_ms: int | None = None, event_id: str | None = None
    ) -> list[wire.Message]:
        await self.send(
            wire.PromptUpdate(
                id=event_id or self.new_id(),
                prompt_id=prompt_id,
                status="decided",
                decision=decision,
                decided_at_ms=decided_at_ms if decided_at_ms is not None else self.bridge.now_ms(),
                how="user",
            )
        )
        return await self.drain()

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
            self.socket = None


def of_type(messages: list[wire.Message], cls: type) -> list[Any]:
    return [m for m in messages if isinstance(m, cls)]
