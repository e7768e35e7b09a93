"""The gateway: what happens to an API request before an actor sees it (DESIGN §8).

Both hosts call ``dispatch``; they differ only in how they reach an actor (in-process on
the local host, ``stub.fetch`` to a Durable Object on Cloudflare), which ``Actors`` hides.
Steps: strip client-sent internal headers → route (the OpenAPI document, public, is answered
here) → authenticate the technician with the
fleet index (for a route naming an endpoint, a scoped token is checked against the endpoint's
client there too: ``worker.scope``, the one place that rule is enforced) → find the endpoint
a body names (enrollments; a new id is validated and claimed at the fleet index first:
case-insensitively unique, within the endpoint quota, within a scoped caller's clients)
→ for a create or retry, the endpoint's effective consent policy from the fleet index, passed
in an internal header (``worker.policies``) → forward.
The agent's WebSocket upgrade is not dispatched here: each host accepts sockets its own way.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from worker import admission, openapi, scope
from worker.api import (
    CLIENTS_HEADER,
    ENDPOINT_HEADER,
    ROLE_HEADER,
    TECHNICIAN_HEADER,
    ApiError,
    ApiRequest,
    ApiResponse,
    client_problem,
    endpoint_id_problem,
    label_problem,
    match,
    with_etag,
)
from worker.fleet import AUTHENTICATE_PATH, CLAIM_PATH
from worker.hooks import DEFAULT_ESCALATE_HEADER
from worker.policies import POLICY_HEADER, POLICY_PATH
from worker.webhook_subscriptions import REPORT_PATH


class Actors(Protocol):
    async def fleet(self, req: ApiRequest) -> ApiResponse:
        """Forward to the fleet index."""
        ...

    async def endpoint(self, endpoint_id: str, req: ApiRequest) -> ApiResponse:
        """Forward to one endpoint's actor."""
        ...

    async def send_webhook(self, send: dict[str, Any]) -> dict[str, Any]:
        """Perform one webhook attempt (``worker.hooks`` send) → ``{status, error}``."""
        ...


async def dispatch(req: ApiRequest, actors: Actors) -> ApiResponse:
    try:
        req.headers = {k: v for k, v in req.headers.items() if not k.startswith("x-caisey-")}
        route = match(req.method, req.path)
        if route.op == "get_openapi":  # public: the API's description holds no secret
            return with_etag(req, openapi.DOCUMENT)
        if route.op == "agent_connect":
            raise ApiError(426, "upgrade_required", "the agent endpoint needs a WebSocket upgrade")
        clients: list[str] | None = None
        if route.auth in ("admin", "technician"):
            refusal = admission.technician_bearer_shape(req)  # no bearer: no object is reached
            if refusal is not None:
                return refusal
            check: dict[str, object] = {"token": req.bearer(), "need_role": route.auth}
            if route.endpoint_id is not None:
                check["endpoint_id"] = route.endpoint_id  # scoped tokens: in scope, or unknown
            answer = await actors.fleet(ApiRequest("POST", AUTHENTICATE_PATH, body=json.dumps(check).encode()))
            if answer.status != 200:
                return answer
            req.headers[TECHNICIAN_HEADER] = answer.body["name"]
            req.headers[ROLE_HEADER] = answer.body["role"]
            clients = answer.body.get("clients")
            if clients is not None:
                req.headers[CLIENTS_HEADER] = scope.encode(clients) or ""
        endpoint_id = route.endpoint_id
        if route.op == "create_enrollment":
            body = req.json()
            endpoint_id = body.get("endpoint_id")
            problem = endpoint_id_problem(endpoint_id)
            if problem is not None:
                raise ApiError(400, "invalid_endpoint_id", problem)
            # Refused here, before any actor (or, on the local host, its file) exists for it.
            problem = label_problem(body.get("label", ""))
            if problem is not None:
                raise ApiError(400, "invalid_field", problem)
            for name in ("client", "site"):
                problem = client_problem(body[name], name) if body.get(name) is not None else None
                if problem is not None:
                    raise ApiError(400, "invalid_field", problem)
            claim_body = {
                "endpoint_id": endpoint_id,
                "client": body.get("client"),
                "site": body.get("site"),
                "scope": clients,
            }
            claim = await actors.fleet(ApiRequest("POST", CLAIM_PATH, body=json.dumps(claim_body).encode()))
            if claim.status != 200:
                return claim
        elif route.op == "agent_enroll":
            # A token that cannot be one the bridge made reaches no object (issue 11 item 7).
            endpoint_id = admission.enrollment_token_shape(req.json().get("enrollment_token"))
            if endpoint_id is None:
                raise ApiError(
                    401, "invalid_enrollment_token", "the enrollment token is unknown, already used or expired"
                )
        if route.op == "test_webhook":
            return await _test_webhook(req, actors)
        if route.op in ("create_prompt", "retry_prompt"):
            # The endpoint's effective policy (DESIGN §13), its escalate_after being the fleet
            # default (DESIGN §11) unless a level sets one. Without it no create goes through:
            # a policy that could not be read must not be skipped.
            answer = await actors.fleet(
                ApiRequest("POST", POLICY_PATH, body=json.dumps({"endpoint_id": endpoint_id}).encode())
            )
            policy = answer.body.get("policy") if answer.status == 200 and isinstance(answer.body, dict) else None
            if not isinstance(policy, dict):
                raise ApiError(503, "policy_unavailable", "the endpoint's policy could not be read; try again")
            req.headers[POLICY_HEADER] = json.dumps(policy, separators=(",", ":"))
            escalate = policy.get("escalate_after")
            if isinstance(escalate, int | float) and not isinstance(escalate, bool):
                req.headers[DEFAULT_ESCALATE_HEADER] = str(int(escalate * 1000))
        if route.actor == "fleet":
            return await actors.fleet(req)
        assert endpoint_id is not None
        req.headers[ENDPOINT_HEADER] = endpoint_id
        return await actors.endpoint(endpoint_id, req)
    except ApiError as exc:
        return exc.response()


async def _test_webhook(req: ApiRequest, actors: Actors) -> ApiResponse:
    """``POST /api/webhooks/{id}/test``: the fleet prepares a signed ``webhook.test`` event,
    the host sends it once (10 s at most), the outcome goes to the delivery log and back."""
    prepared = await actors.fleet(req)
    if prepared.status != 200 or not isinstance(prepared.body, dict):
        return prepared
    send = prepared.body["send"]
    result = await actors.send_webhook(send)
    status, error = result.get("status"), result.get("error")
    delivered = isinstance(status, int) and 200 <= status < 300
    if not delivered and error is None:
        error = f"HTTP {status}"
    report = {
        "subscription_id": send["subscription_id"],
        "event_id": send["event_id"],
        "type": "webhook.test",
        "endpoint_id": None,
        "outcome": "test_delivered" if delivered else "test_failed",
        "status": status,
        "error": error,
        "attempts": 1,
        "next_attempt_at_ms": None,
    }
    await actors.fleet(ApiRequest("POST", REPORT_PATH, body=json.dumps({"reports": [report]}).encode()))
    body = {
        "id": send["subscription_id"],
        "webhook_id": send["event_id"],
        "delivered": delivered,
        "status": status,
        "error": error,
    }
    return ApiResponse(200, body)
