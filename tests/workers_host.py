"""The Cloudflare host under test: ``worker/entry.py`` on the Workers stand-in.

Implements ``tests.bridge_hosts.BridgeUnderTest`` so ``test_bridge_behaviour.py`` runs the same
suite against it. Time is the stand-in's virtual clock; every Durable Object is constructed
again for every event (``hibernation="always"``), so a test passing here does not depend on
anything an instance kept in memory.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from agent.core import AgentCore
from agent.store import Store
from tests.bridge_hosts import AgentSocket, Enrolled, Resp, parse_body
from tests.workers_standin.harness import AgentClient, Harness, sha256_hex

ADMIN_TOKEN = "cst_test-admin-token"


class WorkersBridge:
    def __init__(
        self,
        *,
        hibernation: str = "always",
        heartbeat_ms: int | None = 2_000,
        seed: int = 0,
        extra_vars: dict[str, str] | None = None,
    ) -> None:
        """``heartbeat_ms`` None: the deployment's defaults (no ``HEARTBEAT_MS`` var)."""
        self.admin_token = ADMIN_TOKEN
        secrets = {"ADMIN_TOKEN_SHA256": sha256_hex(ADMIN_TOKEN), **(extra_vars or {})}
        if heartbeat_ms is not None:
            secrets["HEARTBEAT_MS"] = str(heartbeat_ms)
        self.harness = Harness(secrets=secrets, hibernation=hibernation, seed=seed)

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
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        if token is not None:
            hdrs["authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs.setdefault("content-type", "application/json")
        r = await self.harness.fetch(method, path, headers=hdrs, body=data)
        content_type = str({k.lower(): v for k, v in dict(r.headers).items()}.get("content-type", "application/json"))
        return Resp(r.status, r.headers, parse_body(content_type, r.body) if r.body else None)

    async def connect_agent(self, endpoint_id: str, secret: str | None) -> AgentSocket | Resp:
        result = await self.harness.connect_agent(endpoint_id, secret)
        if isinstance(result, AgentClient):
            return result
        return Resp(result.status, result.headers, result.json() if result.body else None)

    async def advance(self, ms: int) -> None:
        await self.harness.advance(ms)

    def now_ms(self) -> int:
        return self.harness.now_ms


class RealAgent:
    """``AgentCore`` on a real store, its frames carried by the stand-in socket. ``old=True``
    leaves ``pings`` out of its hello, as an agent installed before issue 12 does."""

    def __init__(self, bridge: WorkersBridge, endpoint: Enrolled, state_dir: Path, *, old: bool = False) -> None:
        self.bridge, self.endpoint, self.old = bridge, endpoint, old
        self.core = AgentCore(Store.open(state_dir), endpoint.endpoint_id, rng=random.Random(7))
        self.core.start(bridge.now_ms())
        self.socket: AgentClient | None = None
        self.sent: list[str] = []

    async def connect(self) -> None:
        sock = await self.bridge.harness.connect_agent(self.endpoint.endpoint_id, self.endpoint.secret)
        assert isinstance(sock, AgentClient), sock
        self.socket = sock
        await self.perform(self.core.on_connected(self.bridge.now_ms()))

    async def perform(self, effects: Any) -> None:
        assert self.socket is not None
        for frame in effects.send:
            if self.old and '"type":"hello"' in frame:
                body = json.loads(frame)
                body.pop("pings", None)
                frame = json.dumps(body, separators=(",", ":"))
            self.sent.append(frame)
            if not self.socket.closed:
                await self.socket.send(frame)
        await self.receive()

    async def receive(self) -> None:
        assert self.socket is not None
        now = self.bridge.now_ms()
        for frame in self.socket.received():
            await self.perform(self.core.on_frame(frame, now))
        if self.socket.closed and self.core.connected:
            self.core.on_disconnected(now)

    async def run(self, ms: int) -> None:
        """Let ``ms`` pass with the agent alive: it ticks at its deadlines, the bridge's alarms fire."""
        until = self.bridge.now_ms() + ms
        while True:
            deadline = self.core.next_deadline_ms()
            now = self.bridge.now_ms()
            if deadline is None or deadline > until:
                await self.bridge.advance(until - now)
                await self.receive()
                return
            await self.bridge.advance(max(0, deadline - now))
            await self.receive()
            await self.perform(self.core.tick(self.bridge.now_ms()))
