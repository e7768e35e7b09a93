"""The HTTP API's contract as an OpenAPI 3.1 document (issue 13 item 4), served by both hosts
at ``GET /api/openapi.json`` without authentication (it describes the API; it holds no secret).

A Python module, not a JSON file, because the Worker uploads Python modules only
(scripts/stage-worker.mjs stages ``worker/*.py``): the document is the dict ``DOCUMENT``,
built once at import from small helpers, with the limits taken from the code that enforces
them (``caisey.wire``, ``worker.api``, ``worker.fleet``, ``BridgeConfig``), so a limit changed
there changes here. Standard library only (it runs on Pyodide).

Kept honest by tests (tests/test_openapi.py, tests/test_openapi_property.py):

- every route in ``worker.api._ROUTES`` has an operation here, at the same path template, with
  ``operationId`` = the route's op and ``x-caisey-auth`` = its auth — and nothing else is here;
- every error code the bridge raises (``ApiError(status, "code", …)`` in ``worker/``) is
  documented, and every README API-table row names an operation here, and back;
- the document validates as OpenAPI 3.1, and a property test drives every operation against
  a running local host: no 5xx, every status documented for its operation, every JSON body
  valid against the documented schema (the error envelope's ``code`` against the codes listed
  for that operation and status).

Documenting a new route: add its ``_ROUTES`` entry in worker/api.py, then one entry in
``_operations()`` below — ``paths[TEMPLATE][METHOD] = _op(OP, AUTH, summary, responses, …)`` —
with its parameters, request body and every status it can answer (success schemas in
``_schemas()``, errors as ``{status: [codes]}``; ``_op`` adds the ones every route shares), and
a README API-table row naming ``METHOD /api/…``.

Response objects are closed (``additionalProperties: false``) so the tests notice an
undocumented field; clients should still ignore fields they do not know — the API only ever
adds (DESIGN §8).
"""

from __future__ import annotations

from typing import Any

from caisey import stats, wire
from caisey.facts import Decision, Source
from caisey.localtime import MAX_ZONE_CHARS, WEEKDAYS, ZONE_RE
from caisey.prompt import State
from worker.api import CLIENT_RE, CLIENT_RULE, MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY_CHARS, RESERVED_DEVICE_NAMES
from worker.endpoint import MAX_EXPIRES_IN_S, BridgeConfig
from worker.endpoint_stats import WEEKS_OF_P95, WINDOWS_DAYS
from worker.fleet import MAX_ENDPOINTS_CEILING, RESERVED_NAMES, ROLES
from worker.hooks import MAX_ESCALATIONS, MAX_NOTE_CHARS
from worker.patterns import FINDINGS_DEFAULT, FINDINGS_MAX, MAX_FILTER_CHARS, RANKING_DEFAULT, RANKING_MAX
from worker.policies import MAX_EXPIRES_IN_S as MAX_POLICY_S
from worker.policies import MIN_EXPIRES_IN_S as MIN_POLICY_S
from worker.prompt_fields import MAX_ESCALATE_AFTER_S, MIN_ESCALATE_AFTER_S
from worker.scope import MAX_TOKEN_CLIENTS
from worker.webhook_subscriptions import WEBHOOK_ID_RE
from worker.webhooks import (
    ATTEMPT_TIMEOUT_MS,
    EVENT_TYPES,
    MAX_DESCRIPTION_CHARS,
    MAX_SUBSCRIPTIONS,
    MAX_URL_CHARS,
    PROMPT_DATA_FIELDS,
    USER_AGENT,
)

OPENAPI_PATH = "/api/openapi.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
AUDIT_MEDIA_TYPE = "application/x-ndjson"

_CONFIG = BridgeConfig()
_DAY_S = 86_400

# --- patterns (ECMA-262 as JSON Schema has them; also valid Python ``re``) ------------------------

ENDPOINT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
PROMPT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
SECRET_BODY = "[A-Za-z0-9_-]{16,128}"
# A client or site name (DESIGN §12, ``worker.api.CLIENT_RE``): compared ignoring case.
CLIENT_PATTERN = CLIENT_RE.pattern
# One line, no control character (C0, DEL, C1): caisey/text.py. A message may also hold tab
# and newline. (A lone surrogate is refused too; JSON Schema cannot say so.)
ONE_LINE_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
MULTILINE_PATTERN = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# "CON", "nul.txt", "Com1": Windows device names in any case, with any extension (worker.api).
RESERVED_DEVICE_PATTERN = "^(" + "|".join(_any_case(n) for n in sorted(RESERVED_DEVICE_NAMES)) + r")(\.|$)"
RESERVED_NAME_PATTERN = "^(" + "|".join(_any_case(n) for n in sorted(RESERVED_NAMES)) + ")$"

# --- small builders -------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], *, optional: tuple[str, ...] = (), closed: bool = True) -> dict[str, Any]:
    """An object whose properties are all required but ``optional``."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": [k for k in properties if k not in optional],
        "properties": properties,
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def _str(description: str = "", **kw: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **kw}
    if description:
        schema["description"] = description
    return schema


_TIME = {"$ref": "#/components/schemas/Time"}
_TIME_OR_NULL = _null(_TIME)
_CLIENT_OR_NULL = _null({"$ref": "#/components/schemas/ClientName"})
# A token's clients (DESIGN §12): null for an unscoped token.
_CLIENTS_OR_NULL = _null(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_TOKEN_CLIENTS,
        "items": {"$ref": "#/components/schemas/ClientName"},
    }
)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _etag_headers() -> dict[str, Any]:
    return {"ETag": {"$ref": "#/components/headers/ETag"}}


def _ok(description: str, schema: dict[str, Any], *, etag: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(schema)}
    if etag:
        response["headers"] = _etag_headers()
    return response


_NOT_MODIFIED = {
    "description": "Not modified: `If-None-Match` named the current `ETag`. No body.",
    "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
}

# What every route may answer, whatever it is (added by ``_op``).
_SHARED_ERRORS: dict[int, list[str]] = {
    408: ["header_timeout"],  # local host: request headers not complete within 10 s
    413: ["body_too_large"],  # either host: a body (declared or sent) over MAX_BODY_BYTES
    429: ["too_many_connections"],  # local host: 128 connections per remote address
}
_AUTH_ERRORS: dict[str, dict[int, list[str]]] = {
    "technician": {401: ["missing_token", "invalid_token"]},
    "admin": {401: ["missing_token", "invalid_token"], 403: ["forbidden"]},
    "agent_secret": {401: ["missing_token", "invalid_agent_secret"]},
    "enrollment_token": {401: ["invalid_enrollment_token"]},
    "public": {},
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "technician": [{"technicianToken": []}],
    "admin": [{"adminToken": []}],
    "agent_secret": [{"agentSecret": []}],
    "enrollment_token": [],  # the token travels in the body (``enrollment_token``)
    "public": [],
}
_STATUS_WORDS = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    408: "Request timeout (local host only)",
    409: "Conflict",
    410: "Gone",
    413: "Body too large",
    422: "Unprocessable",
    426: "Upgrade required",
    429: "Too many (`too_many_connections`: the local host, per remote address)",
    503: "Unavailable, try again",
}


def _error(status: int, codes: list[str]) -> dict[str, Any]:
    """An error response: the envelope, its ``code`` one of ``codes``."""
    return {
        "description": f"{_STATUS_WORDS.get(status, 'Error')}: " + ", ".join(f"`{c}`" for c in codes),
        "content": _json(
            {
                "allOf": [_ref("Error")],
                "properties": {"error": {"properties": {"code": {"enum": codes}}}},
            }
        ),
    }


def _op(
    op: str,
    auth: str,
    summary: str,
    responses: dict[int, Any],
    *,
    errors: dict[int, list[str]] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    description: str = "",
    tag: str = "prompts",
) -> dict[str, Any]:
    """One operation: its own responses, its errors, and the errors its auth and every route share."""
    if auth not in _SECURITY:
        raise ValueError(
            f"{op}: auth {auth!r} is new here: add its scheme to _SECURITY and its 401/403 to _AUTH_ERRORS"
        )
    merged: dict[int, list[str]] = {}
    for source in (errors or {}, _AUTH_ERRORS[auth], _SHARED_ERRORS):
        for status, codes in source.items():
            merged.setdefault(status, [])
            merged[status] += [c for c in codes if c not in merged[status]]
    all_responses: dict[str, Any] = {str(s): r for s, r in sorted(responses.items())}
    for status, codes in sorted(merged.items()):
        if str(status) in all_responses:  # a status with its own schema (409 already_final)
            continue
        all_responses[str(status)] = _error(status, codes)
    operation: dict[str, Any] = {
        "operationId": op,
        "summary": summary,
        "tags": [tag],
        "security": _SECURITY[auth],
        "x-caisey-auth": auth,
        "responses": dict(sorted(all_responses.items())),
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": _json(body)}
    return operation


def _param(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/parameters/{name}"}


# --- schemas ---------------------------------------------------------------------------------------


def _prompt_properties() -> dict[str, Any]:
    state = _str(
        "open: pending, delivered, acknowledged; final: approved, denied (decided), cancelled, "
        "superseded (withdrawn), expired, failed_to_deliver (provisional until firm, R4)",
        enum=[state.value for state in State if state is not State.NEW],  # "new" is never shown
    )
    decision = _str(enum=[d.value for d in Decision])
    return {
        "prompt_id": _str("sortable ULID", pattern=PROMPT_ID_PATTERN),
        "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
        "state": state,
        "final": {"type": "boolean"},
        "provisional": {"type": "boolean", "description": "final but may still turn decided (R4)"},
        "reason": _null(_str("why it is final when not decided (e.g. no_receipt)")),
        "title": _str(maxLength=wire.MAX_TITLE_CHARS),
        "message": _str(maxLength=wire.MAX_MESSAGE_CHARS),
        "action": _str(maxLength=wire.MAX_ACTION_CHARS),
        "on_no_user": _str(enum=list(wire.NO_USER_POLICIES)),
        "created_at": _TIME,
        "created_by": _str("the technician's name; `endpoint (claimed: NAME)` for an adopted prompt"),
        "expires_at": _TIME,
        "adopted": {"type": "boolean", "description": "rebuilt from the agent's copy (R6)"},
        "delivery": _obj(
            {
                "attempts": {"type": "integer", "minimum": 0},
                "last_attempt_at": _TIME_OR_NULL,
                "next_attempt_at": _TIME_OR_NULL,
                "last_error": _null(_str()),
                "replays": {"type": "integer", "minimum": 0},
                "received_at": _TIME_OR_NULL,
                "acknowledged_at": _TIME_OR_NULL,
            }
        ),
        "decision": _null(decision),
        "decided_at": _TIME_OR_NULL,
        "synced_at": _TIME_OR_NULL,
        "decided_how": _null(_str("how the runtime decided (user, policy, …)")),
        "decision_signature": _null(
            _obj({"key_id": _str(), "sig": _str("Ed25519 signature, unpadded URL-safe base64")})
        ),
        "late_decision": _null(_obj({"decision": decision, "decided_at": _TIME, "synced_at": _TIME, "why": _str()})),
        "cancelled_by": _null(_str()),
        "supersedes": _null(_str(pattern=PROMPT_ID_PATTERN)),
        "superseded_by": _null(_str(pattern=PROMPT_ID_PATTERN)),
        "final_at": _TIME_OR_NULL,
        "escalated_at": {**_TIME_OR_NULL, "description": "the first escalation (DESIGN §11); null if none"},
        "escalations": {
            "type": "array",
            "maxItems": MAX_ESCALATIONS,
            "items": _ref("Escalation"),
            "description": "every escalation, oldest first",
        },
        # Issue 16 (additive): who or what answered, and the agent's evidence of display.
        "outcome": _null(
            _str(
                "who or what answered: user; locked (the screen was locked, the no-user rule answered); "
                "no_user (nobody logged in, the no-user rule answered); null without a decision",
                enum=["user", "locked", "no_user"],
            )
        ),
        "display": _null(
            _obj(
                {
                    "outcome": _str("shown | locked | no_user", enum=list(wire.DISPLAY_OUTCOMES)),
                    "user": _null(_str("the OS user the prompt was shown to (DOMAIN\\alice)")),
                    "session": _str(enum=list(wire.SESSION_KINDS)),
                    "locked": {"type": "boolean"},
                    "presenter": _str(enum=list(wire.PRESENTER_KINDS)),
                    "shown_at": {**_TIME_OR_NULL, "description": "when it became visible: the answer clock starts"},
                    "locale": _null(_str("the language it was shown in")),
                    "template_id": _null(_str()),
                    "template_version": _null({"type": "integer", "minimum": 0}),
                    "shown_text": _null(_str("the exact text shown", maxLength=wire.MAX_SHOWN_TEXT_CHARS)),
                    "shown_sha256": _null(_str("SHA-256 of the text shown, covered by the signature (v2)")),
                    "answer_ms": _null(
                        {"type": "integer", "minimum": 0, "description": "time to answer, counted from display"}
                    ),
                }
            )
        ),
        "endpoint_removed_at": {
            "$ref": "#/components/schemas/Time",
            "description": "only when the endpoint was removed (`DELETE /api/endpoints/{eid}`): when",
        },
        # Issue 16 (DESIGN §13): on the Created fact, the deliver frame and the signed prompt hash.
        "request_reason": _null(_str("the technician's reason for asking (the create's `reason`)")),
        "ticket": _null(_obj({"id": _str(maxLength=wire.MAX_TICKET_ID_CHARS), "url": _null(_str(format="uri"))})),
        "grant_minutes": _null(
            {"type": "integer", "minimum": 1, "maximum": wire.MAX_GRANT_MINUTES, "description": "window asked for"}
        ),
        "on_locked": _null(_str("the policy's locked-screen rule", enum=list(wire.LOCKED_RULES))),
        "brand_name": _null(_str("the client's branding (policy); its logo is on the Created fact")),
        "window": _null(_ref("ApprovalWindow")),  # issue 16 (DESIGN §13)
    }


def _prompt_fields(*, create: bool) -> dict[str, Any]:
    """The body of a create (``create``) or of a retry's overrides (every field optional)."""
    min_s = _CONFIG.min_expires_in_ms // 1000
    max_s = _CONFIG.max_expires_in_ms // 1000
    properties: dict[str, Any] = {
        "title": {
            "type": "string",
            "minLength": 1,
            "maxLength": wire.MAX_TITLE_CHARS,
            "allOf": [{"pattern": r"\S"}, {"pattern": ONE_LINE_PATTERN}],
            "description": "not blank; one line, no control character",
        },
        "message": _str(
            "newline and tab allowed, no other control character",
            maxLength=wire.MAX_MESSAGE_CHARS,
            pattern=MULTILINE_PATTERN,
            default="",
        ),
        "action": {
            "type": "string",
            "minLength": 1,
            "maxLength": wire.MAX_ACTION_CHARS,
            "allOf": [{"pattern": r"\S"}, {"pattern": ONE_LINE_PATTERN}],
            "description": "what the technician will do, e.g. `remote_control`",
        },
        "expires_in": {
            "type": "number",
            "minimum": min_s,
            "maximum": max_s,
            "default": _CONFIG.default_expires_in_ms // 1000,
            "description": f"seconds from now; outside {min_s} s – {max_s // _DAY_S} days (or beyond "
            f"±{MAX_EXPIRES_IN_S:.0e}, NaN, ±Infinity) → 400 `invalid_expiry`",
        },
        "expires_at": _str(
            f"RFC 3339 with an explicit offset, {min_s} s to {max_s // _DAY_S} days from now",
            format="date-time",
        ),
        "on_no_user": _str(
            "what the agent does when nobody is logged in", enum=list(wire.NO_USER_POLICIES), default="wait"
        ),
        "escalate_after": _null(
            {
                "type": "number",
                "minimum": MIN_ESCALATE_AFTER_S,
                "maximum": MAX_ESCALATE_AFTER_S,
                "description": "seconds after creation: a prompt still open then is escalated once (also "
                "when it fails to deliver); null or left out: the fleet default (`/api/settings`); else "
                "400 `invalid_field`",
            }
        ),
        "grant_minutes": _null(
            {
                "type": "integer",
                "minimum": 1,
                "maximum": wire.MAX_GRANT_MINUTES,
                "description": "an approval window (DESIGN §13): the approval grants access for this many "
                "minutes (the user may grant fewer); null or left out: none; else 400 `invalid_field`",
            }
        ),
    }
    properties["reason"] = _null(
        _str(
            "why the technician asks (one line, no control character); required when the endpoint's policy "
            "says `require_reason` (else 422 `policy_violation`, rule `require_reason`)",
            minLength=1,
            maxLength=wire.MAX_REASON_CHARS,
            pattern=ONE_LINE_PATTERN,
        )
    )
    properties["ticket"] = _null(
        _obj(
            {
                "id": _str(minLength=1, maxLength=wire.MAX_TICKET_ID_CHARS, pattern=ONE_LINE_PATTERN),
                "url": _null(_str("https only", maxLength=wire.MAX_URL_CHARS, pattern="^https://[!-~]+$")),
            },
            optional=("url",),
        )
    )
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "not": {"required": ["expires_in", "expires_at"]},
        "description": "Give `expires_in` or `expires_at`, not both. Other fields are ignored.",
    }
    if create:
        properties["supersedes"] = _null(
            _str(
                "a prompt of this endpoint this one replaces (withdrawn as superseded); unknown → 404 "
                "`unknown_prompt`; null as if left out",
                pattern=PROMPT_ID_PATTERN,
            )
        )
        schema["required"] = ["title", "action"]
    else:
        schema["description"] = (
            "Overrides for the new prompt; what is left out is copied from the old one "
            "(`expires_in` as the old lifetime). Other fields are ignored. May be empty."
        )
    return schema


def _schemas() -> dict[str, Any]:
    prompt = _prompt_properties()
    event = _obj(
        {
            "source": _str(enum=[source.value for source in Source]),
            "type": _str("the fact's kind (created, delivery_attempted, received, decided, cancelled, …)"),
            "time": _TIME,
            "detail": {"type": "object", "description": "the fact's fields"},
        }
    )
    key = _obj(
        {
            "key_id": _str(),
            "public_key": _str("raw Ed25519 public key, unpadded URL-safe base64"),
            "valid_from": _TIME,
            "valid_until": _TIME_OR_NULL,
            "registered_by": _str(),
        }
    )
    fleet_line = _obj(
        {
            "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
            "label": _str(),
            "online": {"type": "boolean", "description": "as of `checked_at`"},
            "last_seen": _TIME_OR_NULL,
            "checked_at": {
                "$ref": "#/components/schemas/Time",
                "description": "when the endpoint's actor last sent this line (on Cloudflare an idle "
                "endpoint's line is refreshed by each full heartbeat, every 6 min)",
            },
            "open_prompts": {"type": "integer", "minimum": 0},
            "last_outcome": _null(
                _obj({"prompt_id": _str(pattern=PROMPT_ID_PATTERN), "state": prompt["state"], "at": _TIME})
            ),
            "client": _CLIENT_OR_NULL,
            "site": _CLIENT_OR_NULL,
            "removed_at": {**_TIME_OR_NULL, "description": "null unless removed (listed only with include_removed=1)"},
            "time_zone": {**_null(_ref("ZoneName")), "description": "as the agent reported it (issue 14); null: never"},
        }
    )
    audit_line = {
        "description": "One line of the audit export (`caisey.audit`): a header, every fact, the head.",
        "oneOf": [
            _obj(
                {
                    "type": {"const": "header"},
                    "format": _str(),
                    "version": {"type": "integer"},
                    "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
                    "exported_at": _TIME,
                    "genesis": _str(),
                }
            ),
            _obj(
                {
                    "type": {"const": "fact"},
                    "seq": {"type": "integer", "minimum": 1},
                    "prompt_id": _str("empty for a fact about the endpoint itself (enrollment, keys)"),
                    "at_ms": {"type": "integer"},
                    "at": _TIME,
                    "kind": _str(),
                    "fields": {"type": "object"},
                    "event_id": _null(_str()),
                    "hash": _str(),
                }
            ),
            _obj(
                {
                    "type": {"const": "head"},
                    "seq": {"type": "integer", "minimum": 0},
                    "hash": _str(),
                    "facts": {"type": "integer", "minimum": 0},
                }
            ),
        ],
    }
    return {
        **_webhook_schemas(prompt),
        **_window_schemas(),
        "Time": _str("RFC 3339, UTC, milliseconds", pattern=TIME_PATTERN, format="date-time"),
        "Error": _obj(
            {
                "error": _obj(
                    {
                        "code": _str("stable, for programs"),
                        "message": _str("for people"),
                        "rule": _str("`policy_violation` only: the policy field the request broke (DESIGN §13)"),
                    },
                    optional=("rule",),
                )
            }
        ),
        "AlreadyFinal": _obj(
            {
                "error": _obj({"code": {"const": "already_final"}, "message": _str()}),
                "prompt": _ref("Prompt"),
            }
        ),
        "Prompt": _obj(prompt, optional=("endpoint_removed_at",)),
        "PromptWithEvents": _obj(
            {**prompt, "events": {"type": "array", "items": _ref("TimelineEvent"), "description": "the timeline"}},
            optional=("endpoint_removed_at",),
        ),
        "TimelineEvent": event,
        "PromptList": _obj({"prompts": {"type": "array", "items": _ref("Prompt")}}),
        "FleetLine": fleet_line,
        "EndpointList": _obj({"endpoints": {"type": "array", "items": _ref("FleetLine")}}),
        "EndpointKey": key,
        "Endpoint": _obj(
            {
                "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
                "label": _str(),
                "online": {"type": "boolean"},
                "registered_at": _TIME_OR_NULL,
                "enrolled_at": _TIME_OR_NULL,
                "agent_version": _null(_str()),
                "key_id": _null(_str("the current endpoint key")),
                "keys": {"type": "array", "items": _ref("EndpointKey"), "description": "every key, oldest first"},
                "audit_head": _obj({"seq": {"type": "integer", "minimum": 0}, "hash": _str()}),
                "client": _CLIENT_OR_NULL,
                "site": _CLIENT_OR_NULL,
                "removed_at": {**_TIME_OR_NULL, "description": "null unless an admin removed the endpoint"},
                "removed_by": _null(_str("the admin who removed it")),
                "time_zone": {**_ref("TimeZone"), "description": "the agent's zone and the one hours are read in"},
                "locale": _null(_str("the user's language as the agent reported it (issue 16); null: not reported")),
            }
        ),
        "AuditLine": audit_line,
        "Limits": _obj(
            {
                "max_endpoints": {"type": "integer", "minimum": 1, "maximum": MAX_ENDPOINTS_CEILING},
                "endpoints": {"type": "integer", "minimum": 0, "description": "registered now"},
            }
        ),
        "TokenCreated": _obj(
            {
                "name": _str(pattern=NAME_PATTERN),
                "role": _str(enum=list(ROLES)),
                "clients": _CLIENTS_OR_NULL,
                "token": _str("the bearer token (`cst_…`), shown this once; only its hash is kept"),
                "created_at": _TIME,
            }
        ),
        "TokenInfo": _obj(
            {
                "name": _str(pattern=NAME_PATTERN),
                "role": _str(enum=list(ROLES)),
                "clients": _CLIENTS_OR_NULL,
                "created_at": _TIME,
                "created_by": _str(),
                "last_used": {
                    **_TIME_OR_NULL,
                    "description": "written at most once a minute per token (on Cloudflare up to 2 min behind)",
                },
            }
        ),
        "TokenList": _obj(
            {
                "tokens": {
                    "type": "array",
                    "items": _ref("TokenInfo"),
                    "description": "named tokens, by name; never a secret or a hash; the built-in admin token "
                    "is not listed",
                }
            }
        ),
        "Whoami": _obj(
            {
                "name": _str("the token's name (`admin` for the deployment's admin token)"),
                "role": _str(enum=list(ROLES)),
                "clients": _CLIENTS_OR_NULL,
            }
        ),
        "TokenRevoked": _obj({"name": _str(pattern=NAME_PATTERN), "revoked": {"const": True}}),
        "EnrollmentCreated": _obj(
            {
                "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
                "enrollment_token": _str("one-time (`cse_<endpoint_id>~…`)"),
                "expires_at": _TIME,
            }
        ),
        "AgentEnrolled": _obj(
            {
                "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
                "agent_secret": _str("the agent's bearer (`csa_…`), shown this once"),
                "key_id": _null(_str("the endpoint key registered with this enrollment")),
            }
        ),
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "description": "this document",
        },
    }


# --- webhooks and escalation (issue 13, DESIGN §11) -------------------------------------------------

WEBHOOK_ID_PATTERN = WEBHOOK_ID_RE.pattern
EVENT_ID_PATTERN = "^msg_[A-Za-z0-9_-]+$"
TEST_EVENT_TYPE = "webhook.test"
# The last outcome of a subscription's delivery log (``worker.hooks`` reports, the test route).
DELIVERY_OUTCOMES = ("delivered", "retrying", "gave_up", "disabled", "test_delivered", "test_failed")


def _webhook_schemas(prompt: dict[str, Any]) -> dict[str, Any]:
    """The admin routes' objects, and the events' bodies (``webhooks`` at the document's top)."""
    escalation = _obj(
        {
            "at": _TIME,
            "by": _str('"bridge", or the technician who escalated it by hand'),
            "reason": _str('in words: "not answered in 10 min", "could not reach endpoint — …", "escalated by …"'),
            "note": _null(_str("the technician's note (by hand only)")),
            "auto": {"type": "boolean", "description": "true when the bridge escalated it"},
        }
    )
    count = {"type": "integer", "minimum": 0}
    subscription = {
        "id": _str(pattern=WEBHOOK_ID_PATTERN),
        "url": _str(maxLength=MAX_URL_CHARS),
        "events": {"type": "array", "minItems": 1, "uniqueItems": True, "items": _str(enum=list(EVENT_TYPES))},
        "description": _str(maxLength=MAX_DESCRIPTION_CHARS),
        "created_at": _TIME,
        "created_by": _str("the admin token's name (`admin` for the deployment's)"),
        "enabled": {"type": "boolean", "description": "false once a receiver answered 410 Gone"},
        "disabled_at": _TIME_OR_NULL,
        "disabled_reason": _null(_str()),
        "delivery": _obj(
            {
                "last_event_id": _null(_str(pattern=EVENT_ID_PATTERN)),
                "last_type": _null(_str(enum=[*EVENT_TYPES, TEST_EVENT_TYPE])),
                "last_endpoint_id": _null(_str(pattern=ENDPOINT_ID_PATTERN)),
                "last_outcome": _null(_str(enum=list(DELIVERY_OUTCOMES))),
                "last_status": _null({"type": "integer", "description": "the receiver's HTTP status"}),
                "last_error": _null(_str()),
                "attempts": _null({**count, "description": "of the last reported delivery"}),
                "last_attempt_at": _TIME_OR_NULL,
                "next_attempt_at": _TIME_OR_NULL,
                "delivered": count,
                "failed_attempts": count,
                "given_up": count,
            }
        ),
    }
    prompt_data = {key: prompt[key] for key in PROMPT_DATA_FIELDS}
    prompt_data["timings"] = _obj(
        {
            "attempts": count,
            "delivered_at": _TIME_OR_NULL,
            "acknowledged_at": _TIME_OR_NULL,
            "to_delivered_ms": _null(count),
            "to_decision_ms": _null(count),
            "to_final_ms": _null(count),
        }
    )

    def event(event_type: str, data: dict[str, Any], description: str) -> dict[str, Any]:
        schema = _obj({"type": {"const": event_type}, "timestamp": _TIME, "data": data})
        schema["description"] = description
        return schema

    endpoint_data = {
        "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
        "label": _str(),
        "at": _TIME,
    }
    return {
        "Escalation": escalation,
        "Webhook": _obj(subscription),
        "WebhookCreated": _obj(
            {**subscription, "secret": _str("the signing secret (`whsec_` + base64), shown this once")}
        ),
        "WebhookList": _obj({"webhooks": {"type": "array", "items": _ref("Webhook"), "description": "oldest first"}}),
        "WebhookDeleted": _obj({"id": _str(pattern=WEBHOOK_ID_PATTERN), "deleted": {"const": True}}),
        "WebhookTestResult": _obj(
            {
                "id": _str("the subscription", pattern=WEBHOOK_ID_PATTERN),
                "webhook_id": _str("the test event's `webhook-id` header", pattern=EVENT_ID_PATTERN),
                "delivered": {"type": "boolean", "description": "the receiver answered 2xx"},
                "status": _null({"type": "integer", "description": "the receiver's HTTP status; null: no answer"}),
                "error": _null(_str("why it was not delivered (`HTTP 500`, a connection error, …)")),
            }
        ),
        "Settings": _obj(
            {
                "escalate_after": _null(
                    {
                        "type": "integer",
                        "minimum": MIN_ESCALATE_AFTER_S,
                        "maximum": MAX_ESCALATE_AFTER_S,
                        "description": "the fleet default `escalate_after` in whole seconds; null: none",
                    }
                )
            }
        ),
        "WebhookPromptData": _obj(
            prompt_data,
        ),
        "EventPromptCreated": event(
            "prompt.created", _ref("WebhookPromptData"), "A prompt was created (or adopted, R6)."
        ),
        "EventPromptDelivered": event(
            "prompt.delivered", _ref("WebhookPromptData"), "The runtime first confirmed it holds the prompt."
        ),
        "EventPromptFinal": event(
            "prompt.final",
            _ref("WebhookPromptData"),
            "The prompt reached a final state (again only if R4 replaces a provisional final with a decision).",
        ),
        "EventPromptEscalated": event(
            "prompt.escalated",
            _obj({**prompt_data, "escalation": _ref("Escalation")}),
            "The bridge or a technician escalated the prompt: the prompt data and this escalation.",
        ),
        **{
            name: event(event_type, _obj({**prompt_data, "window": _ref("ApprovalWindow")}), description)
            for event_type, (name, description) in _WINDOW_EVENTS.items()
        },
        "EventEndpointOnline": event(
            "endpoint.online",
            _obj({**endpoint_data, "online": {"const": True}}),
            "The endpoint's agent connected.",
        ),
        "EventEndpointOffline": event(
            "endpoint.offline",
            _obj({**endpoint_data, "online": {"const": False}}),
            "The endpoint's agent went away.",
        ),
        "EventWebhookTest": event(
            TEST_EVENT_TYPE,
            _obj({"webhook_id": _str("the subscription", pattern=WEBHOOK_ID_PATTERN), "message": _str()}),
            "Sent only by `POST /api/webhooks/{name}/test`.",
        ),
    }


# Issue 16: the approval window's webhooks (DESIGN §13): schema name and description.
_WINDOW_EVENTS = {
    "window.started": ("EventWindowStarted", "The user's approval started the prompt's approval window."),
    "window.ended": ("EventWindowEnded", "The approval window's time was up."),
    "window.revoked": ("EventWindowRevoked", "The user or a technician revoked the approval window."),
}


# The schema of each event type's body.
EVENT_SCHEMAS = {
    "prompt.created": "EventPromptCreated",
    "prompt.delivered": "EventPromptDelivered",
    "prompt.final": "EventPromptFinal",
    "prompt.escalated": "EventPromptEscalated",
    **{event_type: name for event_type, (name, _) in _WINDOW_EVENTS.items()},
    "endpoint.offline": "EventEndpointOffline",
    "endpoint.online": "EventEndpointOnline",
    TEST_EVENT_TYPE: "EventWebhookTest",
}


def _webhooks() -> dict[str, Any]:
    """OpenAPI 3.1 ``webhooks``: what the bridge POSTs to a subscription's URL, one per event type."""
    headers = [
        {
            "name": "webhook-id",
            "in": "header",
            "required": True,
            "description": "the event's id: the same on every retry (deduplicate by it)",
            "schema": _str(pattern=EVENT_ID_PATTERN),
        },
        {
            "name": "webhook-timestamp",
            "in": "header",
            "required": True,
            "description": "this attempt's time, integer seconds since the epoch",
            "schema": _str(pattern="^[0-9]+$"),
        },
        {
            "name": "webhook-signature",
            "in": "header",
            "required": True,
            "description": "`v1,` + base64 HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` keyed with "
            "the secret's base64 part decoded (Standard Webhooks)",
            "schema": _str(pattern="^v1,[A-Za-z0-9+/]+={0,2}$"),
        },
        {
            "name": "User-Agent",
            "in": "header",
            "required": False,
            "schema": _str(enum=[USER_AGENT]),
        },
    ]
    entries: dict[str, Any] = {}
    for event_type, schema_name in EVENT_SCHEMAS.items():
        entries[event_type] = {
            "post": {
                "operationId": "event_" + event_type.replace(".", "_"),
                "summary": f"`{event_type}`",
                "tags": ["webhooks"],
                "parameters": headers,
                "requestBody": {
                    "required": True,
                    "description": "the same bytes on every attempt",
                    "content": _json(_ref(schema_name)),
                },
                "responses": {
                    "2XX": {"description": "Received: the delivery ends."},
                    "410": {"description": "Gone: the subscription is disabled, nothing more is sent to it."},
                    "default": {
                        "description": "Any other answer, a redirect, or none within "
                        f"{ATTEMPT_TIMEOUT_MS // 1000} s: retried under the same `webhook-id` with full-jitter "
                        "backoff for 24 h (the test event is sent once)."
                    },
                },
            }
        }
    return entries


# --- operations ------------------------------------------------------------------------------------


def _operations() -> dict[str, dict[str, Any]]:
    eid, pid = _param("eid"), _param("pid")
    bad_eid = {400: ["invalid_endpoint_id"]}
    prompt_errors = {
        400: ["malformed_json", "invalid_field", "field_too_long", "invalid_expiry", "invalid_idempotency_key"],
        422: ["idempotency_key_reused", "policy_violation"],
        429: ["too_many_open_prompts"],
        503: ["policy_unavailable"],
    }
    prompt_created = {
        201: _ok("The prompt, committed and queued for delivery", _ref("Prompt")),
        200: _ok("The prompt this `Idempotency-Key` already made (same body)", _ref("Prompt")),
    }
    limits = "#/components/schemas/Limits"
    paths: dict[str, dict[str, Any]] = {
        OPENAPI_PATH: {
            "get": _op(
                "get_openapi",
                "public",
                "This document",
                {200: _ok("The OpenAPI document", _ref("OpenApiDocument"), etag=True), 304: _NOT_MODIFIED},
                parameters=[_param("ifNoneMatch")],
                description="No authentication: it describes the API and holds no secret.",
                tag="meta",
            )
        },
        "/api/tokens": {
            "post": _op(
                "create_token",
                "admin",
                "Create a named technician token",
                {201: _ok("The token, shown this once", _ref("TokenCreated"))},
                errors={400: ["malformed_json", "invalid_field", "reserved_name"], 409: ["token_exists"]},
                body={
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": _str(
                            "unique without case; never a reserved name (admin, unknown, system, bridge, "
                            "console, runtime, agent, root) in any case",
                            pattern=NAME_PATTERN,
                            **{"not": {"pattern": RESERVED_NAME_PATTERN}},
                        ),
                        "role": _str(enum=list(ROLES), default="technician"),
                        "clients": {
                            **_CLIENTS_OR_NULL,
                            "description": f"scopes a technician token to these clients (1–{MAX_TOKEN_CLIENTS} "
                            "names; repeats ignoring case are dropped); null or left out: unscoped. With role "
                            "admin → 400 `invalid_field`",
                        },
                    },
                },
                tag="tokens",
            ),
            "get": _op(
                "list_tokens",
                "admin",
                "The named tokens (never a secret or a hash)",
                {200: _ok("The tokens", _ref("TokenList"), etag=True), 304: _NOT_MODIFIED},
                parameters=[_param("ifNoneMatch")],
                tag="tokens",
            ),
        },
        "/api/whoami": {
            "get": _op(
                "whoami",
                "technician",
                "Who the caller is: name, role, and the clients a scoped token may see",
                {200: _ok("The caller", _ref("Whoami"))},
                tag="tokens",
            )
        },
        "/api/tokens/{name}": {
            "delete": _op(
                "revoke_token",
                "admin",
                "Revoke a token",
                {200: _ok("Revoked", _ref("TokenRevoked"))},
                errors={404: ["unknown_token"]},
                parameters=[_param("name")],
                description="At once on the local host; on Cloudflare within 60 s (each Worker isolate "
                "trusts a token it verified for up to 60 s; the isolate that revoked it forgets it at once).",
                tag="tokens",
            )
        },
        "/api/endpoints": {
            "get": _op(
                "list_endpoints",
                "technician",
                "The fleet: one line per endpoint",
                {200: _ok("The endpoints the caller may see", _ref("EndpointList"), etag=True), 304: _NOT_MODIFIED},
                errors={400: ["invalid_query"]},
                parameters=[_param("client"), _param("site"), _param("includeRemoved"), _param("ifNoneMatch")],
                description="A token scoped to clients sees only their endpoints. Removed endpoints are listed "
                "only with `include_removed=1`.",
                tag="endpoints",
            )
        },
        "/api/endpoints/{eid}": {
            "get": _op(
                "get_endpoint",
                "technician",
                "One endpoint: label, enrollment, keys, audit head",
                {200: _ok("The endpoint", _ref("Endpoint"), etag=True), 304: _NOT_MODIFIED},
                errors={**bad_eid, 404: ["unknown_endpoint"]},
                parameters=[eid, _param("ifNoneMatch")],
                tag="endpoints",
            ),
            "patch": _op(
                "update_endpoint",
                "admin",
                "Relabel or move an endpoint (client, site)",
                {200: _ok("The endpoint now", _ref("Endpoint"), etag=True)},
                errors={
                    400: [*bad_eid[400], "malformed_json", "invalid_field", "missing_field"],
                    404: ["unknown_endpoint"],
                    410: ["endpoint_removed"],
                },
                parameters=[eid],
                body={
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": False,
                    "properties": {
                        "label": _str(
                            "one line, no control character", maxLength=wire.MAX_NAME_CHARS, pattern=ONE_LINE_PATTERN
                        ),
                        "client": {**_CLIENT_OR_NULL, "description": "null takes the client away"},
                        "site": {**_CLIENT_OR_NULL, "description": "null takes the site away"},
                    },
                },
                description="Changes what it is given (another field → 400 `invalid_field`, none → 400 "
                "`missing_field`) and records an `endpoint_updated` fact in the audit chain. A removed "
                "endpoint → 410 `endpoint_removed`.",
                tag="endpoints",
            ),
            "delete": _op(
                "remove_endpoint",
                "admin",
                "Remove an endpoint for good",
                {200: _ok("The endpoint, with `removed_at` and `removed_by`", _ref("Endpoint"), etag=True)},
                errors={**bad_eid, 404: ["unknown_endpoint"]},
                parameters=[eid],
                description="Its open prompts are cancelled by the admin, its agent closed (4410) and refused "
                "from then on; new prompts, retries, enrollments and edits → 410 `endpoint_removed`; its "
                "prompts stay readable (with `endpoint_removed_at`); the id stays taken. A repeat answers "
                "as the first did. No body is read.",
                tag="endpoints",
            ),
        },
        "/api/endpoints/{eid}/audit": {
            "get": _op(
                "export_audit",
                "technician",
                "The endpoint's audit chain as JSON Lines (for `caisey-audit verify`)",
                {
                    200: {
                        "description": "One JSON object per line (`AuditLine`): header, every fact with "
                        "its hash, head. UTF-8 (`charset=utf-8`), sent as an attachment "
                        "`caisey-audit-<endpoint_id>.jsonl`.",
                        "headers": {"Content-Disposition": {"schema": _str(), "description": "attachment; filename=…"}},
                        "content": {
                            AUDIT_MEDIA_TYPE: {
                                "schema": _str(),
                                "x-caisey-line-schema": _ref("AuditLine"),
                            }
                        },
                    }
                },
                errors={**bad_eid, 404: ["unknown_endpoint"]},
                parameters=[eid],
                tag="endpoints",
            )
        },
        "/api/limits": {
            "get": _op(
                "get_limits",
                "technician",
                "The endpoint quota and how many are registered",
                {200: _ok("The limits", {"$ref": limits})},
                tag="limits",
            ),
            "put": _op(
                "set_limits",
                "admin",
                "Change the endpoint quota",
                {200: _ok("The limits now", {"$ref": limits})},
                errors={400: ["malformed_json", "invalid_field"]},
                body={
                    "type": "object",
                    "required": ["max_endpoints"],
                    "properties": {
                        "max_endpoints": {"type": "integer", "minimum": 1, "maximum": MAX_ENDPOINTS_CEILING}
                    },
                },
                tag="limits",
            ),
        },
        "/api/enrollments": {
            "post": _op(
                "create_enrollment",
                "technician",
                "Register an endpoint (if new, within the quota) and issue a one-time enrollment token",
                {201: _ok("The enrollment token (valid 24 h, one use)", _ref("EnrollmentCreated"))},
                errors={
                    400: ["malformed_json", "invalid_endpoint_id", "invalid_field", "missing_field"],
                    403: ["forbidden", "client_out_of_scope"],
                    409: ["endpoint_id_conflict", "client_mismatch", "site_mismatch"],
                    410: ["endpoint_removed"],
                    429: ["endpoint_quota_exceeded"],
                },
                body={
                    "type": "object",
                    "required": ["endpoint_id"],
                    "properties": {
                        "endpoint_id": {"$ref": "#/components/schemas/EndpointId"},
                        "label": _str(
                            "one line, no control character; kept when left out or empty on a re-enrollment",
                            maxLength=wire.MAX_NAME_CHARS,
                            pattern=ONE_LINE_PATTERN,
                        ),
                        "client": {
                            **_CLIENT_OR_NULL,
                            "description": "set when the endpoint is registered; a scoped token must name one of "
                            "its clients (400 `missing_field`, 403 `client_out_of_scope`); another than an "
                            "existing endpoint's → 409 `client_mismatch`",
                        },
                        "site": {
                            **_CLIENT_OR_NULL,
                            "description": "set when the endpoint is registered; another than an existing "
                            "endpoint's → 409 `site_mismatch`",
                        },
                    },
                },
                description="Re-enrolling an endpoint that already has an agent replaces its secret and "
                "key: admin only (a technician gets 403 `forbidden`, nothing changes). An id differing "
                "from a registered one only in case, or one a scoped token cannot see → 409 "
                "`endpoint_id_conflict`. A removed endpoint → 410 `endpoint_removed`.",
                tag="enrollment",
            )
        },
        "/api/agent/enroll": {
            "post": _op(
                "agent_enroll",
                "enrollment_token",
                "The agent exchanges its enrollment token for an agent secret (and registers its key)",
                {200: _ok("The agent secret, shown this once", _ref("AgentEnrolled"))},
                errors={400: ["malformed_json", "missing_field", "invalid_public_key"]},
                body={
                    "type": "object",
                    "required": ["enrollment_token"],
                    "properties": {
                        "enrollment_token": _str(
                            "from `POST /api/enrollments`; unknown, used or expired → 401",
                            pattern=f"^cse_[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}~{SECRET_BODY}$",
                        ),
                        "public_key": _null(
                            _str(
                                "the endpoint key: raw Ed25519 public key, unpadded URL-safe base64 (bad → 400 "
                                "`invalid_public_key`, the token is not spent); required once the endpoint has "
                                "had a key (400 `missing_field`)",
                                pattern="^[A-Za-z0-9_-]{43}$",
                            )
                        ),
                    },
                },
                description="Authenticated by the enrollment token in the body (no Authorization header).",
                tag="enrollment",
            )
        },
        "/api/endpoints/{eid}/prompts": {
            "post": _op(
                "create_prompt",
                "technician",
                "Create a prompt",
                prompt_created,
                errors={
                    **prompt_errors,
                    400: [*bad_eid[400], *prompt_errors[400]],
                    404: ["unknown_endpoint", "unknown_prompt"],
                    410: ["endpoint_removed"],
                },
                parameters=[eid, _param("idempotencyKey")],
                body=_prompt_fields(create=True),
                description="With an `Idempotency-Key`, the same key again answers 200 with the same prompt "
                "(for its lifetime plus 24 h); the same key with another body → 422. At most "
                f"{wire.MAX_OPEN_PROMPTS} open prompts per endpoint (429).",
            ),
            "get": _op(
                "list_prompts",
                "technician",
                "The endpoint's prompts, newest first",
                {200: _ok("Reconciled prompts", _ref("PromptList"), etag=True), 304: _NOT_MODIFIED},
                errors={400: ["invalid_endpoint_id", "invalid_limit"], 404: ["unknown_endpoint"]},
                parameters=[eid, _param("limit"), _param("ifNoneMatch")],
            ),
        },
        "/api/endpoints/{eid}/prompts/{pid}": {
            "get": _op(
                "get_prompt",
                "technician",
                "One prompt with its timeline",
                {200: _ok("The prompt and its events", _ref("PromptWithEvents"))},
                errors={**bad_eid, 404: ["unknown_endpoint", "unknown_prompt"]},
                parameters=[eid, pid],
            )
        },
        "/api/endpoints/{eid}/prompts/{pid}/cancel": {
            "post": _op(
                "cancel_prompt",
                "technician",
                "Cancel a prompt (R3)",
                {
                    200: _ok("The prompt, cancelled (or already withdrawn: unchanged)", _ref("Prompt")),
                    409: {
                        "description": "`already_final`: approved, denied or firmly final; the prompt as it is",
                        "content": _json(_ref("AlreadyFinal")),
                    },
                },
                errors={**bad_eid, 404: ["unknown_endpoint", "unknown_prompt"], 409: ["already_final"]},
                parameters=[eid, pid],
                description="No body is read.",
            )
        },
        "/api/endpoints/{eid}/prompts/{pid}/retry": {
            "post": _op(
                "retry_prompt",
                "technician",
                "Issue a new prompt superseding this one",
                {
                    201: _ok("The new prompt", _ref("Prompt")),
                    200: _ok("The prompt this `Idempotency-Key` already made (same body)", _ref("Prompt")),
                },
                errors={
                    **prompt_errors,
                    400: [*bad_eid[400], *prompt_errors[400]],
                    404: ["unknown_endpoint", "unknown_prompt"],
                    410: ["endpoint_removed"],
                },
                parameters=[eid, pid, _param("idempotencyKey")],
                body=_prompt_fields(create=False),
                body_required=False,
            )
        },
        "/api/endpoints/{eid}/agent": {
            "get": _op(
                "agent_connect",
                "agent_secret",
                "The agent's WebSocket (wire protocol, README 'Wire protocol')",
                {
                    101: {
                        "description": "Switching Protocols: the socket is open; the agent sends `hello` and "
                        "the bridge answers in the wire protocol (JSON text frames). A newer socket replaces "
                        "an older one (close 4000)."
                    }
                },
                errors={
                    400: ["invalid_endpoint_id", "invalid_websocket_handshake"],
                    404: ["unknown_endpoint"],
                    410: ["endpoint_removed"],
                    426: ["upgrade_required"],
                },
                parameters=[eid, _param("upgrade")],
                description="A WebSocket upgrade (`Upgrade: websocket`) with `Authorization: Bearer "
                "<agent_secret>`. Without the upgrade → 426 `upgrade_required`, whatever the credentials. "
                "On the local host, an upgrade without a valid handshake (`Connection: Upgrade`, "
                "`Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`) → 400 `invalid_websocket_handshake` "
                "(on Cloudflare the runtime does the handshake). The agent of a removed endpoint, with its "
                "valid secret → 410 `endpoint_removed`.",
                tag="agent",
            )
        },
    }
    paths.update(_stats_operations())
    paths.update(_webhook_operations())
    paths.update(_policy_operations())
    paths.update(_window_operations())
    return paths


# --- approval windows (issue 16, DESIGN §13) ------------------------------------------------------


_WINDOW_REFUSALS = ("no_window", "window_not_started", "window_not_granted", "window_ended")


def _window_schemas() -> dict[str, Any]:
    minutes = {"type": "integer", "minimum": 1, "maximum": wire.MAX_GRANT_MINUTES}
    return {
        "ApprovalWindow": _obj(
            {
                "state": _str(
                    "asked (not approved yet), active, ended (its time was up), revoked, or not_granted "
                    "(the prompt ended without an approval)",
                    enum=["asked", "active", "ended", "revoked", "not_granted"],
                ),
                "minutes_asked": minutes,
                "minutes_granted": _null({**minutes, "description": "at most asked: the user may shorten it"}),
                "started_at": {**_TIME_OR_NULL, "description": "the approval's time"},
                "ends_at": {**_TIME_OR_NULL, "description": "access until then, unless revoked earlier"},
                "ended_at": _TIME_OR_NULL,
                "revoked_at": _TIME_OR_NULL,
                "revoked_by": _null(_str("`user` (the endpoint's user), or the technician's name")),
                "revoked_by_user": {"type": "boolean"},
            }
        ),
        "WindowRefused": _obj(
            {
                "error": _obj({"code": _str(enum=list(_WINDOW_REFUSALS)), "message": _str()}),
                "prompt": _ref("Prompt"),
            },
            optional=("prompt",),
        ),
    }


def _window_operations() -> dict[str, dict[str, Any]]:
    eid, pid = _param("eid"), _param("pid")
    return {
        "/api/endpoints/{eid}/prompts/{pid}/revoke": {
            "post": _op(
                "revoke_window",
                "technician",
                "Revoke a prompt's approval window",
                {
                    200: _ok("The prompt, its window revoked (or already revoked: as it is)", _ref("Prompt")),
                    409: {
                        "description": "`no_window`: the prompt asked for none; `window_not_started`, "
                        "`window_not_granted`, `window_ended`: with the prompt as it is",
                        "content": _json(_ref("WindowRefused")),
                    },
                },
                errors={
                    400: ["invalid_endpoint_id"],
                    404: ["unknown_endpoint", "unknown_prompt"],
                    410: ["endpoint_removed"],
                },
                parameters=[eid, pid],
                description="Ends an active approval window now (DESIGN §13): recorded as a `window_revoked` "
                "fact (by the technician), announced as `window.revoked`, and the agent is told "
                "(`window.notice`, resent until acked). No body is read. A revocation only ends access.",
            )
        },
    }


def _webhook_operations() -> dict[str, dict[str, Any]]:
    """Escalation, webhook subscriptions and the fleet settings (issue 13, DESIGN §11)."""
    eid, pid, hook = _param("eid"), _param("pid"), _param("webhookName")
    settings = _ref("Settings")
    return {
        "/api/endpoints/{eid}/prompts/{pid}/escalate": {
            "post": _op(
                "escalate_prompt",
                "technician",
                "Escalate a prompt by hand",
                {
                    200: _ok(
                        "The prompt with its timeline (an `escalated` event, source `console`)",
                        _ref("PromptWithEvents"),
                    )
                },
                errors={
                    400: ["invalid_endpoint_id", "malformed_json", "invalid_field", "field_too_long"],
                    404: ["unknown_endpoint", "unknown_prompt"],
                    409: ["too_many_escalations"],
                    410: ["endpoint_removed"],
                },
                parameters=[eid, pid],
                body={
                    "type": "object",
                    "properties": {
                        "note": _null(
                            _str(
                                "for the people the escalation reaches; not blank; newline and tab allowed, no "
                                "other control character",
                                minLength=1,
                                maxLength=MAX_NOTE_CHARS,
                                pattern=MULTILINE_PATTERN,
                            )
                        )
                    },
                    "description": "May be empty. Other fields are ignored.",
                },
                body_required=False,
                description="In any state (not on a removed endpoint: 410); recorded with who escalated "
                f"it (timeline and audit chain) and announced as `prompt.escalated`. At most {MAX_ESCALATIONS} "
                "per prompt (409 `too_many_escalations`).",
            )
        },
        "/api/webhooks": {
            "post": _op(
                "create_webhook",
                "admin",
                "Subscribe a URL to events",
                {201: _ok("The subscription and its signing secret, shown this once", _ref("WebhookCreated"))},
                errors={
                    400: ["malformed_json", "invalid_field", "webhook_target_refused"],
                    429: ["too_many_webhooks"],
                },
                body={
                    "type": "object",
                    "required": ["url", "events"],
                    "properties": {
                        "url": _str(
                            "https (http too with private targets allowed), no credentials, ASCII; an IP address "
                            "must be public unless private targets are allowed (`caisey-bridge serve "
                            "--allow-private-webhooks`, the Worker var `ALLOW_PRIVATE_WEBHOOKS=1`); a name must "
                            "hold a dot and not be `localhost`. Refused → 400 `webhook_target_refused` (not a "
                            "string or empty → 400 `invalid_field`)",
                            minLength=1,
                            maxLength=MAX_URL_CHARS,
                            pattern="^https?://[!-~]+$",
                        ),
                        "events": {
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": _str(enum=list(EVENT_TYPES)),
                            "description": "the event types to send (the top-level `webhooks` of this document)",
                        },
                        "description": _str(
                            "one line or more, no other control character",
                            maxLength=MAX_DESCRIPTION_CHARS,
                            pattern=MULTILINE_PATTERN,
                            default="",
                        ),
                    },
                },
                description=f"At most {MAX_SUBSCRIPTIONS} subscriptions (429 `too_many_webhooks`). Each event is "
                "POSTed, signed (Standard Webhooks), to every enabled subscription listing its type.",
                tag="webhooks",
            ),
            "get": _op(
                "list_webhooks",
                "admin",
                "The subscriptions and their delivery log (never a secret)",
                {200: _ok("The subscriptions", _ref("WebhookList"))},
                tag="webhooks",
            ),
        },
        "/api/webhooks/{name}": {
            "delete": _op(
                "delete_webhook",
                "admin",
                "Delete a subscription",
                {200: _ok("Deleted", _ref("WebhookDeleted"))},
                errors={404: ["unknown_webhook"]},
                parameters=[hook],
                description="Nothing more is sent to it. No body is read.",
                tag="webhooks",
            )
        },
        "/api/webhooks/{name}/test": {
            "post": _op(
                "test_webhook",
                "admin",
                "Send a signed `webhook.test` event to a subscription now",
                {200: _ok("The attempt's outcome (also in the delivery log)", _ref("WebhookTestResult"))},
                errors={404: ["unknown_webhook"]},
                parameters=[hook],
                description=f"One attempt, {ATTEMPT_TIMEOUT_MS // 1000} s at most, not retried; also to a disabled "
                "subscription. No body is read.",
                tag="webhooks",
            )
        },
        "/api/settings": {
            "get": _op(
                "get_settings",
                "technician",
                "The fleet settings: the default `escalate_after`",
                {200: _ok("The settings", settings)},
                tag="webhooks",
            ),
            "put": _op(
                "set_settings",
                "admin",
                "Set the fleet default `escalate_after`",
                {200: _ok("The settings now", settings)},
                errors={400: ["malformed_json", "missing_field", "invalid_field"]},
                body={
                    "type": "object",
                    "required": ["escalate_after"],
                    "properties": {
                        "escalate_after": _null(
                            {
                                "type": "number",
                                "minimum": MIN_ESCALATE_AFTER_S,
                                "maximum": MAX_ESCALATE_AFTER_S,
                                "description": "seconds (kept as whole milliseconds, shown as whole seconds); "
                                "null: none. Applies to prompts created or retried later without their own",
                            }
                        )
                    },
                },
                tag="webhooks",
            ),
        },
    }


# --- statistics and fleet patterns (issue 14: worker/endpoint_stats.py, worker/patterns.py) ---------

# An IANA zone name as the agent reports it (``caisey.localtime.ZONE_RE``; the wire refuses others).
ZONE_PATTERN = "^(?:" + ZONE_RE.pattern + ")$"
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_WEEKDAY = _str("the endpoint user's local weekday", enum=list(WEEKDAYS))
_HOUR = {"type": "integer", "minimum": 0, "maximum": 23, "description": "the endpoint user's local hour"}
_COUNT = {"type": "integer", "minimum": 0}
_RATE_OR_NULL = _null({"type": "number", "minimum": 0, "maximum": 1})
_ZONE_NAME = _str(f"an IANA zone name (1-{MAX_ZONE_CHARS} characters)", pattern=ZONE_PATTERN, maxLength=MAX_ZONE_CHARS)
_AS_OF = {**_TIME, "description": "when this answer was computed (left out of the `ETag`)"}
_MS_OR_NULL = _null({"type": "integer", "minimum": 0, "description": "milliseconds (a log-scale bin's middle)"})


def _stats_rates(**where: dict[str, Any]) -> dict[str, Any]:
    """One cell of counts (``worker.endpoint_stats._rates``), with where it is (hour, weekday)."""
    return _obj(
        {
            **where,
            "counted": _COUNT,
            "answered": _COUNT,
            "missed": {**_COUNT, "description": "counted − answered"},
            "unreachable": _COUNT,
            "answer_rate": {**_RATE_OR_NULL, "description": "answered / counted (4 decimals); null when none"},
        }
    )


def _stats_schemas() -> dict[str, Any]:
    tally = _obj(
        {
            **{name: _COUNT for name in stats.OUTCOMES},
            "counted": {**_COUNT, "description": "answered + unattended + ignored + unreachable (not withdrawn)"},
            "missed": {**_COUNT, "description": "counted − answered"},
        }
    )
    percentiles = _obj({"n": _COUNT, "p50_ms": _MS_OR_NULL, "p95_ms": _MS_OR_NULL})
    finding = {
        "kind": _str(enum=["misses_by_hour", "misses_by_weekday", "unreachable", "first_prompt"]),
        "text": _str("the finding in words"),
        "evidence": _obj(
            {
                "k": _COUNT,
                "n": _COUNT,
                "rate": _RATE_OR_NULL,
                "baseline_k": _COUNT,
                "baseline_n": _COUNT,
                "baseline_rate": _RATE_OR_NULL,
                "p_value": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": f"one-sided binomial tail (3 significant digits), below {stats.ALPHA}",
                },
            }
        ),
        "weekday": _null(_WEEKDAY),
        "hours": _null(
            {
                "type": "array",
                "description": "[start, end) local hours; a band every day may wrap past midnight (end > 24)",
                "prefixItems": [
                    {"type": "integer", "minimum": 0, "maximum": 23},
                    {"type": "integer", "minimum": 1, "maximum": 23 + stats.MAX_BAND_HOURS},
                ],
                "minItems": 2,
                "maxItems": 2,
            }
        ),
    }
    who = {
        "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
        "label": _str(),
        "client": _CLIENT_OR_NULL,
        "site": _CLIENT_OR_NULL,
        "time_zone": {**_null(_ZONE_NAME), "description": "as the agent reported it; null: never reported"},
    }
    pair = _obj({"counted": _COUNT, "answered": _COUNT})
    return {
        "ZoneName": _ZONE_NAME,
        "TimeZone": _obj(
            {
                "name": {**_null(_ref("ZoneName")), "description": "as the agent reported it; null: never reported"},
                "effective": {**_ref("ZoneName"), "description": "the zone hours are read in: `name`, or `UTC`"},
                "note": _null(_str("why hours are read in UTC instead of `name` (not reported, unknown here)")),
            }
        ),
        "StatsTally": tally,
        "StatsFinding": _obj(finding),
        "EndpointStats": _obj(
            {
                "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
                "time_zone": _ref("TimeZone"),
                "as_of": _AS_OF,
                "local_day": _str("today in the endpoint's zone", pattern=DAY_PATTERN, format="date"),
                "days": {"type": "integer", "minimum": 1, "maximum": max(WINDOWS_DAYS)},
                "outcomes": _obj({f"{w}d": _ref("StatsTally") for w in WINDOWS_DAYS}),
                "by_hour": {
                    "type": "array",
                    "minItems": 24,
                    "maxItems": 24,
                    "items": _stats_rates(hour=_HOUR),
                    "description": "local hours 0-23, over the last `days` days",
                },
                "by_weekday": {
                    "type": "array",
                    "minItems": 7,
                    "maxItems": 7,
                    "items": _stats_rates(weekday=_WEEKDAY),
                    "description": "Monday to Sunday, over the last `days` days",
                },
                "heat": {
                    "type": "array",
                    "maxItems": 7 * 24,
                    "items": _stats_rates(weekday=_WEEKDAY, hour=_HOUR),
                    "description": "the weekday × hour cells that hold a prompt, over the last `days` days",
                },
                "first_vs_reissued": _obj({"first": _stats_rates(), "reissued": _stats_rates()}),
                "latency": _obj(
                    {metric: _obj({f"{w}d": percentiles for w in WINDOWS_DAYS}) for metric in stats.METRICS},
                ),
                "answer_p95_by_week": {
                    "type": "array",
                    "minItems": WEEKS_OF_P95,
                    "maxItems": WEEKS_OF_P95,
                    "items": _obj(
                        {"week_start": _str(pattern=DAY_PATTERN, format="date"), "n": _COUNT, "p95_ms": _MS_OR_NULL}
                    ),
                    "description": "p95 time to answer per local week, oldest first",
                },
                "findings": {
                    "type": "array",
                    "maxItems": stats.MAX_FINDINGS,
                    "items": _ref("StatsFinding"),
                    "description": "last 90 days, most significant first",
                },
            }
        ),
        "FleetPatterns": _obj(
            {
                "as_of": _AS_OF,
                "filter": _obj({"client": _null(_str()), "site": _null(_str())}),
                "window_days": {"const": max(WINDOWS_DAYS)},
                "endpoints": {**_COUNT, "description": "endpoints the caller may see that match the filter"},
                "endpoints_with_history": {**_COUNT, "description": "of those, the ones that pushed a summary"},
                "totals": _ref("StatsTally"),
                "rules": _obj(
                    {
                        "min_sample": {"const": stats.MIN_SAMPLE},
                        "min_rate": {"const": stats.MIN_RATE},
                        "margin": {"const": stats.MARGIN},
                        "alpha": {"const": stats.ALPHA},
                        "max_band_hours": {"const": stats.MAX_BAND_HOURS},
                    }
                ),
                "findings": {
                    "type": "array",
                    "maxItems": FINDINGS_MAX,
                    "items": _obj({**who, **finding}),
                    "description": "every endpoint's findings, most significant first (at most `findings`)",
                },
                "findings_total": _COUNT,
                "ranking": {
                    "type": "array",
                    "maxItems": RANKING_MAX,
                    "items": _obj(
                        {
                            **who,
                            **tally["properties"],
                            "answer_rate": _RATE_OR_NULL,
                            "first": pair,
                            "reissued": pair,
                            "answer_p95_ms": _MS_OR_NULL,
                            "findings": {"type": "integer", "minimum": 0, "maximum": stats.MAX_FINDINGS},
                        }
                    ),
                    "description": "endpoints by prompts missed, most first (at most `limit`)",
                },
                "heat": {
                    "type": "array",
                    "maxItems": 7 * 24,
                    "items": _obj(
                        {
                            "weekday": _WEEKDAY,
                            "hour": _HOUR,
                            "counted": _COUNT,
                            "answered": _COUNT,
                            "missed": _COUNT,
                            "unreachable": _COUNT,
                        }
                    ),
                    "description": "every endpoint's weekday × hour cells summed, each in its own local time",
                },
            }
        ),
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _stats_operations() -> dict[str, dict[str, Any]]:
    days = max(WINDOWS_DAYS)
    counts = "in ASCII digits (else 400 `invalid_limit`); a repeated parameter counts its last value"
    name_filter = _str(minLength=1, maxLength=MAX_FILTER_CHARS, pattern=ONE_LINE_PATTERN)
    return {
        "/api/endpoints/{eid}/stats": {
            "get": _op(
                "get_stats",
                "technician",
                "The endpoint's statistics: outcomes, hours, weekdays, latencies, findings",
                {200: _ok("The statistics", _ref("EndpointStats"), etag=True), 304: _NOT_MODIFIED},
                errors={400: ["invalid_endpoint_id", "invalid_field"], 404: ["unknown_endpoint"]},
                parameters=[
                    _param("eid"),
                    _query(
                        "days",
                        f"the window of `by_hour`, `by_weekday`, `heat` and `first_vs_reissued`: 1-{days} in "
                        f"ASCII digits (else 400 `invalid_field`); default {days}",
                        {"type": "integer", "minimum": 1, "maximum": days, "default": days},
                    ),
                    _param("ifNoneMatch"),
                ],
                description="Kept incrementally by the endpoint's actor (issue 14). Hours and weekdays are "
                "the endpoint user's local ones (`time_zone.effective`), of each prompt's creation. A "
                "token scoped to clients gets 404 `unknown_endpoint` for another client's endpoint; a "
                "removed endpoint's statistics stay readable.",
                tag="endpoints",
            )
        },
        "/api/patterns": {
            "get": _op(
                "patterns",
                "technician",
                "The fleet's patterns over 90 days: findings, endpoints ranked by missed prompts, heat map",
                {200: _ok("The fleet's patterns", _ref("FleetPatterns"), etag=True), 304: _NOT_MODIFIED},
                errors={400: ["invalid_field", "invalid_limit"]},
                parameters=[
                    _query(
                        "client",
                        f"only endpoints of this client, compared without case; 1-{MAX_FILTER_CHARS} characters, "
                        "no control character (else 400 `invalid_field`)",
                        name_filter,
                    ),
                    _query(
                        "site",
                        f"only endpoints at this site, compared without case; 1-{MAX_FILTER_CHARS} characters, "
                        "no control character (else 400 `invalid_field`)",
                        name_filter,
                    ),
                    _query(
                        "limit",
                        f"the ranking's length, 1-{RANKING_MAX} {counts}; default {RANKING_DEFAULT}",
                        {"type": "integer", "minimum": 1, "maximum": RANKING_MAX, "default": RANKING_DEFAULT},
                    ),
                    _query(
                        "findings",
                        f"how many findings, 1-{FINDINGS_MAX} {counts}; default {FINDINGS_DEFAULT}",
                        {"type": "integer", "minimum": 1, "maximum": FINDINGS_MAX, "default": FINDINGS_DEFAULT},
                    ),
                    _param("ifNoneMatch"),
                ],
                description="Answered by the fleet index from the summary each endpoint pushes with its fleet "
                "line (no endpoint is asked on a read). A token scoped to clients sees only their "
                "endpoints; removed endpoints are left out.",
                tag="endpoints",
            )
        },
    }


# --- consent policies (issue 16: worker/policies.py, DESIGN §13) ----------------------------------


def _policy_schemas() -> dict[str, Any]:
    seconds = {"type": "integer", "minimum": MIN_POLICY_S, "maximum": MAX_POLICY_S}
    escalate = {"type": "integer", "minimum": MIN_ESCALATE_AFTER_S, "maximum": MAX_ESCALATE_AFTER_S}
    no_user = _str(enum=list(wire.NO_USER_POLICIES))
    fields = {
        "expires_in_default": {**seconds, "description": "seconds, for a create giving no expiry"},
        "expires_in_max": {**seconds, "description": "seconds; a longer create → 422 rule `expires_in_max`"},
        "on_no_user_allowed": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": no_user,
            "description": "another → 422 rule `on_no_user_allowed`",
        },
        "on_no_user_default": no_user,
        "escalate_after": {**escalate, "description": "seconds, for a create giving none"},
        "require_reason": {"type": "boolean", "description": "a create without `reason` → 422 rule `require_reason`"},
        "on_locked": _str("while the screen is locked: wait, or answer as with no user", enum=list(wire.LOCKED_RULES)),
        "brand_name": _str(
            "per client only", minLength=1, maxLength=wire.MAX_BRAND_NAME_CHARS, pattern=ONE_LINE_PATTERN
        ),
        "brand_logo_png": _str("per client only: a PNG, base64", maxLength=wire.MAX_BRAND_LOGO_CHARS),
    }
    body = {
        "type": "object",
        "properties": {k: _null(v) for k, v in fields.items()},
        "additionalProperties": False,
        "description": "The fields this level sets (replacing what it set before); null or left out: inherited. "
        "An unknown field → 400 `unknown_field`; a bad value → 400 `invalid_field`.",
    }
    stored = {**body, "properties": fields, "description": "the fields this level sets"}
    effective_field = _obj(
        {
            "value": {"description": "the effective value (null: not set anywhere, the agent decides)"},
            "source": _str(enum=["endpoint", "site", "client", "default"]),
            "note": _str("when the value was adjusted: levels that disagree"),
        },
        optional=("note",),
    )
    return {
        "PolicyBody": body,
        "PolicyLevel": _obj(
            {
                "level": _str(enum=["client", "site", "endpoint"]),
                "client": _CLIENT_OR_NULL,
                "site": _CLIENT_OR_NULL,
                "endpoint_id": _null(_str(pattern=ENDPOINT_ID_PATTERN)),
                "policy": stored,
                "updated_at": _TIME_OR_NULL,
                "updated_by": _null(_str()),
            }
        ),
        "PolicyList": _obj({"policies": {"type": "array", "items": _ref("PolicyLevel")}}),
        "EffectivePolicy": _obj(
            {
                "endpoint_id": _str(pattern=ENDPOINT_ID_PATTERN),
                "client": _CLIENT_OR_NULL,
                "site": _CLIENT_OR_NULL,
                "effective": _obj({k: effective_field for k in fields}),
            }
        ),
    }


def _policy_operations() -> dict[str, dict[str, Any]]:
    level = _ref("PolicyLevel")
    bad = ["malformed_json", "unknown_field", "invalid_field", "field_too_long"]
    paths: dict[str, dict[str, Any]] = {
        "/api/policies": {
            "get": _op(
                "list_policies",
                "admin",
                "Every policy level that is set",
                {200: _ok("The levels", _ref("PolicyList"))},
                tag="policies",
            )
        },
        "/api/endpoints/{eid}/policy": {
            "get": _op(
                "get_endpoint_policy",
                "technician",
                "The endpoint's effective policy, each field with its source",
                {200: _ok("Effective policy", _ref("EffectivePolicy"), etag=True), 304: _NOT_MODIFIED},
                errors={400: ["invalid_endpoint_id"], 404: ["unknown_endpoint"]},
                parameters=[_param("eid"), _param("ifNoneMatch")],
                description="Resolved field by field: endpoint > site > client > deployment default. A scoped "
                "technician sees only its clients' endpoints (else 404 as unknown).",
                tag="policies",
            ),
        },
    }
    levels = {
        "client": ("/api/clients/{client}/policy", [_param("clientName")], {400: ["invalid_field"]}),
        "site": (
            "/api/clients/{client}/sites/{site}/policy",
            [_param("clientName"), _param("siteName")],
            {400: ["invalid_field"]},
        ),
        "endpoint": (
            "/api/endpoints/{eid}/policy",
            [_param("eid")],
            {400: ["invalid_endpoint_id"], 404: ["unknown_endpoint"]},
        ),
    }
    for name, (path, params, errors) in levels.items():
        ops = paths.setdefault(path, {})
        if name != "endpoint":
            ops["get"] = _op(
                f"get_{name}_policy",
                "admin",
                f"The {name}'s policy as set",
                {200: _ok("The level", level)},
                errors=errors,
                parameters=params,
                tag="policies",
            )
        ops["put"] = _op(
            f"put_{name}_policy",
            "admin",
            f"Set the {name}'s policy",
            {200: _ok("The level, as stored", level)},
            errors={**errors, 400: [*errors.get(400, []), *bad]},
            parameters=params,
            body=_policy_schemas()["PolicyBody"],  # inline: the property tests draw from its fields
            body_required=False,  # no body: as {}, the level sets nothing
            description="Replaces the fields this level sets. On Cloudflare a change reaches creates within "
            "30 s (at once on the local host).",
            tag="policies",
        )
        ops["delete"] = _op(
            f"delete_{name}_policy",
            "admin",
            f"Clear the {name}'s policy",
            {200: _ok("The level, now empty", level)},
            errors={**errors, 404: [*errors.get(404, []), "unknown_policy"]},
            parameters=params,
            tag="policies",
        )
    return paths


def _components() -> dict[str, Any]:
    schemas = _schemas()
    schemas.update(_stats_schemas())
    schemas.update(_policy_schemas())
    schemas["ClientName"] = _str(f"a client or site name: {CLIENT_RULE}; compared without case", pattern=CLIENT_PATTERN)
    schemas["EndpointId"] = _str(
        "1-64 ASCII letters, digits, '.', '_', '-'; compared without case; never a Windows device name",
        pattern=ENDPOINT_ID_PATTERN,
        **{"not": {"pattern": RESERVED_DEVICE_PATTERN}},
    )
    return {
        "schemas": dict(sorted(schemas.items())),
        "securitySchemes": {
            "technicianToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "A technician token (`cst_…`, POST /api/tokens) or the admin token.",
            },
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "An admin token: the deployment's (local host: DIR/admin-token or "
                "CAISEY_ADMIN_TOKEN; Cloudflare: the secret ADMIN_TOKEN_SHA256 holds its hash) or one made "
                "with role admin. A technician token → 403 `forbidden`.",
            },
            "agentSecret": {
                "type": "http",
                "scheme": "bearer",
                "description": "The endpoint's agent secret (`csa_…`, POST /api/agent/enroll); opens only its endpoint.",
            },
        },
        "parameters": {
            "eid": {
                "name": "eid",
                "in": "path",
                "required": True,
                "description": "the endpoint id (malformed → 400 `invalid_endpoint_id`)",
                "schema": _str(pattern=ENDPOINT_ID_PATTERN),
            },
            "pid": {
                "name": "pid",
                "in": "path",
                "required": True,
                "description": "the prompt id (unknown → 404 `unknown_prompt`)",
                "schema": _str(pattern=PROMPT_ID_PATTERN),
            },
            "name": {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "the token's name (unknown → 404 `unknown_token`)",
                "schema": _str(pattern=NAME_PATTERN),
            },
            "webhookName": {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "the subscription's id (`wh_…`; unknown → 404 `unknown_webhook`)",
                "schema": _str(pattern=WEBHOOK_ID_PATTERN),
            },
            "client": {
                "name": "client",
                "in": "query",
                "required": False,
                "description": "only endpoints of this client, compared without case (bad → 400 `invalid_query`)",
                "schema": _str(pattern=CLIENT_PATTERN),
            },
            "site": {
                "name": "site",
                "in": "query",
                "required": False,
                "description": "only endpoints at this site, compared without case (bad → 400 `invalid_query`)",
                "schema": _str(pattern=CLIENT_PATTERN),
            },
            "clientName": {
                "name": "client",
                "in": "path",
                "required": True,
                "description": "a client name, percent-encoded; compared without case (bad → 400 `invalid_field`)",
                "schema": _str(pattern=CLIENT_PATTERN),
            },
            "siteName": {
                "name": "site",
                "in": "path",
                "required": True,
                "description": "a site name of that client, percent-encoded (bad → 400 `invalid_field`)",
                "schema": _str(pattern=CLIENT_PATTERN),
            },
            "includeRemoved": {
                "name": "include_removed",
                "in": "query",
                "required": False,
                "description": "`1`: removed endpoints too (else 400 `invalid_query` unless `0`)",
                "schema": _str(enum=["0", "1"], default="0"),
            },
            "limit": {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"how many, in ASCII digits (else 400 `invalid_limit`); default {_CONFIG.list_default}",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": _CONFIG.list_max,
                    "default": _CONFIG.list_default,
                },
            },
            "idempotencyKey": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "the same key again answers the same prompt (DESIGN §5)",
                "schema": _str(minLength=1, maxLength=MAX_IDEMPOTENCY_KEY_CHARS),
            },
            "ifNoneMatch": {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "the `ETag` of a previous answer: 304 when nothing changed",
                "schema": _str(),
            },
            "upgrade": {
                "name": "Upgrade",
                "in": "header",
                "required": True,
                "schema": _str(enum=["websocket"]),
            },
        },
        "headers": {
            "ETag": {"description": 'a weak validator (`W/"…"`) for If-None-Match', "schema": _str(pattern='^W/".+"$')}
        },
    }


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
        "info": {
            "title": "Caisey bridge HTTP API",
            "version": "1",
            "summary": "Remote-support consent prompts: technician console → bridge → endpoint agent.",
            "description": (
                "Identical on both hosts (the local host `caisey-bridge serve` and the Cloudflare Worker). "
                'JSON in and out; every error is `{"error": {"code", "message"}}` with a stable code '
                "(the 409 `already_final` adds `prompt`). Bodies are at most "
                f"{MAX_BODY_BYTES // 1024} KiB (413 `body_too_large`); `NaN`/`Infinity` are not JSON. "
                "A known path with another method → 405 `method_not_allowed`; an unknown /api path → 404 "
                "`not_found`. Responses carry `Cache-Control: no-store` and the API's security headers. "
                "The API only adds: clients ignore fields they do not know."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/", "description": "the bridge's own origin"}],
        "tags": [
            {"name": "prompts"},
            {"name": "endpoints"},
            {"name": "enrollment"},
            {"name": "agent"},
            {"name": "tokens"},
            {"name": "limits"},
            {"name": "webhooks", "description": "subscriptions, the events they receive, escalation settings"},
            {"name": "policies", "description": "consent policies per client, site and endpoint (DESIGN §13)"},
            {"name": "meta"},
        ],
        "paths": _operations(),
        "webhooks": _webhooks(),
        "components": _components(),
        "x-caisey-unrouted": {
            "404": ["not_found"],
            "405": ["method_not_allowed"],
        },
    }


DOCUMENT: dict[str, Any] = _document()

__all__ = ["DOCUMENT", "EVENT_SCHEMAS", "OPENAPI_PATH"]
