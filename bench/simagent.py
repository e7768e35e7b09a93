"""A lean simulated endpoint agent: the real wire protocol over a real socket, no presenter.

The real agent (``agent/``) is one process per endpoint with its own SQLite store; a fleet
benchmark needs thousands of endpoints per client process, so ``SimAgent`` keeps only what
the protocol needs in memory and answers every prompt at once. It still does everything the
bridge can observe (DESIGN §6, §7):

- ``hello`` (with ``last_acked_id``) on every connection; after ``hello.ok`` a full
  ``state.report`` of every prompt not final-and-acked, then a flush of its outbox;
- persist before send, when a ``Disk`` is given: a deliver is committed (WAL,
  synchronous=FULL) before its receipt leaves, and a decision before its update leaves;
- ``prompt.receipt`` then, when ``answer`` is set, a ``decided`` ``prompt.update``;
- receipts and updates stay in an outbox until acked, resent after ``RESEND_MS`` and after
  every reconnect, byte for byte (same event id); duplicates get a fresh receipt, never a
  second decision;
- heartbeats every ``hello.ok.heartbeat_ms`` with the real ``caisey.digest.held_digest``;
  ``state.request`` → report; ``prompt.cancel`` → closed + ack;
- reconnect with the real agent's policy (``caisey.backoff.Reconnect``: full jitter under a
  ceiling as long as the outage so far, 1 s to 60 s).

What it leaves out: clock-offset estimation (same machine), expiry, presenters, retention.
Events the benchmarks time are reported to a ``Listener`` with ``time.monotonic()`` stamps
(CLOCK_MONOTONIC, comparable across processes on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agent.identity import EndpointKey
from caisey import wire
from caisey.backoff import Reconnect
from caisey.digest import held_digest
from caisey.errors import ProtocolError
from caisey.ids import IdSource
from caisey.signing import answer_message, b64encode

AGENT_VERSION = "caisey-bench-sim/1"
# Unacked receipts/updates are resent this long after their last send (the real agent: 2 s
# base with backoff; a bench agent keeps it flat).
RESEND_MS = 2_000
# Bound on the pending-heartbeat ids we remember (acks for older ones are just dropped).
MAX_PENDING_HEARTBEATS = 8
# Prompts remembered per agent; beyond it the oldest final-and-acked ones are forgotten (the real
# agent keeps them a week, for duplicate delivers a bench run never sees that late).
MAX_HELD = 256


_ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


def wall_ms() -> int:
    return int(time.time() * 1000)


class Disk:
    """The agent's durable commit: one SQLite file, WAL, synchronous=FULL (as ``agent/store.py``).

    Many simulated agents share one file per client process; each commit is one row in its
    own transaction, so the cost per commit is what one real agent pays."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS facts (seq INTEGER PRIMARY KEY, prompt_id TEXT, body TEXT)")

    def commit(self, prompt_id: str, body: str) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO facts (prompt_id, body) VALUES (?, ?)", (prompt_id, body))
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class Listener:
    """What a benchmark wants to know; every stamp is ``time.monotonic()``. Override freely."""

    def ready(self, agent: SimAgent, at: float) -> None:
        """``hello.ok`` arrived and the report went out."""

    def delivered(self, agent: SimAgent, prompt: wire.PromptCopy, at: float) -> None:
        """A new prompt arrived (committed before this is called, when a disk is set)."""

    def receipt_acked(self, agent: SimAgent, prompt_id: str, at: float) -> None:
        """The bridge acked our receipt: it committed it."""

    def decision_acked(self, agent: SimAgent, prompt_id: str, at: float) -> None:
        """The bridge acked our decision: it committed it; the API shows it from now on."""

    def answered(self, agent: SimAgent, prompt_id: str, at: float) -> None:
        """The simulated user answered (after its think time); the update is queued next."""

    def disconnected(self, agent: SimAgent, at: float) -> None:
        """The socket closed (or never opened)."""


@dataclass(slots=True)
class Held:
    copy: wire.PromptCopy
    status: str  # received | decided | closed
    decision: str | None = None
    decided_at_ms: int | None = None
    final_acked: bool = False
    key_id: str | None = None
    sig: str | None = None


@dataclass(slots=True)
class Outgoing:
    frame: str
    prompt_id: str
    kind: str  # receipt | update
    next_send: float = 0.0  # monotonic


@dataclass
class Stats:
    connections: int = 0
    frames_in: int = 0
    frames_out: int = 0
    errors_in: int = 0
    duplicates: int = 0
    connect_failures: int = 0


@dataclass
class SimAgent:
    url: str  # http://host:port
    endpoint_id: str
    secret: str
    session: aiohttp.ClientSession
    listener: Listener = field(default_factory=Listener)
    answer: str | None = "approve"  # None: hold prompts open (received only)
    answer_delay_s: tuple[float, float] = (0.0, 0.0)  # think time before the answer, uniform
    disk: Disk | None = None
    key: EndpointKey | None = None  # signs answers as the real agent does (DESIGN §10); None: unsigned
    rng: random.Random = field(default_factory=random.Random)
    stats: Stats = field(default_factory=Stats)
    held: dict[str, Held] = field(default_factory=dict)
    outbox: OrderedDict[str, Outgoing] = field(default_factory=OrderedDict)
    ready: bool = False
    ready_at: float = 0.0
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _hello_id: str | None = None
    _last_acked_id: str | None = None
    _heartbeat_ms: int = 15_000
    _next_heartbeat: float = 0.0
    _pending_heartbeats: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _ids: IdSource | None = None

    def __post_init__(self) -> None:
        self._ids = IdSource(self.rng.getrandbits)

    # --- helpers -------------------------------------------------------------------------------

    def _new_id(self) -> str:
        assert self._ids is not None
        return self._ids.new(wall_ms())

    def digest(self) -> str:
        return held_digest((pid, h.status) for pid, h in self.held.items() if h.status == "received")

    async def _send(self, text: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await ws.send_str(text)
            self.stats.frames_out += 1

    async def _send_message(self, message: wire.Message) -> None:
        await self._send(wire.encode(message))

    async def _queue(self, message: wire.PromptReceipt | wire.PromptUpdate, kind: str) -> None:
        """Into the outbox (resent until acked), then out now when ready."""
        frame = wire.encode(message)
        self.outbox[message.id] = Outgoing(frame, message.prompt_id, kind, time.monotonic() + RESEND_MS / 1000)
        if self.ready:
            await self._send(frame)

    # --- the connection ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, first_delay_s: float = 0.0) -> None:
        """Connect, serve, reconnect with full-jitter backoff — until ``stop`` is set."""
        ws_url = self.url.replace("http://", "ws://", 1) + f"/api/endpoints/{self.endpoint_id}/agent"
        reconnect = Reconnect()  # the real agent's policy
        if first_delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), first_delay_s)
        while not stop.is_set():
            served = False
            try:
                async with self.session.ws_connect(
                    ws_url,
                    headers={"Authorization": f"Bearer {self.secret}"},
                    heartbeat=None,
                    max_msg_size=4 * wire.MAX_FRAME_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=3.0),
                ) as ws:
                    self._ws = ws
                    self.stats.connections += 1
                    served = await self._serve(ws, stop)
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.stats.connect_failures += 1
            finally:
                self._ws = None
                self.ready = False
                self.listener.disconnected(self, time.monotonic())
            if served:
                reconnect.served()
            if stop.is_set():
                break
            delay_s = reconnect.failed(self.rng.random) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> bool:
        """One connection. True when it got as far as ``hello.ok``."""
        self._hello_id = self._new_id()
        self._pending_heartbeats.clear()
        await self._send_message(
            wire.Hello(self._hello_id, self.endpoint_id, AGENT_VERSION, wall_ms(), self._last_acked_id)
        )
        served = False
        while not stop.is_set():
            timeout = self._next_wake() - time.monotonic()
            try:
                msg = await ws.receive(timeout=max(0.001, timeout))
            except TimeoutError:
                await self._tick()
                continue
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.stats.frames_in += 1
                await self._on_frame(msg.data)
                served = served or self.ready
            elif msg.type in _ENDED:
                break
        if stop.is_set():
            await ws.close()
        return served

    def _next_wake(self) -> float:
        wake = time.monotonic() + 3600.0
        if self.ready:
            wake = min(wake, self._next_heartbeat)
            for item in self.outbox.values():
                wake = min(wake, item.next_send)
        return wake

    async def _tick(self) -> None:
        if not self.ready:
            return
        now = time.monotonic()
        for item in list(self.outbox.values()):
            if item.next_send <= now:
                item.next_send = now + RESEND_MS / 1000
                await self._send(item.frame)
        if now >= self._next_heartbeat:
            frame_id = self._new_id()
            self._pending_heartbeats[frame_id] = wall_ms()
            while len(self._pending_heartbeats) > MAX_PENDING_HEARTBEATS:
                self._pending_heartbeats.popitem(last=False)
            self._next_heartbeat = now + self._heartbeat_ms / 1000
            await self._send_message(wire.Heartbeat(frame_id, wall_ms(), self.digest()))

    # --- frames ----------------------------------------------------------------------------------

    async def _on_frame(self, raw: str) -> None:
        try:
            message = wire.decode(raw)
        except ProtocolError as exc:
            await self._send_message(wire.Error(self._new_id(), exc.code, exc.message[:200], wire.peek_id(raw)))
            return
        if isinstance(message, wire.HelloOk):
            await self._on_hello_ok(message)
        elif isinstance(message, wire.PromptDeliver):
            await self._on_deliver(message)
        elif isinstance(message, wire.Ack):
            self._on_ack(message)
        elif isinstance(message, wire.StateRequest):
            if self.ready:
                await self._report()
        elif isinstance(message, wire.PromptCancel):
            held = self.held.get(message.prompt_id)
            if held is not None and held.status == "received":
                held.status, held.final_acked = "closed", True
                for eid in [
                    k for k, v in self.outbox.items() if v.prompt_id == message.prompt_id and v.kind == "receipt"
                ]:
                    del self.outbox[eid]
            await self._send_message(wire.Ack(self._new_id(), message.id))
        elif isinstance(message, wire.Error):
            self.stats.errors_in += 1

    async def _on_hello_ok(self, message: wire.HelloOk) -> None:
        if message.in_reply_to != self._hello_id or self.ready:
            return
        self._heartbeat_ms = message.heartbeat_ms
        self._next_heartbeat = time.monotonic() + self._heartbeat_ms / 1000
        self.ready = True
        self.ready_at = time.monotonic()
        await self._report()
        now = time.monotonic()
        for item in list(self.outbox.values()):  # flush everything owed, in order
            item.next_send = now + RESEND_MS / 1000
            await self._send(item.frame)
        self.listener.ready(self, self.ready_at)

    async def _report(self) -> None:
        lines = tuple(
            wire.HeldPrompt(
                h.copy, h.status, h.decision, h.decided_at_ms, "user" if h.decision else None, h.key_id, h.sig
            )
            for h in self.held.values()
            if not h.final_acked
        )[: wire.MAX_OPEN_PROMPTS]
        await self._send_message(wire.StateReport(self._new_id(), lines, self.digest()))

    async def _on_deliver(self, message: wire.PromptDeliver) -> None:
        copy = message.prompt
        held = self.held.get(copy.prompt_id)
        if held is not None:  # a replay (R5) or a re-queue: a fresh receipt, never a second answer
            self.stats.duplicates += 1
            for eid in [k for k, v in self.outbox.items() if v.prompt_id == copy.prompt_id and v.kind == "receipt"]:
                del self.outbox[eid]
            await self._queue(wire.PromptReceipt(self._new_id(), copy.prompt_id, message.id, wall_ms()), "receipt")
            for item in [v for v in self.outbox.values() if v.prompt_id == copy.prompt_id and v.kind == "update"]:
                await self._send(item.frame)
            return
        if self.disk is not None:  # persist before send
            self.disk.commit(copy.prompt_id, message.id)
        self.held[copy.prompt_id] = Held(copy, "received")
        await self._queue(wire.PromptReceipt(self._new_id(), copy.prompt_id, message.id, wall_ms()), "receipt")
        self.listener.delivered(self, copy, time.monotonic())
        if self.answer is not None:
            low, high = self.answer_delay_s
            if high > 0:
                asyncio.get_running_loop().call_later(
                    self.rng.uniform(low, high), lambda: asyncio.ensure_future(self.decide(copy.prompt_id))
                )
            else:
                await self.decide(copy.prompt_id)

    async def decide(self, prompt_id: str, decision: str | None = None) -> None:
        """The user answered: commit (when a disk is set), then the ``decided`` update."""
        held = self.held.get(prompt_id)
        if held is None or held.status != "received":
            return
        decision = decision or self.answer or "approve"
        decided_at_ms = wall_ms()
        if self.disk is not None:  # a decision is fsynced before it is reported
            self.disk.commit(prompt_id, decision)
        held.status, held.decision, held.decided_at_ms = "decided", decision, decided_at_ms
        self.listener.answered(self, prompt_id, time.monotonic())
        if self.key is not None:
            message = answer_message(self.endpoint_id, held.copy, decision, "user", decided_at_ms)
            held.key_id, held.sig = self.key.key_id, b64encode(self.key.sign(message))
        update = wire.PromptUpdate(
            self._new_id(),
            prompt_id,
            "decided",
            how="user",
            decision=decision,
            decided_at_ms=decided_at_ms,
            key_id=held.key_id,
            sig=held.sig,
        )
        await self._queue(update, "update")

    def _on_ack(self, message: wire.Ack) -> None:
        if self._pending_heartbeats.pop(message.of, None) is not None:
            return
        item = self.outbox.pop(message.of, None)
        if item is None:
            return
        self._last_acked_id = message.of
        now = time.monotonic()
        if item.kind == "receipt":
            self.listener.receipt_acked(self, item.prompt_id, now)
        else:
            held = self.held.get(item.prompt_id)
            if held is not None:
                held.final_acked = True
            self._forget_old()
            self.listener.decision_acked(self, item.prompt_id, now)

    def _forget_old(self) -> None:
        """Keep memory bounded in long storms: drop the oldest final-and-acked prompts."""
        if len(self.held) <= MAX_HELD:
            return
        for prompt_id in [pid for pid, h in self.held.items() if h.final_acked][: len(self.held) - MAX_HELD]:
            del self.held[prompt_id]
