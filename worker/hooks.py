"""Outbound events and escalation behind the endpoint actor (DESIGN §11, issue 13).

``Hooks`` is part of ``EndpointBridge`` (a mixin, like ``worker.signed_answers``). It watches
what every event committed and, in the same transaction (persist before send):

- announces prompt moments as webhook events — ``prompt.created``, ``prompt.delivered``,
  ``prompt.final`` (again only if R4 replaces a provisional final), ``prompt.escalated`` —
  and the agent's connection as ``endpoint.online`` / ``endpoint.offline``. Each prompt's row
  remembers what was announced (``hook_marks``: flags ``c`` created, ``d`` delivered, ``e``
  escalated by the bridge, then ``|`` and the final state announced), so an event fires once.
- escalates a prompt that has an ``escalate_after`` (its own, or the fleet default the gateway
  passes in ``DEFAULT_ESCALATE_HEADER``): once, when it is still open ``escalate_after`` after
  its creation, or when it becomes ``failed_to_deliver``. An escalation is an ``Escalated``
  fact: on the timeline and in the audit chain.

Events wait in ``webhook_events`` until the next alarm, which the event's commit makes due at
once. There the host passes the deployment's subscriptions (``targets``: read from the fleet
index when ``wants_targets``), each event becomes one ``webhook_deliveries`` row per
subscription that wants its type, and due rows become ``Effects.webhooks`` sends for the host
to perform outside any event. An attempt is counted before it is handed out, and its row
leased (``LEASE_MS``: longer than an attempt can take, so a host that dies mid-attempt leaves
it to come back); ``webhook_results`` then ends the row (2xx), ends every row of its
subscription (410: the fleet disables it), or schedules the next attempt with full-jitter
backoff under the same ``webhook-id``; a row whose first attempt is 24 h old is given up. Every outcome is reported to the fleet's
delivery log (``Effects.webhook_reports``). The one alarm includes the next due delivery and
the next escalation (read with the actor's tallies, ``FleetLine._tallies``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from caisey import text, wire
from caisey.clock import to_rfc3339
from caisey.facts import Escalated, GiveUpReason
from caisey.prompt import State
from worker import webhooks
from worker.api import TECHNICIAN_HEADER, ApiError, ApiRequest, ApiResponse, Route
from worker.host import Effects

DEFAULT_ESCALATE_HEADER = "x-caisey-default-escalate-after-ms"
# A note is free text a person reads (caisey.text), as long as other free text on the wire.
MAX_NOTE_CHARS = wire.MAX_TEXT_CHARS
# Escalations a prompt may collect: the timeline and every prompt object stay bounded.
MAX_ESCALATIONS = 20
# Events an endpoint keeps waiting for delivery: beyond this the oldest are dropped (and
# reported), so a dead receiver cannot grow an endpoint's storage without bound.
MAX_PENDING_DELIVERIES = 5_000
# When the deployment has no subscription at all, an endpoint that just read so keeps no
# events for this long: without it every event of every endpoint would cost an alarm wake
# and a read of the fleet (a Durable Object request each on Cloudflare) to learn that
# nobody listens. The price: a new subscription may miss up to this much of an endpoint's
# events after it is created. A host that can answer "does anyone listen?" at once sets
# ``Hooks.listening`` instead (the local host: its fleet index is in the same process), and
# neither the wake nor the miss happens there.
NO_TARGETS_TTL_MS = 60_000
# Prompts an event refreshed whose rows are read together with the escalation scan; an event
# that refreshed more (an alarm, a report) reads each row on its own.
MAX_TOUCHED_BOUND = 50


class Hooks:
    """Webhook events and escalation; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge.
    _q: Any
    _ids: Any
    _meta: Any
    _set_meta: Any
    _view: Any
    _append: Any
    _event: Any
    _finish: Any
    _existing: Any
    _api_view: Any
    _in_event: bool
    entropy: Any
    endpoint_id: Any
    config: Any

    _touched: set[str]
    # Set by a host that knows its subscriptions without a request: whether any is enabled
    # now. An event nobody listens to is then not kept — no alarm wakes only to learn that
    # (issue 15: one transaction per returning agent, one per prompt moment).
    listening: Callable[[], bool] | None = None
    _hook_rows: dict[str, dict[str, Any]]  # ``worker.actor_memory``
    _escalate_due: float | None = None  # see ``_hooks_after_event``

    # --- watching what an event committed ---------------------------------------------------

    def _hooks_touch(self, prompt_id: str) -> None:
        """``_refresh`` ran for this prompt in this event (its state may have moved)."""
        self._touched.add(prompt_id)

    def _hooks_schedule(self, prompt_id: str, after_ms: int | None, now_ms: int) -> None:
        """A new prompt's escalation time (none without an ``escalate_after``)."""
        if after_ms is not None:
            self._q(
                "UPDATE prompts SET escalate_after_ms = ?, escalate_at_ms = ? WHERE prompt_id = ?",
                after_ms,
                now_ms + after_ms,
                prompt_id,
            )
            row = self._hook_rows.get(prompt_id)
            if row is not None:
                row["escalate_after_ms"], row["escalate_at_ms"] = after_ms, now_ms + after_ms
            if self._escalate_due is not None:
                self._escalate_due = min(self._escalate_due, float(now_ms + after_ms))

    def _escalations_known(self, earliest: int | None) -> None:
        """The rows' earliest ``escalate_at_ms``, just read (None: no prompt waits to escalate)."""
        self._escalate_due = math.inf if earliest is None else float(earliest)

    def _hooks_after_event(self, now_ms: int, connected: bool) -> None:
        """Inside the event's transaction, after its facts: queue what it means outside."""
        endpoint_id = self.endpoint_id
        if endpoint_id is None:
            self._touched.clear()
            return
        # The prompts due to escalate and those this event refreshed, their rows in one read
        # (each prompt's handling writes its own row only), or none: the rows of recent prompts
        # are remembered (``_hook_rows``), and no prompt is due to escalate before
        # ``_escalate_due`` (what this object knows of the earliest ``escalate_at_ms``: read
        # with the tallies at the end of every event, lowered by ``_hooks_schedule``; see
        # ``worker.actor_memory``). Bound parameters stay few: a Durable Object takes at most
        # 100 per statement.
        touched, remembered = self._touched, self._hook_rows
        missing = [prompt_id for prompt_id in touched if prompt_id not in remembered]
        few = missing if len(missing) <= MAX_TOUCHED_BOUND else []
        terms, params = [], []
        if self._escalate_due is None or self._escalate_due <= now_ms:
            terms.append("(escalate_at_ms IS NOT NULL AND escalate_at_ms <= ?)")
            params.append(now_ms)
        if few:
            terms.append(f"prompt_id IN ({', '.join('?' * len(few))})")
            params.extend(few)
        if terms:
            for row in self._q(
                "SELECT prompt_id, hook_marks, escalate_after_ms, escalate_at_ms FROM prompts "
                f"WHERE {' OR '.join(terms)}",
                *params,
            ):
                remembered[row["prompt_id"]] = row
                touched.add(row["prompt_id"])
        while touched:  # in id order: the events queued do not depend on how the set was built
            batch = sorted(touched)
            touched.clear()
            for prompt_id in batch:
                row = remembered.get(prompt_id)
                if row is None and not few:  # not read above: too many to name in one statement
                    row = self._hooks_row(prompt_id)
                if row is not None:
                    self._hooks_prompt(prompt_id, row, now_ms)
        online = "1" if connected else "0"
        before = self._meta("hooks_online")
        if before != online:
            self._set_meta("hooks_online", online)
            if before is not None or connected:
                data = {
                    "endpoint_id": endpoint_id,
                    "label": self._meta("label") or "",
                    "online": connected,
                    "at": to_rfc3339(now_ms),
                }
                self._hooks_queue("endpoint.online" if connected else "endpoint.offline", "", data, now_ms)

    def _hooks_row(self, prompt_id: str) -> dict[str, Any] | None:
        rows = self._q(
            "SELECT prompt_id, hook_marks, escalate_after_ms, escalate_at_ms FROM prompts WHERE prompt_id = ?",
            prompt_id,
        )
        if rows:
            self._hook_rows[prompt_id] = rows[0]
        return rows[0] if rows else None

    def _hooks_prompt(self, prompt_id: str, row: dict[str, Any], now_ms: int) -> None:
        marks = row["hook_marks"] or "|"
        flags, _, final_announced = marks.partition("|")
        view = self._view(prompt_id, now_ms)
        changed = False
        if "c" not in flags:
            flags += "c"
            self._hooks_queue("prompt.created", prompt_id, lambda: self._prompt_data(view), now_ms)
        if "d" not in flags and view.received_at_ms is not None:
            flags += "d"
            self._hooks_queue("prompt.delivered", prompt_id, lambda: self._prompt_data(view), now_ms)
        if view.final and view.state.value != final_announced:
            final_announced = view.state.value
            changed = True
            self._hooks_queue("prompt.final", prompt_id, lambda: self._prompt_data(view), now_ms)
        escalate_at = row["escalate_at_ms"]
        if "e" not in flags and row["escalate_after_ms"] is not None:
            reason = None
            if view.state == State.FAILED_TO_DELIVER:
                reason = _unreachable_words(view)
            elif not view.final and escalate_at is not None and int(escalate_at) <= now_ms:
                reason = f"not answered in {webhooks.duration_words(int(row['escalate_after_ms']))}"
            if reason is not None:
                flags += "e"
                self._hooks_escalate(prompt_id, Escalated(by="bridge", reason=reason, auto=True), now_ms)
        if escalate_at is not None and ("e" in flags or view.final):
            self._q("UPDATE prompts SET escalate_at_ms = NULL WHERE prompt_id = ?", prompt_id)
            row["escalate_at_ms"] = None  # ``row`` is what ``_hook_rows`` remembers
        new_marks = flags + "|" + final_announced
        if new_marks != marks or changed:
            self._q("UPDATE prompts SET hook_marks = ? WHERE prompt_id = ?", new_marks, prompt_id)
            row["hook_marks"] = new_marks

    def _hooks_escalate(self, prompt_id: str, fact: Escalated, now_ms: int) -> None:
        self._append(prompt_id, now_ms, fact)
        view = self._view(prompt_id, now_ms)

        def data() -> dict[str, Any]:
            body = self._prompt_data(view)
            body["escalation"] = {
                "at": to_rfc3339(now_ms),
                "by": fact.by,
                "reason": fact.reason,
                "note": fact.note,
                "auto": fact.auto,
            }
            return body

        self._hooks_queue("prompt.escalated", prompt_id, data, now_ms)

    def _prompt_data(self, view: Any) -> dict[str, Any]:
        """The stable ``data`` of every ``prompt.*`` event (README: "Webhooks")."""
        body = self._api_view(view)
        data = {key: body[key] for key in webhooks.PROMPT_DATA_FIELDS}
        created = view.created_at_ms

        def since(ms: int | None) -> int | None:
            return None if ms is None else max(0, ms - created)

        data["timings"] = {
            "attempts": view.attempts,
            "delivered_at": body["delivery"]["received_at"],
            "acknowledged_at": body["delivery"]["acknowledged_at"],
            "to_delivered_ms": since(view.received_at_ms),
            "to_decision_ms": since(view.decided_at_ms),
            "to_final_ms": since(view.final_at_ms),
        }
        return data

    def _hooks_queue(
        self, event_type: str, prompt_id: str, data: dict[str, Any] | Callable[[], dict[str, Any]], now_ms: int
    ) -> None:
        """Keep one event; ``data`` may be a function, called only when the event is kept."""
        if not self.config.webhooks:
            return  # a host that sends none (the simulation, benchmarks): nothing to keep
        if self.listening is not None:
            if not self.listening():
                return  # nobody listens now: the host said so
        elif int(self._meta("hooks_no_targets_until_ms") or 0) > now_ms:
            return  # nobody listens (read less than NO_TARGETS_TTL_MS ago)
        event_id = "msg_" + self._ids.new(now_ms)
        body = webhooks.envelope(event_type, now_ms, data() if callable(data) else data)
        self._q(
            "INSERT INTO webhook_events (event_id, type, prompt_id, body, at_ms) VALUES (?, ?, ?, ?, ?)",
            event_id,
            event_type,
            prompt_id,
            body,
            now_ms,
        )

    # --- the alarm: deliveries -----------------------------------------------------------------

    def wants_targets(self, now_ms: int) -> bool:
        """Whether the alarm at ``now_ms`` needs the subscriptions (the host reads them then)."""
        due = self._hooks_sends_due_ms()
        return due is not None and due <= now_ms

    def _hooks_sends_due_ms(self) -> int | None:
        row = self._q(
            "SELECT (SELECT MIN(at_ms) FROM webhook_events WHERE expanded = 0) AS pending, "
            "(SELECT MIN(next_at_ms) FROM webhook_deliveries) AS retry"
        )[0]
        times = [int(t) for t in (row["pending"], row["retry"]) if t is not None]
        return min(times) if times else None

    def _hooks_sends(self, now_ms: int, targets: list[dict[str, Any]] | None, effects: Effects) -> None:
        """Inside the alarm's event: fan new events out to subscriptions, hand out due attempts.
        ``targets`` None: the host did not read them (nothing was due before this alarm); what
        waits stays due, and the next alarm — at once — reads them."""
        if targets is None:
            return
        self._set_meta("hooks_no_targets_until_ms", None if targets else str(now_ms + NO_TARGETS_TTL_MS))
        subs = {str(t["id"]): t for t in (targets or [])}
        for event in self._q("SELECT event_id, type FROM webhook_events WHERE expanded = 0 ORDER BY event_id"):
            for sub in subs.values():
                if event["type"] in sub["events"]:
                    self._q(
                        "INSERT OR IGNORE INTO webhook_deliveries (event_id, subscription_id, attempts, first_at_ms, "
                        "next_at_ms) VALUES (?, ?, 0, ?, ?)",
                        event["event_id"],
                        sub["id"],
                        now_ms,
                        now_ms,
                    )
            self._q("UPDATE webhook_events SET expanded = 1 WHERE event_id = ?", event["event_id"])
        self._hooks_trim(now_ms, effects)
        rows = self._q(
            "SELECT d.event_id, d.subscription_id, d.attempts, d.first_at_ms, e.type, e.body "
            "FROM webhook_deliveries AS d JOIN webhook_events AS e ON e.event_id = d.event_id "
            "WHERE d.next_at_ms <= ? ORDER BY d.next_at_ms, d.event_id LIMIT ?",
            now_ms,
            webhooks.MAX_SENDS_PER_ALARM,
        )
        for row in rows:
            sub = subs.get(row["subscription_id"])
            if sub is None:  # deleted or disabled since: nothing more to send to it
                self._hooks_forget(row["event_id"], row["subscription_id"])
                continue
            attempts = int(row["attempts"])
            if now_ms - int(row["first_at_ms"]) >= webhooks.GIVE_UP_AFTER_MS:
                self._hooks_forget(row["event_id"], row["subscription_id"])
                error = f"gave up after 24 h ({attempts} attempts)"
                effects.webhook_reports.append(self._report(row, "gave_up", None, error, attempts, None, now_ms))
                continue
            next_at = now_ms + webhooks.LEASE_MS
            self._q(
                "UPDATE webhook_deliveries SET attempts = ?, next_at_ms = ? WHERE event_id = ? AND subscription_id = ?",
                attempts + 1,
                next_at,
                row["event_id"],
                row["subscription_id"],
            )
            body = str(row["body"])
            effects.webhooks.append(
                {
                    "event_id": row["event_id"],
                    "subscription_id": row["subscription_id"],
                    "url": sub["url"],
                    "headers": webhooks.headers(str(sub["secret"]), row["event_id"], now_ms, body.encode()),
                    "body": body,
                }
            )
        self._q(
            "DELETE FROM webhook_events WHERE expanded = 1 AND NOT EXISTS "
            "(SELECT 1 FROM webhook_deliveries AS d WHERE d.event_id = webhook_events.event_id)"
        )

    def _hooks_trim(self, now_ms: int, effects: Effects) -> None:
        count = int(self._q("SELECT COUNT(*) AS n FROM webhook_deliveries")[0]["n"])
        if count <= MAX_PENDING_DELIVERIES:
            return
        for row in self._q(
            "SELECT d.event_id, d.subscription_id, d.attempts, e.type FROM webhook_deliveries AS d "
            "JOIN webhook_events AS e ON e.event_id = d.event_id ORDER BY d.event_id LIMIT ?",
            count - MAX_PENDING_DELIVERIES,
        ):
            self._hooks_forget(row["event_id"], row["subscription_id"])
            error = f"dropped: more than {MAX_PENDING_DELIVERIES} deliveries waiting on this endpoint"
            effects.webhook_reports.append(
                self._report(row, "gave_up", None, error, int(row["attempts"]), None, now_ms)
            )

    def _hooks_forget(self, event_id: str, subscription_id: str) -> None:
        self._q("DELETE FROM webhook_deliveries WHERE event_id = ? AND subscription_id = ?", event_id, subscription_id)

    def _report(
        self,
        row: Any,
        outcome: str,
        status: int | None,
        error: str | None,
        attempts: int,
        next_at_ms: int | None,
        now_ms: int,
    ) -> dict[str, Any]:
        return {
            "subscription_id": row["subscription_id"],
            "event_id": row["event_id"],
            "type": row["type"],
            "endpoint_id": self.endpoint_id,
            "outcome": outcome,
            "status": status,
            "error": None if error is None else error[: webhooks.MAX_ERROR_CHARS],
            "attempts": attempts,
            "next_attempt_at_ms": next_at_ms,
            "at_ms": now_ms,
        }

    def webhook_results(self, results: list[dict[str, Any]], now_ms: int, connected: bool) -> Effects:
        """The host performed sends: ``{event_id, subscription_id, status (None: no answer),
        error}`` each. One event: rows end or stay scheduled; outcomes go to the delivery log."""
        effects = Effects()

        def event() -> None:
            for result in results:
                rows = self._q(
                    "SELECT d.event_id, d.subscription_id, d.attempts, d.next_at_ms, e.type "
                    "FROM webhook_deliveries AS d JOIN webhook_events AS e ON e.event_id = d.event_id "
                    "WHERE d.event_id = ? AND d.subscription_id = ?",
                    str(result["event_id"]),
                    str(result["subscription_id"]),
                )
                if not rows:
                    continue  # already ended (a duplicate result, or the subscription went away)
                row = rows[0]
                status, error = result.get("status"), result.get("error")
                attempts = int(row["attempts"])
                if isinstance(status, int) and 200 <= status < 300:
                    self._hooks_forget(row["event_id"], row["subscription_id"])
                    effects.webhook_reports.append(self._report(row, "delivered", status, None, attempts, None, now_ms))
                elif status == 410:
                    # The receiver asked us to stop: every row of that subscription ends here,
                    # and the fleet disables it (reported), so no endpoint sends to it again.
                    self._q("DELETE FROM webhook_deliveries WHERE subscription_id = ?", row["subscription_id"])
                    error = "the receiver answered 410 Gone: subscription disabled"
                    effects.webhook_reports.append(self._report(row, "disabled", 410, error, attempts, None, now_ms))
                else:
                    error = str(error or f"HTTP {status}")
                    config = self.config
                    delay = webhooks.retry_delay_ms(
                        attempts, self.entropy.uniform(), config.webhook_retry_base_ms, config.webhook_retry_cap_ms
                    )
                    next_at = now_ms + delay
                    self._q(
                        "UPDATE webhook_deliveries SET next_at_ms = ?, last_status = ?, last_error = ? "
                        "WHERE event_id = ? AND subscription_id = ?",
                        next_at,
                        status,
                        error[: webhooks.MAX_ERROR_CHARS],
                        row["event_id"],
                        row["subscription_id"],
                    )
                    effects.webhook_reports.append(
                        self._report(row, "retrying", status, error, attempts, next_at, now_ms)
                    )
            self._q(
                "DELETE FROM webhook_events WHERE expanded = 1 AND NOT EXISTS "
                "(SELECT 1 FROM webhook_deliveries AS d WHERE d.event_id = webhook_events.event_id)"
            )
            self._finish(now_ms, connected, effects)

        self._event(event)
        return effects

    # --- escalation by hand ---------------------------------------------------------------------

    def _op_escalate_prompt(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        prompt_id = self._existing(route)
        note = req.json().get("note")
        if note is not None:
            if not isinstance(note, str) or not note.strip():
                raise ApiError(400, "invalid_field", "note must be a non-empty string when given")
            if len(note) > MAX_NOTE_CHARS:
                raise ApiError(400, "field_too_long", f"note has {len(note)} characters; the limit is {MAX_NOTE_CHARS}")
            problem = text.check(note, "note", multiline=True)
            if problem is not None:
                raise ApiError(400, "invalid_field", problem)
        view = self._view(prompt_id, now_ms)
        if len(view.escalations) >= MAX_ESCALATIONS:
            raise ApiError(409, "too_many_escalations", f"a prompt can be escalated at most {MAX_ESCALATIONS} times")
        technician = req.header(TECHNICIAN_HEADER) or "unknown"
        fact = Escalated(by=technician, reason=f"escalated by {technician}", note=note, auto=False)
        self._hooks_escalate(prompt_id, fact, now_ms)
        return ApiResponse(200, self._api_view(self._view(prompt_id, now_ms), with_events=True))


def default_escalate_after_ms(req: ApiRequest) -> int | None:
    raw = req.header(DEFAULT_ESCALATE_HEADER) or ""
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _unreachable_words(view: Any) -> str:
    """Why a prompt failed to deliver, in words: "could not reach endpoint — 7 attempts over 5 min"."""
    reason = view.reason or ""
    if reason.startswith(GiveUpReason.REJECTED_BY_RUNTIME.value):
        return "the endpoint refused the prompt" + reason.removeprefix(GiveUpReason.REJECTED_BY_RUNTIME.value)
    span = (view.final_at_ms or view.created_at_ms) - view.created_at_ms
    if view.attempts == 0:
        return f"could not reach endpoint — offline for {webhooks.duration_words(span)}, no attempt made"
    plural = "attempt" if view.attempts == 1 else "attempts"
    return f"could not reach endpoint — {view.attempts} {plural} over {webhooks.duration_words(span)}"
