"""The local host: ``caisey-bridge serve`` — the same actors on aiohttp and SQLite files.

Layout of ``--data DIR``: ``fleet.sqlite3`` for the fleet index, ``endpoints/shard-NN.sqlite3``
for the endpoint actors — each endpoint in its own tables inside one of 256 shard files
(``worker.shard_store``: the actor's SQL, transactions and migrations are those it runs alone
in a Durable Object; only the files are shared, so thousands of endpoints cost at most 256 open files
and their commits share a write-ahead log), ``admin-token`` (0600). A data directory from before
shards keeps serving its ``endpoints/<id>.sqlite3`` files; new endpoints go to shards.

Each callback is the same four steps around an actor: feed the event → perform the
Effects' sends → close if asked → re-arm the actor's one timer; then push the fleet line.
Alarms are rows, not timers: when an actor first opens (a background pass after start opens
every one; a request or socket that gets there first opens it sooner) its next alarm is derived
from its rows and armed, so one that fell due while the bridge was down fires at once.
Endpoint files of the old layout are opened through a ``StorePool`` bounded by the open-files
limit. Every endpoint write commits through an ``OutputGate``: no frame or response leaves
before the writes behind it are fsynced, and the commits that queue up meanwhile share one
round of fsyncs (group commit).

Hardening (issue 11, SECURITY.md): the data directory is 0700 and every file in it 0600
(the process umask is 077, so SQLite's -wal/-shm are born 0600); a group- or world-writable
data directory is refused at start. Every response carries the security headers of
``worker.api``. A ``ConnectionGuard`` caps the connections one remote address may hold
before they become an authenticated agent socket, and answers a request whose headers are
not complete within the header timeout with 408; idle keep-alive connections close after
``KEEPALIVE_TIMEOUT_S``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import stat
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import StreamReader, WSMsgType, web

from caisey import wire
from worker import admission, gateway
from worker.api import (
    API_SECURITY_HEADERS,
    CONSOLE_SECURITY_HEADERS,
    ENDPOINT_ID_RE,
    MAX_BODY_BYTES,
    ApiError,
    ApiRequest,
    ApiResponse,
    match,
    route_for_actor,
)
from worker.credentials import secret_hash
from worker.ed25519_local import verified
from worker.endpoint import BridgeConfig, EndpointBridge
from worker.fleet import AUTHENTICATE_PATH, DEFAULT_MAX_ENDPOINTS, FleetIndex
from worker.host import Effects, Entropy
from worker.output_gate import OutputGate
from worker.policies import POLICY_PATH
from worker.shard_store import EndpointTables, Shards
from worker.sqlite_store import FDS_PER_STORE, PooledStore, SqliteStore, StorePool
from worker.webhook_sender import WebhookSender

log = logging.getLogger("caisey.bridge")

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console_static"
# aiohttp refuses frames above this before our parser sees them (close 1009). It is larger
# than the protocol's limit so that merely oversized frames get a protocol ``error`` reply.
WS_READ_LIMIT = 4 * wire.MAX_FRAME_BYTES
# Fleet lines pushed by the actors are written in one transaction at most this often (one
# fsync, not one per line). They are derived: ``start`` rewrites every line from the actors'
# rows, so a line lost in a crash costs nothing; fleet reads flush first (read your writes).
FLEET_FLUSH_S = 0.1
# Descriptors kept free for what is not an endpoint file: HTTP connections (and sockets still
# in their handshake), the fleet index, logs. Agent sockets are counted as they come and go.
FD_RESERVE = 2048
MIN_OPEN_STORES = 16
# Slow and idle clients (issue 11: 671 idle sockets from one address made the API time out
# under a 600-fd limit; aiohttp held each for ~80 s). Connections one remote address may hold
# before they become an authenticated agent socket: a console is a few (browsers open at most
# 6 per origin), an office of technicians behind one NAT some tens. Agent sockets do not count
# (each is one endpoint's, bounded by the endpoint quota), so a whole site of endpoints behind
# one NAT is never refused by this.
MAX_CONNECTIONS_PER_ADDRESS = 128
# A request's headers must be complete this long after the connection opened (a slowloris
# client sends them a byte at a time); 408 then. Idle keep-alive connections close after
# KEEPALIVE_TIMEOUT_S (the console polls every few seconds and reuses its connection).
HEADER_TIMEOUT_S = 10.0
KEEPALIVE_TIMEOUT_S = 15.0
# Connections the kernel queues until the loop accepts them. After a restart thousands of
# agents connect at once; with aiohttp's default of 128 the kernel dropped their SYNs, and each
# drop costs an agent a 1 s (then 3 s, 7 s) retransmit. Capped by net.core.somaxconn.
LISTEN_BACKLOG = 4096
SERVER_HEADER = "caisey"  # not "Python/3.11 aiohttp/3.x": no versions for an attacker to match


def now_ms() -> int:
    return int(time.time() * 1000)


# The start pass's pause after every 32 actors it opens (``LocalBridge._open_all``).
START_PASS_PAUSE_S = 0.005


class LocalEndpoint:
    """An endpoint actor with its sockets and its timer."""

    def __init__(self, host: LocalBridge, endpoint_id: str, store: PooledStore | EndpointTables) -> None:
        self.host = host
        self.endpoint_id = endpoint_id
        self.store = store
        self.actor = EndpointBridge(self.store, host.entropy, host.config)
        self.actor.listening = host.fleet.webhooks.listening  # the fleet is in this process
        self.sockets: list[web.WebSocketResponse] = []
        # Accepted, but the actor has not recorded it yet (``agent_socket`` defers that to the
        # first frame): not connected for the actor's events, and sent nothing, until then.
        self.unopened: set[web.WebSocketResponse] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.started = False  # alarm armed and fleet line rewritten in this process

    @property
    def connected(self) -> bool:
        return any(not ws.closed and ws not in self.unopened for ws in self.sockets)

    async def perform(self, effects: Effects) -> None:
        """Send → close → notify (the order ``Effects`` documents), once the writes behind them
        are on disk (the output gate; the caller's response leaves after this too). The timer
        is armed first, in the same step as the event, so a later event's alarm always wins."""
        self.arm(effects.alarm_at_ms)
        await self.host.gate.wait_for(self.store.last_commit)  # its own writes (a shard's others' aside)
        for ws in [ws for ws in self.sockets if ws not in self.unopened]:
            for frame in effects.send:
                if ws.closed:
                    break
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(frame)
        closing: list[web.WebSocketResponse] = []
        if effects.close_agent:
            code, reason = effects.close_agent
            # The agent is gone now: a dead peer (a sleeping laptop) never answers the closing
            # handshake, and waiting out its timeout must not keep the endpoint "online".
            closing, self.sockets = self.sockets, []
            for ws in closing:
                self.host.spawn(ws.close(code=code, message=reason.encode()))
        if effects.fleet_summary is not None:
            self.host.push_fleet_line(effects.fleet_summary)
        if effects.webhook_reports:
            self.host.webhook_reports(effects.webhook_reports)
        for send in effects.webhooks:  # outside the event, never awaited by it (DESIGN §11)
            self.host.spawn(self.deliver(send))
        if closing:
            await self.perform(self.actor.agent_closed(now_ms(), self.connected))

    def arm(self, at_ms: int | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if at_ms is None or self.host.closing:
            return
        delay = max(0.0, (at_ms - now_ms()) / 1000)
        self.timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.host.spawn(self.on_alarm())

    async def on_alarm(self) -> None:
        now = now_ms()
        # The webhook subscriptions, read only when events wait to be sent (``worker.hooks``).
        targets = self.host.fleet.webhooks.targets() if self.actor.wants_targets(now) else None
        await self.perform(self.actor.alarm(now, self.connected, targets=targets))

    async def deliver(self, send: dict[str, Any]) -> None:
        """One webhook attempt, in its own task; its outcome is a new event for the actor."""
        result = await self.host.sender.send(send)
        if not self.host.closing:
            await self.perform(self.actor.webhook_results([result], now_ms(), self.connected))


class LocalBridge:
    """All actors of one data directory, and the aiohttp application serving them."""

    def __init__(
        self,
        data: Path,
        admin_token_hash: str,
        config: BridgeConfig | None = None,
        max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
        allow_private_webhooks: bool = False,
    ) -> None:
        self.data = data
        self.config = replace(config or BridgeConfig(), webhooks=True)
        self.entropy = Entropy()
        (data / "endpoints").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fleet_store = SqliteStore(data / "fleet.sqlite3")
        self.fleet = FleetIndex(self.fleet_store, self.entropy, admin_token_hash, max_endpoints)
        self.fleet.lines_are_current = True
        self.fleet.webhooks.allow_private = allow_private_webhooks
        self.sender = WebhookSender(allow_private_webhooks)
        self.endpoints: dict[str, LocalEndpoint] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.started = asyncio.Event()  # every actor opened and its alarm armed (after ``start``)
        self._fleet_lines: dict[str, dict[str, Any]] = {}  # endpoint_id → latest line, not yet written
        self._fleet_flush: asyncio.TimerHandle | None = None
        self._fleet_commit = 0  # the output gate's number of the latest batch of lines
        # Endpoint files open at once: what the fd limit leaves after sockets (StorePool).
        self.agent_sockets = 0
        self._fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.stores = StorePool(self._store_capacity)
        self.gate = OutputGate()  # endpoint files: group commit before any output
        self.shards = Shards(data / "endpoints", self.gate)  # where endpoints live (``worker.shard_store``)

    def _store_capacity(self) -> int:
        free = self._fd_limit - self.agent_sockets - FD_RESERVE - self.shards.count * FDS_PER_STORE
        return max(MIN_OPEN_STORES, free // FDS_PER_STORE)

    def push_fleet_line(self, summary: dict[str, Any]) -> None:
        """An actor's fleet line changed: write it with the next batch."""
        self._fleet_lines[str(summary["endpoint_id"])] = summary
        if self._fleet_flush is None and not self.closing:
            self._fleet_flush = asyncio.get_running_loop().call_later(FLEET_FLUSH_S, self.flush_fleet)

    def flush_fleet(self) -> None:
        if self._fleet_flush is not None:
            self._fleet_flush.cancel()
            self._fleet_flush = None
        if not self._fleet_lines:
            return
        lines, self._fleet_lines = self._fleet_lines, {}
        now = now_ms()

        def write() -> None:
            for summary in lines.values():
                self.fleet.update_endpoint(summary, now)

        if self.closing:  # the gate is closing: durable at commit (``synchronous=FULL``)
            self.fleet_store.transaction(write)
            return
        # The batch commits at ``synchronous=NORMAL`` and the output gate syncs the fleet's log
        # on its threads (a round starts now): the fsync of a FULL commit held the event loop,
        # and every socket and request with it, every FLEET_FLUSH_S. A fleet read waits for it
        # (``fleet_call``), so nothing leaves before the lines it read are on disk.
        db = self.fleet_store.db
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            self.fleet_store.transaction(write)
        finally:
            db.execute("PRAGMA synchronous=FULL")  # the fleet's own writes stay durable at commit
        self._fleet_commit = self.gate.written(self.fleet_store.wal)
        self.spawn(self.gate.wait_for(self._fleet_commit))

    def webhook_reports(self, reports: list[dict[str, Any]]) -> None:
        """Delivery outcomes for the fleet's delivery log (a give-up is logged here too)."""
        for report in reports:
            if report["outcome"] in ("gave_up", "disabled"):
                log.warning(
                    "webhook %s %s for %s: %s",
                    report["subscription_id"],
                    report["outcome"],
                    report["event_id"],
                    report["error"],
                )
        self.fleet.webhooks.report({"reports": reports}, now_ms())

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def _path(self, endpoint_id: str) -> Path:
        """An endpoint's own file: the layout before shards, still served where it exists."""
        return self.data / "endpoints" / f"{endpoint_id}.sqlite3"

    def _store(self, endpoint_id: str, *, create: bool) -> PooledStore | EndpointTables | None:
        """Where an endpoint's rows live: its own file if a data directory from before shards
        has one, else its tables in its shard (made when ``create``)."""
        legacy = self._path(endpoint_id)
        if legacy.exists():
            return PooledStore(legacy, self.stores, self.gate)
        return self.shards.tables(endpoint_id, create=create)

    def endpoint(self, endpoint_id: str, *, create: bool = False, for_agent: bool = False) -> LocalEndpoint | None:
        """The actor for ``endpoint_id``; None when it was never registered (no file is made).

        Actors are keyed by the id's lower case: on a case-insensitive file system "LAPTOP"
        and "laptop" name one file, which must never be open in two actors. The actor found
        answers only for the id it holds (any other case is 404 ``unknown_endpoint``).

        The first time an actor opens in this process it is started: its alarm is armed from
        its rows (a due one fires at once) and its fleet line is rewritten offline — no agent
        can be connected to an actor that was not open. ``for_agent``: its agent's socket is
        about to be accepted, whose ``agent_opened`` arms the alarm and rewrites the line in its
        own event (``start_for_agent``) — after a restart every agent reconnects, and starting
        each actor first cost a second transaction per agent."""
        actor = self.endpoints.get(endpoint_id.lower())
        if actor is None:
            store = self._store(endpoint_id, create=create) if ENDPOINT_ID_RE.fullmatch(endpoint_id) else None
            if store is None:
                return None
            actor = LocalEndpoint(self, endpoint_id, store)
            self.endpoints[endpoint_id.lower()] = actor
        if not actor.started and not for_agent:
            actor.started = True
            alarm_at, summary = actor.actor.opened(now_ms())
            actor.arm(alarm_at)
            if summary is not None:
                self.push_fleet_line(summary)
        return actor

    async def start(self) -> None:
        """Every endpoint offline in the fleet, then open every actor in the background.

        Opening an endpoint's file costs about a millisecond, so a bridge with thousands of
        endpoints would otherwise refuse connections for seconds after a restart (and the
        agents' reconnect backoff would grow meanwhile). It listens at once instead; an actor
        the background pass has not reached yet is opened (and started) by whatever touches it.
        """
        self.fleet.all_offline(now_ms())
        self.spawn(self._open_all())

    async def _open_all(self) -> None:
        legacy = [
            path.stem for path in (self.data / "endpoints").glob("*.sqlite3") if not path.stem.startswith("shard-")
        ]
        # Shard files first, on threads: opening one after a kill -9 recovers its write-ahead
        # log, which SQLite does without the GIL, while the loop keeps serving.
        await self.shards.open_existing(asyncio.get_running_loop())
        for i, endpoint_id in enumerate(sorted(legacy) + self.shards.endpoint_ids()):
            self.endpoint(endpoint_id)
            if i % 32 == 31:
                # Keep serving sockets and requests meanwhile, and give way to them: an actor
                # its returning agent reaches first needs no start of its own (one event less
                # per agent), and an idle loop still opens 10,000 actors in a few seconds.
                await asyncio.sleep(START_PASS_PAUSE_S)
        self.flush_fleet()
        self.started.set()

    async def stop(self) -> None:
        self.closing = True
        for actor in self.endpoints.values():
            actor.arm(None)
            for ws in list(actor.sockets):
                await ws.close(code=1001, message=b"bridge shutting down")
        for task in list(self.tasks):
            task.cancel()
        self.flush_fleet()
        for actor in self.endpoints.values():
            actor.store.close()
        self.shards.close()
        self.fleet_store.close()
        self.gate.close()
        await self.sender.close()

    # --- gateway's Actors ----------------------------------------------------------------------

    async def fleet_call(self, req: ApiRequest) -> ApiResponse:
        if req.path not in (AUTHENTICATE_PATH, POLICY_PATH):
            self.flush_fleet()
        else:
            # Authentication reads tokens, and for a scoped token the named endpoint's line
            # (its client); the policy of a create reads the named endpoint's client and site.
            # A line waiting in the batch that moves or removes the endpoint is written first
            # (a read to compare; the write only when the record changed). Flushing the whole
            # batch here instead put a synchronous commit on the loop in front of every create.
            endpoint_id = req.json().get("endpoint_id")
            line = self._fleet_lines.get(endpoint_id) if isinstance(endpoint_id, str) else None
            if line is not None and self.fleet.record_differs(line):
                del self._fleet_lines[str(endpoint_id)]
                self.fleet_store.transaction(lambda: self.fleet.update_endpoint(line, now_ms()))
        await self.gate.wait_for(self._fleet_commit)  # the lines it reads are on disk (``flush_fleet``)
        return self.fleet.handle(req, now_ms())

    async def endpoint_call(self, endpoint_id: str, req: ApiRequest) -> ApiResponse:
        route = match(req.method, req.path)
        await self.shards.ready(endpoint_id)  # its shard opened off the loop, after a restart
        actor = self.endpoint(endpoint_id, create=route.op == "create_enrollment")
        if actor is None:
            if route.op == "agent_enroll":
                return ApiError(
                    401, "invalid_enrollment_token", "the enrollment token is unknown, already used or expired"
                ).response()
            return ApiError(404, "unknown_endpoint", f"endpoint {endpoint_id!r} is not registered").response()
        try:
            refusal = admission.request_refusal(actor.actor.store, route_for_actor(req), req, now_ms())  # reads only
        except ApiError as exc:
            refusal = exc.response()
        if refusal is not None:
            return refusal
        response, effects = actor.actor.handle(req, now_ms(), actor.connected)
        await actor.perform(effects)
        if actor.actor.endpoint_id is None:
            self._discard(actor)  # a refused first enrollment leaves no file behind
        return response

    def _discard(self, actor: LocalEndpoint) -> None:
        """Close and delete the file of an actor that registered nothing."""
        actor.arm(None)
        self.endpoints.pop(actor.endpoint_id.lower(), None)
        if isinstance(actor.store, EndpointTables):
            actor.store.shard.drop(actor.store)
            return
        actor.store.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{actor.store.path}{suffix}")

    # --- aiohttp -------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        if (
            request.method == "GET"
            and request.path.endswith("/agent")
            and request.headers.get("upgrade", "").lower() == "websocket"
        ):
            return await self.agent_socket(request)
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _to_aiohttp(
                ApiError(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes").response()
            )
        try:
            body = await _read_bounded(request.content, MAX_BODY_BYTES)
        except (ConnectionError, asyncio.IncompleteReadError):
            body = b""
        api_request = ApiRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            # A repeated parameter: the last one counts, as the Worker's parse_qsl has it (dict() of
            # aiohttp's MultiDict kept the first: ?include_removed=0&include_removed=1 differed).
            query={k: v for k, v in request.query.items()},
        )
        response = await gateway.dispatch(api_request, _Actors(self))
        return _to_aiohttp(response)

    async def agent_socket(self, request: web.Request) -> web.StreamResponse:
        endpoint_id = request.match_info.get("eid", "")
        secret = ApiRequest("GET", request.path, {k.lower(): v for k, v in request.headers.items()}).bearer()
        # The request alone first, then reads only (``worker.admission``), as on Cloudflare.
        refusal = admission.agent_secret_shape(secret)
        if refusal is None:
            await self.shards.ready(endpoint_id)  # its shard opened off the loop, after a restart
        actor = self.endpoint(endpoint_id, for_agent=True) if refusal is None else None
        if refusal is None:
            refusal = (
                admission.agent_refusal(actor.actor.store, endpoint_id, secret)
                if actor is not None
                else ApiError(404, "unknown_endpoint", f"endpoint {endpoint_id!r} is not registered").response()
            )
        if refusal is not None:
            return _to_aiohttp(refusal)
        assert actor is not None
        ws = web.WebSocketResponse(max_msg_size=WS_READ_LIMIT, heartbeat=None)
        if not ws.can_prepare(request).ok:
            # aiohttp would answer its own text/plain 400 (found by the OpenAPI property test).
            # On Cloudflare the runtime does the handshake.
            return _to_aiohttp(
                ApiError(
                    400,
                    "invalid_websocket_handshake",
                    "a WebSocket upgrade needs Connection: Upgrade, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
                ).response()
            )
        await ws.prepare(request)
        guard = request.app.get(GUARD_KEY)
        if guard is not None:
            guard.release(request.protocol)  # an authenticated agent: no longer an anonymous connection
        self.agent_sockets += 1
        self.stores.trim()  # a socket more: fewer files may stay open
        try:
            for older in list(actor.sockets):
                await older.close(code=4000, message=b"replaced by a newer connection")
            actor.sockets = [ws]
            # An actor first touched by this socket (after a restart every agent returns) has no
            # alarm armed: nothing can reach the agent before its first frame, so the socket's
            # opening is recorded with that frame, normally its hello — one event per returning
            # agent instead of two. An agent silent for a liveness window is recorded then.
            opened = actor.started
            if not actor.started:  # its first event here: the line is rewritten whatever it held
                actor.started = True
                actor.actor.rewrite_next_line()
                actor.unopened.add(ws)
            else:
                await actor.perform(actor.actor.agent_opened(now_ms()))
            accepted_ms = now_ms()

            async def record_opening() -> None:
                """In an event of its own: a ping came first, or nothing within a liveness
                window (its alarm, armed now, finds the agent silent since it was accepted)."""
                nonlocal opened
                opened = True
                actor.unopened.discard(ws)
                await actor.perform(actor.actor.agent_opened(accepted_ms))

            while True:
                try:
                    msg = await ws.receive(timeout=None if opened else self.config.liveness_ms / 1000)
                except TimeoutError:
                    await record_opening()
                    continue
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if msg.type == WSMsgType.TEXT and msg.data == wire.PING_FRAME:
                    # Not offered here (no digest_ms in hello.ok), but answered as the Worker's
                    # runtime answers it: a pong, and proof of life for the actor's liveness.
                    if not opened:
                        await record_opening()
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.send_str(wire.PONG_FRAME)
                    actor.actor.agent_pinged(now_ms())
                elif msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
                    # DESIGN §10: signed answers are verified here, the actor checks the result.
                    claims = verified(actor.actor.signature_claims(msg.data))
                    actor.unopened.discard(ws)
                    effects = actor.actor.agent_frame(msg.data, now_ms(), claims, opened=not opened)
                    opened = True
                    await actor.perform(effects)
                elif msg.type == WSMsgType.ERROR:
                    log.warning("agent socket error on %s: %s", endpoint_id, ws.exception())
        finally:
            self.agent_sockets -= 1
            actor.unopened.discard(ws)
            if ws in actor.sockets:
                actor.sockets.remove(ws)
            if not self.closing:
                await actor.perform(actor.actor.agent_closed(now_ms(), actor.connected))
        return ws

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 + 1024)
        app.on_response_prepare.append(_security_headers)
        app.router.add_route("GET", "/api/endpoints/{eid}/agent", self.api)
        # ``(?s:…)``: a path may hold a newline (``%0A``); plain ``.*`` stops there and aiohttp
        # would answer its own text 404 instead of the API's JSON error.
        app.router.add_route("*", "/api/{tail:(?s:.*)}", self.api)
        if CONSOLE_DIR.is_dir():
            app.router.add_get("/", _index)
            app.router.add_static("/", CONSOLE_DIR, show_index=False)

        async def on_startup(app: web.Application) -> None:
            await self.start()

        async def on_shutdown(app: web.Application) -> None:
            await self.stop()

        app.on_startup.append(on_startup)
        app.on_shutdown.append(on_shutdown)
        return app


class _Actors:
    def __init__(self, host: LocalBridge) -> None:
        self.host = host

    async def fleet(self, req: ApiRequest) -> ApiResponse:
        return await self.host.fleet_call(req)

    async def endpoint(self, endpoint_id: str, req: ApiRequest) -> ApiResponse:
        return await self.host.endpoint_call(endpoint_id, req)

    async def send_webhook(self, send: dict[str, Any]) -> dict[str, Any]:
        return await self.host.sender.send(send)


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(CONSOLE_DIR / "index.html")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: the API's or the console's security headers, and no version banner."""
    wanted = API_SECURITY_HEADERS if request.path.startswith("/api/") else CONSOLE_SECURITY_HEADERS
    for name, value in wanted.items():
        response.headers[name] = value
    response.headers["Server"] = SERVER_HEADER


# --- slow and idle clients --------------------------------------------------------------------


class ConnectionGuard:
    """Per remote address, a cap on connections that are not an authenticated agent socket,
    and a deadline for a connection's first request headers (issue 11, item 8).

    Installed on aiohttp's ``Server`` (its ``connection_made``/``connection_lost`` hooks, which
    every connection passes). A connection over the cap is answered ``429
    too_many_connections`` and closed at once, before it costs a parser or a task; one whose
    first request has not been parsed by the deadline gets ``408 header_timeout``. Later
    requests on a kept-alive connection are bounded by aiohttp's keep-alive timeout.
    """

    def __init__(self, max_per_address: int, header_timeout_s: float) -> None:
        self.max_per_address = max_per_address
        self.header_timeout_s = header_timeout_s
        self.counts: dict[str, int] = {}
        self._address: dict[Any, str] = {}  # RequestHandler → the address it is counted for
        self.refused = 0
        self.timed_out = 0

    def install(self, server: Any) -> None:
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.made(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.release(handler)
            lost(handler, exc)

        server.connection_made, server.connection_lost = connection_made, connection_lost

    def made(self, handler: Any, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        count = self.counts.get(address, 0)
        if count >= self.max_per_address:
            self.refused += 1
            _refuse_raw(
                transport,
                429,
                "Too Many Requests",
                "too_many_connections",
                f"at most {self.max_per_address} connections per address; close some and retry",
            )
            return
        self.counts[address] = count + 1
        self._address[handler] = address
        if self.header_timeout_s > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(self.header_timeout_s, self._deadline, handler, transport)

    def release(self, handler: Any) -> None:
        """The connection closed, or became an agent socket: it no longer counts."""
        address = self._address.pop(handler, None)
        if address is None:
            return
        left = self.counts.get(address, 1) - 1
        if left > 0:
            self.counts[address] = left
        else:
            self.counts.pop(address, None)

    def _deadline(self, handler: Any, transport: asyncio.Transport) -> None:
        # aiohttp counts the requests it has parsed on a connection; it has no public name for it.
        if transport.is_closing() or getattr(handler, "_request_count", 1) > 0:
            return
        self.timed_out += 1
        _refuse_raw(
            transport,
            408,
            "Request Timeout",
            "header_timeout",
            f"the request headers were not complete within {self.header_timeout_s:g} s",
        )


def _refuse_raw(transport: asyncio.Transport, status: int, reason: str, code: str, message: str) -> None:
    """Answer on the raw transport (no request was parsed) and close."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += ["Connection: close", f"Server: {SERVER_HEADER}"]
    head += [f"{name}: {value}" for name, value in API_SECURITY_HEADERS.items()]
    with contextlib.suppress(ConnectionError, RuntimeError):
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    transport.close()


GUARD_KEY = web.AppKey("caisey_connection_guard", ConnectionGuard)


class _GuardedRunner(web.AppRunner):
    """``AppRunner`` whose server passes every connection through a ``ConnectionGuard``."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        self.guard.install(server)
        return server


def run(app: web.Application, host: str, port: int, guard: ConnectionGuard, access_log: bool = False) -> None:
    """``web.run_app`` with the guard installed: serve until SIGTERM/SIGINT, then shut down
    gracefully (close sockets, cancel timers, close files)."""
    app[GUARD_KEY] = guard

    async def main() -> None:
        runner = _GuardedRunner(
            app,
            guard,
            handle_signals=True,
            shutdown_timeout=5,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
            # A line per request costs the event loop about as much as a receipt; opt in.
            access_log=logging.getLogger("aiohttp.access") if access_log else None,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG).start()
            while True:
                await asyncio.sleep(3600)
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# --- data at rest -------------------------------------------------------------------------------


class UnsafeDataDir(Exception):
    """The data directory could be written by other users: refuse to start."""


def secure_data_dir(data: Path) -> None:
    """Make ``data`` private to this user (issue 11, item 5), or raise ``UnsafeDataDir``.

    Prompt texts, technician names and token hashes live here. The directory becomes 0700
    and every file in it 0600 (an older install made them 0755/0644), and from now on the
    process creates files private (umask 077; SQLite creates -wal/-shm with the database's
    mode). A directory another user can write to is refused rather than repaired: whoever
    could write there may already have planted a file or a symlink.
    """
    os.umask(0o077)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    for directory in (data.resolve(), data.resolve() / "endpoints"):  # a symlinked data dir: its target
        if not directory.exists():
            continue
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeDataDir(f"{directory} is not a directory")
        if info.st_mode & 0o022:
            raise UnsafeDataDir(
                f"{directory} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"fix it (chmod 700 {directory}) and check its files"
            )
        os.chmod(directory, 0o700)
        for entry in directory.iterdir():
            if entry.is_file() and not entry.is_symlink():
                os.chmod(entry, 0o600)


async def _read_bounded(stream: StreamReader, limit: int) -> bytes:
    """The body to its end, or its first ``limit + 1`` bytes when it is longer (``ApiRequest``
    then answers 413). ``read(n)`` alone returns only what has arrived: a chunked body sent in
    several writes would be cut short and read as malformed JSON."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await stream.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _to_aiohttp(response: ApiResponse) -> web.Response:
    headers = dict(response.headers)
    if response.text is not None:
        return web.Response(status=response.status, body=response.encoded(), headers=headers)
    if response.body is None:
        return web.Response(status=response.status, headers=headers)
    headers["content-type"] = "application/json"
    return web.Response(status=response.status, body=response.encoded(), headers=headers)


def admin_token(data: Path) -> tuple[str, str | None]:
    """``(hash, token_to_print_once)``: ``CAISEY_ADMIN_TOKEN`` wins, else ``DIR/admin-token``."""
    from_env = os.environ.get("CAISEY_ADMIN_TOKEN")
    if from_env:
        return secret_hash(from_env), None
    path = data / "admin-token"
    if path.exists():
        return secret_hash(path.read_text().strip()), None
    token = Entropy().token("cst_")
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return secret_hash(token), token


def _raise_fd_limit() -> None:
    """One SQLite file and one socket per connected endpoint: lift the soft fd limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(
    data: Path,
    host: str,
    port: int,
    config: BridgeConfig | None = None,
    access_log: bool = False,
    guard: ConnectionGuard | None = None,
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
    allow_private_webhooks: bool = False,
) -> None:
    _raise_fd_limit()
    secure_data_dir(data)
    token_hash, new_token = admin_token(data)
    bridge = LocalBridge(data, token_hash, config, max_endpoints, allow_private_webhooks)
    if new_token is not None:
        print(f"admin token (shown once, also in {data / 'admin-token'}): {new_token}", flush=True)
    print(f"caisey bridge on http://{host}:{port}/ data={data}", flush=True)
    guard = guard or ConnectionGuard(MAX_CONNECTIONS_PER_ADDRESS, HEADER_TIMEOUT_S)
    run(bridge.app(), host, port, guard, access_log)


DEMO_ENDPOINT = "demo-laptop"


async def _start_demo_agent(app: web.Application, data: Path, url: str, admin: str) -> None:
    """Register the demo endpoint, enroll a real agent for it once, and run that agent."""
    import aiohttp

    from agent.store import SECRET_FILE  # the demo is local-only; the Worker never imports this

    state = data / "demo-agent"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # on_startup runs before the site listens: wait for our own port.
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection(*url.removeprefix("http://").rsplit(":", 1))
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    if not (state / SECRET_FILE).exists():
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/api/enrollments",
                json={"endpoint_id": DEMO_ENDPOINT, "label": "Demo laptop (a pretend user answers)"},
                headers={"Authorization": f"Bearer {admin}"},
            ) as r,
        ):
            token = (await r.json())["enrollment_token"]
        enroll = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "enroll",
            "--bridge",
            url,
            "--token-file",
            "-",  # from stdin: a token on the command line shows in `ps`
            "--state-dir",
            str(state),
            env=env,
            stdin=asyncio.subprocess.PIPE,
        )
        await enroll.communicate(token.encode())
    presenter = f"exec:{sys.executable} -m agent.demo_user"
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--presenter", presenter, "--state-dir", str(state), env=env
    )
    app["demo_agent"] = agent
    log.info("demo agent for %s running (pid %d)", DEMO_ENDPOINT, agent.pid)


def demo(data: Path, host: str, port: int) -> None:
    """``serve`` plus a demo endpoint whose real agent answers through a pretend user."""
    _raise_fd_limit()
    secure_data_dir(data)
    token_hash, new_token = admin_token(data)
    admin = os.environ.get("CAISEY_ADMIN_TOKEN") or (data / "admin-token").read_text().strip()
    bridge = LocalBridge(data, token_hash)
    app = bridge.app()
    url = f"http://{host}:{port}"

    async def on_startup(app: web.Application) -> None:
        bridge.spawn(_start_demo_agent(app, data, url, admin))

    async def on_cleanup(app: web.Application) -> None:
        agent = app.get("demo_agent")
        if agent is not None and agent.returncode is None:
            agent.terminate()
            await agent.wait()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    print(f"console: {url}/   sign in with the admin token: {admin}", flush=True)
    print(f"demo endpoint: {DEMO_ENDPOINT} (its agent answers with a pretend user after a few seconds)", flush=True)
    if new_token is not None:
        print(f"(the admin token is also in {data / 'admin-token'}, mode 0600)", flush=True)
    run(app, host, port, ConnectionGuard(MAX_CONNECTIONS_PER_ADDRESS, HEADER_TIMEOUT_S))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="caisey-bridge", description="Caisey bridge (local host)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="serve the API, the agent WebSocket and the console")
    demo_cmd = sub.add_parser("demo", help="serve, plus a demo endpoint with a real agent and a pretend user")
    for cmd in (serve_cmd, demo_cmd):
        cmd.add_argument("--data", type=Path, required=True, help="data directory (SQLite files, admin-token)")
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=8787)
    serve_cmd.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve_cmd.add_argument("--heartbeat-ms", type=int, default=None, help="agent heartbeat interval")
    serve_cmd.add_argument(
        "--max-endpoints",
        type=int,
        default=DEFAULT_MAX_ENDPOINTS,
        help="endpoint quota until an admin changes it (PUT /api/limits)",
    )
    serve_cmd.add_argument(
        "--max-connections-per-address",
        type=int,
        default=MAX_CONNECTIONS_PER_ADDRESS,
        help="connections one remote address may hold, agent sockets aside",
    )
    serve_cmd.add_argument(
        "--header-timeout-s",
        type=float,
        default=HEADER_TIMEOUT_S,
        help="seconds a new connection has to complete its request headers",
    )
    serve_cmd.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        help="let webhooks go to loopback, private and link-local addresses, and over plain http",
    )
    serve_cmd.add_argument(
        "--webhook-retry-base-ms",
        type=int,
        default=None,
        help="base of the webhooks' full-jitter backoff (default 5000; tests shorten it)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGTERM and SIGINT → aiohttp's graceful shutdown (closes sockets, cancels timers, closes files).
    try:
        if args.command == "demo":
            demo(args.data, args.host, args.port)
            return 0
        heartbeat = args.heartbeat_ms
        config = BridgeConfig(heartbeat_ms=heartbeat, liveness_ms=3 * heartbeat) if heartbeat else None
        if args.webhook_retry_base_ms:
            base = max(1, args.webhook_retry_base_ms)
            config = replace(
                config or BridgeConfig(), webhook_retry_base_ms=base, webhook_retry_cap_ms=max(base, 60 * base)
            )
        guard = ConnectionGuard(args.max_connections_per_address, args.header_timeout_s)
        serve(
            args.data,
            args.host,
            args.port,
            config,
            args.access_log,
            guard,
            args.max_endpoints,
            args.allow_private_webhooks,
        )
    except UnsafeDataDir as exc:
        print(f"caisey-bridge: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
