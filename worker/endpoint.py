"""``EndpointBridge``: the actor that owns one endpoint's prompts (DESIGN §2, §4, §5, §7, §8).

It is the single serialization point for its endpoint (R1): every fact from the console,
the runtime or its own delivery machinery is appended to ``facts`` in one order, and the
prompt's state is always ``caisey.prompt.reconcile`` of those rows — never a field someone
set. Written once against ``worker.host``: SQL rows in, ``Effects`` out. The local host and
the Cloudflare Durable Object both run exactly this class.

Delivery (§5): a create commits the prompt, its ``created`` fact and its outbox row in one
transaction before any frame leaves (persist before send). While the agent is connected
the outbox is retried with full-jitter backoff; while it is away nothing is spent, and on
its ``hello`` everything owed is flushed at once with the original event ids. A deliver row
leaves the outbox when the runtime's receipt (or any later runtime fact) is committed,
when the prompt turns final, or when attempts run out (``failed_to_deliver``/``no_receipt``).

Time: one alarm, ``min(next outbox attempt, next prompt moment (expiry / firm),
liveness deadline, housekeeping)``, recomputed from the rows after every call.

Around it, each in its own module: the schema (``endpoint_schema``), what runtime frames mean
as facts (``runtime_facts``), the endpoint's own record — enrollment, keys, audit export —
(``enrollment``), the keys and the check of signed answers (``endpoint_keys``), the hash
chain every fact is appended to (``audit_chain``), what an adoption may claim
(``adoption``), a create's fields (``prompt_fields``), an admin's relabel, move and removal
(``endpoint_admin``), its line in the fleet index (``fleet_line``), its statistics
(``endpoint_stats``), the history requests of R6 (``history_requests``), the approval
windows of DESIGN §13 (``approval_windows``), the outbox (``outbox``) and what the actor keeps
in memory across events (``actor_memory``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from caisey import wire
from caisey.backoff import Backoff
from caisey.digest import held_digest
from caisey.errors import ProtocolError
from caisey.facts import (
    Acknowledged,
    Cancelled,
    Created,
    Decided,
    Entry,
    Fact,
    NoDecisionHeld,
    NoUserPolicy,
    Received,
    Replayed,
    Superseded,
    fact_from_record,
    fact_to_record,
)
from caisey.ids import IdSource
from caisey.prompt import DECIDED, WITHDRAWN, PromptView, ReconcileConfig, next_moment_ms, reconcile, runtime_status
from caisey.signing import SignatureClaim
from worker import adoption, policies
from worker.actor_memory import ActorMemory
from worker.api import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    ROLE_HEADER,
    TECHNICIAN_HEADER,
    ApiError,
    ApiRequest,
    ApiResponse,
    Route,
    idempotency_key_ok,
    route_for_actor,
    with_etag,
)
from worker.approval_windows import ApprovalWindows
from worker.audit_chain import AuditChain
from worker.endpoint_admin import EndpointAdmin
from worker.endpoint_keys import EndpointKeys
from worker.endpoint_schema import MIGRATIONS, migrate
from worker.endpoint_stats import EndpointStatsOps
from worker.enrollment import EndpointRecord
from worker.fleet_line import FleetLine
from worker.history_requests import HistoryRequests
from worker.hooks import Hooks
from worker.host import Effects, Entropy, Row, SqlStore
from worker.outbox import AWAITING_HELLO, Outbox
from worker.prompt_fields import MAX_EXPIRES_IN_S, retry_body
from worker.runtime_facts import adopted_created, is_news, report_facts, update_fact
from worker.signed_answers import SignedAnswers

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

AGENT_VERSION_HEADER = "x-caisey-agent-version"


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    # DESIGN §5's full jitter (base 1 s, factor 2, cap 60 s) with a floor: a deliver is not
    # retried sooner than its receipt could come back (``Backoff.floor_ms``, as the agent's resend).
    backoff: Backoff = field(default_factory=lambda: Backoff(floor_ms=500))
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    heartbeat_ms: int = 15_000
    # Three missed heartbeats: the socket is half-open (a laptop lid closed mid-flight).
    liveness_ms: int = 45_000
    # Issue 12: offered to agents that ping (``hello.pings``). They send the constant
    # ``wire.PING_FRAME`` every ``heartbeat_ms`` — on Cloudflare answered by the runtime without
    # waking the Durable Object — and a full heartbeat (digest, clock sample) only this often.
    # Liveness is then checked lazily: the host passes when the runtime last answered a ping
    # (``heard_ms``) to every event, and an agent silent for ``liveness_ms`` is gone before a
    # delivery attempt is spent on it; the alarm checks only once a full heartbeat is overdue.
    # None (the local host): not offered; every heartbeat is a full one, as before.
    digest_every_ms: int | None = None
    min_expires_in_ms: int = 5_000
    max_expires_in_ms: int = 7 * DAY_MS
    default_expires_in_ms: int = 5 * 60_000
    enrollment_ttl_ms: int = DAY_MS
    # DESIGN §5: an Idempotency-Key answers the same prompt for its lifetime plus 24 h.
    idempotency_grace_ms: int = DAY_MS
    # Runtime event ids are remembered this long; facts are also checked for news, so a
    # duplicate older than this changes nothing either.
    seen_event_retention_ms: int = 7 * DAY_MS
    housekeeping_every_ms: int = HOUR_MS
    # A steady heartbeat (nothing changed since the last one this actor object answered) is
    # answered from memory, and ``last_seen_ms`` is stored at most this stale meanwhile: a
    # bridge with 10,000 agents need not open and commit 10,000 files every 15 s. Liveness and
    # the fleet line use the time in memory; a crash loses at most this much of "last seen".
    last_seen_store_ms: int = 5 * 60_000
    list_default: int = 50
    list_max: int = 200
    # Issue 13: keep webhook events for the host to deliver (``worker.hooks``). Both hosts set
    # it; the simulation and the benchmarks leave it off (escalation works either way).
    webhooks: bool = False
    webhook_retry_base_ms: int = 5_000  # full jitter after a failed attempt (worker.webhooks)
    webhook_retry_cap_ms: int = 3_600_000


class EndpointBridge(
    ActorMemory,
    Outbox,
    EndpointRecord,
    EndpointAdmin,
    SignedAnswers,
    Hooks,
    FleetLine,
    EndpointStatsOps,
    ApprovalWindows,
    HistoryRequests,
):
    """One endpoint's actor. Every public method is one host event; each returns what to do."""

    def __init__(self, store: SqlStore, entropy: Entropy, config: BridgeConfig | None = None) -> None:
        self.store = store
        self.entropy = entropy
        self.config = config or BridgeConfig()
        self._ids = IdSource(entropy.bits)
        # Within one event only (cleared before and after it): views by prompt id, dropped when a
        # fact is appended. Saves reconciling the same prompt several times per event.
        self._views: dict[str, tuple[int, PromptView]] = {}
        # Across events (``worker.actor_memory``): the meta rows, the newest prompts' entries
        # (extended by ``_append``, which learns the seq from the INSERT), the chain's head, keys.
        self._init_memory()
        self._in_event = False
        self._in_transaction = False
        # Across events, on this object only (a Durable Object re-created after hibernation
        # starts without them, and takes the slow path): the agent last heard (newer than the
        # stored last_seen_ms when steady heartbeats were answered from memory), and what a
        # steady heartbeat needs, set by a heartbeat that changed nothing and dropped by any
        # other event.
        self._heard_ms: int | None = None
        self._steady: _Steady | None = None
        self._work_alarm_ms: int | None = None  # the last event's alarm, liveness aside
        self.keys = EndpointKeys(store)
        self.chain = AuditChain(store)
        # Within one agent frame's event: the signature claims its host verified.
        self._verified: frozenset[SignatureClaim] = frozenset()
        self._touched: set[str] = set()  # within one event: prompts refreshed (``worker.hooks``)
        migrate(store, MIGRATIONS)

    # --- small SQL helpers -----------------------------------------------------------------

    def _q(self, sql: str, *params: Any) -> list[Row]:
        return self.store.execute(sql, params)

    def _atomically(self, fn: Callable[[], Any]) -> Any:
        if self._in_transaction:  # nested: the outer transaction commits or rolls back (no savepoints)
            return fn()
        self._in_transaction = True
        try:
            return self.store.transaction(fn)
        except BaseException:
            self._forget()  # rolled back: what memory holds may be gone from the rows
            raise
        finally:
            self._in_transaction = False

    def _event(self, fn: Callable[[], Any]) -> Any:
        """One host event in one transaction: its facts, ``last_seen`` and the fleet fingerprint
        commit together (one fsync instead of one per write)."""
        self._views.clear()
        self._in_event = True
        self._steady = None  # any event may change what a steady heartbeat relies on

        def with_last_seen() -> Any:
            if self._heard_ms is not None:  # heard from memory since it was last stored
                if self._heard_ms > int(self._meta("last_seen_ms") or 0):
                    self._set_meta("last_seen_ms", str(self._heard_ms))
                self._heard_ms = None
            result = fn()
            self._write_meta()  # the meta keys it set, before the commit
            return result

        try:
            return self._atomically(with_last_seen)
        finally:
            self._views.clear()
            self._trim_memory()
            self._in_event = False

    @property
    def endpoint_id(self) -> str | None:
        return self._meta("endpoint_id")

    def _require_registered(self, endpoint_id: str | None) -> str:
        registered = self.endpoint_id
        if registered is None or (endpoint_id is not None and endpoint_id != registered):
            raise ApiError(404, "unknown_endpoint", f"endpoint {endpoint_id!r} is not registered")
        return registered

    # --- facts and views ---------------------------------------------------------------------

    def _append(self, prompt_id: str, now_ms: int, fact: Fact, event_id: str | None = None) -> None:
        self._views.pop(prompt_id, None)
        kind, fields = fact_to_record(fact)
        seq = self.chain.append(self.endpoint_id or "", prompt_id, now_ms, kind, fields, event_id, cache=self._in_event)
        entries = self._facts.get(prompt_id)
        if entries is not None:
            # The fact itself: a stored fact is rebuilt exactly (``caisey.facts``), so this is
            # the entry a re-read would give.
            entries.append(Entry(seq, int(now_ms), fact, (kind, fields)))

    def _append_endpoint_fact(self, kind: str, fields: dict[str, Any], now_ms: int) -> None:
        """A fact about the endpoint itself (enrollments, keys): chained, prompt_id ''."""
        self.chain.append(self.endpoint_id or "", "", now_ms, kind, fields, None, cache=self._in_event)

    def _entries(self, prompt_id: str) -> list[Entry]:
        entries = self._facts.get(prompt_id)
        if entries is None:
            rows = self._q("SELECT seq, at_ms, kind, fields FROM facts WHERE prompt_id = ? ORDER BY seq", prompt_id)
            facts = [(r, fact_from_record(r["kind"], json.loads(r["fields"]))) for r in rows]
            entries = [Entry(int(r["seq"]), int(r["at_ms"]), f, fact_to_record(f)) for r, f in facts]
            if self._in_event:
                self._facts[prompt_id] = entries
        return entries

    def _view(self, prompt_id: str, now_ms: int) -> PromptView:
        cached = self._views.get(prompt_id)
        if cached is not None and cached[0] == now_ms:
            return cached[1]
        view = reconcile(prompt_id, self._entries(prompt_id), now_ms, self.config.reconcile)
        self._views[prompt_id] = (now_ms, view)
        return view

    def _refresh(self, prompt_id: str, now_ms: int) -> PromptView:
        """Reconcile and store the derived columns the alarm and fleet summary read."""
        view = self._view(prompt_id, now_ms)
        derived = _derived(view, self.config.reconcile)
        if self._derived.get(prompt_id) != derived:  # unchanged (a delivery attempt): no write
            self._q(
                "UPDATE prompts SET state = ?, final = ?, final_at_ms = ?, next_moment_ms = ?, runtime_status = ? "
                "WHERE prompt_id = ?",
                *derived,
                prompt_id,
            )
            self._derived[prompt_id] = derived
        if view.final:
            self._q("DELETE FROM outbox WHERE prompt_id = ? AND kind = 'deliver'", prompt_id)
        self._hooks_touch(prompt_id)
        self._observe_stats(view, now_ms)
        return view

    def _known(self, prompt_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM prompts WHERE prompt_id = ?", prompt_id))

    def _api_view(self, view: PromptView, *, with_events: bool = False) -> dict[str, Any]:
        return self._mark_removed(view.to_api(self.endpoint_id or "", with_events=with_events))

    # --- HTTP ----------------------------------------------------------------------------------

    def handle(
        self, req: ApiRequest, now_ms: int, connected: bool, heard_ms: int | None = None
    ) -> tuple[ApiResponse, Effects]:
        """A request the gateway forwarded (authenticated, internal headers set). ``heard_ms``:
        when the host's runtime last answered the agent's ping itself (None: not known)."""
        try:
            route = route_for_actor(req)
        except ApiError as exc:
            effects = Effects()
            self._finish(now_ms, connected, effects)
            return exc.response(), effects
        return self.http(route, req, now_ms, connected, heard_ms)

    def http(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, heard_ms: int | None = None
    ) -> tuple[ApiResponse, Effects]:
        """One API call for this endpoint (the gateway has authenticated it)."""
        effects = Effects()

        def event() -> ApiResponse:
            nonlocal connected
            connected = self._check_liveness(now_ms, connected, heard_ms, effects)
            try:
                self._refuse_if_removed(route.op)
                handler = getattr(self, f"_op_{route.op}")
                response: ApiResponse = handler(route, req, now_ms, connected, effects)
            except ApiError as exc:
                response = exc.response()
            self._finish(now_ms, connected, effects)
            return response

        return self._event(event), effects

    def _op_create_prompt(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        self._require_registered(route.endpoint_id)
        body = req.json()
        fields = policies.create_fields(body, req, now_ms, self.config)
        supersedes = body.get("supersedes")
        if supersedes is not None and (not _is_prompt_id(supersedes) or not self._known(supersedes)):
            raise ApiError(
                404, "unknown_prompt", f"supersedes names no prompt of this endpoint: {str(supersedes)[:80]!r}"
            )
        return self._create(req, now_ms, connected, effects, fields, supersedes, ("create", body))

    def _op_retry_prompt(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        old_id = self._existing(route)
        old = self._view(old_id, now_ms)
        body = req.json()
        fields = policies.create_fields(retry_body(old, body), req, now_ms, self.config)
        return self._create(req, now_ms, connected, effects, fields, old_id, ("retry", old_id, body))

    def _existing(self, route: Route) -> str:
        """The route's prompt id, or 404 when the endpoint or the prompt is unknown."""
        self._require_registered(route.endpoint_id)
        prompt_id = route.prompt_id or ""
        if not _is_prompt_id(prompt_id) or not self._known(prompt_id):
            raise ApiError(404, "unknown_prompt", f"no prompt {prompt_id[:80]!r} on this endpoint")
        return prompt_id

    def _create(
        self,
        req: ApiRequest,
        now_ms: int,
        connected: bool,
        effects: Effects,
        fields: dict[str, Any],
        supersedes: str | None,
        fingerprint: tuple[Any, ...],
    ) -> ApiResponse:
        key = req.header("idempotency-key")
        body_hash = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
        if key is not None:
            if not idempotency_key_ok(key):
                raise ApiError(
                    400, "invalid_idempotency_key", f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters"
                )
            rows = self._q("SELECT body_hash, prompt_id FROM idempotency WHERE key = ?", key)
            if rows:
                if rows[0]["body_hash"] != body_hash:
                    raise ApiError(
                        422, "idempotency_key_reused", "this Idempotency-Key was used with a different request"
                    )
                return ApiResponse(200, self._api_view(self._view(rows[0]["prompt_id"], now_ms)))
        open_count = int(self._q("SELECT COUNT(*) AS n FROM prompts WHERE final = 0")[0]["n"])
        if open_count >= wire.MAX_OPEN_PROMPTS:
            raise ApiError(
                429, "too_many_open_prompts", f"this endpoint already has {open_count} open prompts; cancel some first"
            )
        technician = req.header(TECHNICIAN_HEADER) or "unknown"
        prompt_id = self._ids.new(now_ms)
        deliver_id = self._ids.new(now_ms)
        created = Created(
            title=fields["title"],
            message=fields["message"],
            action=fields["action"],
            expires_at_ms=fields["expires_at_ms"],
            on_no_user=NoUserPolicy(fields["on_no_user"]),
            by=technician,
            supersedes=supersedes,
            **fields["extras"],
        )

        def commit() -> list[str]:
            # Persist before send (DESIGN §5): prompt, fact and outbox row in one transaction.
            self._new_prompt(prompt_id)  # no facts to read back, no statistics
            self._append(prompt_id, now_ms, created)
            derived = _derived(self._view(prompt_id, now_ms), self.config.reconcile)  # as _refresh writes them
            self._q(
                "INSERT INTO prompts (prompt_id, created_at_ms, expires_at_ms, deliver_id, state, final, final_at_ms, "
                "next_moment_ms, runtime_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                *(prompt_id, now_ms, created.expires_at_ms, deliver_id, *derived),
            )
            self._derived[prompt_id] = derived
            self._hooks_schedule(prompt_id, fields["escalate_after_ms"], now_ms)
            self._queue_deliver(deliver_id, self._view(prompt_id, now_ms), now_ms)
            if key is not None:
                purge_at = created.expires_at_ms + self.config.idempotency_grace_ms
                self._q("INSERT INTO idempotency VALUES (?, ?, ?, ?)", key, body_hash, prompt_id, purge_at)
            if supersedes is not None:
                self._withdraw(supersedes, Superseded(by_prompt_id=prompt_id, by=technician), now_ms)
            self._refresh(prompt_id, now_ms)
            return self._send_due(now_ms, connected)

        effects.send.extend(self._atomically(commit))
        return ApiResponse(201, self._api_view(self._view(prompt_id, now_ms)))

    def _withdraw(self, prompt_id: str, fact: Cancelled | Superseded, now_ms: int) -> PromptView:
        """Commit a cancel/supersede; tell the runtime if it may be showing the prompt."""
        before = self._view(prompt_id, now_ms)
        self._append(prompt_id, now_ms, fact)
        after = self._refresh(prompt_id, now_ms)
        if after.state in WITHDRAWN and before.state not in WITHDRAWN and (before.attempts or before.received_at_ms):
            self._queue_cancel(prompt_id, after.state.value, now_ms)
        return after

    def _op_cancel_prompt(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        prompt_id = self._existing(route)
        view = self._view(prompt_id, now_ms)
        if view.state in WITHDRAWN:
            return ApiResponse(200, self._api_view(view))
        if view.state in DECIDED or (view.final and view.firm):
            # R3: a decided (or firmly final) prompt cannot be cancelled; say what it is.
            raise ApiError(
                409,
                "already_final",
                f"prompt is already {view.state.value}; it cannot be cancelled",
                {"prompt": self._api_view(view)},
            )
        technician = req.header(TECHNICIAN_HEADER) or "unknown"

        def commit() -> tuple[PromptView, list[str]]:
            after = self._withdraw(prompt_id, Cancelled(by=technician), now_ms)
            return after, self._send_due(now_ms, connected)

        after, frames = self._atomically(commit)
        effects.send.extend(frames)
        return ApiResponse(200, self._api_view(after))

    def _op_get_prompt(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        prompt_id = self._existing(route)
        return ApiResponse(200, self._api_view(self._view(prompt_id, now_ms), with_events=True))

    def _op_list_prompts(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        self._require_registered(route.endpoint_id)
        raw_limit = req.query.get("limit", str(self.config.list_default))
        # ASCII digits only: str.isdigit() takes "²", which int() refuses.
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= self.config.list_max:
            raise ApiError(400, "invalid_limit", f"limit must be between 1 and {self.config.list_max}")
        rows = self._q("SELECT prompt_id FROM prompts ORDER BY prompt_id DESC LIMIT ?", int(raw_limit))
        prompts = [self._api_view(self._view(r["prompt_id"], now_ms)) for r in rows]
        return with_etag(req, {"prompts": prompts})

    # --- agent connection ----------------------------------------------------------------------

    def agent_opened(self, now_ms: int) -> Effects:
        """A socket was accepted. Nothing is sent until the agent's ``hello``, which flushes
        everything owed at once: until then no outbox row is due and the alarm leaves the
        outbox out, or a row already due would be sent by the alarm and again by the hello's
        flush (two deliveries per reconnect). Kept in a row, as an alarm may reach a new instance."""
        effects = Effects()

        def event() -> None:
            self._note_opened(now_ms)
            self._finish(now_ms, True, effects)

        self._event(event)
        return effects

    def _note_opened(self, now_ms: int) -> None:
        """What a socket accepted records (``agent_opened``, or with its first frame)."""
        self._set_meta("last_seen_ms", str(now_ms))
        self._set_meta(AWAITING_HELLO, "1")
        self._set_meta("agent_pings", None)  # this connection's hello says

    def opened(self, now_ms: int) -> tuple[int | None, dict[str, Any] | None]:
        """A host opened this actor with no agent connected (the local host's start): its alarm
        and its whole fleet line, in one transaction (its rows read once, not per value)."""

        def event() -> tuple[int | None, dict[str, Any] | None]:
            tallies = self._tallies()
            alarm_at = self.next_alarm_ms(now_ms, False, tallies)
            return alarm_at, self._fleet_summary(now_ms, False, force=True, tallies=tallies)

        result: tuple[int | None, dict[str, Any] | None] = self._event(event)
        return result

    def agent_pinged(self, now_ms: int) -> None:
        """The host answered the agent's ``wire.PING_FRAME`` itself: proof of life, kept in
        memory as a steady heartbeat is (stored with the next event); nothing to do."""
        self._heard_ms = max(self._heard_ms or 0, now_ms)

    def agent_alive(self, now_ms: int) -> Effects:
        """``agent_pinged`` on a host that keeps no actor between events (a ping that reached
        the Worker's handler because the runtime did not answer it): stored now, alarm derived."""
        self.agent_pinged(now_ms)
        effects = Effects()
        self._event(lambda: self._finish(now_ms, True, effects))
        return effects

    def _check_liveness(self, now_ms: int, connected: bool, heard_ms: int | None, effects: Effects) -> bool:
        """Inside an event: whether the agent still counts as connected. An agent silent for
        ``liveness_ms`` — no frame, and no ping the host's runtime answered (``heard_ms``) — is
        gone (a laptop asleep, a pulled cable: the socket looks open): its socket is closed now,
        before this event spends a delivery attempt on it (DESIGN §5). A ping heard is not
        stored: ``last_seen_ms`` (and the fleet line) move with frames only, so a read never
        writes, nor pushes a fleet line (which would cost the fleet object a request)."""
        if not connected:
            return False
        last_seen = max(int(self._meta("last_seen_ms") or 0), heard_ms or 0)
        if now_ms - last_seen < self.config.liveness_ms:
            return True
        effects.close_agent = (4408, "no heartbeat within the liveness window")
        return False

    def _pinging(self) -> bool:
        return self.config.digest_every_ms is not None and self._meta("agent_pings") == "1"

    def _liveness_window_ms(self) -> int:
        """How long after ``last_seen_ms`` the alarm checks the agent: one liveness window, plus
        the time between full heartbeats when pings (which do not wake us) fill it."""
        if self._pinging():
            assert self.config.digest_every_ms is not None
            return self.config.digest_every_ms + self.config.liveness_ms
        return self.config.liveness_ms

    def agent_closed(self, now_ms: int, connected: bool) -> Effects:
        effects = Effects()
        self._event(lambda: self._finish(now_ms, connected, effects))
        return effects

    def agent_frame(
        self, raw: str | bytes, now_ms: int, verified: Collection[SignatureClaim] = (), *, opened: bool = False
    ) -> Effects:
        """One frame from the agent. A bad frame gets an ``error`` back; the socket stays up.
        ``verified``: the frame's ``signature_claims`` that the host's crypto accepted.
        ``opened``: the socket's first frame, whose acceptance ``agent_opened`` has not recorded:
        both in one event (a host may defer it so, when no alarm can fire in between)."""
        try:
            message: wire.Message | None = wire.decode(raw)
            error: ProtocolError | None = None
        except ProtocolError as exc:
            message, error = None, exc
        if isinstance(message, wire.Heartbeat) and not opened:
            steady = self._steady_heartbeat(message, now_ms)
            if steady is not None:
                return steady
        effects = Effects()

        def event() -> None:
            if opened:
                self._note_opened(now_ms)
            self._set_meta("last_seen_ms", str(now_ms))
            if not isinstance(message, wire.Hello) and self._meta(AWAITING_HELLO):
                # The agent speaks first with hello; another frame means it was lost on the
                # way: retry what is due as usual rather than never.
                self._set_meta(AWAITING_HELLO, None)
            self._verified = frozenset(verified)
            try:
                if error is not None:
                    raise error
                assert message is not None
                handler = _FRAME_HANDLERS.get(type(message))
                if handler is None:
                    raise ProtocolError("unexpected_type", f"the bridge does not accept {message.TYPE!r} frames")
                handler(self, message, now_ms, effects)
            except ProtocolError as exc:
                effects.send.append(self._error_frame(exc.code, exc.message, wire.peek_id(raw), now_ms))
            finally:
                self._verified = frozenset()
            self._finish(now_ms, True, effects)

        self._event(event)
        if len(effects.send) == 1 and effects.close_agent is None:
            # Only the ack went back: nothing is owed. Until another event, the next heartbeats
            # whose digest says the runtime holds what we think it holds change nothing.
            digest = self._steady_digest(message, now_ms)
            if digest is not None:
                self._steady = _Steady(digest, now_ms, self._work_alarm_ms, self._liveness_window_ms())
        return effects

    def _steady_digest(self, message: wire.Message | None, now_ms: int) -> str | None:
        """The digest a steady heartbeat must carry after this frame: a heartbeat's own; after a
        report of the open prompts, what the runtime should hold now — so that a connection's
        first heartbeat is steady too (issue 15: one transaction less per returning agent)."""
        if isinstance(message, wire.Heartbeat):
            return message.digest
        if isinstance(message, wire.StateReport) and message.scope == "open" and not self._awaiting_history(now_ms):
            return self._held_digest(now_ms)
        return None

    def _steady_heartbeat(self, message: wire.Heartbeat, now_ms: int) -> Effects | None:
        """The ack for a heartbeat that changes nothing, answered without the store; None when
        it needs the full path (another digest, work due, or the stored ``last_seen_ms`` due
        to be refreshed)."""
        steady = self._steady
        if steady is None or now_ms - steady.stored_last_seen_ms >= self.config.last_seen_store_ms:
            return None
        if steady.work_alarm_ms is not None and now_ms >= steady.work_alarm_ms:
            return None  # a prompt moment, a retry or housekeeping is due: the slow path does it
        if message.digest != steady.digest or message.time_zone is not None:
            return None  # (a new zone takes the full path)
        self._heard_ms = now_ms
        effects = Effects(send=[self._ack(message.id, now_ms, with_times=True)])
        effects.alarm_at_ms = _earliest(steady.work_alarm_ms, now_ms + steady.liveness_window_ms)
        return effects

    def _error_frame(self, code: str, message: str, of: str | None, now_ms: int) -> str:
        supported = wire.SUPPORTED_VERSIONS if code == "unsupported_version" else None
        return wire.encode(
            wire.Error(
                id=self._ids.new(now_ms),
                code=code,
                message=message[: wire.MAX_TEXT_CHARS],
                of=of,
                supported_versions=supported,
            )
        )

    def _ack(self, of: str, now_ms: int, *, with_times: bool = False) -> str:
        if with_times:
            return wire.encode(wire.Ack(id=self._ids.new(now_ms), of=of, received_at_ms=now_ms, sent_at_ms=now_ms))
        return wire.encode(wire.Ack(id=self._ids.new(now_ms), of=of))

    def _seen(self, event_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM seen_events WHERE event_id = ?", event_id))

    def _on_hello(self, msg: wire.Hello, now_ms: int, effects: Effects) -> None:
        if msg.endpoint_id != self.endpoint_id:
            effects.send.append(
                self._error_frame("wrong_endpoint", "this socket belongs to another endpoint", msg.id, now_ms)
            )
            effects.close_agent = (4003, "wrong endpoint")
            return
        self._note_agent(msg)  # its version and the user's locale
        self._set_time_zone(msg.time_zone)
        self._set_meta(AWAITING_HELLO, None)
        pings = bool(msg.pings) and self.config.digest_every_ms is not None
        self._set_meta("agent_pings", "1" if pings else None)
        effects.send.append(
            wire.encode(
                wire.HelloOk(
                    id=self._ids.new(now_ms),
                    in_reply_to=msg.id,
                    received_at_ms=now_ms,
                    sent_at_ms=now_ms,
                    heartbeat_ms=self.config.heartbeat_ms,
                    digest_ms=self.config.digest_every_ms if pings else None,
                )
            )
        )
        # Reconnect: everything owed goes now, with the original ids (DESIGN §5).
        effects.send.extend(self._atomically(lambda: self._send_due(now_ms, True, flush=True)))
        regressed = msg.last_acked_id is not None and not self._seen(msg.last_acked_id)
        if regressed or self._awaiting_history(now_ms):
            # We acked that frame, yet have no record of it: our storage went back in time
            # (restored from a backup). The runtime's open report leaves out what it holds as
            # final and acked, so ask for those too (R6 for decisions we had acknowledged).
            # (A runtime away longer than seen_event_retention_ms also lands here: one
            # harmless extra history report.) Asked again on every hello until it lands.
            self._request_history(now_ms, effects)

    def _on_heartbeat(self, msg: wire.Heartbeat, now_ms: int, effects: Effects) -> None:
        effects.send.append(self._ack(msg.id, now_ms, with_times=True))
        self._set_time_zone(msg.time_zone)
        if self._awaiting_history(now_ms):
            self._request_history(now_ms, effects)  # digests cover open prompts only: ask anyway
        elif msg.digest != self._held_digest(now_ms):
            request = wire.StateRequest(id=self._ids.new(now_ms), reason="digest differs")
            effects.send.append(wire.encode(request))

    def _held_digest(self, now_ms: int) -> str:
        """The digest of what the runtime should hold, from the stored ``runtime_status``.

        A stored status is the view's at its last refresh; until the next fact only the clock
        changes the view, and for an open prompt only by expiring it at ``next_moment_ms``
        (= ``expires_at_ms``), after which it holds nothing. So the stored status is the view's
        at ``now`` for an open prompt not yet at its moment; NULL is derived from the facts.
        """
        held = []
        for row in self._q(
            "SELECT prompt_id, runtime_status FROM prompts WHERE final = 0 "
            "AND (runtime_status IS NULL OR (runtime_status != '' AND next_moment_ms > ?))",
            now_ms,
        ):
            status = row["runtime_status"]
            if status is None:
                status = runtime_status(self._view(row["prompt_id"], now_ms))
            if status is not None:
                held.append((row["prompt_id"], status))
        return held_digest(held)

    def _on_receipt(self, msg: wire.PromptReceipt, now_ms: int, effects: Effects) -> None:
        self._runtime_fact(msg.id, msg.prompt_id, Received(runtime_at_ms=msg.received_at_ms), now_ms, effects)

    def _on_update(self, msg: wire.PromptUpdate, now_ms: int, effects: Effects) -> None:
        self._runtime_fact(msg.id, msg.prompt_id, update_fact(msg), now_ms, effects)

    def _runtime_fact(self, event_id: str, prompt_id: str, fact: Fact, now_ms: int, effects: Effects) -> None:
        """Commit a runtime fact once (dedup by event id, then by news) and ack it."""
        found = self._q(  # _seen, _known and its creation in one statement: every receipt and update
            "SELECT EXISTS (SELECT 1 FROM seen_events WHERE event_id = ?) AS seen, "
            "(SELECT created_at_ms FROM prompts WHERE prompt_id = ?) AS created_at_ms",
            event_id,
            prompt_id,
        )[0]
        if found["seen"]:
            effects.send.append(self._ack(event_id, now_ms))
            return
        if found["created_at_ms"] is None:
            # Not acked: the runtime resends it after its full report lets us adopt the prompt (R6).
            effects.send.append(
                self._error_frame("unknown_prompt", f"no prompt {prompt_id}; send a state.report", event_id, now_ms)
            )
            effects.send.append(wire.encode(wire.StateRequest(id=self._ids.new(now_ms), reason="unknown prompt")))
            return

        if self._refuse_decision(prompt_id, fact, event_id, now_ms, effects, int(found["created_at_ms"])):
            return  # not acked: nothing was committed

        def commit() -> tuple[list[str], str | None]:
            refusal = self._apply_runtime_fact(prompt_id, fact, now_ms, event_id)
            if refusal is None:
                self._q("INSERT INTO seen_events (event_id, at_ms) VALUES (?, ?)", event_id, now_ms)
            return self._send_due(now_ms, True), refusal

        frames, refusal = self._atomically(commit)
        effects.send.extend(frames)
        if refusal is None:
            effects.send.append(self._ack(event_id, now_ms))
        else:  # not acked: the state is unchanged, and a resend is refused the same way
            effects.send.append(self._refusal_frame(prompt_id, refusal, event_id, now_ms))

    def _refuse_decision(
        self,
        prompt_id: str,
        fact: Fact,
        event_id: str | None,
        now_ms: int,
        effects: Effects,
        created: int | None = None,
    ) -> bool:
        """True (with an ``error`` frame) when ``fact`` is a decision the bridge cannot believe.
        ``created``: the prompt's ``created_at_ms`` when the caller has read it."""
        refusal = self._decision_refusal(prompt_id, fact, created)
        if refusal is None:
            return False
        effects.send.append(self._error_frame("invalid_decided_at", refusal, event_id, now_ms))
        return True

    def _apply_runtime_fact(self, prompt_id: str, fact: Fact, now_ms: int, event_id: str | None) -> str | None:
        """Commit a runtime fact if it is news; the refusal reason when its signature fails."""
        view = self._view(prompt_id, now_ms)
        refreshed = is_news(view, fact)
        refusal = self._signature_refusal(prompt_id, fact) if refreshed else None
        if refusal is not None:
            self._record_refusal(prompt_id, fact, refusal, now_ms, event_id)
            refreshed = False
        if refreshed:
            self._append(prompt_id, now_ms, fact, event_id)
            view = self._refresh(prompt_id, now_ms)
        # Any runtime fact proves the runtime holds the prompt: stop delivering it (unless
        # ``_refresh`` of a final view just did).
        if not (refreshed and view.final):
            self._q("DELETE FROM outbox WHERE prompt_id = ? AND kind = 'deliver'", prompt_id)
        if view.state in WITHDRAWN and isinstance(fact, (Received, Acknowledged)):
            self._queue_cancel(prompt_id, view.state.value, now_ms)
        return refusal

    def _on_report(self, msg: wire.StateReport, now_ms: int, effects: Effects) -> None:
        if self._seen(msg.id):
            effects.send.append(self._ack(msg.id, now_ms))
            return

        refused: list[tuple[str, str]] = []

        def commit() -> list[str]:
            reported = set()
            refused.clear()
            for held in msg.prompts:
                prompt_id = held.prompt.prompt_id
                reported.add(prompt_id)
                if not self._known(prompt_id) and not self._adopt(held, now_ms, effects):
                    continue
                self._relearn_withdrawal(held, now_ms)
                for fact in report_facts(held):
                    if self._refuse_decision(prompt_id, fact, None, now_ms, effects):
                        continue
                    refusal = self._apply_runtime_fact(prompt_id, fact, now_ms, None)
                    if refusal is not None:
                        refused.append((prompt_id, refusal))
            if msg.scope == "open" and not self._awaiting_history(now_ms):
                self._reconcile_absent(reported, now_ms)
            if msg.scope == "history" and len(msg.prompts) < wire.MAX_OPEN_PROMPTS:
                self._set_meta("awaiting_history_until_ms", None)  # the last page
            self._q("INSERT INTO seen_events (event_id, at_ms) VALUES (?, ?)", msg.id, now_ms)
            return self._send_due(now_ms, True)

        frames = self._atomically(commit)
        effects.send.append(self._ack(msg.id, now_ms))
        effects.send.extend(self._refusal_frame(pid, why, msg.id, now_ms) for pid, why in refused)
        effects.send.extend(frames)

    def _relearn_withdrawal(self, held: wire.HeldPrompt, now_ms: int) -> None:
        """A runtime closes a prompt as cancelled or superseded only on our ``prompt.cancel``,
        which leaves only after the console's withdrawal committed. When we show that prompt
        open, our storage lost the withdrawal (restored from a backup): relearn it, as R6
        relearns a prompt, rather than show "delivered" until it expires. The superseding
        prompt may be lost too, so it is recorded as a cancel that says where it came from."""
        if held.status != "closed" or held.how not in ("cancelled", "superseded"):
            return
        view = self._view(held.prompt.prompt_id, now_ms)
        if view.final and not view.provisional:
            return
        by = f"the runtime's copy ({held.how}; the bridge's record was lost)"
        self._withdraw(held.prompt.prompt_id, Cancelled(by=by), now_ms)

    def _adopt(self, held: wire.HeldPrompt, now_ms: int, effects: Effects) -> bool:
        """R6: the runtime holds a prompt we have no record of; rebuild it from its copy.

        The copy is the runtime's claim (``worker.adoption``): the id must be one we could
        have made, creation comes from the id, the expiry is clamped to the create bounds, the
        requester shows as claimed by the endpoint, and the open limit holds. False (with an
        ``error`` frame) when the line is refused; nothing is written then."""
        copy = held.prompt
        config = self.config
        refusal = adoption.id_refusal(
            copy.prompt_id,
            now_ms,
            config.reconcile.skew_ms,
            config.max_expires_in_ms + config.seen_event_retention_ms,
        )
        created_at_ms, expires_at_ms = (0, 0)
        if refusal is None:
            created_at_ms, expires_at_ms = adoption.adopted_times(copy, now_ms, config.max_expires_in_ms)
            if adoption.stays_open(held, expires_at_ms, now_ms) and self._open_count() >= wire.MAX_OPEN_PROMPTS:
                refusal = f"the endpoint already has {wire.MAX_OPEN_PROMPTS} open prompts"
        if refusal is not None:
            effects.send.append(
                self._error_frame("adoption_refused", f"prompt {copy.prompt_id} not adopted: {refusal}", None, now_ms)
            )
            return False
        self._q(
            "INSERT INTO prompts (prompt_id, created_at_ms, expires_at_ms, deliver_id, state, final) "
            "VALUES (?, ?, ?, ?, 'pending', 0)",
            copy.prompt_id,
            created_at_ms,
            expires_at_ms,
            self._ids.new(now_ms),
        )
        self._facts[copy.prompt_id] = []  # a new prompt: no facts to read back
        self._append(copy.prompt_id, now_ms, adopted_created(copy, expires_at_ms))
        return True

    def _open_count(self) -> int:
        return int(self._q("SELECT COUNT(*) AS n FROM prompts WHERE final = 0")[0]["n"])

    def _decision_refusal(self, prompt_id: str, fact: Fact, created: int | None = None) -> str | None:
        """Why a runtime's decision cannot be committed (``worker.adoption``), or None."""
        if not isinstance(fact, Decided):
            return None
        if created is None:
            rows = self._q("SELECT created_at_ms FROM prompts WHERE prompt_id = ?", prompt_id)
            if not rows:
                return None
            created = int(rows[0]["created_at_ms"])
        return adoption.decision_time_refusal(fact.decided_at_ms, created, self.config.reconcile.skew_ms)

    def _reconcile_absent(self, reported: set[str], now_ms: int) -> None:
        """Prompts the runtime's full report leaves out: replay (R5) or firm (R4)."""
        # Open prompts and provisional finals are exactly those with a next moment.
        for row in self._q("SELECT prompt_id, deliver_id FROM prompts WHERE next_moment_ms IS NOT NULL"):
            prompt_id = row["prompt_id"]
            if prompt_id in reported:
                continue
            view = self._view(prompt_id, now_ms)
            if view.final:
                if view.provisional and not view.runtime_holds_no_decision:
                    self._append(prompt_id, now_ms, NoDecisionHeld(detail="absent from the runtime's report"))
                    self._refresh(prompt_id, now_ms)
                continue
            if view.received_at_ms is None or view.decision is not None:
                continue  # never received: the outbox still owns it
            self._append(prompt_id, now_ms, Replayed(reason="runtime reported it does not hold this prompt"))
            self._requeue_deliver(row, now_ms)
            self._refresh(prompt_id, now_ms)

    def _requeue_deliver(self, row: Row, now_ms: int) -> None:
        """R5: queue the original ``prompt.deliver`` again, same event id."""
        if self._q("SELECT 1 FROM outbox WHERE event_id = ?", row["deliver_id"]):
            return
        self._queue_deliver(row["deliver_id"], self._view(row["prompt_id"], now_ms), now_ms)

    def _on_ack(self, msg: wire.Ack, now_ms: int, effects: Effects) -> None:
        self._q("DELETE FROM outbox WHERE event_id = ? AND kind IN ('cancel', 'window')", msg.of)

    def _on_error(self, msg: wire.Error, now_ms: int, effects: Effects) -> None:
        self._set_meta("last_agent_error", f"{msg.code}: {msg.message}"[: wire.MAX_TEXT_CHARS])

    # --- outbox, alarm, fleet ------------------------------------------------------------------

    def alarm(
        self, now_ms: int, connected: bool, heard_ms: int | None = None, targets: list[dict[str, Any]] | None = None
    ) -> Effects:
        """The one alarm fired: check liveness, move due prompts, retry due sends, tidy.
        ``targets``: the webhook subscriptions, read when ``wants_targets`` (None: none)."""
        effects = Effects()

        def event() -> None:
            nonlocal connected
            # First: a retry is never spent on an agent that is gone (_event stored what memory heard).
            connected = self._check_liveness(now_ms, connected, heard_ms, effects)
            reask = self._history_reask_ms(now_ms)
            if connected and reask is not None and now_ms >= reask:
                self._request_history(now_ms, effects)
            for row in self._q(
                "SELECT prompt_id FROM prompts WHERE next_moment_ms IS NOT NULL AND next_moment_ms <= ?", now_ms
            ):
                self._refresh(row["prompt_id"], now_ms)
            self._windows_end_due(now_ms)
            effects.send.extend(self._send_due(now_ms, connected))
            self._hooks_after_event(now_ms, connected)
            self._hooks_sends(now_ms, targets, effects)
            if now_ms >= int(self._meta("housekeeping_due_ms") or 0):
                self._housekeeping(now_ms)
                # A line the host failed to deliver (the fleet object was unreachable) is not
                # sent again until something changes; resending it here bounds that staleness.
                effects.fleet_summary = self._fleet_summary(now_ms, connected, force=True)
            self._finish(now_ms, connected, effects)

        self._event(event)
        return effects

    def _housekeeping(self, now_ms: int) -> None:
        self._q("DELETE FROM idempotency WHERE purge_at_ms <= ?", now_ms)
        self._q("DELETE FROM seen_events WHERE at_ms <= ?", now_ms - self.config.seen_event_retention_ms)
        self._q("DELETE FROM enrollments WHERE expires_at_ms <= ?", now_ms - DAY_MS)
        self._stats_housekeeping(now_ms)
        self._set_meta("housekeeping_due_ms", str(now_ms + self.config.housekeeping_every_ms))

    def next_alarm_ms(
        self, now_ms: int, connected: bool, tallies: Row | None = None, work: int | None = None
    ) -> int | None:
        """min(next outbox attempt, next prompt moment, liveness deadline, housekeeping); ``work``
        when the caller has just derived ``_work_alarm``."""
        if work is None:
            work = self._work_alarm(now_ms, connected, tallies or self._tallies())
        if not connected:
            return work
        last_seen = max(self._heard_ms or 0, int(self._meta("last_seen_ms") or now_ms))
        return _earliest(work, last_seen + self._liveness_window_ms())

    def _work_alarm(self, now_ms: int, connected: bool, tallies: Row) -> int | None:
        """The alarm without the liveness deadline: when the rows next have work."""
        candidates = [int(t) for t in (tallies["open_moment"], tallies["final_moment"]) if t is not None]
        if connected and tallies["attempt"] is not None and not self._meta(AWAITING_HELLO):
            candidates.append(int(tallies["attempt"]))
        reask = self._history_reask_ms(now_ms) if connected else None
        if reask is not None:
            candidates.append(reask)
        due = [tallies[k] for k in _DUE_TALLIES] + [self.patterns_due_ms()]  # hooks, windows, patterns
        candidates.extend(int(t) for t in due if t is not None)
        if self.endpoint_id is not None:
            housekeeping = self._meta("housekeeping_due_ms")
            candidates.append(int(housekeeping) if housekeeping else now_ms + self.config.housekeeping_every_ms)
        return min(candidates) if candidates else None

    def _finish(self, now_ms: int, connected: bool, effects: Effects) -> None:
        """After every event: derive the alarm and the fleet summary from the rows."""
        if self._in_event and self.endpoint_id is not None and self._meta("housekeeping_due_ms") is None:
            # Stored once: derived afresh as "an hour from now" by every event, it never came
            # due on an endpoint that always had an event within the hour (a connected agent).
            self._set_meta("housekeeping_due_ms", str(now_ms + self.config.housekeeping_every_ms))
        if self._in_event:
            self._hooks_after_event(now_ms, connected)
        tallies = self._tallies()
        self._outbox_known(tallies["attempt"])
        self._escalations_known(tallies["hook_escalate"])
        self._work_alarm_ms = self._work_alarm(now_ms, connected, tallies)
        effects.alarm_at_ms = self.next_alarm_ms(now_ms, connected, tallies, work=self._work_alarm_ms)
        if effects.fleet_summary is None:
            effects.fleet_summary = self._fleet_summary(now_ms, connected, tallies=tallies)


# ``_tallies`` columns of webhook and escalation work (``worker.hooks``) and window ends
# (``worker.approval_windows``): part of the one alarm.
_DUE_TALLIES = ("hook_pending", "hook_retry", "hook_escalate", "window_ends")


@dataclass(frozen=True, slots=True)
class _Steady:
    """What the last heartbeat that changed nothing left behind (see ``_steady_heartbeat``)."""

    digest: str  # the runtime's held digest, equal to ours then
    stored_last_seen_ms: int  # last_seen_ms as stored then
    work_alarm_ms: int | None  # the rows' next work then (the alarm, liveness aside)
    liveness_window_ms: int  # ``EndpointBridge._liveness_window_ms`` then


def _is_prompt_id(value: object) -> bool:
    """Whether ``value`` can name a prompt (checked before it is bound in SQL: a lone
    surrogate cannot be encoded and would fail the statement)."""
    try:
        wire.check_id(value, "prompt_id")  # type: ignore[arg-type]
    except ProtocolError:
        return False
    return True


def _derived(view: PromptView, config: ReconcileConfig) -> tuple[Any, ...]:
    """The prompt row's derived columns: state, final, final_at_ms, next_moment_ms, runtime_status."""
    status = runtime_status(view) or ""
    return view.state.value, 1 if view.final else 0, view.final_at_ms, next_moment_ms(view, config), status


def _earliest(*times: int | None) -> int | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


# --- runtime facts from frames ---------------------------------------------------------------


_FRAME_HANDLERS: dict[type, Callable[[EndpointBridge, Any, int, Effects], None]] = {
    wire.Hello: EndpointBridge._on_hello,
    wire.Heartbeat: EndpointBridge._on_heartbeat,
    wire.PromptReceipt: EndpointBridge._on_receipt,
    wire.PromptUpdate: EndpointBridge._on_update,
    wire.StateReport: EndpointBridge._on_report,
    wire.Ack: EndpointBridge._on_ack,
    wire.Error: EndpointBridge._on_error,
    wire.WindowUpdate: EndpointBridge._on_window_update,
}

__all__ = [
    "AGENT_VERSION_HEADER",
    "MAX_EXPIRES_IN_S",
    "ROLE_HEADER",
    "BridgeConfig",
    "EndpointBridge",
    "migrate",
]
