"""HTTP API shapes and routes, identical on both hosts (DESIGN §8).

Hosts turn their native request into an ``ApiRequest`` and an ``ApiResponse`` back into
theirs; everything between — routing, authentication, the actors' answers — is shared.
Headers are lower-cased. Errors are ``{"error": {"code", "message"}}``.

Internal headers (``x-caisey-*``) carry what the gateway established (the technician's
name and role) to the actors. The gateway strips any a client sends.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from caisey import text, wire

# A create is a few KiB at most (title 200, message 2000 characters); 64 KiB leaves room for
# any sane client and keeps a hostile body from costing memory before it is refused.
MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_TOKEN_CHARS = 256

TECHNICIAN_HEADER = "x-caisey-technician"
ROLE_HEADER = "x-caisey-role"
# The clients a scoped technician token may see (DESIGN §12), as a JSON list; absent for an
# unscoped token. Fleet-wide routes filter by it; routes naming an endpoint were checked by
# the gateway before they reach an actor (``worker.scope``).
CLIENTS_HEADER = "x-caisey-clients"

ENDPOINT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

# Device names Windows reserves in every directory, with any extension ("nul.sqlite3" is
# the null device there): an endpoint's file on the local host is "<endpoint_id>.sqlite3".
RESERVED_DEVICE_NAMES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(10)] + [f"lpt{i}" for i in range(10)]
)

# Security headers (issue 11 item 4), the same on both hosts. The API answers JSON only:
# nothing in it may run, be framed or be cached (bodies carry tokens, secrets and prompts).
API_SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
# The console: its own scripts, styles, images and API calls only; never framed (a framed
# console could be clickjacked into cancelling or re-issuing prompts). Kept in step with
# console_static/_headers, which Cloudflare applies to the static assets (a test checks).
CONSOLE_SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def endpoint_id_problem(endpoint_id: object) -> str | None:
    """Why ``endpoint_id`` cannot name a new endpoint, or None when it can.

    Ids are compared case-insensitively (a file system may be), so the case is kept but
    never makes an id distinct; the fleet index refuses a second id differing only in case.
    """
    if not isinstance(endpoint_id, str) or not ENDPOINT_ID_RE.fullmatch(endpoint_id):
        return "endpoint_id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    if endpoint_id.split(".", 1)[0].lower() in RESERVED_DEVICE_NAMES:
        return f"endpoint_id {endpoint_id!r} is a reserved device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9)"
    return None


def idempotency_key_ok(key: str) -> bool:
    """1-128 characters of Unicode text. aiohttp hands header bytes that are not UTF-8 over as
    lone surrogates, which SQLite cannot bind (a 500, found by the OpenAPI property test)."""
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and not any("\ud800" <= c <= "\udfff" for c in key)


def label_problem(label: object) -> str | None:
    """Why ``label`` cannot be an endpoint's label, or None when it can (one line, no controls)."""
    if not isinstance(label, str) or len(label) > wire.MAX_NAME_CHARS:
        return f"label must be a string of at most {wire.MAX_NAME_CHARS} characters"
    return text.check(label, "label")


# Clients and sites (DESIGN §12): 1-64 characters, ASCII letters, digits, space and
# ``. _ - & ' ( )``, starting and ending with a letter, digit or one of ``. _ - & ' ( )``
# (never a space); compared ignoring case, like endpoint ids ("Acme" and "ACME" are one client).
CLIENT_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._&'()-]{0,62}[A-Za-z0-9._&'()-])?$")
CLIENT_RULE = (
    "1-64 ASCII letters, digits, spaces and . _ - & ' ( ), starting with a letter or digit, not ending with a space"
)


def client_problem(value: object, name: str = "client") -> str | None:
    """Why ``value`` cannot be a client (or site) name, or None when it can."""
    if not isinstance(value, str) or not CLIENT_RE.fullmatch(value):
        return f"{name} must be {CLIENT_RULE}"
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ``json.loads`` with a keyword builds a new decoder (and its scanner) on every call.
_BODY_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


@dataclass(slots=True)
class ApiRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    query: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def bearer(self) -> str | None:
        value = self.header("authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, or ``ApiError`` 400/413."""
        if len(self.body) > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
        if not self.body.strip():
            return {}
        try:
            # NaN and ±Infinity are not JSON (RFC 8259), though Python's parser takes them.
            # What ``json.loads`` does, with one decoder kept for every request.
            body = self.body
            text = body if isinstance(body, str) else body.decode(json.detect_encoding(body), "surrogatepass")
            value = _BODY_DECODER.decode(text)
        except (ValueError, RecursionError):
            raise ApiError(400, "malformed_json", "request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ApiError(400, "malformed_json", "request body must be a JSON object")
        return value


@dataclass(slots=True)
class ApiResponse:
    status: int
    body: Any = None  # JSON-able, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)
    # A body that is not JSON (the audit export's JSON Lines); ``headers`` names its type.
    text: str | None = None

    def encoded(self) -> bytes:
        if self.text is not None:
            return self.text.encode("utf-8")
        return b"" if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()


class ApiError(Exception):
    """An answer the API gives on purpose: status, stable code, human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        extra: dict[str, Any] | None = None,
        *,
        rule: str | None = None,  # 422 policy_violation: the policy field broken (DESIGN §13)
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.extra, self.rule = status, code, message, extra or {}, rule

    def response(self) -> ApiResponse:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.rule is not None:
            body["error"]["rule"] = self.rule
        body.update(self.extra)
        return ApiResponse(self.status, body)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: ``actor`` is ``fleet`` or ``endpoint``; ``auth`` is who may call."""

    actor: str
    op: str
    auth: str  # "admin", "technician", "agent_secret", "enrollment_token", "public"
    endpoint_id: str | None = None
    prompt_id: str | None = None
    name: str | None = None  # a token's or webhook's name; a client's (policies)
    site: str | None = None


_SITE_POLICY = r"^/api/clients/(?P<client>[^/]+)/sites/(?P<site>[^/]+)/policy$"

# Every route is documented in worker/openapi.py (operationId = op, x-caisey-auth = auth, the
# path template with {eid}/{pid}/{name} for the named groups): tests/test_openapi.py fails
# until a route added here is documented there and in README's API table.
_ROUTES: list[tuple[str, re.Pattern[str], str, str, str]] = [
    # method, path pattern, actor, op, auth
    ("GET", re.compile(r"^/api/openapi\.json$"), "gateway", "get_openapi", "public"),
    ("POST", re.compile(r"^/api/tokens$"), "fleet", "create_token", "admin"),
    ("DELETE", re.compile(r"^/api/tokens/(?P<name>[^/]+)$"), "fleet", "revoke_token", "admin"),
    ("GET", re.compile(r"^/api/tokens$"), "fleet", "list_tokens", "admin"),
    ("GET", re.compile(r"^/api/whoami$"), "fleet", "whoami", "technician"),
    ("GET", re.compile(r"^/api/endpoints$"), "fleet", "list_endpoints", "technician"),
    ("GET", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)$"), "endpoint", "get_endpoint", "technician"),
    ("PATCH", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)$"), "endpoint", "update_endpoint", "admin"),
    ("DELETE", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)$"), "endpoint", "remove_endpoint", "admin"),
    ("GET", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/audit$"), "endpoint", "export_audit", "technician"),
    ("GET", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/stats$"), "endpoint", "get_stats", "technician"),
    ("GET", re.compile(r"^/api/patterns$"), "fleet", "patterns", "technician"),
    ("GET", re.compile(r"^/api/limits$"), "fleet", "get_limits", "technician"),
    ("PUT", re.compile(r"^/api/limits$"), "fleet", "set_limits", "admin"),
    ("POST", re.compile(r"^/api/enrollments$"), "endpoint", "create_enrollment", "technician"),
    ("POST", re.compile(r"^/api/agent/enroll$"), "endpoint", "agent_enroll", "enrollment_token"),
    ("POST", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/prompts$"), "endpoint", "create_prompt", "technician"),
    ("GET", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/prompts$"), "endpoint", "list_prompts", "technician"),
    (
        "GET",
        re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/prompts/(?P<pid>[^/]+)$"),
        "endpoint",
        "get_prompt",
        "technician",
    ),
    (
        "POST",
        re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/prompts/(?P<pid>[^/]+)/cancel$"),
        "endpoint",
        "cancel_prompt",
        "technician",
    ),
    (
        "POST",
        re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/prompts/(?P<pid>[^/]+)/retry$"),
        "endpoint",
        "retry_prompt",
        "technician",
    ),
    ("GET", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/agent$"), "endpoint", "agent_connect", "agent_secret"),
    # Issue 13: escalation, webhooks (DESIGN §11) and the fleet settings.
    (
        "POST",
        re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/prompts/(?P<pid>[^/]+)/escalate$"),
        "endpoint",
        "escalate_prompt",
        "technician",
    ),
    # Issue 16: the technician revokes an approval window (DESIGN §13).
    (
        "POST",
        re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/prompts/(?P<pid>[^/]+)/revoke$"),
        "endpoint",
        "revoke_window",
        "technician",
    ),
    ("POST", re.compile(r"^/api/webhooks$"), "fleet", "create_webhook", "admin"),
    ("GET", re.compile(r"^/api/webhooks$"), "fleet", "list_webhooks", "admin"),
    ("DELETE", re.compile(r"^/api/webhooks/(?P<name>[^/]+)$"), "fleet", "delete_webhook", "admin"),
    ("POST", re.compile(r"^/api/webhooks/(?P<name>[^/]+)/test$"), "fleet", "test_webhook", "admin"),
    ("GET", re.compile(r"^/api/settings$"), "fleet", "get_settings", "technician"),
    ("PUT", re.compile(r"^/api/settings$"), "fleet", "set_settings", "admin"),
    # Issue 16: consent policies per client, site and endpoint (``worker.policies``, DESIGN §13).
    ("GET", re.compile(r"^/api/policies$"), "fleet", "list_policies", "admin"),
    ("GET", re.compile(r"^/api/clients/(?P<client>[^/]+)/policy$"), "fleet", "get_client_policy", "admin"),
    ("PUT", re.compile(r"^/api/clients/(?P<client>[^/]+)/policy$"), "fleet", "put_client_policy", "admin"),
    ("DELETE", re.compile(r"^/api/clients/(?P<client>[^/]+)/policy$"), "fleet", "delete_client_policy", "admin"),
    ("GET", re.compile(_SITE_POLICY), "fleet", "get_site_policy", "admin"),
    ("PUT", re.compile(_SITE_POLICY), "fleet", "put_site_policy", "admin"),
    ("DELETE", re.compile(_SITE_POLICY), "fleet", "delete_site_policy", "admin"),
    ("GET", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/policy$"), "fleet", "get_endpoint_policy", "technician"),
    ("PUT", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/policy$"), "fleet", "put_endpoint_policy", "admin"),
    ("DELETE", re.compile(r"^/api/endpoints/(?P<eid>[^/]+)/policy$"), "fleet", "delete_endpoint_policy", "admin"),
]


# ``match`` runs 3-4 times for one request (the gateway, the host, admission, the actor), each a
# scan of every route's pattern (15-18 µs); its answers for recent short paths are kept. A
# ``Route`` is immutable and refusals (``ApiError``) are not kept, so answers stay the same.
MATCH_CACHE_SIZE = 1024
MATCH_CACHE_MAX_PATH = 256  # a longer path is matched afresh: the cache's memory stays small


def match(method: str, path: str) -> Route:
    """The route for a request, or ``ApiError`` 404/405."""
    if len(path) <= MATCH_CACHE_MAX_PATH:
        return _match_recent(method, path)
    return _match(method, path)


def _match(method: str, path: str) -> Route:
    path_known = False
    for route_method, pattern, actor, op, auth in _ROUTES:
        m = pattern.match(path)
        if not m:
            continue
        path_known = True
        if route_method != method:
            continue
        groups = m.groupdict()
        eid = groups.get("eid")
        if eid is not None and not ENDPOINT_ID_RE.fullmatch(eid):
            raise ApiError(400, "invalid_endpoint_id", "endpoint ids are 1-64 letters, digits, '.', '_' or '-'")
        return Route(
            actor,
            op,
            auth,
            endpoint_id=eid,
            prompt_id=groups.get("pid"),
            name=groups.get("name") or groups.get("client"),
            site=groups.get("site"),
        )
    if path_known:
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
    raise ApiError(404, "not_found", f"no such API path: {path[:200]}")


_match_recent = functools.lru_cache(maxsize=MATCH_CACHE_SIZE)(_match)


ENDPOINT_HEADER = "x-caisey-endpoint"  # set by the gateway when the endpoint is not in the path


def route_for_actor(req: ApiRequest) -> Route:
    """Inside an actor: the route of a request the gateway forwarded."""
    route = match(req.method, req.path)
    if route.endpoint_id is None and req.header(ENDPOINT_HEADER):
        route = Route(
            route.actor, route.op, route.auth, req.header(ENDPOINT_HEADER), route.prompt_id, route.name, route.site
        )
    return route


def with_etag(req: ApiRequest, body: Any, *, volatile: tuple[str, ...] = ()) -> ApiResponse:
    """200 with a weak ETag over the body, or 304 when the client already has it. Top-level
    ``volatile`` fields (``as_of``: when the answer was computed) are left out of the ETag, else
    it would change on every read and no 304 could ever be answered."""
    import hashlib

    tagged = {k: v for k, v in body.items() if k not in volatile} if volatile else body
    etag = 'W/"' + hashlib.sha256(json.dumps(tagged, sort_keys=True).encode()).hexdigest()[:20] + '"'
    if req.header("if-none-match") == etag:
        return ApiResponse(304, None, {"etag": etag})
    return ApiResponse(200, body, {"etag": etag})
