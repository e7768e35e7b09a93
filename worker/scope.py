"""Scoped technician tokens: which endpoints a token may see and act on (DESIGN §12).

A technician token may be scoped to a list of clients. The rule, in one place:

- a scoped token sees and acts on an endpoint only when the endpoint's ``client`` is one of
  its clients (compared ignoring case); an endpoint without a client is visible only to
  unscoped tokens; admin tokens are never scoped;
- an out-of-scope endpoint answers exactly as an unknown one — the same status, code and
  message (``unknown_endpoint``) — so its existence does not leak.

Where it is enforced: every route that names an endpoint passes the gateway
(``worker.gateway``), which sends the endpoint id with the token to the fleet index's
authentication; the index answers ``out_of_scope`` from the endpoint's fleet line before any
actor is reached. Fleet-wide routes (the fleet list, and any later route over many endpoints)
receive the token's clients in ``CLIENTS_HEADER`` and must filter with ``visible``.
Enrollment names its endpoint in the body; its scope rules are in the fleet's claim.
"""

from __future__ import annotations

import json
from typing import Any

from worker.api import CLIENTS_HEADER, ApiError, ApiRequest, client_problem

# A scope longer than this is refused at token creation: a technician working for more clients
# than this is better served unscoped, and every scope check is linear in it.
MAX_TOKEN_CLIENTS = 100


def unknown_endpoint(endpoint_id: str | None) -> ApiError:
    """The one answer for an endpoint that is not registered — or not in the caller's scope.
    The message is the actors' (``EndpointBridge._require_registered``, ``worker.admission``)."""
    return ApiError(404, "unknown_endpoint", f"endpoint {endpoint_id!r} is not registered")


def parse_clients(value: Any) -> list[str] | None:
    """A token's ``clients`` from a create body: None (unscoped) or a non-empty list of valid,
    distinct (ignoring case) client names; ``ApiError`` 400 otherwise."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ApiError(
            400, "invalid_field", "clients must be a non-empty list of client names, or left out for an unscoped token"
        )
    if len(value) > MAX_TOKEN_CLIENTS:
        raise ApiError(400, "invalid_field", f"a token may be scoped to at most {MAX_TOKEN_CLIENTS} clients")
    seen: set[str] = set()
    clients: list[str] = []
    for item in value:
        problem = client_problem(item, "each client")
        if problem is not None:
            raise ApiError(400, "invalid_field", problem)
        if item.lower() not in seen:
            seen.add(item.lower())
            clients.append(item)
    return clients


def encode(clients: list[str] | None) -> str | None:
    return None if clients is None else json.dumps(clients, separators=(",", ":"))


def decode(stored: str | None) -> list[str] | None:
    if stored is None:
        return None
    value = json.loads(stored)
    return [str(c) for c in value] if isinstance(value, list) else None


def of_request(req: ApiRequest) -> list[str] | None:
    """The caller's clients as the gateway set them (None: unscoped)."""
    return decode(req.header(CLIENTS_HEADER))


def visible(clients: list[str] | None, endpoint_client: str | None) -> bool:
    """Whether a token scoped to ``clients`` (None: unscoped) sees an endpoint of ``endpoint_client``."""
    if clients is None:
        return True
    if endpoint_client is None:
        return False
    wanted = endpoint_client.lower()
    return any(c.lower() == wanted for c in clients)


__all__ = ["MAX_TOKEN_CLIENTS", "decode", "encode", "of_request", "parse_clients", "unknown_endpoint", "visible"]
