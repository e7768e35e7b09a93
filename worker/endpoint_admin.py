"""An admin's changes to an endpoint itself: relabel, move (client, site), remove (issue 17, DESIGN §12).

``EndpointAdmin`` is part of ``EndpointBridge`` (a mixin, like ``worker.enrollment``: the
actor's HTTP dispatch finds these ``_op_*`` by name and they run inside its events).

- ``PATCH /api/endpoints/{eid}`` ``{label?, client?, site?}`` changes what it is given and
  records an ``endpoint_updated`` fact (who, and the new values) in the endpoint's chain.
- ``DELETE /api/endpoints/{eid}`` removes the endpoint, for good: its open prompts are
  cancelled by the admin (so each reaches a final state, I1), its pending enrollments and its
  outbox dropped, ``endpoint_removed`` recorded in the chain (the export still verifies), and
  its connected agent closed with ``REMOVED_CLOSE``. From then on the agent's secret opens
  nothing (``worker.admission`` answers 410 ``endpoint_removed`` to the agent that proves it
  holds it, and ``invalid_agent_secret`` to anyone else), no prompt or enrollment can be made
  (410 ``endpoint_removed``), and the fleet hides it unless asked (``?include_removed=1``).
  Its prompts stay readable, each marked with ``endpoint_removed_at``; the id stays taken.
  A repeated DELETE answers as the first did.
"""

from __future__ import annotations

from typing import Any

from caisey.audit import ENDPOINT_REMOVED, ENDPOINT_UPDATED
from caisey.clock import to_rfc3339
from caisey.facts import Cancelled
from worker.api import TECHNICIAN_HEADER, ApiError, ApiRequest, ApiResponse, Route, client_problem, label_problem
from worker.host import Effects

# The close code an agent gets when its endpoint is removed (4000-4999: private use).
REMOVED_CLOSE = (4410, "endpoint removed by an admin")
# Calls refused once the endpoint is removed: everything that would make something new.
# Escalation too: a removed machine pages nobody and its chain ends at the removal (review F2).
REFUSED_WHEN_REMOVED = frozenset(
    {"create_prompt", "retry_prompt", "create_enrollment", "update_endpoint", "escalate_prompt"}
)
UPDATABLE = ("label", "client", "site")
RECORD_SEQ = "record_seq"  # meta: the audit seq of the last change to client, site or removal


class EndpointAdmin:
    """Admin operations on the endpoint; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge.
    _q: Any
    _meta: Any
    _set_meta: Any
    _atomically: Any
    _append_endpoint_fact: Any
    _fleet_summary: Any
    _require_registered: Any
    _withdraw: Any
    _op_get_endpoint: Any
    endpoint_id: Any
    chain: Any

    def _removed_at_ms(self) -> int | None:
        value = self._meta("removed_at_ms")
        return int(value) if value else None

    def _refuse_if_removed(self, op: str) -> None:
        """410 for a call that would make something new on a removed endpoint."""
        removed = self._removed_at_ms()
        if removed is not None and op in REFUSED_WHEN_REMOVED and self.endpoint_id is not None:
            raise ApiError(
                410,
                "endpoint_removed",
                f"endpoint {self.endpoint_id!r} was removed at {to_rfc3339(removed)}; its prompts stay readable, "
                "nothing new can be made for it (its id stays taken)",
            )

    def _record_fields(self) -> dict[str, Any]:
        """What the fleet line carries of the endpoint's record: client, site, removal, and the
        audit seq of their last change (the fleet keeps the newest: ``FleetIndex.update_endpoint``)."""
        return {
            "client": self._meta("client"),
            "site": self._meta("site"),
            "removed_at_ms": self._removed_at_ms(),
            "record_seq": int(self._meta(RECORD_SEQ) or 0),
        }

    def _record_changed(self) -> None:
        """After appending the fact that changed client, site or removal (inside its transaction)."""
        self._set_meta(RECORD_SEQ, str(self.chain.head(self.endpoint_id)[0]))

    def _mark_removed(self, prompt: dict[str, Any]) -> dict[str, Any]:
        removed = self._removed_at_ms()
        if removed is not None:
            prompt["endpoint_removed_at"] = to_rfc3339(removed)
        return prompt

    def _op_update_endpoint(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        self._require_registered(route.endpoint_id)
        body = req.json()
        unknown = sorted(set(body) - set(UPDATABLE))
        if unknown:
            raise ApiError(400, "invalid_field", f"unknown field {unknown[0][:40]!r}: give label, client or site")
        if not body:
            raise ApiError(400, "missing_field", "give at least one of label, client, site")
        if "label" in body:
            problem = label_problem(body["label"])
            if problem is not None:
                raise ApiError(400, "invalid_field", problem)
        for name in ("client", "site"):  # null takes the client (or site) away
            problem = client_problem(body[name], name) if body.get(name) is not None else None
            if problem is not None:
                raise ApiError(400, "invalid_field", problem)
        changed = {name: body[name] for name in UPDATABLE if name in body and body[name] != self._meta(name)}
        if "label" in changed and self._meta("label") is None and changed["label"] == "":
            del changed["label"]
        if changed:
            by = req.header(TECHNICIAN_HEADER) or "unknown"

            def update() -> None:
                for name, value in changed.items():
                    self._set_meta(name, value)
                self._append_endpoint_fact(ENDPOINT_UPDATED, dict(changed, by=by), now_ms)
                self._record_changed()

            self._atomically(update)
            effects.fleet_summary = self._fleet_summary(now_ms, connected, force=True)
        return self._endpoint_now(route, req, now_ms, connected, effects)

    def _op_remove_endpoint(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        self._require_registered(route.endpoint_id)
        if self._removed_at_ms() is None:
            by = req.header(TECHNICIAN_HEADER) or "unknown"

            def remove() -> None:
                cancelled = [r["prompt_id"] for r in self._q("SELECT prompt_id FROM prompts WHERE final = 0")]
                for prompt_id in cancelled:
                    self._withdraw(prompt_id, Cancelled(by=by), now_ms)
                self._q("DELETE FROM outbox")  # the agent is refused from now on: nothing is owed to it
                self._q("DELETE FROM enrollments WHERE used_at_ms IS NULL")
                self._set_meta("removed_at_ms", str(now_ms))
                self._set_meta("removed_by", by)
                self._append_endpoint_fact(ENDPOINT_REMOVED, {"by": by, "cancelled": cancelled}, now_ms)
                self._record_changed()

            self._atomically(remove)
            if connected:
                effects.close_agent = REMOVED_CLOSE
            effects.fleet_summary = self._fleet_summary(now_ms, False, force=True)
        return self._endpoint_now(route, req, now_ms, False, effects)

    def _endpoint_now(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        """The endpoint as ``GET`` shows it, always in full (a change answers 200, never 304)."""
        plain = ApiRequest(req.method, req.path, {k: v for k, v in req.headers.items() if k != "if-none-match"})
        response: ApiResponse = self._op_get_endpoint(route, plain, now_ms, connected, effects)
        return response


__all__ = ["REFUSED_WHEN_REMOVED", "REMOVED_CLOSE", "EndpointAdmin"]
