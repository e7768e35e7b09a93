"""The Cloudflare host: a Python Worker and two Durable Objects around the shared actors.

Deployed by ``wrangler deploy`` (see wrangler.toml), uploaded as the main module ``entry``
next to the packages ``worker`` and ``caisey``. Like the local host it is a thin adapter
(DESIGN §2): no bridge logic lives here.

- ``Default`` (every request): ``/api/*`` goes through ``gateway.dispatch``, whose actors
  are reached by ``stub.fetch`` to their Durable Objects; the agent's WebSocket upgrade is
  forwarded as it is to the endpoint's object; anything else is a static asset (``ASSETS``).
- ``EndpointBridgeObject`` (one per endpoint, named by its id) runs ``EndpointBridge``;
  ``FleetIndexObject`` (one, named ``fleet``) runs ``FleetIndex``.

Every object event is the same four steps as on the local host: feed the actor → send
its frames to the agent socket → close it if asked → set (or delete) the one alarm; then
post the fleet line. The objects keep nothing in instance fields between events: the
runtime may construct a new instance for any event (hibernation), so the truth is in SQL
rows, the alarm and the sockets the runtime holds (``getWebSockets``).

Written for the runtime's built-in ``workers`` SDK (compatibility date before 2026-04-21;
see docs/WORKERS_RUNTIME.md): SQL rows are JsProxy objects and NULL is ``jsnull``, so
rows are converted here; integers are bound within ±2**53 and bools as 0/1; tags for
``acceptWebSocket`` are a JS array. The conversions also accept the external SDK's plain
Python values. Test with the stand-in in tests/workers_standin/.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from js import AbortSignal, Date, Object, WebSocketPair, WebSocketRequestResponsePair, crypto, fetch
from pyodide.ffi import JsException, to_js
from workers import DurableObject, Response, WorkerEntrypoint

from caisey import wire
from caisey.signing import SignatureClaim
from worker import admission, gateway, webhooks
from worker.api import API_SECURITY_HEADERS, MAX_BODY_BYTES, ApiError, ApiRequest, ApiResponse, match, route_for_actor
from worker.endpoint import BridgeConfig, EndpointBridge
from worker.fleet import AUTHENTICATE_PATH, DEFAULT_MAX_ENDPOINTS, SUMMARY_PATH, FleetIndex
from worker.host import Effects, Entropy, Row, SqlValue
from worker.policies import POLICY_PATH
from worker.webhook_subscriptions import REPORT_PATH, TARGETS_PATH

try:
    from pyodide.ffi import jsnull
except ImportError:  # Pyodide 0.26 (Python 3.12) has no jsnull: NULL arrives as None there
    jsnull = None

__all__ = ["Default", "EndpointBridgeObject", "FleetIndexObject"]

log = logging.getLogger("caisey.worker")
T = TypeVar("T")

AGENT_TAG = "agent"  # acceptWebSocket tag of agent sockets
FLEET_OBJECT = "fleet"  # the name of the one FleetIndexObject
# Requests between the Worker and its objects need an absolute URL; the host part is unused.
INTERNAL_ORIGIN = "https://caisey.internal"
WS_OPEN = 1  # WebSocket.readyState
# JS numbers hold integers exactly up to here; beyond, Pyodide passes a BigInt, which the
# SQL API refuses (WORKERS_RUNTIME.md).
MAX_SAFE_INTEGER = 2**53 - 1
# Issue 12: agents that ping send a full heartbeat only this often; their pings in between are
# answered by the runtime (``setWebSocketAutoResponse``) without waking the object. Every 6 min
# is 10 wakes an hour, plus the hourly housekeeping alarm: an idle connected endpoint wakes its
# object at most 12 times an hour (240 with a full heartbeat every 15 s). The alarm checks a
# silent agent once a full heartbeat is overdue; a delivery or a read checks it at once.
DIGEST_EVERY_MS = 6 * 60_000
# Issue 12 item 3: a technician call ran Python three times (this Worker, the fleet object to
# check the token, the endpoint object). Verified tokens are kept per isolate (module scope) by
# the SHA-256 of the token — never the token — with (name, role, verified_at_ms), and trusted
# for TOKEN_CACHE_MS: a revoked token stops working within 60 s on Cloudflare (at once through
# the isolate that revoked it, which drops the name; at once on the local host, which has no
# cache). Only successes are kept, so an unknown token always reaches the fleet object.
# A scoped token (DESIGN §12) calling a route that names an endpoint always reaches the fleet
# object, which checks the endpoint's client (an admin may have moved it meanwhile). Because of
# the cache, a token's ``last_used`` may lag by up to TOKEN_CACHE_MS more than the fleet's own
# once-a-minute write (``fleet.LAST_USED_EVERY_MS``); it still moves while the token is used.
TOKEN_CACHE_MS = 60_000
TOKEN_CACHE_MAX = 1024  # oldest dropped first: an isolate's memory stays bounded
_token_cache: OrderedDict[str, tuple[str, str, list[str] | None, int]] = OrderedDict()
# Issue 16: each endpoint's effective policy (``worker.policies``), which every create needs, is
# kept per isolate for POLICY_CACHE_MS, so a create in steady state is three Python invocations
# (this Worker, the endpoint object, and that object's fleet line), not four. A policy change
# (or a new fleet escalate_after default) reaches creates within 30 s — at once through the
# isolate that made it, which drops its cache; at once on the local host, which has none.
# An answer may hold its client's logo (up to ``wire.MAX_BRAND_LOGO_CHARS``, 16 KiB): the endpoints
# of one client share one copy of it (``_logos``), and at most POLICY_CACHE_MAX answers are kept:
# at worst (every endpoint of another client, each with a maximal logo) about 16 MiB of the
# isolate's 128 MB, usually far less.
POLICY_CACHE_MS = 30_000
POLICY_CACHE_MAX = 1024
_policy_cache: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
_logos: dict[str, str] = {}


def now_ms() -> int:
    return int(Date.now())


# --- SqlStore over ctx.storage.sql -----------------------------------------------------------


def _bindable(value: SqlValue) -> SqlValue:
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return int(value)  # a bound True would be stored as the text 'true'
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is beyond ±2**53 and cannot be bound on Cloudflare")
        return value
    raise TypeError(f"cannot bind a {type(value).__name__} in SQL; serialise it to text first")


def _plain(value: Any) -> Any:
    return None if value is jsnull else value


class DurableSql:
    """``worker.host.SqlStore`` over a Durable Object's SQLite storage."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        rows = self._storage.sql.exec(sql, *[_bindable(p) for p in params]).toArray()
        rows = rows.to_py() if hasattr(rows, "to_py") else rows
        return [{key: _plain(value) for key, value in row.items()} for row in rows]

    def transaction(self, fn: Callable[[], T]) -> T:
        result: T = self._storage.transactionSync(fn)
        return result


# --- signed answers (DESIGN §10) ---------------------------------------------------------------


async def webcrypto_verified(claims: list[SignatureClaim]) -> list[SignatureClaim]:
    """The claims whose Ed25519 signature WebCrypto accepts. Every bytes argument goes through
    ``to_js`` and the usages list is a JS array (WORKERS_RUNTIME.md); a malformed key or
    signature raises instead of answering false, so it counts as not verified."""
    accepted = []
    for claim in claims:
        try:
            key = await crypto.subtle.importKey("raw", to_js(claim.public_key), "Ed25519", False, to_js(["verify"]))
            ok = await crypto.subtle.verify("Ed25519", key, to_js(claim.signature), to_js(claim.message))
        except JsException as exc:
            log.warning("a signature could not be checked: %s", exc)
            continue
        if ok:
            accepted.append(claim)
    return accepted


# --- HTTP between the runtime, the Worker and the objects ----------------------------------------


async def to_api_request(request: Any) -> ApiRequest:
    url = urlsplit(request.url)
    headers = {str(k).lower(): str(v) for k, v in request.headers.items()}
    length = headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:  # "²".isdigit() too
        raise ApiError(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    method = str(request.method)
    body = b"" if method in ("GET", "HEAD") else await request.bytes()
    # Blank values kept, as aiohttp keeps them: "?limit=" is a bad limit on both hosts.
    return ApiRequest(method, url.path, headers, body, dict(parse_qsl(url.query, keep_blank_values=True)))


def to_response(api: ApiResponse) -> Response:
    # The API's security headers (issue 11); the console's come from console_static/_headers.
    headers = dict(api.headers, **API_SECURITY_HEADERS)
    if api.text is not None:
        return Response(api.text, status=api.status, headers=headers)
    if api.body is None:
        return Response(None, status=api.status, headers=headers or None)
    headers["content-type"] = "application/json"
    return Response(api.encoded().decode(), status=api.status, headers=headers)


async def from_response(response: Any) -> ApiResponse:
    text = await response.text()
    content_type = str(response.headers.get("content-type") or "")
    if text and not content_type.startswith("application/json"):
        # Not JSON (the audit export): passed on as it is, with its type.
        headers = {k: v for k, v in response.headers.items() if k != "content-length" and k not in API_SECURITY_HEADERS}
        return ApiResponse(response.status, None, headers, text=text)
    headers = {
        k: v
        for k, v in response.headers.items()
        if k not in ("content-type", "content-length") and k not in API_SECURITY_HEADERS
    }
    return ApiResponse(response.status, json.loads(text) if text else None, headers)


async def call_object(stub: Any, req: ApiRequest) -> ApiResponse:
    """Forward an ``ApiRequest`` to a Durable Object and read its answer back."""
    url = INTERNAL_ORIGIN + req.path + ("?" + urlencode(req.query) if req.query else "")
    body = req.body if req.body and req.method not in ("GET", "HEAD") else None
    response = await stub.fetch(url, method=req.method, headers=dict(req.headers), body=body)
    return await from_response(response)


def endpoint_stub(env: Any, endpoint_id: str) -> Any:
    return env.ENDPOINTS.get(env.ENDPOINTS.idFromName(endpoint_id))


def fleet_stub(env: Any) -> Any:
    return env.FLEET.get(env.FLEET.idFromName(FLEET_OBJECT))


def is_websocket_upgrade(request: Any) -> bool:
    return str(request.headers.get("upgrade") or "").lower() == "websocket"


def bridge_config(env: Any) -> BridgeConfig:
    """The optional ``HEARTBEAT_MS`` var does what the local host's ``--heartbeat-ms`` does."""
    heartbeat = str(getattr(env, "HEARTBEAT_MS", "") or "")
    if heartbeat.isascii() and heartbeat.isdigit() and int(heartbeat) > 0:
        ms = int(heartbeat)
        config = BridgeConfig(
            heartbeat_ms=ms, liveness_ms=3 * ms, digest_every_ms=max(ms, DIGEST_EVERY_MS), webhooks=True
        )
    else:
        config = BridgeConfig(digest_every_ms=DIGEST_EVERY_MS, webhooks=True)
    return _with_webhook_retry_base(env, config)


def _with_webhook_retry_base(env: Any, config: BridgeConfig) -> BridgeConfig:
    """The optional var ``WEBHOOK_RETRY_BASE_MS`` does what ``--webhook-retry-base-ms`` does."""
    raw = str(getattr(env, "WEBHOOK_RETRY_BASE_MS", "") or "")
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        return config
    base = int(raw)
    return replace(config, webhook_retry_base_ms=base, webhook_retry_cap_ms=max(base, 60 * base))


def allow_private_webhooks(env: Any) -> bool:
    """The optional var ``ALLOW_PRIVATE_WEBHOOKS`` ("1"/"true") does what the local host's
    ``--allow-private-webhooks`` does."""
    return str(getattr(env, "ALLOW_PRIVATE_WEBHOOKS", "") or "").strip().lower() in ("1", "true", "yes")


async def fetch_webhook(send: dict[str, Any], allow_private: bool) -> dict[str, Any]:
    """One webhook attempt with the runtime's ``fetch`` (DESIGN §11): POST, no redirects
    followed, aborted after 10 s → ``{event_id, subscription_id, status, error}``. The init is
    a JS object (``to_js`` with ``Object.fromEntries``: a Python dict would reach ``fetch`` as
    a proxy whose method, headers and body it cannot read)."""
    result: dict[str, Any] = {"event_id": send["event_id"], "subscription_id": send["subscription_id"]}
    problem = webhooks.target_problem(send["url"], allow_private)
    if problem is not None:
        return dict(result, status=None, error=f"target refused: {problem}")
    init = {
        "method": "POST",
        "headers": dict(send["headers"]),
        "body": str(send["body"]),
        "redirect": "manual",
        "signal": AbortSignal.timeout(webhooks.ATTEMPT_TIMEOUT_MS),
    }
    try:
        response = await fetch(str(send["url"]), to_js(init, dict_converter=Object.fromEntries))
        status = int(response.status)
    except JsException as exc:
        return dict(result, status=None, error=str(exc)[: webhooks.MAX_ERROR_CHARS])
    return dict(result, status=status, error=None if 200 <= status < 300 else f"HTTP {status}")


class _ObjectActors:
    """``gateway.Actors`` on Cloudflare: each actor is a Durable Object reached by ``stub.fetch``."""

    def __init__(self, env: Any) -> None:
        self.env = env

    async def fleet(self, req: ApiRequest) -> ApiResponse:
        if req.path == AUTHENTICATE_PATH:
            return await self.authenticate(req)
        if req.path == POLICY_PATH:
            return await self.effective_policy(req)
        answer = await call_object(fleet_stub(self.env), req)
        if req.method == "DELETE" and answer.status == 200 and isinstance(answer.body, dict):
            forget_token_name(str(answer.body.get("name")))  # a revocation: at once in this isolate
        if req.method in ("PUT", "DELETE") and (req.path.endswith("/policy") or req.path == "/api/settings"):
            _policy_cache.clear()  # a policy change: at once in this isolate
        return answer

    async def effective_policy(self, req: ApiRequest) -> ApiResponse:
        """The fleet object's answer for an endpoint's effective policy, from this isolate's
        cache when it is younger than ``POLICY_CACHE_MS``."""
        key = str(req.json().get("endpoint_id"))
        now = now_ms()
        cached = _policy_cache.get(key)
        if cached is not None and now - cached[1] < POLICY_CACHE_MS:
            return ApiResponse(200, {"policy": cached[0]})
        answer = await call_object(fleet_stub(self.env), req)
        if answer.status == 200 and isinstance(answer.body, dict) and isinstance(answer.body.get("policy"), dict):
            policy = answer.body["policy"]
            logo = policy.get("brand_logo_png")
            if isinstance(logo, str):
                if len(_logos) >= 64 and logo not in _logos:
                    _logos.clear()  # bounded; a dropped entry only costs a second copy
                policy["brand_logo_png"] = _logos.setdefault(logo, logo)
            _policy_cache[key] = (policy, now)
            _policy_cache.move_to_end(key)
            while len(_policy_cache) > POLICY_CACHE_MAX:
                _policy_cache.popitem(last=False)
        return answer

    async def authenticate(self, req: ApiRequest) -> ApiResponse:
        """The fleet object's token check, answered from this isolate's cache when it verified
        the same token less than ``TOKEN_CACHE_MS`` ago."""
        body = req.json()
        token, need_role = body.get("token"), str(body.get("need_role", "technician"))
        key = hashlib.sha256(token.encode()).hexdigest() if isinstance(token, str) and token.isascii() else None
        now = now_ms()
        cached = _token_cache.get(key) if key is not None else None
        if cached is not None and now - cached[3] < TOKEN_CACHE_MS:
            name, role, clients, _ = cached
            if need_role == "admin" and role != "admin":
                return ApiError(403, "forbidden", "this call needs an admin token").response()
            if clients is None or body.get("endpoint_id") is None:
                return ApiResponse(200, {"name": name, "role": role, "clients": clients})
        answer = await call_object(fleet_stub(self.env), req)
        if key is not None and answer.status == 200 and isinstance(answer.body, dict):
            clients = answer.body.get("clients")
            _token_cache[key] = (
                str(answer.body["name"]),
                str(answer.body["role"]),
                [str(c) for c in clients] if isinstance(clients, list) else None,
                now,
            )
            _token_cache.move_to_end(key)
            while len(_token_cache) > TOKEN_CACHE_MAX:
                _token_cache.popitem(last=False)
        return answer

    async def endpoint(self, endpoint_id: str, req: ApiRequest) -> ApiResponse:
        answer = await call_object(endpoint_stub(self.env, endpoint_id), req)
        if req.method == "PATCH":
            _policy_cache.pop(endpoint_id, None)  # a move to another client or site: at once here
        return answer

    async def send_webhook(self, send: dict[str, Any]) -> dict[str, Any]:
        return await fetch_webhook(send, allow_private_webhooks(self.env))


# --- the Worker ------------------------------------------------------------------------------------


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Response:
        path = urlsplit(request.url).path
        if not path.startswith("/api/"):
            return await self.env.ASSETS.fetch(request)
        try:
            route = match(str(request.method), path)
        except ApiError:
            route = None  # the gateway answers it
        if route is not None and route.op == "agent_connect" and is_websocket_upgrade(request):
            assert route.endpoint_id is not None
            # A missing or malformed secret reaches no object (admission step 1).
            refusal = admission.agent_secret_shape(_bearer(request))
            if refusal is not None:
                return to_response(refusal)
            return await endpoint_stub(self.env, route.endpoint_id).fetch(request)
        try:
            req = await to_api_request(request)
        except ApiError as exc:
            return to_response(exc.response())
        return to_response(await gateway.dispatch(req, _ObjectActors(self.env)))


# --- the Durable Objects -------------------------------------------------------------------------------


class EndpointBridgeObject(DurableObject):
    """One endpoint's ``EndpointBridge``, with its agent socket and its alarm."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.sql = DurableSql(ctx.storage)
        self._actor: EndpointBridge | None = None
        # The runtime answers an agent's exact ping frame itself, without waking this object,
        # and remembers when (``heard_ms``). Set on every construction: it costs nothing (no
        # storage is written), and an object whose sockets were dropped by a restart starts without it.
        ctx.setWebSocketAutoResponse(WebSocketRequestResponsePair.new(wire.PING_FRAME, wire.PONG_FRAME))

    @property
    def actor(self) -> EndpointBridge:
        """Built on first use, per instance; it holds nothing the rows do not. Building it runs
        the migrations, which write: only a request that passed ``worker.admission`` (or an
        event on a socket or alarm that one set up) gets this far."""
        if self._actor is None:
            self._actor = EndpointBridge(self.sql, Entropy(), bridge_config(self.env))
        return self._actor

    def agent_sockets(self, exclude: Any = None) -> list[Any]:
        """Open agent sockets. A closing one is still listed by the runtime; ``exclude`` is
        the one a close event is about (compared with ``==``: each call makes new proxies)."""
        return [
            ws
            for ws in self.ctx.getWebSockets(AGENT_TAG)
            if ws.readyState == WS_OPEN and (exclude is None or ws != exclude)
        ]

    def heard_ms(self) -> int | None:
        """When the runtime last auto-responded to the agent's ping (a JS ``Date``, or ``jsnull``
        before the first one); the newest over the open agent sockets."""
        heard = None
        for ws in self.agent_sockets():
            stamp = _plain(self.ctx.getWebSocketAutoResponseTimestamp(ws))
            if stamp is not None:
                heard = max(heard or 0, int(stamp.getTime()))
        return heard

    async def fetch(self, request: Any) -> Response:
        now = now_ms()
        if is_websocket_upgrade(request):
            return await self.accept_agent(request, now)
        try:
            req = await to_api_request(request)
            refusal = admission.request_refusal(self.sql, route_for_actor(req), req, now)  # reads only
        except ApiError as exc:
            return to_response(exc.response())
        if refusal is not None:
            return to_response(refusal)
        response, effects = self.actor.handle(req, now, bool(self.agent_sockets()), self.heard_ms())
        await self.perform(effects)
        return to_response(response)

    async def accept_agent(self, request: Any, now: int) -> Response:
        route = match(str(request.method), urlsplit(request.url).path)
        refusal = admission.agent_refusal(self.sql, route.endpoint_id or "", _bearer(request))  # reads only
        if refusal is not None:
            return to_response(refusal)
        client, server = WebSocketPair.new()
        for older in self.agent_sockets():
            _close(older, 4000, "replaced by a newer connection")
        self.ctx.acceptWebSocket(server, to_js([AGENT_TAG]))
        await self.perform(self.actor.agent_opened(now))
        return Response(None, status=101, web_socket=client)

    async def webSocketMessage(self, ws: Any, message: Any) -> None:
        if ws.readyState != WS_OPEN:
            return  # a replaced socket still draining: it no longer speaks for the endpoint
        raw = message if isinstance(message, str) else bytes(message.to_bytes())
        if raw == wire.PING_FRAME:  # the runtime did not answer it (not expected): we do
            ws.send(wire.PONG_FRAME)
            await self.perform(self.actor.agent_alive(now_ms()))
            return
        verified = await webcrypto_verified(self.actor.signature_claims(raw))
        await self.perform(self.actor.agent_frame(raw, now_ms(), verified))

    async def webSocketClose(self, ws: Any, code: int, reason: str, was_clean: bool) -> None:
        # Complete the closing handshake (a no-op where the runtime already answered). Only
        # 1000 and 3000-4999 may be sent; 1005/1006 mean "no code" / "abnormal".
        sendable = isinstance(code, int) and (code == 1000 or 3000 <= code <= 4999)
        _close(ws, code if sendable else 1000, str(reason or ""))
        await self.perform(self.actor.agent_closed(now_ms(), bool(self.agent_sockets(exclude=ws))))

    async def webSocketError(self, ws: Any, error: Any) -> None:
        log.warning("agent socket error: %s", error)
        await self.perform(self.actor.agent_closed(now_ms(), bool(self.agent_sockets(exclude=ws))))

    async def alarm(self, alarm_info: Any = None) -> None:
        now = now_ms()
        # The webhook subscriptions, read from the fleet object only when events wait to be sent.
        targets = await self.webhook_targets() if self.actor.wants_targets(now) else None
        await self.perform(self.actor.alarm(now, bool(self.agent_sockets()), self.heard_ms(), targets=targets))

    async def webhook_targets(self) -> list[dict[str, Any]] | None:
        try:
            answer = await call_object(fleet_stub(self.env), ApiRequest("GET", TARGETS_PATH))
        except JsException:
            log.exception("could not read the webhook subscriptions")
            return None  # the events wait; the next alarm (at once) asks again
        return list(answer.body["targets"]) if answer.status == 200 and isinstance(answer.body, dict) else None

    async def perform(self, effects: Effects) -> None:
        """Send → close → arm → notify (the order ``Effects`` documents)."""
        sockets = self.agent_sockets()
        for ws in sockets:
            for frame in effects.send:
                try:
                    ws.send(frame)
                except JsException:
                    break  # the socket went away; the outbox replays what is owed on reconnect
        if effects.close_agent is not None:
            code, reason = effects.close_agent
            for ws in sockets:
                _close(ws, code, reason)
        storage = self.ctx.storage
        if effects.alarm_at_ms is None:
            await storage.deleteAlarm()
        else:
            await storage.setAlarm(effects.alarm_at_ms)
        if effects.fleet_summary is not None:
            await self.notify_fleet(effects.fleet_summary)
        if effects.webhook_reports:
            await self.report_webhooks(effects.webhook_reports)
        if effects.webhooks:
            # Only an alarm hands out webhook attempts, so they run inside the alarm handler,
            # never inside a request's or a frame's: while ``fetch`` waits, the runtime lets
            # the object's other events in (its input gate is open during outbound I/O).
            allow = allow_private_webhooks(self.env)
            results = await asyncio.gather(*(fetch_webhook(send, allow) for send in effects.webhooks))
            await self.perform(self.actor.webhook_results(list(results), now_ms(), bool(self.agent_sockets())))
        if effects.close_agent is not None and sockets:
            # Whether or not the runtime reports our own close back, the agent is gone now.
            after = self.actor.agent_closed(now_ms(), bool(self.agent_sockets()))
            await self.perform(after)

    async def report_webhooks(self, reports: list[dict[str, Any]]) -> None:
        """Delivery outcomes for the fleet's delivery log (a give-up is logged here too)."""
        for report in reports:
            if report["outcome"] in ("gave_up", "disabled"):
                log.warning("webhook %s %s: %s", report["subscription_id"], report["outcome"], report["error"])
        body = json.dumps({"reports": reports}).encode()
        try:
            await call_object(fleet_stub(self.env), ApiRequest("POST", REPORT_PATH, {}, body))
        except JsException:
            log.exception("could not post webhook outcomes to the fleet index")

    async def notify_fleet(self, summary: dict[str, Any]) -> None:
        body = json.dumps(summary).encode()
        try:
            answer = await call_object(fleet_stub(self.env), ApiRequest("POST", SUMMARY_PATH, {}, body))
        except JsException:
            log.exception("could not post the fleet line of %s", summary.get("endpoint_id"))
            return
        if answer.status >= 300:
            log.error("the fleet index refused the line of %s: %s", summary.get("endpoint_id"), answer.body)


class FleetIndexObject(DurableObject):
    """The one ``FleetIndex``: technician tokens and one line per endpoint."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        admin_hash = getattr(env, "ADMIN_TOKEN_SHA256", None)
        self.admin_hash = str(admin_hash).strip().lower() if admin_hash else None
        # The optional var MAX_ENDPOINTS does what the local host's --max-endpoints does.
        max_endpoints = str(getattr(env, "MAX_ENDPOINTS", "") or "")
        self.max_endpoints = (
            int(max_endpoints) if max_endpoints.isascii() and max_endpoints.isdigit() else DEFAULT_MAX_ENDPOINTS
        )
        self.sql = DurableSql(ctx.storage)
        self._index: FleetIndex | None = None

    @property
    def index(self) -> FleetIndex:
        """Built on first use (its migrations write); see ``worker.admission``."""
        if self._index is None:
            self._index = FleetIndex(self.sql, Entropy(), self.admin_hash, self.max_endpoints)
            self._index.webhooks.allow_private = allow_private_webhooks(self.env)
        return self._index

    async def fetch(self, request: Any) -> Response:
        try:
            req = await to_api_request(request)
        except ApiError as exc:
            return to_response(exc.response())
        if req.path == AUTHENTICATE_PATH:
            # A fresh index refuses every token but the admin's without creating its schema.
            refusal = admission.fresh_fleet_authentication(self.sql, self.admin_hash, req)
            if refusal is not None:
                return to_response(refusal)
        return to_response(self.index.handle(req, now_ms()))


def _bearer(request: Any) -> str | None:
    return ApiRequest("GET", "", {"authorization": str(request.headers.get("authorization") or "")}).bearer()


def forget_token_name(name: str) -> None:
    for key in [k for k, (cached_name, _, _, _) in _token_cache.items() if cached_name == name]:
        del _token_cache[key]


def _close(ws: Any, code: int, reason: str) -> None:
    try:
        ws.close(code, reason)
    except JsException:
        log.debug("closing an agent socket that is already closed")
