"""``FleetIndex``: technician tokens and the fleet overview (DESIGN §8).

One instance per deployment (on Cloudflare, the Durable Object named ``fleet``). It holds
the named technician tokens (hashed) and one summary line per endpoint, which the endpoint
actors push whenever their line changes. It never sees prompts themselves: each endpoint's
actor is the only authority over its prompts.
"""

from __future__ import annotations

import json
from typing import Any

from caisey.clock import to_rfc3339
from worker import scope
from worker.api import (
    NAME_RE,
    ROLE_HEADER,
    TECHNICIAN_HEADER,
    ApiError,
    ApiRequest,
    ApiResponse,
    Route,
    client_problem,
    endpoint_id_problem,
    route_for_actor,
    with_etag,
)
from worker.credentials import same_secret, secret_hash
from worker.endpoint_schema import migrate
from worker.host import Entropy, SqlStore
from worker.patterns import PATTERNS_MIGRATION, PatternsCache, patterns, store_summary
from worker.policies import MIGRATION as POLICIES_MIGRATION
from worker.policies import POLICY_PATH, FleetPolicies
from worker.webhook_subscriptions import MIGRATION as WEBHOOKS_MIGRATION
from worker.webhook_subscriptions import REPORT_PATH, SETTINGS_PATH, TARGETS_PATH, WebhookSubscriptions

TECHNICIAN_TOKEN_PREFIX = "cst_"
ROLES = ("admin", "technician")
ADMIN_NAME = "admin"
# Names a token may not take, compared case-insensitively: audit trails (``created_by``,
# ``cancelled_by``, event ``detail.by``) must never show a technician as the built-in admin
# ("Admin", "ADMIN") or as one of the names the bridge itself writes there.
RESERVED_NAMES = frozenset({ADMIN_NAME, "unknown", "system", "bridge", "console", "runtime", "agent", "root"})
# How many endpoints a deployment may register (issue 11: a technician could create them
# without limit). Generous for an MSP — the benchmarks run 10,000 agents on one process —
# yet a runaway script stops here instead of filling the disk. Hosts set the default
# (``--max-endpoints``, the Worker var ``MAX_ENDPOINTS``); an admin may change it at run time.
DEFAULT_MAX_ENDPOINTS = 10_000
MAX_ENDPOINTS_CEILING = 1_000_000
# Internal calls, reachable only from the gateway and the endpoint actors (never routed from outside).
AUTHENTICATE_PATH = "/internal/authenticate"
SUMMARY_PATH = "/internal/endpoint-summary"
CLAIM_PATH = "/internal/claim-endpoint"
# A token's ``last_used`` is written at most this often (one write a minute per token in use,
# not one per request). On Cloudflare the Worker also trusts a verified token for up to
# ``entry.TOKEN_CACHE_MS`` without asking this index, so there ``last_used`` may lag by up to
# that much more: it still moves at least every two minutes while the token is in use.
LAST_USED_EVERY_MS = 60_000

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS tokens (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
            created_at_ms INTEGER NOT NULL, created_by TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS endpoints (
            endpoint_id TEXT PRIMARY KEY, label TEXT NOT NULL, online INTEGER NOT NULL,
            last_seen_ms INTEGER, open_prompts INTEGER NOT NULL, last_outcome TEXT, updated_at_ms INTEGER NOT NULL)""",
    ],
    # Ids and names compare case-insensitively (issue 11): not UNIQUE, so a deployment that
    # already holds two ids differing only in case still migrates; new ones are refused.
    2: [
        "CREATE INDEX IF NOT EXISTS endpoints_nocase ON endpoints (endpoint_id COLLATE NOCASE)",
        "CREATE INDEX IF NOT EXISTS tokens_nocase ON tokens (name COLLATE NOCASE)",
    ],
    # Clients, sites and scoped technicians (DESIGN §12), token last use (issue 17), removal.
    3: [
        "ALTER TABLE tokens ADD COLUMN clients TEXT",
        "ALTER TABLE tokens ADD COLUMN last_used_ms INTEGER",
        "ALTER TABLE endpoints ADD COLUMN client TEXT",
        "ALTER TABLE endpoints ADD COLUMN site TEXT",
        "ALTER TABLE endpoints ADD COLUMN removed_at_ms INTEGER",
        "ALTER TABLE endpoints ADD COLUMN record_seq INTEGER",
        "CREATE INDEX IF NOT EXISTS endpoints_client ON endpoints (client COLLATE NOCASE, site COLLATE NOCASE)",
    ],
    # Webhook subscriptions and their delivery log (issue 13, ``worker.webhook_subscriptions``).
    4: WEBHOOKS_MIGRATION,
    # Issue 14: each endpoint's zone and statistics summary, for GET /api/patterns
    # (``worker.patterns``; idempotent, so it may take any number when merged).
    5: [*PATTERNS_MIGRATION],
    # Issue 16: consent policies per client, site and endpoint (``worker.policies``).
    6: POLICIES_MIGRATION,
}


class FleetIndex:
    def __init__(
        self,
        store: SqlStore,
        entropy: Entropy,
        admin_token_hash: str | None,
        default_max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
    ) -> None:
        self.store = store
        self.entropy = entropy
        self.admin_token_hash = admin_token_hash
        self.default_max_endpoints = default_max_endpoints
        self.patterns_cache = PatternsCache()  # GET /api/patterns between line changes
        # Whether an online line is current whenever it is read: true on the local host, whose
        # actors live in this process, check liveness on every heartbeat and push their lines
        # before a fleet read. False on Cloudflare, where an idle endpoint's object wakes only
        # every few minutes (issue 12): a line is then as old as its ``checked_at``.
        self.lines_are_current = False
        self.webhooks = WebhookSubscriptions(store, entropy)
        self.policies = FleetPolicies(store, self.webhooks.default_escalate_after_ms)
        migrate(store, MIGRATIONS)

    def authenticate(self, token: str | None, need_role: str, now_ms: int = 0) -> tuple[str, str, list[str] | None]:
        """``(name, role, clients)`` of the technician presenting ``token`` (clients None:
        unscoped), or ``ApiError`` 401/403. Notes the token's last use (at most once a minute)."""
        if not token:
            raise ApiError(401, "missing_token", "Authorization: Bearer <technician token> is required")
        if not isinstance(token, str) or not token.isascii():  # tokens are ASCII; a header may not be
            raise ApiError(401, "invalid_token", "the token is unknown or was revoked")
        if same_secret(self.admin_token_hash, token):
            return ADMIN_NAME, "admin", None
        rows = self.store.execute(
            "SELECT name, role, token_hash, clients, last_used_ms FROM tokens WHERE token_hash = ?",
            (secret_hash(token),),
        )
        if not rows or not same_secret(rows[0]["token_hash"], token):
            raise ApiError(401, "invalid_token", "the token is unknown or was revoked")
        name, role = rows[0]["name"], rows[0]["role"]
        last_used = rows[0]["last_used_ms"]
        if now_ms and (last_used is None or now_ms - int(last_used) >= LAST_USED_EVERY_MS):
            self.store.execute("UPDATE tokens SET last_used_ms = ? WHERE name = ?", (now_ms, name))
        if need_role == "admin" and role != "admin":
            raise ApiError(403, "forbidden", "this call needs an admin token")
        return name, role, scope.decode(rows[0]["clients"])

    def _authenticate_call(self, body: dict[str, Any], now_ms: int) -> ApiResponse:
        """The gateway's token check. With ``endpoint_id`` (a route naming an endpoint), a
        scoped token is also checked against that endpoint's client (``worker.scope``)."""
        name, role, clients = self.authenticate(body.get("token"), str(body.get("need_role", "technician")), now_ms)
        endpoint_id = body.get("endpoint_id")
        if clients is not None and endpoint_id is not None:
            rows = self.store.execute("SELECT client FROM endpoints WHERE endpoint_id = ?", (str(endpoint_id),))
            if not rows or not scope.visible(clients, rows[0]["client"]):
                raise scope.unknown_endpoint(str(endpoint_id))
        return ApiResponse(200, {"name": name, "role": role, "clients": clients})

    def handle(self, req: ApiRequest, now_ms: int) -> ApiResponse:
        """A request the gateway forwarded: internal calls first, then the public routes."""
        try:
            if req.path == AUTHENTICATE_PATH:
                return self._authenticate_call(req.json(), now_ms)
            if req.path == SUMMARY_PATH:
                self.update_endpoint(req.json(), now_ms)
                return ApiResponse(204)
            if req.path == CLAIM_PATH:
                return self._claim_endpoint(req.json(), now_ms)
            if req.path == TARGETS_PATH:
                return ApiResponse(200, {"targets": self.webhooks.targets()})
            if req.path == REPORT_PATH:
                return self.webhooks.report(req.json(), now_ms)
            if req.path == SETTINGS_PATH:
                return ApiResponse(200, {"escalate_after_ms": self.webhooks.default_escalate_after_ms()})
            if req.path == POLICY_PATH:
                return self.policies.internal(req.json())
            return self.http(route_for_actor(req), req, now_ms)
        except ApiError as exc:
            return exc.response()

    def http(self, route: Route, req: ApiRequest, now_ms: int) -> ApiResponse:
        try:
            if route.op == "create_token":
                return self._create_token(req, now_ms)
            if route.op == "revoke_token":
                return self._revoke_token(route.name or "")
            if route.op == "list_tokens":
                return self._list_tokens(req)
            if route.op == "whoami":
                return ApiResponse(
                    200,
                    {
                        "name": req.header(TECHNICIAN_HEADER),
                        "role": req.header(ROLE_HEADER),
                        "clients": scope.of_request(req),
                    },
                )
            if route.op == "list_endpoints":
                return self._list_endpoints(req, now_ms)
            if route.op == "patterns":
                return patterns(self.store, req, now_ms, self.patterns_cache)
            if route.op == "get_limits":
                return ApiResponse(200, self._limits())
            if route.op == "set_limits":
                return self._set_limits(req)
            if route.op in FleetPolicies.OPS:
                return self.policies.http(route, req, now_ms, req.header(TECHNICIAN_HEADER) or ADMIN_NAME)
            if route.op in _WEBHOOK_OPS:
                return _WEBHOOK_OPS[route.op](self.webhooks, route, req, now_ms)
            raise ApiError(404, "not_found", f"the fleet index has no operation {route.op!r}")
        except ApiError as exc:
            return exc.response()

    def _create_token(self, req: ApiRequest, now_ms: int) -> ApiResponse:
        body = req.json()
        name, role = body.get("name"), body.get("role", "technician")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ApiError(400, "invalid_field", "name must be 1-64 letters, digits, '.', '_', '@' or '-'")
        if name.lower() in RESERVED_NAMES:
            raise ApiError(
                400, "reserved_name", f"{name!r} is reserved (in any case): {', '.join(sorted(RESERVED_NAMES))}"
            )
        if role not in ROLES:
            raise ApiError(400, "invalid_field", f"role must be one of {', '.join(ROLES)}")
        clients = scope.parse_clients(body.get("clients"))
        if clients is not None and role == "admin":
            raise ApiError(
                400, "invalid_field", "admin tokens cannot be scoped: leave clients out, or use role technician"
            )
        existing = self.store.execute("SELECT name FROM tokens WHERE name = ? COLLATE NOCASE", (name,))
        if existing:
            # "bob" and "Bob" would read as one person in an audit trail.
            raise ApiError(
                409,
                "token_exists",
                f"a token named {existing[0]['name']!r} exists (names ignore case); revoke it first",
            )
        token = self.entropy.token(TECHNICIAN_TOKEN_PREFIX)
        self.store.execute(
            "INSERT INTO tokens (name, role, token_hash, created_at_ms, created_by, clients) VALUES (?, ?, ?, ?, ?, ?)",
            (
                name,
                role,
                secret_hash(token),
                now_ms,
                req.header(TECHNICIAN_HEADER) or ADMIN_NAME,
                scope.encode(clients),
            ),
        )
        # The secret is shown once; only its hash is kept.
        return ApiResponse(
            201, {"name": name, "role": role, "clients": clients, "token": token, "created_at": to_rfc3339(now_ms)}
        )

    def _list_tokens(self, req: ApiRequest) -> ApiResponse:
        """Named tokens without their secrets or hashes (the built-in admin token is not one)."""
        rows = self.store.execute(
            "SELECT name, role, clients, created_at_ms, created_by, last_used_ms FROM tokens ORDER BY name COLLATE NOCASE"
        )
        tokens = [
            {
                "name": row["name"],
                "role": row["role"],
                "clients": scope.decode(row["clients"]),
                "created_at": to_rfc3339(int(row["created_at_ms"])),
                "created_by": row["created_by"],
                "last_used": to_rfc3339(int(row["last_used_ms"])) if row["last_used_ms"] is not None else None,
            }
            for row in rows
        ]
        return with_etag(req, {"tokens": tokens})

    def _revoke_token(self, name: str) -> ApiResponse:
        if not NAME_RE.fullmatch(name) or not self.store.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)):
            raise ApiError(404, "unknown_token", f"no token named {name[:64]!r}")
        self.store.execute("DELETE FROM tokens WHERE name = ?", (name,))
        return ApiResponse(200, {"name": name, "revoked": True})

    # --- endpoint ids and the endpoint quota ----------------------------------------------------

    def max_endpoints(self) -> int:
        rows = self.store.execute("SELECT value FROM meta WHERE key = 'max_endpoints'")
        return int(rows[0]["value"]) if rows else self.default_max_endpoints

    def _endpoint_count(self) -> int:
        return int(self.store.execute("SELECT COUNT(*) AS n FROM endpoints")[0]["n"])

    def _limits(self) -> dict[str, Any]:
        return {"max_endpoints": self.max_endpoints(), "endpoints": self._endpoint_count()}

    def _set_limits(self, req: ApiRequest) -> ApiResponse:
        value = req.json().get("max_endpoints")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ENDPOINTS_CEILING:
            raise ApiError(400, "invalid_field", f"max_endpoints must be an integer from 1 to {MAX_ENDPOINTS_CEILING}")
        self.store.execute(
            "INSERT INTO meta (key, value) VALUES ('max_endpoints', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(value),),
        )
        return ApiResponse(200, self._limits())

    def _claim_endpoint(self, body: dict[str, Any], now_ms: int) -> ApiResponse:
        """Before an enrollment reaches an endpoint's actor: the id is new (within the quota)
        or exactly one already registered, never one differing only in case (issue 11).

        A new id gets its fleet line now, in the fleet's own order, so two racing claims
        cannot both pass and the quota counts it at once; the actor's line replaces it.

        Clients and sites (DESIGN §12): a scoped caller (``scope``, its clients) must name one
        of its clients; an endpoint it cannot see is "taken", never "exists for client X".
        An existing endpoint keeps its client and site: naming others is refused (an admin
        moves an endpoint with ``PATCH /api/endpoints/{eid}``)."""
        endpoint_id = body.get("endpoint_id")
        problem = endpoint_id_problem(endpoint_id)
        if problem is not None:
            raise ApiError(400, "invalid_endpoint_id", problem)
        assert isinstance(endpoint_id, str)
        client, site = body.get("client"), body.get("site")
        for name, value in (("client", client), ("site", site)):
            problem = client_problem(value, name) if value is not None else None
            if problem is not None:
                raise ApiError(400, "invalid_field", problem)
        clients = body.get("scope")
        if clients is not None:
            if client is None:
                raise ApiError(
                    400, "missing_field", f"this token is scoped to clients {', '.join(clients)}: name one as client"
                )
            if not scope.visible(clients, client):
                raise ApiError(
                    403, "client_out_of_scope", f"this token may enroll endpoints of {', '.join(clients)} only"
                )
        rows = self.store.execute(
            "SELECT endpoint_id, client, site FROM endpoints WHERE endpoint_id = ? COLLATE NOCASE", (endpoint_id,)
        )
        if rows and not all(scope.visible(clients, r["client"]) for r in rows):
            raise ApiError(
                409, "endpoint_id_conflict", f"endpoint id {endpoint_id!r} is taken (ids ignore case); choose another"
            )
        exact = next((r for r in rows if r["endpoint_id"] == endpoint_id), None)
        if exact is not None:
            for name, given, held in (("client", client, exact["client"]), ("site", site, exact["site"])):
                if given is not None and given.lower() != (held or "").lower():
                    message = (
                        f"endpoint {endpoint_id!r} belongs to {name} {held!r}; an admin moves it with "
                        f"PATCH /api/endpoints/{endpoint_id}"
                    )
                    # Spelled out: tests/test_openapi.py finds every code the bridge raises by its literal.
                    if name == "client":
                        raise ApiError(409, "client_mismatch", message)
                    raise ApiError(409, "site_mismatch", message)
            return ApiResponse(200, {"endpoint_id": endpoint_id, "new": False})
        if rows:
            # One file on a case-insensitive file system; one person reading "LAPTOP" and "laptop".
            raise ApiError(
                409,
                "endpoint_id_conflict",
                f"endpoint {rows[0]['endpoint_id']!r} exists; ids ignore case, so {endpoint_id!r} would be the same one",
            )
        limit = self.max_endpoints()
        if self._endpoint_count() >= limit:
            raise ApiError(
                429,
                "endpoint_quota_exceeded",
                f"this deployment may register {limit} endpoints; an admin can raise it (PUT /api/limits)",
            )
        line = {"endpoint_id": endpoint_id, "label": "", "online": False, "client": client, "site": site}
        self.update_endpoint(line, now_ms)
        return ApiResponse(200, {"endpoint_id": endpoint_id, "new": True})

    def all_offline(self, now_ms: int) -> None:
        """The local host (re)started: no agent is connected (each actor rewrites its line as it opens)."""
        self.store.execute("UPDATE endpoints SET online = 0, updated_at_ms = ? WHERE online = 1", (now_ms,))
        self.patterns_cache.invalidate()

    def update_endpoint(self, summary: dict[str, Any], now_ms: int) -> None:
        """An endpoint actor's line changed (pushed after its transaction committed).

        Client, site and removal decide who may see the endpoint (``worker.scope``), so an
        older line never undoes them: each line carries ``record_seq``, the audit seq of the
        record change it reflects, and only a line at least as recent replaces them (on
        Cloudflare two lines of one endpoint can arrive out of order)."""
        newer = "excluded.record_seq >= COALESCE(endpoints.record_seq, 0)"
        self.store.execute(
            "INSERT INTO endpoints (endpoint_id, label, online, last_seen_ms, open_prompts, last_outcome, updated_at_ms, "
            "client, site, removed_at_ms, record_seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id) DO UPDATE SET label = excluded.label, "
            "online = excluded.online, last_seen_ms = excluded.last_seen_ms, open_prompts = excluded.open_prompts, "
            "last_outcome = excluded.last_outcome, updated_at_ms = excluded.updated_at_ms, "
            f"client = CASE WHEN {newer} THEN excluded.client ELSE endpoints.client END, "
            f"site = CASE WHEN {newer} THEN excluded.site ELSE endpoints.site END, "
            f"removed_at_ms = CASE WHEN {newer} THEN excluded.removed_at_ms ELSE endpoints.removed_at_ms END, "
            f"record_seq = CASE WHEN {newer} THEN excluded.record_seq ELSE endpoints.record_seq END",
            (
                str(summary["endpoint_id"]),
                str(summary.get("label") or ""),
                1 if summary.get("online") else 0,
                summary.get("last_seen_ms"),
                int(summary.get("open_prompts") or 0),
                json.dumps(summary.get("last_outcome")),
                now_ms,
                summary.get("client"),
                summary.get("site"),
                summary.get("removed_at_ms"),
                int(summary.get("record_seq") or 0),
            ),
        )
        store_summary(self.store, summary, now_ms)
        self.patterns_cache.invalidate()

    def record_differs(self, summary: dict[str, Any]) -> bool:
        """Whether a line changes the endpoint's client, site or removal (reads only)."""
        rows = self.store.execute(
            "SELECT client, site, removed_at_ms, record_seq FROM endpoints WHERE endpoint_id = ?",
            (str(summary["endpoint_id"]),),
        )
        if not rows:
            return True
        held = rows[0]
        return (held["client"], held["site"], held["removed_at_ms"], int(held["record_seq"] or 0)) != (
            summary.get("client"),
            summary.get("site"),
            summary.get("removed_at_ms"),
            int(summary.get("record_seq") or 0),
        )

    def _list_endpoints(self, req: ApiRequest, now_ms: int) -> ApiResponse:
        """The fleet, as the caller may see it: ``?client=&site=`` filter (ignoring case),
        removed endpoints only with ``?include_removed=1``; a scoped token sees its clients'."""
        where, params = [], []
        for name in ("client", "site"):
            if name in req.query:
                problem = client_problem(req.query[name], name)
                if problem is not None:
                    raise ApiError(400, "invalid_query", problem)
                where.append(f"e.{name} = ? COLLATE NOCASE")
                params.append(req.query[name])
        include_removed = req.query.get("include_removed", "0")
        if include_removed not in ("0", "1"):
            raise ApiError(400, "invalid_query", "include_removed must be 0 or 1")
        if include_removed == "0":
            where.append("e.removed_at_ms IS NULL")
        sql = (
            "SELECT e.*, p.time_zone AS time_zone FROM endpoints e "
            "LEFT JOIN endpoint_patterns p ON p.endpoint_id = e.endpoint_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY e.endpoint_id"
        )
        clients = scope.of_request(req)
        endpoints = []
        for row in self.store.execute(sql, params):
            if not scope.visible(clients, row["client"]):
                continue
            outcome = json.loads(row["last_outcome"]) if row["last_outcome"] else None
            if outcome and outcome.get("at_ms") is not None:
                outcome = {
                    "prompt_id": outcome["prompt_id"],
                    "state": outcome["state"],
                    "at": to_rfc3339(int(outcome["at_ms"])),
                }
            endpoints.append(
                {
                    "endpoint_id": row["endpoint_id"],
                    "label": row["label"],
                    "online": bool(row["online"]),
                    "last_seen": to_rfc3339(int(row["last_seen_ms"])) if row["last_seen_ms"] is not None else None,
                    # When the endpoint's actor last sent this line: ``online`` and ``last_seen``
                    # are as of then (issue 12: on Cloudflare an idle endpoint's object wakes only
                    # every few minutes, so this says how old the fleet's knowledge is).
                    "checked_at": to_rfc3339(
                        now_ms if self.lines_are_current and row["online"] else int(row["updated_at_ms"])
                    ),
                    "open_prompts": int(row["open_prompts"]),
                    "last_outcome": outcome,
                    "client": row["client"],
                    "site": row["site"],
                    "removed_at": to_rfc3339(int(row["removed_at_ms"])) if row["removed_at_ms"] is not None else None,
                    "time_zone": row["time_zone"],  # as the agent reported it (issue 14)
                }
            )
        return with_etag(req, {"endpoints": endpoints})


_WEBHOOK_OPS: dict[str, Any] = {
    "create_webhook": lambda hooks, route, req, now_ms: hooks.create(req, now_ms),
    "list_webhooks": lambda hooks, route, req, now_ms: hooks.list(),
    "delete_webhook": lambda hooks, route, req, now_ms: hooks.delete(route.name or ""),
    "test_webhook": lambda hooks, route, req, now_ms: hooks.prepare_test(route.name or "", now_ms),
    "get_settings": lambda hooks, route, req, now_ms: ApiResponse(200, hooks.settings()),
    "set_settings": lambda hooks, route, req, now_ms: hooks.set_settings(req),
}
