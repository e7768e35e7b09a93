"""The Cloudflare host under test: ``worker/entry.py`` on the Workers stand-in.

Implements ``tests.bridge_hosts.BridgeUnderTest`` so ``test_bridge_behaviour.py`` runs the same
suite against it. Time is the stand-in's virtual clock; every Durable Object is constructed
again for every event (``hibernation="always"``), so a test passing here does not depend on
anything an instance kept in memory.
"""

from __future__ import annotations

import json
from typing import Any

from tests.bridge_hosts import AgentSocket, Resp, parse_body
from tests.workers_standin.harness import AgentClient, Harness, sha256_hex

ADMIN_TOKEN = "cst_test-admin-token"


class WorkersBridge:
    def __init__(self, *, hibernation: str = "always", heartbeat_ms: int | None = 2_000, seed: int = 0) -> None:
        """``heartbeat_ms`` None: the deployment's defaults (no ``HEARTBEAT_MS`` var)."""
        self.admin_token = ADMIN_TOKEN
        secrets = {"ADMIN_TOKEN_SHA256": sha256_hex(ADMIN_TOKEN)}
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
