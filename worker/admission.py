"""Refusing a request without valid credentials before it writes anything (issue 11 item 7).

On Cloudflare, reaching an endpoint's Durable Object constructs it, and an object that runs
one write — the schema's ``CREATE TABLE`` — has storage, billed and kept. An unauthenticated
WebSocket upgrade to ``/api/endpoints/<any>/agent`` or ``POST /api/agent/enroll`` with a junk
token used to do exactly that for any name anyone typed. The rule here: **a request without
valid credentials writes no storage anywhere.** Three steps, cheapest first:

1. **From the request alone** (``agent_secret_shape`` / ``enrollment_token_shape``): a missing
   or malformed bearer is refused at the edge — the Worker, the gateway, the local host's
   socket handler — before any object is reached. Secrets and tokens are ``csa_…`` /
   ``cse_<endpoint>~…`` with a URL-safe base64 body (``worker.endpoint``).
2. **Read-only, on the object** (``agent_refusal`` / ``enrollment_refusal`` /
   ``unregistered_refusal``): whether the endpoint is registered, whether the secret's hash is
   the stored one, whether the enrollment token is known, unused and unexpired. These read
   ``sqlite_master`` first, so a fresh object (no schema) is read, never created: it answers
   as an unknown endpoint. Reading an empty SQLite database writes nothing.
3. Only then does an actor run its migrations and the request its event.

Both hosts use the same functions, so their answers stay identical: missing bearer → 401
``missing_token``; malformed → 401 (``invalid_agent_secret`` / ``invalid_enrollment_token``);
unknown endpoint → 404 ``unknown_endpoint`` (the enrollment exchange answers 401 for that, as
before: enrollment reveals nothing).
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from worker.api import ENDPOINT_ID_RE, ApiError, ApiRequest, ApiResponse, Route
from worker.credentials import (
    AGENT_SECRET_PREFIX,
    ENROLLMENT_PREFIX,
    ENROLLMENT_SEPARATOR,
    enrollment_endpoint,
    same_secret,
    secret_hash,
)
from worker.host import SqlStore

# What the bridge issues (``Entropy.token``: 24-32 random bytes, URL-safe base64, no padding),
# with room either way; anything else cannot be a secret the bridge made.
_SECRET_BODY = r"[A-Za-z0-9_-]{16,128}"
AGENT_SECRET_RE = re.compile(re.escape(AGENT_SECRET_PREFIX) + _SECRET_BODY)
_ENROLLMENT_SECRET_RE = re.compile(_SECRET_BODY)

# The route ops whose caller proves itself with an agent credential, not a technician token.
AGENT_CREDENTIAL_OPS = ("agent_connect", "agent_enroll")


def _missing_secret() -> ApiResponse:
    return ApiError(401, "missing_token", "Authorization: Bearer <agent_secret> is required").response()


def _wrong_secret() -> ApiResponse:
    return ApiError(401, "invalid_agent_secret", "the agent secret does not open this endpoint").response()


def _wrong_enrollment_token() -> ApiResponse:
    return ApiError(
        401, "invalid_enrollment_token", "the enrollment token is unknown, already used or expired"
    ).response()


def _unknown_endpoint(endpoint_id: str | None) -> ApiResponse:
    return ApiError(404, "unknown_endpoint", f"endpoint {endpoint_id!r} is not registered").response()


# --- 1. from the request alone ------------------------------------------------------------------


def agent_secret_shape(secret: str | None) -> ApiResponse | None:
    """The refusal of a missing or malformed agent secret, or None when it may be one."""
    if not secret:
        return _missing_secret()
    if not AGENT_SECRET_RE.fullmatch(secret):
        return _wrong_secret()
    return None


def enrollment_token_shape(token: Any) -> str | None:
    """The endpoint a well-formed enrollment token names, or None when it cannot be one."""
    if not isinstance(token, str):
        return None
    endpoint_id = enrollment_endpoint(token)
    if endpoint_id is None or not ENDPOINT_ID_RE.fullmatch(endpoint_id):
        return None
    body = token[len(ENROLLMENT_PREFIX) + len(endpoint_id) + len(ENROLLMENT_SEPARATOR) :]
    return endpoint_id if _ENROLLMENT_SECRET_RE.fullmatch(body) else None


# --- 2. read-only, on the object ------------------------------------------------------------------


HAS_TABLE_SQL = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"


def _has_table(store: SqlStore, name: str) -> bool:
    return bool(store.execute(HAS_TABLE_SQL, (name,)))


def _meta(store: SqlStore, *keys: str) -> dict[str, Any] | None:
    """The endpoint's meta values for ``keys``; None when the object has no schema (never
    registered). Reads only."""
    if not _has_table(store, "meta"):
        return None
    marks = ", ".join("?" for _ in keys)
    rows = store.execute(f"SELECT key, value FROM meta WHERE key IN ({marks})", keys)
    return {row["key"]: row["value"] for row in rows}


def agent_refusal(store: SqlStore, endpoint_id: str, secret: str | None) -> ApiResponse | None:
    """None when ``secret`` opens ``endpoint_id``'s agent socket, else the refusal. Reads only."""
    shape = agent_secret_shape(secret)
    if shape is not None:
        return shape
    meta = _meta(store, "endpoint_id", "agent_secret_hash", "removed_at_ms")
    if not meta or meta.get("endpoint_id") != endpoint_id:
        return _unknown_endpoint(endpoint_id)
    if not same_secret(meta.get("agent_secret_hash"), secret):
        return _wrong_secret()
    if meta.get("removed_at_ms"):
        # Told only to the agent that proves it holds the secret: anyone else learns nothing.
        return ApiError(
            410,
            "endpoint_removed",
            f"endpoint {endpoint_id!r} was removed by an admin; this agent's secret opens nothing now "
            "(uninstall the agent, or enroll it as a new endpoint)",
        ).response()
    return None


def enrollment_refusal(store: SqlStore, endpoint_id: str | None, req: ApiRequest, now_ms: int) -> ApiResponse | None:
    """None when the request's enrollment token may be exchanged here, else the 401. Reads
    only; the actor checks again inside its event."""
    try:
        token = req.json().get("enrollment_token")
    except ApiError as exc:
        return exc.response()
    if enrollment_token_shape(token) is None or endpoint_id is None:
        return _wrong_enrollment_token()
    meta = _meta(store, "endpoint_id")
    if not meta or meta.get("endpoint_id") != endpoint_id or not _has_table(store, "enrollments"):
        return _wrong_enrollment_token()
    assert isinstance(token, str)
    token_hash = secret_hash(token)
    rows = store.execute(
        "SELECT token_hash, expires_at_ms, used_at_ms FROM enrollments WHERE token_hash = ?", (token_hash,)
    )
    if (
        not rows
        or not hmac.compare_digest(str(rows[0]["token_hash"]), token_hash)
        or rows[0]["used_at_ms"] is not None
        or int(rows[0]["expires_at_ms"]) <= now_ms
    ):
        return _wrong_enrollment_token()
    return None


def unregistered_refusal(store: SqlStore, route: Route) -> ApiResponse | None:
    """An object without a schema is an endpoint never registered: every call but the
    registration itself answers as for an unknown endpoint, without creating one."""
    if route.op == "create_enrollment" or _has_table(store, "meta"):
        return None
    if route.op == "agent_enroll":
        return _wrong_enrollment_token()
    return _unknown_endpoint(route.endpoint_id)


def request_refusal(store: SqlStore, route: Route, req: ApiRequest, now_ms: int) -> ApiResponse | None:
    """Everything a forwarded API request must pass before its actor may write: the read-only
    checks above, for the route's kind of credential."""
    refusal = unregistered_refusal(store, route)
    if refusal is None and route.op == "agent_enroll":
        refusal = enrollment_refusal(store, route.endpoint_id, req, now_ms)
    return refusal


# --- the fleet index ------------------------------------------------------------------------------


def fresh_fleet_authentication(store: SqlStore, admin_token_hash: str | None, req: ApiRequest) -> ApiResponse | None:
    """Authentication by a fleet index that has no schema yet, without creating it: it holds
    no technician tokens, so only the admin token can pass. None when the index has its
    schema (it authenticates as usual)."""
    if _has_table(store, "tokens"):
        return None
    try:
        body = req.json()
    except ApiError as exc:
        return exc.response()
    token = body.get("token")
    if not isinstance(token, str) or not token:
        return ApiError(401, "missing_token", "Authorization: Bearer <technician token> is required").response()
    if not same_secret(admin_token_hash, token):
        return ApiError(401, "invalid_token", "the token is unknown or was revoked").response()
    return None  # the admin: let the index be created and answer


def technician_bearer_shape(req: ApiRequest) -> ApiResponse | None:
    """A technician call without any bearer is refused before the fleet index is reached."""
    if req.bearer() is None:
        return ApiError(401, "missing_token", "Authorization: Bearer <technician token> is required").response()
    return None


__all__ = [
    "AGENT_CREDENTIAL_OPS",
    "AGENT_SECRET_RE",
    "agent_refusal",
    "agent_secret_shape",
    "enrollment_refusal",
    "enrollment_token_shape",
    "fresh_fleet_authentication",
    "request_refusal",
    "technician_bearer_shape",
    "unregistered_refusal",
]
