"""The endpoint's own record, behind its actor: enrollment, its keys, its audit export.

``EndpointRecord`` is part of ``EndpointBridge`` (a mixin: the actor's HTTP dispatch finds
these ``_op_*`` by name, and they run inside its events with its store and helpers). What it
holds (DESIGN §8, §10):

- registration and one-time enrollment tokens (``POST /api/enrollments``); re-enrolling an
  endpoint that has an agent is admin-only, since it replaces the secret and the key;
- the enroll exchange (``POST /api/agent/enroll``): a new agent secret and, with it, the
  endpoint key registered and the previous one retired — each a chained endpoint fact;
- ``GET /api/endpoints/{eid}`` (label, keys, audit head) and the audit export.
"""

from __future__ import annotations

from typing import Any

from caisey import wire
from caisey.audit import ENROLLMENT_ISSUED, KEY_REGISTERED
from caisey.clock import to_rfc3339
from caisey.errors import ProtocolError
from worker.api import (
    ROLE_HEADER,
    TECHNICIAN_HEADER,
    ApiError,
    ApiRequest,
    ApiResponse,
    Route,
    client_problem,
    label_problem,
    with_etag,
)
from worker.credentials import AGENT_SECRET_PREFIX, ENROLLMENT_PREFIX, ENROLLMENT_SEPARATOR, secret_hash
from worker.endpoint_keys import parse_public_key
from worker.host import Effects


class EndpointRecord:
    """Operations on the endpoint itself; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge: store helpers, entropy, config, keys, chain, fleet line.
    _q: Any
    _meta: Any
    _set_meta: Any
    _atomically: Any
    _append_endpoint_fact: Any
    _fleet_summary: Any
    _zone: Any
    _require_registered: Any
    _record_changed: Any
    endpoint_id: Any
    entropy: Any
    config: Any
    keys: Any
    chain: Any

    def _note_agent(self, hello: wire.Hello) -> None:
        """What a hello says about the agent: its version, and the user's locale (issue 16;
        None from an agent that does not report it)."""
        self._set_meta("agent_version", hello.agent_version)
        self._set_meta("locale", hello.locale)

    def _op_create_enrollment(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        body = req.json()
        label = body.get("label", "")
        problem = label_problem(label)
        if problem is not None:
            raise ApiError(400, "invalid_field", problem)
        record: dict[str, str] = {}  # client and site: set when the endpoint is registered (DESIGN §12)
        for name in ("client", "site"):
            if body.get(name) is not None:
                problem = client_problem(body[name], name)
                if problem is not None:
                    raise ApiError(400, "invalid_field", problem)
                record[name] = body[name]
        endpoint_id = route.endpoint_id
        assert endpoint_id is not None, "the gateway routes enrollments by the body's endpoint_id"
        registered = self.endpoint_id
        if registered is not None and registered != endpoint_id:  # same file, another case (issue 11)
            raise ApiError(409, "endpoint_id_conflict", f"this actor holds endpoint {registered!r}; ids ignore case")
        rekey = self._meta("agent_secret_hash") is not None
        if rekey and req.header(ROLE_HEADER) != "admin":
            # DESIGN §10: re-enrolling an endpoint that has an agent replaces its secret and
            # key — whoever holds the new token can then answer as the endpoint. Admins only.
            raise ApiError(
                403,
                "forbidden",
                f"endpoint {endpoint_id!r} already has an agent; only an admin can re-enroll it "
                "(the current agent is then refused and its key retired)",
            )
        issuer = req.header(TECHNICIAN_HEADER) or "unknown"
        token = ENROLLMENT_PREFIX + endpoint_id + ENROLLMENT_SEPARATOR + self.entropy.token("", 24)
        expires_at_ms = now_ms + self.config.enrollment_ttl_ms

        new = self.endpoint_id is None
        if not new and label and label != self._meta("label") and req.header(ROLE_HEADER) != "admin":
            # Relabelling is an admin's (PATCH, recorded as endpoint_updated); a technician
            # re-issuing an enrollment keeps the label it has (review F4).
            raise ApiError(403, "forbidden", "only an admin may relabel an endpoint (PATCH /api/endpoints/{eid})")
        fact: dict[str, Any] = {"by": issuer, "expires_at_ms": expires_at_ms, "rekey": rekey}
        if new:
            fact.update(record)

        def register() -> None:
            if new:
                self._set_meta("endpoint_id", endpoint_id)
                self._set_meta("registered_at_ms", str(now_ms))
                for name, value in record.items():  # an existing endpoint's are checked by the fleet's claim
                    self._set_meta(name, value)
            if label or self._meta("label") is None:
                self._set_meta("label", label)
            self._q(
                "INSERT INTO enrollments (token_hash, expires_at_ms, created_by, rekey) VALUES (?, ?, ?, ?)",
                secret_hash(token),
                expires_at_ms,
                issuer,
                1 if rekey else 0,
            )
            self._append_endpoint_fact(ENROLLMENT_ISSUED, fact, now_ms)
            if new:
                self._record_changed()

        self._atomically(register)
        effects.fleet_summary = self._fleet_summary(now_ms, connected, force=True)
        return ApiResponse(
            201, {"endpoint_id": endpoint_id, "enrollment_token": token, "expires_at": to_rfc3339(expires_at_ms)}
        )

    def _op_agent_enroll(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        body = req.json()
        token = body.get("enrollment_token")
        if not isinstance(token, str) or not token:
            raise ApiError(400, "missing_field", "enrollment_token is required")
        public_key: bytes | None = None
        if body.get("public_key") is not None:
            try:
                public_key = parse_public_key(body["public_key"])
            except ProtocolError as exc:
                raise ApiError(400, "invalid_public_key", exc.message) from None
        endpoint_id = self.endpoint_id
        rows = self._q("SELECT * FROM enrollments WHERE token_hash = ?", secret_hash(token))
        # One answer for unknown endpoints and bad tokens alike: enrollment reveals nothing.
        if (
            endpoint_id is None
            or endpoint_id != route.endpoint_id
            or not rows
            or rows[0]["used_at_ms"] is not None
            or int(rows[0]["expires_at_ms"]) <= now_ms
        ):
            raise ApiError(401, "invalid_enrollment_token", "the enrollment token is unknown, already used or expired")
        if public_key is None and self.keys.history():
            # No downgrade: an endpoint whose answers are signed stays signed.
            raise ApiError(
                400, "missing_field", "public_key is required: this endpoint's answers are signed (upgrade the agent)"
            )
        secret = self.entropy.token(AGENT_SECRET_PREFIX)
        issuer = rows[0].get("created_by") or "unknown"
        rekey = bool(rows[0].get("rekey"))

        def enroll() -> str | None:
            self._q("UPDATE enrollments SET used_at_ms = ? WHERE token_hash = ?", now_ms, secret_hash(token))
            self._set_meta("agent_secret_hash", secret_hash(secret))
            self._set_meta("enrolled_at_ms", str(now_ms))
            if public_key is None:
                return None
            new, previous = self.keys.register(public_key, now_ms, issuer)
            self._append_endpoint_fact(
                KEY_REGISTERED,
                {
                    "key_id": new.key_id,
                    "public_key": new.public_key,
                    "previous_key_id": previous.key_id if previous is not None else None,
                    "by": issuer,
                    "rekey": rekey,
                },
                now_ms,
            )
            return new.key_id

        new_key_id = self._atomically(enroll)
        if connected:
            effects.close_agent = (4001, "agent secret rotated by a new enrollment")
        return ApiResponse(200, {"endpoint_id": endpoint_id, "agent_secret": secret, "key_id": new_key_id})

    def _op_get_endpoint(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        """The endpoint itself: label, enrollment, its signing keys and the audit head."""
        endpoint_id = self._require_registered(route.endpoint_id)
        current = self.keys.current()
        head_seq, head_hash = self.chain.head(endpoint_id)

        def time(key: str) -> str | None:
            value = self._meta(key)
            return to_rfc3339(int(value)) if value else None

        return with_etag(
            req,
            {
                "endpoint_id": endpoint_id,
                "label": self._meta("label") or "",
                "client": self._meta("client"),
                "site": self._meta("site"),
                "online": connected,
                "registered_at": time("registered_at_ms"),
                "enrolled_at": time("enrolled_at_ms"),
                "agent_version": self._meta("agent_version"),
                "key_id": current.key_id if current is not None else None,
                "keys": [key.to_api() for key in self.keys.history()],
                "audit_head": {"seq": head_seq, "hash": head_hash},
                "removed_at": time("removed_at_ms"),
                "removed_by": self._meta("removed_by"),
                # Issue 14: the zone the agent reported, and the one hours are read in.
                "time_zone": self._zone().to_api(),
                # Issue 16: the user's language as the agent reported it (prompts are shown in it).
                "locale": self._meta("locale"),
            },
        )

    def _op_export_audit(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        """The audit chain as JSON Lines (``caisey.audit``), for ``caisey-audit verify``."""
        endpoint_id = self._require_registered(route.endpoint_id)
        text = "\n".join(self.chain.export_lines(endpoint_id, now_ms)) + "\n"
        return ApiResponse(
            200,
            None,
            {
                "content-type": "application/x-ndjson; charset=utf-8",
                "content-disposition": f'attachment; filename="caisey-audit-{endpoint_id}.jsonl"',
            },
            text=text,
        )
