"""Run ``worker/entry.py`` on the stand-in: bindings from ``wrangler.toml``, HTTP, agent
sockets, a virtual clock, alarms and hibernation.

    h = Harness(secrets={"ADMIN_TOKEN_SHA256": sha256_hex(token)})
    r = await h.fetch("POST", "/api/tokens", headers={...}, body=b"...")
    agent = await h.connect_agent("laptop-1", secret)     # AgentClient, or the HttpResponse refusal
    await agent.send(text); frames = agent.received()
    await h.advance(5_000)                                # fires due alarms in time order

What the harness models (see README.md for what it does not):

- ``wrangler.toml`` is the source of truth: ``main``, the Durable Object bindings and their
  class names (which must be exported by the main module and be SQLite classes in
  ``[[migrations]]``), ``[assets]`` with ``run_worker_first`` and its binding.
- The main module is imported as ``entry`` with entropy refused (module top level).
- ``Default`` is constructed for every request. A Durable Object is constructed again for
  an event according to ``hibernation``: ``"always"`` (a new instance for every event —
  the strictest), ``"never"``, or ``"random"`` (seeded). Its SQL database, alarm and
  accepted sockets belong to the object, not the instance.
- Everything runs when the test awaits it; the clock moves only in ``advance``.
- An exception escaping a handler is recorded in ``errors``; with ``strict`` (the default)
  the action that caused it raises ``HandlerError`` once its effects have settled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import mimetypes
import random
import re
import sys
import time
import tomllib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from tests.workers_standin import activate

activate()

import _standin_runtime as rt  # noqa: E402 — the stand-in's path must come first
import workers  # noqa: E402
from _standin_runtime import CLOSED, CLOSING, OPEN, JsException, JsObject, JsProxy, SocketState  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "https://caisey.example.workers.dev"
START_MS = 1_795_683_600_000  # 2026-11-26T09:00:00Z
MAX_ALARMS_PER_ADVANCE = 10_000
# The runtime retries a failed alarm with exponential backoff from 2 s, up to six times.
ALARM_RETRY_BASE_MS = 2_000
ALARM_MAX_RETRIES = 6


class HandlerError(Exception):
    """A Worker or Durable Object handler raised (``Harness.errors`` has the originals)."""


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    web_socket: SocketState | None = None

    def json(self) -> Any:
        import json

        return json.loads(self.body) if self.body else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class ObjectRecord:
    """One Durable Object (namespace + id): what survives its instances."""

    harness: Harness
    namespace: Namespace
    id: rt.DurableObjectId
    db: rt.SqliteDatabase = field(default_factory=rt.SqliteDatabase)
    alarm_ms: int | None = None
    alarm_retries: int = 0
    sockets: list[SocketState] = field(default_factory=list)
    instance: Any = None
    constructions: int = 0
    # The costs the bench's Durable Object cost model reads (issue 12): handler invocations
    # ("wakes": each is one billed request and runs Python), their wall time on this machine,
    # and the agent frames the runtime answered itself (``setWebSocketAutoResponse``).
    wakes: int = 0
    wakes_by_handler: dict[str, int] = field(default_factory=dict)
    handler_s: float = 0.0
    auto_response: tuple[str, str] | None = None
    auto_responses: int = 0

    def live_sockets(self) -> list[SocketState]:
        # Until its webSocketClose has run: OPEN, CLOSING (peer's close) or CLOSED (its own).
        return list(self.sockets)

    @property
    def has_storage(self) -> bool:
        """Whether the runtime keeps (and bills) storage for this object: a SQL statement of
        it wrote, or it set an alarm. Constructing an object or reading creates none."""
        return self.db.writes > 0 or self.alarm_ms is not None


class Namespace(JsProxy):
    """``env.<BINDING>`` for a Durable Object class."""

    def __init__(self, harness: Harness, binding: str, class_name: str) -> None:
        self.harness, self.binding, self.class_name = harness, binding, class_name
        self.records: dict[str, ObjectRecord] = {}

    def idFromName(self, name: str) -> rt.DurableObjectId:
        if not isinstance(name, str):
            raise JsException("TypeError", "idFromName() expects a string")
        return rt.DurableObjectId(hashlib.sha256(f"{self.binding}\0{name}".encode()).hexdigest(), name)

    def idFromString(self, hex_id: str) -> rt.DurableObjectId:
        if not re.fullmatch(r"[0-9a-f]{64}", str(hex_id)):
            raise JsException("TypeError", "Invalid Durable Object ID: must be 64 hex digits")
        known = self.records.get(hex_id)
        return rt.DurableObjectId(hex_id, known.id.name if known else None)

    def newUniqueId(self, options: Any = None) -> rt.DurableObjectId:
        import secrets

        return rt.DurableObjectId(secrets.token_hex(32), None)

    def get(self, object_id: rt.DurableObjectId, options: Any = None) -> Stub:
        if not isinstance(object_id, rt.DurableObjectId):
            raise JsException("TypeError", "get() expects a DurableObjectId")
        return Stub(self, object_id)

    def getByName(self, name: str, options: Any = None) -> Stub:
        return self.get(self.idFromName(name))

    def record(self, object_id: rt.DurableObjectId) -> ObjectRecord:
        key = object_id.toString()
        rec = self.records.get(key)
        if rec is None:
            rec = self.records[key] = ObjectRecord(self.harness, self, object_id)
        return rec


class Stub(JsProxy):
    """A Durable Object stub, as the SDK wraps it: ``await stub.fetch(request_or_url, **init)``."""

    def __init__(self, namespace: Namespace, object_id: rt.DurableObjectId) -> None:
        self._namespace, self.id = namespace, object_id

    @property
    def name(self) -> str | None:
        return self.id.name

    async def fetch(self, resource: Any, **init: Any) -> workers.Response:
        if isinstance(resource, workers.Request):
            request = workers.Request(resource, **init)
            if resource.js_object.body is not None:
                resource.js_object.bodyUsed = True  # the body moved into the subrequest
        else:
            request = workers.Request(resource, **init)
        record = self._namespace.record(self.id)
        return await self._namespace.harness._object_fetch(record, request)


class Assets(JsProxy):
    """``env.ASSETS``: the ``[assets]`` directory, with its ``_headers`` rules (a subset:
    exact paths and one ``*`` splat; ``#`` comments; the file itself is never served)."""

    HEADERS_FILE = "_headers"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.header_rules = self._parse_headers(directory / self.HEADERS_FILE)

    @staticmethod
    def _parse_headers(path: Path) -> list[tuple[str, list[tuple[str, str]]]]:
        rules: list[tuple[str, list[tuple[str, str]]]] = []
        if not path.is_file():
            return rules
        for line in path.read_text().splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line[0].isspace():
                rules.append((line.strip(), []))
            elif rules:
                name, _, value = line.strip().partition(":")
                rules[-1][1].append((name.strip(), value.strip()))
        return rules

    def headers_for(self, path: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        for pattern, pairs in self.header_rules:
            prefix, star, suffix = pattern.partition("*")
            matched = (path.startswith(prefix) and path.endswith(suffix)) if star else path == pattern
            if matched:
                for name, value in pairs:
                    key = name.lower()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def lookup(self, path: str) -> Path | None:
        rel = path.lstrip("/")
        if rel == self.HEADERS_FILE:
            return None  # parsed, never served
        candidates = (
            [rel + "index.html"] if rel == "" or rel.endswith("/") else [rel, rel + ".html", rel + "/index.html"]
        )
        for candidate in candidates:
            target = (self.directory / candidate).resolve()
            if target.is_file() and self.directory.resolve() in target.parents:
                return target
        return None

    def response(self, path: str) -> workers.Response:
        target = self.lookup(path)
        if target is None:
            return workers.Response(None, status=404)
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        headers = {"content-type": ctype, **self.headers_for(path)}
        return workers.Response(target.read_bytes(), status=200, headers=headers)

    async def fetch(self, resource: Any, **init: Any) -> workers.Response:
        url = resource.url if isinstance(resource, workers.Request) else str(resource)
        return self.response(urlsplit(url).path)


class ExecutionContext(JsProxy):
    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    def waitUntil(self, awaitable: Any) -> None:
        self._harness._wait_until(awaitable)

    def passThroughOnException(self) -> None:
        return None


class Env(JsProxy):
    """The Worker's ``env``: bindings, secrets and vars; a missing name is an AttributeError."""

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(name)


class AgentClient:
    """The far end of an accepted WebSocket: the test is the agent."""

    def __init__(self, harness: Harness, state: SocketState) -> None:
        self.harness, self.state = harness, state

    @property
    def server(self) -> SocketState:
        assert self.state.peer is not None
        return self.state.peer

    @property
    def closed(self) -> bool:
        return self.state.ready_state == CLOSED

    @property
    def close_code(self) -> int | None:
        return self.state.close_code

    @property
    def close_reason(self) -> str | None:
        return self.state.close_reason

    def received(self) -> list[str | bytes]:
        """Every frame received and not yet taken, oldest first."""
        frames, self.state.inbox = self.state.inbox, []
        return frames

    async def recv(self, timeout: float = 0.0) -> str:
        """The next text frame. Nothing runs in the background here, so there is nothing to
        wait for: ``TimeoutError`` when none is queued, ``ConnectionError`` once closed."""
        if self.state.inbox:
            frame = self.state.inbox.pop(0)
            if not isinstance(frame, str):
                raise ConnectionError(f"binary frame {frame!r}")
            return frame
        if self.closed:
            raise ConnectionError(f"socket closed: {self.close_code} {self.close_reason!r}")
        raise TimeoutError

    async def send(self, message: str | bytes) -> None:
        if self.closed:
            raise ConnectionError("send on a closed socket")
        server = self.server
        record = server.owner
        pair = record.auto_response if record is not None and server in record.sockets else None
        if pair is not None and isinstance(message, str) and message == pair[0] and server.ready_state == OPEN:
            # The runtime answers it: no handler runs, no instance is constructed, and the
            # socket remembers when (``getWebSocketAutoResponseTimestamp``). Exact match only.
            server.auto_response_ms = self.harness.clock.now_ms
            record.auto_responses += 1
            if self.state.ready_state == OPEN:
                self.state.inbox.append(pair[1])
            return
        payload: Any = message if isinstance(message, str) else rt.JsBuffer(bytes(message))
        await self.harness._act(lambda: self.harness._socket_event(server, "webSocketMessage", payload))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """A clean close from the agent: the object gets ``webSocketClose(ws, code, reason, True)``."""
        if self.closed:
            return
        self.state.ready_state = CLOSED
        self.state.close_code, self.state.close_reason = code, reason
        await self.harness._act(lambda: self.harness._deliver_close(self.server, code, reason, True))

    async def drop(self) -> None:
        """The connection dies without a close frame: ``webSocketClose(ws, 1006, DROPPED_REASON, False)``."""
        if self.closed:
            return
        self.state.ready_state = CLOSED
        self.state.close_code, self.state.close_reason = 1006, ""
        await self.harness._act(lambda: self.harness._deliver_close(self.server, 1006, DROPPED_REASON, False))

    async def fail(self, message: str = "protocol error") -> None:
        """A WebSocket error: ``webSocketError(ws, error)``; the socket is gone afterwards."""
        if self.closed:
            return
        self.state.ready_state = CLOSED
        self.state.close_code, self.state.close_reason = 1006, ""
        server = self.server

        async def deliver() -> None:
            server.ready_state = CLOSING
            try:
                await self.harness._socket_event(server, "webSocketError", JsException("Error", message))
            finally:
                self.harness._forget(server)

        await self.harness._act(deliver)


# What workerd tells the object about a connection that died without a close frame.
DROPPED_REASON = "WebSocket disconnected without sending Close frame."
# The code the agent end answers a close frame with (aiohttp's client replies 1000).
PEER_REPLY_CODE = 1000


class Harness:
    def __init__(
        self,
        root: Path = ROOT,
        *,
        secrets: dict[str, str] | None = None,
        hibernation: str = "always",
        seed: int = 0,
        start_ms: int = START_MS,
        strict: bool = True,
        config: str = "wrangler.toml",
    ) -> None:
        if hibernation not in ("always", "never", "random"):
            raise ValueError("hibernation is 'always', 'never' or 'random'")
        self.root = root
        self.hibernation = hibernation
        self.rng = random.Random(seed)
        self.clock = rt.Clock(start_ms)
        self.strict = strict
        self.errors: list[BaseException] = []
        self._reported = 0
        self._pending: deque[Callable[[], Awaitable[None]]] = deque()
        # Python invocations: every Default request and every Durable Object handler entry
        # (issue 12 item 3 counts them per technician API call).
        self.python_invocations = 0
        self._waiting: list[Awaitable[Any]] = []
        with open(root / config, "rb") as f:
            self.config = tomllib.load(f)
        self._use_clock()
        self.module = self._load_main()
        self.namespaces: dict[str, Namespace] = {}
        values: dict[str, Any] = dict(self.config.get("vars", {}))
        sqlite_classes = {c for m in self.config.get("migrations", []) for c in m.get("new_sqlite_classes", [])}
        exported = getattr(self.module, "__all__", None)
        for binding in self.config.get("durable_objects", {}).get("bindings", []):
            name, class_name = binding["name"], binding["class_name"]
            cls = getattr(self.module, class_name, None)
            if not (inspect.isclass(cls) and issubclass(cls, workers.DurableObject)):
                raise RuntimeError(
                    f"{config}: {name} → {class_name}, which the main module does not define as a DurableObject"
                )
            if exported is not None and class_name not in exported:
                raise RuntimeError(f"{class_name} is not in the main module's __all__: the runtime would not export it")
            if class_name not in sqlite_classes:
                raise RuntimeError(
                    f"{class_name} is not a new_sqlite_classes migration: it would have no ctx.storage.sql"
                )
            values[name] = self.namespaces[name] = Namespace(self, name, class_name)
        assets = self.config.get("assets")
        self.assets: Assets | None = None
        if assets:
            self.assets = Assets(root / assets["directory"])
            if "binding" in assets:
                values[assets["binding"]] = self.assets
        values.update(secrets or {})
        self.env = Env(values)
        default = getattr(self.module, "Default", None)
        if not (inspect.isclass(default) and issubclass(default, workers.WorkerEntrypoint)):
            raise RuntimeError("the main module defines no Default(WorkerEntrypoint)")

    # --- loading ---------------------------------------------------------------------------------

    def _load_main(self) -> ModuleType:
        """Import ``main`` as the module ``entry`` (workerd imports the main module by its file
        name), with entropy refused as at a Worker's top level."""
        path = self.root / self.config["main"]
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        with rt.no_entropy():
            spec.loader.exec_module(module)
        return module

    def _use_clock(self) -> None:
        rt.CLOCK = self.clock

    @property
    def now_ms(self) -> int:
        return self.clock.now_ms

    # --- public actions ---------------------------------------------------------------------------

    async def fetch(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | str | None = None
    ) -> HttpResponse:
        """A request from the internet: static assets first unless ``run_worker_first``, else ``Default``."""
        result: list[HttpResponse] = []

        async def run() -> None:
            result.append(await self._edge_fetch(method, path, headers, body))

        await self._act(run)
        return result[0]

    async def connect_agent(
        self, endpoint_id: str, secret: str | None, *, headers: dict[str, str] | None = None
    ) -> AgentClient | HttpResponse:
        hdrs = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13"}
        hdrs["sec-websocket-key"] = "dGhlIHNhbXBsZSBub25jZQ=="
        if secret is not None:
            hdrs["authorization"] = f"Bearer {secret}"
        hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
        response = await self.fetch("GET", f"/api/endpoints/{endpoint_id}/agent", headers=hdrs)
        if response.status == 101 and response.web_socket is not None:
            return AgentClient(self, response.web_socket)
        return response

    async def advance(self, ms: int) -> None:
        """Let ``ms`` pass, firing every alarm that falls due, in time order."""
        target = self.clock.now_ms + ms

        async def run() -> None:
            fired = 0
            while True:
                due = [r for r in self._records() if r.alarm_ms is not None and r.alarm_ms <= target]
                if not due:
                    break
                record = min(due, key=lambda r: (r.alarm_ms, r.id.toString()))
                assert record.alarm_ms is not None
                self.clock.now_ms = max(self.clock.now_ms, record.alarm_ms)
                await self._fire_alarm(record)
                await self._settle()
                fired += 1
                if fired > MAX_ALARMS_PER_ADVANCE:
                    raise RuntimeError("alarms keep firing without time passing")
            self.clock.now_ms = target

        await self._act(run)

    async def fire_due_alarms(self) -> None:
        await self.advance(0)

    def evict(self) -> None:
        """Hibernate every object now (its next event constructs a new instance)."""
        for record in self._records():
            record.instance = None

    def restart(self) -> None:
        """A runtime restart: instances gone, every socket dropped (the agent sees 1006; the
        object is not told), storage and alarms kept — a pending alarm fires later as due."""
        self._pending.clear()
        for record in self._records():
            record.instance = None
            record.auto_response = None  # held with the sockets; the constructor sets it again
            for state in record.sockets:
                state.ready_state = CLOSED
                if state.peer is not None and state.peer.ready_state != CLOSED:
                    state.peer.ready_state = CLOSED
                    state.peer.close_code, state.peer.close_reason = 1006, ""
            record.sockets = []

    # --- inspection ----------------------------------------------------------------------------------

    def record(self, binding: str, name: str) -> ObjectRecord:
        namespace = self.namespaces[binding]
        return namespace.record(namespace.idFromName(name))

    def alarm_at(self, binding: str, name: str) -> int | None:
        return self.record(binding, name).alarm_ms

    def sql(self, binding: str, name: str, query: str, *params: Any) -> list[dict[str, Any]]:
        """Read an object's database directly (plain sqlite3 rows, for assertions)."""
        cursor = self.record(binding, name).db.conn.execute(query, params)
        columns = [d[0] for d in cursor.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def objects_with_storage(self) -> list[str]:
        """``BINDING/name`` of every Durable Object that has storage (see ``ObjectRecord.has_storage``)."""
        return sorted(f"{r.namespace.binding}/{r.id.name or r.id.toString()}" for r in self._records() if r.has_storage)

    def _records(self) -> list[ObjectRecord]:
        return [r for ns in self.namespaces.values() for r in ns.records.values()]

    # --- the event loop of the stand-in ------------------------------------------------------------------

    async def _act(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._use_clock()
        await fn()
        await self._settle()
        self._raise_new_errors()

    async def _settle(self) -> None:
        """Run what the action set off: queued socket events and ``waitUntil`` work."""
        while self._pending or self._waiting:
            if self._waiting:
                waiting, self._waiting = self._waiting, []
                for awaitable in waiting:
                    try:
                        await awaitable
                    except Exception as exc:
                        self._error(exc)
                continue
            event = self._pending.popleft()
            await event()

    def _wait_until(self, awaitable: Any) -> None:
        self._waiting.append(awaitable)

    def _error(self, exc: BaseException) -> None:
        self.errors.append(exc)

    def _raise_new_errors(self) -> None:
        new = self.errors[self._reported :]
        self._reported = len(self.errors)
        if new and self.strict:
            summary = "; ".join(f"{type(e).__name__}: {e}" for e in new)
            raise HandlerError(f"{len(new)} handler error(s): {summary}") from new[0]

    def _instance(self, record: ObjectRecord) -> Any:
        fresh = (
            record.instance is None
            or self.hibernation == "always"
            or (self.hibernation == "random" and self.rng.random() < 0.5)
        )
        if fresh:
            record.instance = None
            cls = getattr(self.module, record.namespace.class_name)
            record.instance = cls(rt.DurableObjectState(record), self.env)
            record.constructions += 1
        return record.instance

    async def _dispatch(self, record: ObjectRecord, handler: str, *args: Any) -> Any:
        self.python_invocations += 1
        record.wakes += 1
        record.wakes_by_handler[handler] = record.wakes_by_handler.get(handler, 0) + 1
        started = time.perf_counter()
        try:
            instance = self._instance(record)
            method = getattr(instance, handler, None)
            if method is None:
                raise JsException("TypeError", f"{record.namespace.class_name} has no handler {handler}()")
            result = rt.relaxed_call(method, *args)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            record.handler_s += time.perf_counter() - started

    async def _edge_fetch(
        self, method: str, path: str, headers: dict[str, str] | None, body: bytes | str | None
    ) -> HttpResponse:
        if self.assets is not None and not self._worker_first(path) and self.assets.lookup(path) is not None:
            return self._http(self.assets.response(path))
        request = workers.Request(ORIGIN + path, method=method, headers=headers or {}, body=body)
        self.python_invocations += 1
        default = self.module.Default(ExecutionContext(self), self.env)
        try:
            response = await _call(default.fetch, request)
        except Exception as exc:
            self._error(exc)
            return HttpResponse(500, {"content-type": "text/plain"}, b"Worker threw exception")
        if not isinstance(response, workers.Response):
            self._error(TypeError(f"Default.fetch returned {type(response).__name__}, not a Response"))
            return HttpResponse(500, {"content-type": "text/plain"}, b"Worker threw exception")
        return self._http(response)

    def _http(self, response: workers.Response) -> HttpResponse:
        js = response.js_object
        socket = js.webSocket._state if js.webSocket is not None else None
        if socket is not None and (socket.role != "client" or socket.accepted):
            raise JsException("TypeError", "the WebSocket in a 101 response must be the client end of a pair")
        return HttpResponse(js.status, response.headers, js.body or b"", socket)

    def _worker_first(self, path: str) -> bool:
        rule = (self.config.get("assets") or {}).get("run_worker_first", False)
        if isinstance(rule, bool):
            return rule
        positive = [p for p in rule if not p.startswith("!")]
        negative = [p[1:] for p in rule if p.startswith("!")]
        return any(_glob(p, path) for p in positive) and not any(_glob(p, path) for p in negative)

    async def _object_fetch(self, record: ObjectRecord, request: workers.Request) -> workers.Response:
        try:
            result = await self._dispatch(record, "fetch", request)
        except Exception as exc:
            self._error(exc)
            # The caller (a Worker or another object) sees a JS error, not the Python exception.
            raise JsException("Error", f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, workers.Response):
            exc = TypeError(f"{record.namespace.class_name}.fetch returned {type(result).__name__}, not a Response")
            self._error(exc)
            raise JsException("TypeError", str(exc))
        return workers.Response(result.js_object)

    async def _fire_alarm(self, record: ObjectRecord) -> None:
        record.alarm_ms = None  # the alarm is consumed as it fires; the handler may set the next
        info = JsObject({"retryCount": record.alarm_retries, "isRetry": record.alarm_retries > 0})
        try:
            await self._dispatch(record, "alarm", info)
        except Exception as exc:
            self._error(exc)
            if record.alarm_ms is None and record.alarm_retries < ALARM_MAX_RETRIES:
                record.alarm_ms = self.clock.now_ms + ALARM_RETRY_BASE_MS * 2**record.alarm_retries
                record.alarm_retries += 1
            return
        record.alarm_retries = 0

    async def _socket_event(self, server: SocketState, handler: str, *args: Any) -> None:
        record = server.owner
        if record is None or server not in record.sockets:
            return  # a socket the runtime no longer knows (restart): the event is lost
        if handler == "webSocketMessage" and server.ready_state != OPEN:
            return  # frames after a close frame are not delivered
        try:
            await self._dispatch(record, handler, rt.WebSocket(server), *args)
        except Exception as exc:
            self._error(exc)

    def _server_closed(self, server: SocketState, code: int, reason: str) -> None:
        """The Worker called ``ws.close(code, reason)`` on an accepted socket: the agent gets
        the close frame at once and replies 1000 (as aiohttp does); after the current event the
        object still gets ``webSocketClose`` with that reply's code, the socket listed CLOSED
        (WORKERS_RUNTIME.md "Observed later")."""
        client = server.peer
        if client is not None and client.ready_state != CLOSED:
            client.ready_state = CLOSED
            client.close_code, client.close_reason = code, reason
        self._pending.append(lambda: self._deliver_close(server, PEER_REPLY_CODE, "", True, during=CLOSED))

    async def _deliver_close(
        self, server: SocketState, code: int, reason: str, was_clean: bool, *, during: int = CLOSING
    ) -> None:
        if server.owner is None or server not in server.owner.sockets:
            return
        # While webSocketClose runs the socket is still listed by getWebSockets(): CLOSING
        # when the peer started the close, CLOSED when the object did.
        server.ready_state = during
        try:
            await self._socket_event(server, "webSocketClose", code, reason, was_clean)
        finally:
            self._forget(server)

    def _forget(self, server: SocketState) -> None:
        server.ready_state = CLOSED
        record = server.owner
        if record is not None and server in record.sockets:
            record.sockets.remove(server)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = rt.relaxed_call(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _glob(pattern: str, path: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), path) is not None


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = ["ORIGIN", "START_MS", "AgentClient", "HandlerError", "Harness", "HttpResponse", "sha256_hex"]
