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
from worker.api import (
    NAME_RE,
    ApiError,
    ApiRequest,
    ApiResponse,
    Route,
    endpoint_id_problem,
    route_for_actor,
    with_etag,
)
from worker.credentials import same_secret, secret_hash
from worker.endpoint_schema import migrate
from worker.host import Entropy, SqlStore
from worker.patterns import PATTERNS_MIGRATION, patterns, store_summary

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
    # Issue 14: each endpoint's zone and statistics summary, for GET /api/patterns
    # (``worker.patterns``; idempotent, so it may take any number when merged).
    3: [*PATTERNS_MIGRATION],
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
        # Whether an online line is current whenever it is read: true on the local host, whose
        # actors live in this process, check liveness on every heartbeat and push their lines
        # before a fleet read. False on Cloudflare, where an idle endpoint's object wakes only
        # every few minutes (issue 12): a line is then as old as its ``checked_at``.
        self.lines_are_current = False
        migrate(store, MIGRATIONS)

    def authenticate(self, token: str | None, need_role: str) -> tuple[str, str]:
        """``(name, role)`` of the technician presenting ``token``, or ``ApiError`` 401/403."""
        if not token:
            raise ApiError(401, "missing_token", "Authorization: Bearer <technician token> is required")
        if not isinstance(token, str) or not token.isascii():  # tokens are ASCII; a header may not be
            raise ApiError(401, "invalid_token", "the token is unknown or was revoked")
        if same_secret(self.admin_token_hash, token):
            return ADMIN_NAME, "admin"
        rows = self.store.execute(
            "SELECT name, role, token_hash FROM tokens WHERE token_hash = ?", (secret_hash(token),)
        )
        if not rows or not same_secret(rows[0]["token_hash"], token):
            raise ApiError(401, "invalid_token", "the token is unknown or was revoked")
        name, role = rows[0]["name"], rows[0]["role"]
        if need_role == "admin" and role != "admin":
            raise ApiError(403, "forbidden", "this call needs an admin token")
        return name, role

    def handle(self, req: ApiRequest, now_ms: int) -> ApiResponse:
        """A request the gateway forwarded: internal calls first, then the public routes."""
        try:
            if req.path == AUTHENTICATE_PATH:
                body = req.json()
                name, role = self.authenticate(body.get("token"), str(body.get("need_role", "technician")))
                return ApiResponse(200, {"name": name, "role": role})
            if req.path == SUMMARY_PATH:
                self.update_endpoint(req.json(), now_ms)
                return ApiResponse(204)
            if req.path == CLAIM_PATH:
                return self._claim_endpoint(req.json(), now_ms)
            return self.http(route_for_actor(req), req, now_ms)
        except ApiError as exc:
            return exc.response()

    def http(self, route: Route, req: ApiRequest, now_ms: int) -> ApiResponse:
        try:
            if route.op == "create_token":
                return self._create_token(req, now_ms)
            if route.op == "revoke_token":
                return self._revoke_token(route.name or "")
            if route.op == "list_endpoints":
                return self._list_endpoints(req, now_ms)
            if route.op == "patterns":
                return patterns(self.store, req, now_ms)
            if route.op == "get_limits":
                return ApiResponse(200, self._limits())
            if route.op == "set_limits":
                return self._set_limits(req)
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
            "INSERT INTO tokens (name, role, token_hash, created_at_ms, created_by) VALUES (?, ?, ?, ?, ?)",
            (name, role, secret_hash(token), now_ms, req.header("x-caisey-technician") or ADMIN_NAME),
        )
        # The secret is shown once; only its hash is kept.
        return ApiResponse(201, {"name": name, "role": role, "token": token, "created_at": to_rfc3339(now_ms)})

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
        cannot both pass and the quota counts it at once; the actor's line replaces it."""
        endpoint_id = body.get("endpoint_id")
        problem = endpoint_id_problem(endpoint_id)
        if problem is not None:
            raise ApiError(400, "invalid_endpoint_id", problem)
        assert isinstance(endpoint_id, str)
        rows = self.store.execute(
            "SELECT endpoint_id FROM endpoints WHERE endpoint_id = ? COLLATE NOCASE", (endpoint_id,)
        )
        if any(r["endpoint_id"] == endpoint_id for r in rows):
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
        self.update_endpoint({"endpoint_id": endpoint_id, "label": "", "online": False}, now_ms)
        return ApiResponse(200, {"endpoint_id": endpoint_id, "new": True})

    def all_offline(self, now_ms: int) -> None:
        """The local host (re)started: no agent is connected (each actor rewrites its line as it opens)."""
        self.store.execute("UPDATE endpoints SET online = 0, updated_at_ms = ? WHERE online = 1", (now_ms,))

    def update_endpoint(self, summary: dict[str, Any], now_ms: int) -> None:
        """An endpoint actor's line changed (pushed after its transaction committed)."""
        self.store.execute(
            "INSERT INTO endpoints (endpoint_id, label, online, last_seen_ms, open_prompts, last_outcome, updated_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id) DO UPDATE SET label = excluded.label, "
            "online = excluded.online, last_seen_ms = excluded.last_seen_ms, open_prompts = excluded.open_prompts, "
            "last_outcome = excluded.last_outcome, updated_at_ms = excluded.updated_at_ms",
            (
                str(summary["endpoint_id"]),
                str(summary.get("label") or ""),
                1 if summary.get("online") else 0,
                summary.get("last_seen_ms"),
                int(summary.get("open_prompts") or 0),
                json.dumps(summary.get("last_outcome")),
                now_ms,
            ),
        )
        store_summary(self.store, summary, now_ms)

    def _list_endpoints(self, req: ApiRequest, now_ms: int) -> ApiResponse:
        rows = self.store.execute(
            "SELECT e.*, p.time_zone AS time_zone FROM endpoints e "
            "LEFT JOIN endpoint_patterns p ON p.endpoint_id = e.endpoint_id ORDER BY e.endpoint_id",
            (),
        )
        endpoints = []
        for row in rows:
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
                    "time_zone": row["time_zone"],  # as the agent reported it (issue 14)
                }
            )
        return with_etag(req, {"endpoints": endpoints})
