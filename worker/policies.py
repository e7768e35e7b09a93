"""Consent policies per client, site and endpoint (DESIGN §13, issue 16).

An admin sets a policy at three levels — a client, one of its sites, one endpoint — each a
partial set of ``FIELDS``. The effective policy of an endpoint is resolved field by field: the
most specific level that sets a field wins (endpoint > site > client > the deployment
default), and the answer says for every field where its value came from.

Where it lives and how it reaches a create:

- the levels are rows of the fleet index (``MIGRATION``, fleet migration 6); the admin routes
  are answered there (``FleetPolicies``);
- for a create (or retry) the gateway asks the fleet for the endpoint's effective values
  (``POLICY_PATH``) and passes them to the endpoint's actor in ``POLICY_HEADER`` — an internal
  header, so the gateway strips any a client sends; on Cloudflare the Worker keeps each
  endpoint's answer for ``entry.POLICY_CACHE_MS`` (a create stays at three Python invocations);
- the actor applies it (``apply``): defaults for what the create leaves out, ``422
  policy_violation`` naming the rule for what it breaks, and the policy-given extras
  (``on_locked``, branding) onto the ``Created`` fact. The bridge's own lifetime bounds
  (``BridgeConfig``) and the agent's cap still apply on top.

Pure and stdlib-only: a store and values in, rows and answers out.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from caisey import text, wire
from caisey.clock import to_rfc3339
from caisey.errors import ProtocolError
from worker.api import ApiError, ApiRequest, ApiResponse, Route, client_problem, with_etag
from worker.hooks import default_escalate_after_ms
from worker.host import SqlStore
from worker.prompt_fields import MAX_ESCALATE_AFTER_S, MIN_ESCALATE_AFTER_S, prompt_fields

# Internal: the gateway asks the fleet index for an endpoint's effective policy (values only).
POLICY_PATH = "/internal/effective-policy"
# Internal header carrying those values to the endpoint's actor (``x-caisey-*``: stripped from
# every client request by the gateway, so a technician cannot bring a policy of their own).
POLICY_HEADER = "x-caisey-policy"

FIELDS = (
    "expires_in_default",  # seconds, when a create gives neither expires_in nor expires_at
    "expires_in_max",  # seconds, the longest life a create may ask for
    "on_no_user_allowed",  # the on_no_user values a create may use
    "on_no_user_default",  # on_no_user when a create gives none
    "escalate_after",  # seconds, when a create gives none (null: no escalation)
    "require_reason",  # a create must carry a reason
    "on_locked",  # wait | no_user: what the agent does while the screen is locked
    "brand_name",  # the MSP's name in the dialog (per client only)
    "brand_logo_png",  # the MSP's logo in the dialog, a base64 PNG (per client only)
)
CLIENT_ONLY = ("brand_name", "brand_logo_png")
LEVELS = ("endpoint", "site", "client")  # most specific first
# A policy's expires_in bounds lie within the bridge's own (BridgeConfig: 5 s to 7 days).
MIN_EXPIRES_IN_S = 5
MAX_EXPIRES_IN_S = 7 * 86_400
DEFAULT_EXPIRES_IN_S = 300  # BridgeConfig.default_expires_in_ms

MIGRATION = [
    """CREATE TABLE IF NOT EXISTS policies (
        level TEXT NOT NULL, client TEXT NOT NULL COLLATE NOCASE, site TEXT NOT NULL COLLATE NOCASE,
        endpoint_id TEXT NOT NULL, fields TEXT NOT NULL, updated_at_ms INTEGER NOT NULL, updated_by TEXT NOT NULL,
        PRIMARY KEY (level, client, site, endpoint_id))""",
]


def deployment_defaults(escalate_after_ms: int | None) -> dict[str, Any]:
    """The values no level sets: the bridge's behaviour before policies existed."""
    return {
        "expires_in_default": DEFAULT_EXPIRES_IN_S,
        "expires_in_max": MAX_EXPIRES_IN_S,
        "on_no_user_allowed": list(wire.NO_USER_POLICIES),
        "on_no_user_default": "wait",
        "escalate_after": _ms_to_s(escalate_after_ms),
        "require_reason": False,
        "on_locked": None,  # the agent's own behaviour; nothing goes on the prompt
        "brand_name": None,
        "brand_logo_png": None,
    }


def _ms_to_s(ms: int | None) -> int | float | None:
    """The fleet setting (milliseconds; it may be given in fractional seconds) in seconds."""
    if ms is None:
        return None
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


# --- validation --------------------------------------------------------------------------------


def _seconds(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, "invalid_field", f"{name} must be an integer number of seconds from {low} to {high}")
    return value


def parse(body: dict[str, Any], level: str) -> dict[str, Any]:
    """A PUT body → the fields it sets (a null leaves a field unset), or 400."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ApiError(
            400, "unknown_field", f"unknown policy field {unknown[0][:64]!r}; the fields are {', '.join(FIELDS)}"
        )
    given = {k: v for k, v in body.items() if v is not None}
    if level != "client":
        for name in CLIENT_ONLY:
            if name in given:
                raise ApiError(400, "invalid_field", f"{name} is set per client, not per {level}")
    out: dict[str, Any] = {}
    for name in ("expires_in_default", "expires_in_max"):
        if name in given:
            out[name] = _seconds(name, given[name], MIN_EXPIRES_IN_S, MAX_EXPIRES_IN_S)
    if "escalate_after" in given:
        out["escalate_after"] = _seconds(
            "escalate_after", given["escalate_after"], MIN_ESCALATE_AFTER_S, MAX_ESCALATE_AFTER_S
        )
    if out.get("expires_in_default", 0) > out.get("expires_in_max", MAX_EXPIRES_IN_S):
        raise ApiError(400, "invalid_field", "expires_in_default must not exceed expires_in_max")
    if "on_no_user_allowed" in given:
        allowed = given["on_no_user_allowed"]
        if (
            not isinstance(allowed, list)
            or not allowed
            or any(v not in wire.NO_USER_POLICIES for v in allowed)
            or len(set(allowed)) != len(allowed)
        ):
            raise ApiError(
                400,
                "invalid_field",
                f"on_no_user_allowed must be a non-empty list of distinct values from {', '.join(wire.NO_USER_POLICIES)}",
            )
        out["on_no_user_allowed"] = [v for v in wire.NO_USER_POLICIES if v in allowed]
    if "on_no_user_default" in given:
        if given["on_no_user_default"] not in wire.NO_USER_POLICIES:
            raise ApiError(
                400, "invalid_field", f"on_no_user_default must be one of {', '.join(wire.NO_USER_POLICIES)}"
            )
        out["on_no_user_default"] = given["on_no_user_default"]
        if out["on_no_user_default"] not in out.get("on_no_user_allowed", wire.NO_USER_POLICIES):
            raise ApiError(400, "invalid_field", "on_no_user_default must be one of on_no_user_allowed")
    if "require_reason" in given:
        if not isinstance(given["require_reason"], bool):
            raise ApiError(400, "invalid_field", "require_reason must be true or false")
        out["require_reason"] = given["require_reason"]
    if "on_locked" in given:
        if given["on_locked"] not in wire.LOCKED_RULES:
            raise ApiError(400, "invalid_field", f"on_locked must be one of {', '.join(wire.LOCKED_RULES)}")
        out["on_locked"] = given["on_locked"]
    brand = {name: given[name] for name in CLIENT_ONLY if name in given}
    for name, value in brand.items():
        if not isinstance(value, str):
            raise ApiError(400, "invalid_field", f"{name} must be a string")
    if "brand_name" in brand:
        problem = text.check(brand["brand_name"], "brand_name")
        if problem is not None or not brand["brand_name"].strip():
            raise ApiError(400, "invalid_field", problem or "brand_name must not be blank")
    try:
        extras = dict.fromkeys(wire.PROMPT_EXTRA_FIELDS)
        wire.check_prompt_extras(**(extras | brand), where="policy")
    except ProtocolError as exc:
        raise ApiError(400, exc.code, exc.message) from None
    out.update(brand)
    return out


# --- resolution ----------------------------------------------------------------------------------


def _stored(store: SqlStore, level: str, client: str, site: str, endpoint_id: str) -> dict[str, Any] | None:
    rows = store.execute(
        "SELECT fields FROM policies WHERE level = ? AND client = ? AND site = ? AND endpoint_id = ?",
        (level, client, site, endpoint_id),
    )
    return dict(json.loads(rows[0]["fields"])) if rows else None


def _level_keys(endpoint_id: str, client: str | None, site: str | None) -> list[tuple[str, str, str, str]]:
    keys = [("endpoint", "", "", endpoint_id)]
    if client:
        if site:
            keys.append(("site", client, site, ""))
        keys.append(("client", client, "", ""))
    return keys


def resolve(
    store: SqlStore, endpoint_id: str, client: str | None, site: str | None, escalate_after_ms: int | None
) -> dict[str, dict[str, Any]]:
    """``{field: {"value", "source"}}``: each field from the most specific level setting it
    (source ``endpoint``, ``site``, ``client``) or the deployment default (``default``).

    Levels are set independently, so a combination may disagree (a client's maximum below an
    endpoint's default): the default is then lowered to the maximum, and an ``on_no_user``
    default that is not allowed becomes the first allowed value (deny before approve before
    wait); such a field carries a ``note`` saying so."""
    effective = {
        name: {"value": value, "source": "default"} for name, value in deployment_defaults(escalate_after_ms).items()
    }
    for level, c, s, e in reversed(_level_keys(endpoint_id, client, site)):
        for name, value in (_stored(store, level, c, s, e) or {}).items():
            if name in effective:
                effective[name] = {"value": value, "source": level}
    default, cap = effective["expires_in_default"], effective["expires_in_max"]
    if default["value"] > cap["value"]:
        default["value"] = cap["value"]
        default["note"] = f"lowered to expires_in_max (set by {cap['source']})"
    allowed, chosen = effective["on_no_user_allowed"], effective["on_no_user_default"]
    if chosen["value"] not in allowed["value"]:
        chosen["value"] = allowed["value"][0]
        chosen["note"] = f"the default was not allowed by on_no_user_allowed (set by {allowed['source']})"
    return effective


def values(effective: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: entry["value"] for name, entry in effective.items()}


# --- the fleet index's side -------------------------------------------------------------------


def _name(raw: str | None, what: str) -> str:
    """A client or site from the path (percent-decoded: the local host hands the path decoded,
    the Worker as sent; a valid name holds no ``%``)."""
    value = unquote(raw or "")
    problem = client_problem(value, what)
    if problem is not None:
        raise ApiError(400, "invalid_field", problem)
    return value


class FleetPolicies:
    """The admin routes and the gateway's question, over the fleet index's store."""

    OPS = (
        "list_policies",
        "get_endpoint_policy",
        *(f"{verb}_{level}_policy" for verb in ("get", "put", "delete") for level in LEVELS),
    )

    def __init__(self, store: SqlStore, escalate_default: Any) -> None:
        self.store = store
        self.escalate_default = escalate_default  # () -> the fleet setting's ms, or None

    def _endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        # A removed endpoint keeps its policy, readable as its prompts are (its actor refuses creates).
        rows = self.store.execute("SELECT client, site FROM endpoints WHERE endpoint_id = ?", (endpoint_id,))
        return dict(rows[0]) if rows else None

    def effective(self, endpoint_id: str) -> dict[str, dict[str, Any]]:
        row = self._endpoint(endpoint_id) or {"client": None, "site": None}
        return resolve(self.store, endpoint_id, row["client"], row["site"], self.escalate_default())

    def internal(self, body: dict[str, Any]) -> ApiResponse:
        """``POLICY_PATH``: the effective values for a create (an unknown endpoint gets the
        defaults; its actor answers 404 anyway)."""
        endpoint_id = str(body.get("endpoint_id") or "")
        return ApiResponse(200, {"policy": values(self.effective(endpoint_id))})

    def _key(self, route: Route) -> tuple[str, str, str, str]:
        if route.endpoint_id is not None:
            if self._endpoint(route.endpoint_id) is None:
                raise ApiError(404, "unknown_endpoint", f"endpoint {route.endpoint_id!r} is not registered")
            return ("endpoint", "", "", route.endpoint_id)
        client = _name(route.name, "client")
        if route.site is not None:
            return ("site", client, _name(route.site, "site"), "")
        return ("client", client, "", "")

    def _answer(self, key: tuple[str, str, str, str]) -> dict[str, Any]:
        level, client, site, endpoint_id = key
        rows = self.store.execute(
            "SELECT client, site, fields, updated_at_ms, updated_by FROM policies "
            "WHERE level = ? AND client = ? AND site = ? AND endpoint_id = ?",
            key,
        )
        held = rows[0] if rows else None
        return {
            "level": level,
            "client": (held["client"] if held else client) or None,
            "site": (held["site"] if held else site) or None,
            "endpoint_id": endpoint_id or None,
            "policy": json.loads(held["fields"]) if held else {},
            "updated_at": to_rfc3339(int(held["updated_at_ms"])) if held else None,
            "updated_by": held["updated_by"] if held else None,
        }

    def http(self, route: Route, req: ApiRequest, now_ms: int, who: str) -> ApiResponse:
        if route.op == "list_policies":
            rows = self.store.execute(
                "SELECT level, client, site, endpoint_id FROM policies ORDER BY level, client, site, endpoint_id"
            )
            keys = [(r["level"], r["client"], r["site"], r["endpoint_id"]) for r in rows]
            return ApiResponse(200, {"policies": [self._answer(k) for k in keys]})
        if route.op == "get_endpoint_policy":
            assert route.endpoint_id is not None
            row = self._endpoint(route.endpoint_id)
            if row is None:
                raise ApiError(404, "unknown_endpoint", f"endpoint {route.endpoint_id!r} is not registered")
            body = {
                "endpoint_id": route.endpoint_id,
                "client": row["client"],
                "site": row["site"],
                "effective": self.effective(route.endpoint_id),
            }
            return with_etag(req, body)  # the console polls it with the endpoint page
        key = self._key(route)
        if route.op.startswith("get_"):
            return ApiResponse(200, self._answer(key))
        if route.op.startswith("put_"):
            fields = parse(req.json(), key[0])
            self.store.execute(
                "INSERT INTO policies (level, client, site, endpoint_id, fields, updated_at_ms, updated_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (level, client, site, endpoint_id) DO UPDATE SET "
                "fields = excluded.fields, updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
                (*key, json.dumps(fields, sort_keys=True), now_ms, who),
            )
            return ApiResponse(200, self._answer(key))
        # delete_*_policy
        if not self.store.execute(
            "SELECT 1 FROM policies WHERE level = ? AND client = ? AND site = ? AND endpoint_id = ?", key
        ):
            raise ApiError(404, "unknown_policy", f"no {key[0]} policy is set here")
        self.store.execute("DELETE FROM policies WHERE level = ? AND client = ? AND site = ? AND endpoint_id = ?", key)
        return ApiResponse(200, self._answer(key))


# --- the endpoint actor's side ----------------------------------------------------------------------


def of_request(req: ApiRequest) -> dict[str, Any] | None:
    """The effective values the gateway passed (None: no policy, e.g. an actor called directly)."""
    raw = req.header(POLICY_HEADER)
    if not raw:
        return None
    value = json.loads(raw)
    return dict(value) if isinstance(value, dict) else None


def violation(rule: str, message: str) -> ApiError:
    """422 ``policy_violation``, naming the rule (a policy field) in the message and in ``rule``."""
    return ApiError(422, "policy_violation", message, rule=rule)


def with_defaults(body: dict[str, Any], policy: dict[str, Any] | None) -> dict[str, Any]:
    """The create body with the policy's defaults for what it leaves out."""
    if policy is None:
        return body
    out = dict(body)
    if "expires_in" not in out and "expires_at" not in out:
        out["expires_in"] = policy["expires_in_default"]
    out.setdefault("on_no_user", policy["on_no_user_default"])
    return out


def request_extras(body: dict[str, Any]) -> dict[str, Any]:
    """The create body's ``reason`` and ``ticket`` as ``Created`` fields, or 400."""
    out: dict[str, Any] = {}
    reason = body.get("reason")
    if reason is not None:
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError(400, "invalid_field", "reason must be a non-empty string")
        if len(reason) > wire.MAX_REASON_CHARS:
            raise ApiError(
                400, "field_too_long", f"reason has {len(reason)} characters; the limit is {wire.MAX_REASON_CHARS}"
            )
        problem = text.check(reason, "reason")
        if problem is not None:
            raise ApiError(400, "invalid_field", problem)
        out["reason"] = reason
    ticket = body.get("ticket")
    if ticket is not None:
        if not isinstance(ticket, dict) or set(ticket) - {"id", "url"} or not isinstance(ticket.get("id"), str):
            raise ApiError(400, "invalid_field", 'ticket must be {"id": "...", "url": "https://..." (optional)}')
        problem = text.check(ticket["id"], "ticket.id")
        if problem is not None or not ticket["id"].strip():
            raise ApiError(400, "invalid_field", problem or "ticket.id must not be blank")
        if ticket.get("url") is not None and not isinstance(ticket["url"], str):
            raise ApiError(400, "invalid_field", "ticket.url must be an https:// URL")
        out["ticket_id"], out["ticket_url"] = ticket["id"], ticket.get("url")
    try:
        wire.check_prompt_extras(**(dict.fromkeys(wire.PROMPT_EXTRA_FIELDS) | out), where="create")
    except ProtocolError as exc:
        raise ApiError(400, exc.code, exc.message.replace("create.ticket_", "ticket.")) from None
    return {k: v for k, v in out.items() if v is not None}


def enforce(
    fields: dict[str, Any], extras: dict[str, Any], policy: dict[str, Any] | None, now_ms: int
) -> dict[str, Any]:
    """Check a validated create against the policy (422 naming the rule) and return the
    extras for its ``Created`` fact: the request's plus the policy's locked rule and branding."""
    if policy is None:
        return extras
    lifetime_s = (fields["expires_at_ms"] - now_ms) / 1000
    if lifetime_s > policy["expires_in_max"]:
        raise violation(
            "expires_in_max",
            f"policy rule expires_in_max: a prompt on this endpoint may live at most {policy['expires_in_max']} s",
        )
    if fields["on_no_user"] not in policy["on_no_user_allowed"]:
        raise violation(
            "on_no_user_allowed",
            f"policy rule on_no_user_allowed: on_no_user {fields['on_no_user']!r} is not allowed here "
            f"(allowed: {', '.join(policy['on_no_user_allowed'])})",
        )
    if policy["require_reason"] and "reason" not in extras:
        raise violation("require_reason", "policy rule require_reason: a create on this endpoint must give a reason")
    given = {name: policy[name] for name in ("on_locked", *CLIENT_ONLY) if policy.get(name) is not None}
    return extras | given


def create_fields(body: dict[str, Any], req: ApiRequest, now_ms: int, config: Any) -> dict[str, Any]:
    """A create's (or retry's) ``Created`` fields under the policy the gateway passed:
    ``prompt_fields`` over the body with the policy's defaults, then the policy's rules; the
    optional fields (``extras``) are the request's reason and ticket plus the policy's."""
    policy = of_request(req)
    fields = prompt_fields(with_defaults(body, policy), now_ms, config, default_escalate_after_ms(req))
    extras = request_extras(body)
    granted = fields.pop("grant_minutes", None)  # the approval window asked for (validated above)
    if granted is not None:
        extras["grant_minutes"] = granted
    fields["extras"] = enforce(fields, extras, policy, now_ms)
    return fields
