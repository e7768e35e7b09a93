"""A malicious bridge for tests: a small aiohttp server speaking just enough of the wire
protocol to a real ``caisey-agent run`` process (issue 11 item 10).

It answers ``hello`` with ``hello.ok`` (optionally claiming another time), acks heartbeats
(so the agent never declares it dead) and acknowledges nothing else; on each connection it
runs ``on_hello`` — a flood of prompts, of junk frames, or nothing. It counts connections and
the frame types the agent sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSMsgType, web

from agent.store import Store
from caisey import wire
from caisey.ids import IdSource

OnHello = Callable[["HostileBridge", web.WebSocketResponse], Awaitable[None]]


def wall_ms() -> int:
    return int(time.time() * 1000)


class HostileBridge:
    def __init__(self, on_hello: OnHello | None = None, *, clock_offset_ms: int = 0) -> None:
        self.on_hello = on_hello
        self.clock_offset_ms = clock_offset_ms  # what this bridge claims its clock is, minus ours
        self.connections = 0
        self.received: Counter[str] = Counter()
        self.ids = IdSource(random.Random(7).getrandbits)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now_ms(self) -> int:
        return max(0, wall_ms() + self.clock_offset_ms)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/endpoints/{eid}/agent", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def send(self, ws: web.WebSocketResponse, message: wire.Message) -> None:
        await ws.send_str(wire.encode(message))

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=8 * wire.MAX_FRAME_BYTES)
        await ws.prepare(request)
        self.connections += 1
        flood: asyncio.Task[None] | None = None
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            self.received[frame.get("type", "?")] += 1
            if frame.get("type") == "hello":
                now = self.now_ms()
                await self.send(ws, wire.HelloOk(self.ids.new(wall_ms()), frame["id"], now, now, 15_000))
                if self.on_hello is not None:
                    flood = asyncio.get_running_loop().create_task(self.on_hello(self, ws))
            elif frame.get("type") == "heartbeat":
                now = self.now_ms()
                await self.send(ws, wire.Ack(self.ids.new(wall_ms()), frame["id"], now, now))
        if flood is not None:
            flood.cancel()
        return ws


def enrolled_state(state: Path, bridge_url: str, endpoint_id: str = "ep-hostile") -> Store:
    """A state dir enrolled with ``bridge_url`` (no real enrollment: the bridge is the attacker)."""
    store = Store.open(state)
    store.meta_set("endpoint_id", endpoint_id)
    store.meta_set("bridge_url", bridge_url)
    store.write_secret("csa_" + "x" * 43)
    return store
