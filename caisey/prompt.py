"""The prompt state machine and ``reconcile`` — everything that decides a prompt's state.

Theory of operation (DESIGN §3–§4). The bridge commits every fact it learns, from whichever
authority, in one order (R1); this module folds the committed entries, in ``seq`` order, into
the view the console shows. Two transitions are not facts anyone sends but moments in time:
``expire`` at ``expires_at`` (R7: only ``expires_at`` ends a prompt) and ``firm`` when a
provisional final outlives the horizon (R4). They are placed in the fold by the bridge clock:
before the first entry committed at or after their moment, or at the end when ``now`` has
passed it. So the view is a pure function of (entries, now, config); replaying the same
entries — twice, or handed over in any order — gives the same view, because order is ``seq``.

Every (state, fact) pair is in ``TRANSITIONS``; a pair the table lacks is a bug, raised as
``UsageError``. The rules in one place:

- R2 first final wins — a final state is left only by ``_decide`` (R4) or a technician's
  withdrawal of a *provisional* final (see ``_withdraw``).
- R3 cancel is safe — a decision after a committed cancel/supersede is ``late_decision``.
- R4 decisions are honoured — a decision made before ``expires_at`` (within ``skew_ms``)
  replaces a provisional ``expired``/``failed_to_deliver`` until it is firm.
- R5/R6 — replays and adoptions are bridge actions; here they are a ``Replayed`` entry and a
  ``Created(adopted=True)`` entry.

Design choice beyond the letter of R2: cancelling or superseding a prompt that is only
*provisionally* final (expired, failed_to_deliver) makes it ``cancelled``/``superseded``.
Otherwise a technician who re-issues an unreachable prompt could see the old one flip to
approved by R4 afterwards — exactly what R3 promises cannot happen.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from caisey.clock import to_rfc3339
from caisey.errors import UsageError
from caisey.facts import (
    Acknowledged,
    Cancelled,
    Created,
    Decided,
    Decision,
    DeliveryAttempted,
    Entry,
    Escalated,
    Fact,
    GaveUp,
    GiveUpReason,
    NoDecisionHeld,
    Received,
    Rejected,
    Replayed,
    SignatureRefused,
    Source,
    Superseded,
    WindowEnded,
    WindowRevoked,
    WindowStarted,
    fact_to_record,
    source_of,
)
from caisey.wire import PROMPT_EXTRA_FIELDS, DisplayEvidence


class State(enum.StrEnum):
    NEW = "new"  # before ``created``; never shown
    PENDING = "pending"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    FAILED_TO_DELIVER = "failed_to_deliver"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


OPEN = frozenset({State.PENDING, State.DELIVERED, State.ACKNOWLEDGED})
DECIDED = frozenset({State.APPROVED, State.DENIED})
WITHDRAWN = frozenset({State.CANCELLED, State.SUPERSEDED})
PROVISIONAL_FINALS = frozenset({State.EXPIRED, State.FAILED_TO_DELIVER})
FINAL = DECIDED | WITHDRAWN | PROVISIONAL_FINALS

_DECISION_STATE = {Decision.APPROVE: State.APPROVED, Decision.DENY: State.DENIED}


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    # A decision stamped up to this much after ``expires_at`` still counts as before it: the
    # runtime's offset estimate is only good to rtt/2, and a laptop waking from sleep measures
    # it again only after it reconnects.
    skew_ms: int = 10_000
    # How long a provisional final waits for a late decision before it is firm (R4).
    firm_horizon_ms: int = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class LateDecision:
    decision: Decision
    decided_at_ms: int
    synced_at_ms: int
    why: str


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    seq: int | None  # None for the moments the fold places (expire, firm)
    source: Source
    type: str
    at_ms: int
    detail: dict[str, Any]


@dataclass(slots=True)
class ApprovalWindow:
    """A prompt's approval window (DESIGN §13): asked for at creation (``asked`` minutes),
    started by the user's approval with ``minutes`` granted, over at ``ends_at_ms`` or when
    revoked. ``state``: asked (not started), active, ended, revoked, or not_granted (the
    prompt ended without an approval)."""

    asked: int
    minutes: int | None = None
    started_at_ms: int | None = None
    ends_at_ms: int | None = None
    ended_at_ms: int | None = None
    revoked_at_ms: int | None = None
    revoked_by: str | None = None
    revoked_by_user: bool = False
    state: str = "asked"

    def to_api(self) -> dict[str, Any]:
        t = _opt_time
        return {
            "state": self.state,
            "minutes_asked": self.asked,
            "minutes_granted": self.minutes,
            "started_at": t(self.started_at_ms),
            "ends_at": t(self.ends_at_ms),
            "ended_at": t(self.ended_at_ms),
            "revoked_at": t(self.revoked_at_ms),
            "revoked_by": self.revoked_by,
            "revoked_by_user": self.revoked_by_user,
        }


@dataclass(slots=True)
class PromptView:
    """What the console shows of one prompt. Built only by ``reconcile``."""

    prompt_id: str
    state: State = State.NEW
    provisional: bool = False
    firm: bool = False
    reason: str | None = None
    title: str = ""
    message: str = ""
    action: str = ""
    on_no_user: str = "wait"
    created_at_ms: int = 0
    created_by: str = ""
    expires_at_ms: int = 0
    adopted: bool = False
    final_at_ms: int | None = None
    # delivery record (bridge)
    attempts: int = 0
    last_attempt_at_ms: int | None = None
    next_attempt_at_ms: int | None = None
    last_error: str | None = None
    replays: int = 0
    # runtime
    received_at_ms: int | None = None
    acknowledged_at_ms: int | None = None
    decision: Decision | None = None
    decided_at_ms: int | None = None
    synced_at_ms: int | None = None
    decided_how: str | None = None
    decided_seq: int | None = None  # the entry whose decision stands
    decided_key_id: str | None = None  # the endpoint key that signed the decision (DESIGN §10)
    decided_sig: str | None = None
    decided_display: DisplayEvidence | None = None  # how it was shown and answered (DESIGN §13)
    late_decision: LateDecision | None = None
    runtime_holds_no_decision: bool = False
    # console
    cancelled_by: str | None = None
    supersedes: str | None = None
    superseded_by: str | None = None
    # escalations (DESIGN §11): (at_ms, by, reason, note, auto), oldest first
    escalations: list[tuple[int, str, str, str | None, bool]] = field(default_factory=list)
    events: list[TimelineEvent] = field(default_factory=list)
    # The Created fact's optional fields that are set (``wire.PROMPT_EXTRA_FIELDS``, DESIGN §13):
    # the technician's reason and ticket, the window asked for, the policy's locked-screen rule
    # and branding. The deliver frame carries exactly these.
    extras: dict[str, Any] = field(default_factory=dict)
    # The approval window asked for (DESIGN §13), None when the prompt asked for none.
    window: ApprovalWindow | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def to_api(self, endpoint_id: str, *, with_events: bool = False) -> dict[str, Any]:
        """The HTTP API's prompt object (DESIGN §8)."""
        t = _opt_time
        body: dict[str, Any] = {
            "prompt_id": self.prompt_id,
            "endpoint_id": endpoint_id,
            "state": self.state.value,
            "final": self.final,
            "provisional": self.provisional,
            "reason": self.reason,
            "title": self.title,
            "message": self.message,
            "action": self.action,
            "on_no_user": self.on_no_user,
            "created_at": to_rfc3339(self.created_at_ms),
            "created_by": self.created_by,
            "expires_at": to_rfc3339(self.expires_at_ms),
            "adopted": self.adopted,
            "delivery": {
                "attempts": self.attempts,
                "last_attempt_at": t(self.last_attempt_at_ms),
                "next_attempt_at": t(self.next_attempt_at_ms),
                "last_error": self.last_error,
                "replays": self.replays,
                "received_at": t(self.received_at_ms),
                "acknowledged_at": t(self.acknowledged_at_ms),
            },
            "decision": self.decision.value if self.decision else None,
            "decided_at": t(self.decided_at_ms),
            "synced_at": t(self.synced_at_ms),
            "decided_how": self.decided_how,
            # The decision's proof: the endpoint key that signed it, or None when it was
            # recorded unsigned (before signing, or from an endpoint enrolled without a key).
            "decision_signature": (
                {"key_id": self.decided_key_id, "sig": self.decided_sig} if self.decided_key_id is not None else None
            ),
            "late_decision": None,
            "cancelled_by": self.cancelled_by,
            "supersedes": self.supersedes,
            "superseded_by": self.superseded_by,
            "final_at": t(self.final_at_ms),
            # Issue 13 (additive): when it was first escalated, and every escalation.
            "escalated_at": t(self.escalations[0][0]) if self.escalations else None,
            "escalations": [
                {"at": to_rfc3339(at), "by": by, "reason": reason, "note": note, "auto": auto}
                for at, by, reason, note, auto in self.escalations
            ],
            # Issue 16 (additive; ``reason`` above is why a prompt is final, so the technician's
            # reason for asking is ``request_reason``). The logo is on the fact, not repeated here.
            "request_reason": self.extras.get("reason"),
            "ticket": (
                {"id": self.extras["ticket_id"], "url": self.extras.get("ticket_url")}
                if "ticket_id" in self.extras
                else None
            ),
            "grant_minutes": self.extras.get("grant_minutes"),
            "on_locked": self.extras.get("on_locked"),
            "brand_name": self.extras.get("brand_name"),
        }
        body.update(display_api(self.decision is not None, self.decided_how, self.decided_display, self.decided_at_ms))
        if self.late_decision is not None:
            late = self.late_decision
            body["late_decision"] = {
                "decision": late.decision.value,
                "decided_at": to_rfc3339(late.decided_at_ms),
                "synced_at": to_rfc3339(late.synced_at_ms),
                "why": late.why,
            }
        # DESIGN §13 (additive): the approval window, null when none was asked for.
        body["window"] = self.window.to_api() if self.window is not None else None
        if with_events:
            body["events"] = [
                {"source": e.source.value, "type": e.type, "time": to_rfc3339(e.at_ms), "detail": e.detail}
                for e in self.events
            ]
        return body


def decision_outcome(decided: bool, how: str | None, display: DisplayEvidence | None) -> str | None:
    """Who or what answered (DESIGN §13): ``user``, ``locked`` (the screen was locked and the
    no-user rule answered), ``no_user`` (nobody logged in: the no-user rule answered), or None
    without a decision. From an agent that reports no evidence, derived from ``how``."""
    if not decided:
        return None
    if display is not None:
        return "user" if display.outcome == "shown" else display.outcome
    if how == "user":
        return "user"
    return "no_user" if how in ("no_user_policy", "endpoint_policy") else None


def describe_outcome(outcome: str | None, display: DisplayEvidence | None, decided_at_ms: int | None) -> str | None:
    """The evidence in words, for the audit verdict ("shown to ACME\\alice on the console
    session at …, answered …"; "screen locked — answered by the no-user rule")."""
    if outcome == "locked":
        return "screen locked — answered by the no-user rule"
    if outcome == "no_user":
        return "nobody logged in — answered by the no-user rule"
    if outcome != "user" or display is None:
        return None
    who = f"shown to {display.user}" if display.user else "shown"
    where = f" on the {display.session} session" if display.session != "unknown" else ""
    when = f" at {to_rfc3339(display.shown_at_ms)}" if display.shown_at_ms is not None else ""
    answered = f", answered {to_rfc3339(decided_at_ms)}" if decided_at_ms is not None else ""
    how = f" ({display.presenter}" + (f", {display.locale}" if display.locale else "")
    if display.template_id:
        how += f", template {display.template_id} v{display.template_version}"
    return f"{who}{where}{when}{answered}{how})"


def display_api(
    decided: bool, how: str | None, display: DisplayEvidence | None, decided_at_ms: int | None = None
) -> dict[str, Any]:
    """The API's ``outcome`` and ``display`` (issue 16, additive): the evidence as reported,
    times as RFC 3339, with the hash of the text shown."""
    shown: dict[str, Any] | None = None
    if display is not None:
        shown = {
            "outcome": display.outcome,
            "user": display.user,
            "session": display.session,
            "locked": display.locked,
            "presenter": display.presenter,
            "shown_at": _opt_time(display.shown_at_ms),
            "locale": display.locale,
            "template_id": display.template_id,
            "template_version": display.template_version,
            "shown_text": display.shown_text,
            "shown_sha256": display.shown_sha256,
            "answer_ms": _answer_ms(display, decided_at_ms),
        }
    return {"outcome": decision_outcome(decided, how, display), "display": shown}


def _answer_ms(display: DisplayEvidence, decided_at_ms: int | None) -> int | None:
    """Time to answer: the answer clock starts when the prompt became visible (DESIGN §13)."""
    if display.shown_at_ms is None or decided_at_ms is None:
        return None
    return max(0, decided_at_ms - display.shown_at_ms)


def _opt_time(ms: int | None) -> str | None:
    return None if ms is None else to_rfc3339(ms)


# --- transitions ---------------------------------------------------------------------------

Handler = Callable[[PromptView, Entry, ReconcileConfig], None]


def _final(view: PromptView, state: State, at_ms: int, reason: str | None) -> None:
    view.state = state
    view.reason = reason
    view.final_at_ms = at_ms
    view.provisional = state in PROVISIONAL_FINALS
    view.firm = not view.provisional


def _create(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    fact = entry.fact
    assert isinstance(fact, Created)
    view.state = State.PENDING
    view.title, view.message, view.action = fact.title, fact.message, fact.action
    view.on_no_user = fact.on_no_user.value
    view.created_at_ms = entry.at_ms
    view.created_by = fact.by
    view.expires_at_ms = fact.expires_at_ms
    view.supersedes = fact.supersedes
    view.adopted = fact.adopted
    view.extras = {name: getattr(fact, name) for name in PROMPT_EXTRA_FIELDS if getattr(fact, name) is not None}
    if fact.grant_minutes is not None:
        view.window = ApprovalWindow(asked=fact.grant_minutes)


def _record_only(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    """The fact goes on the timeline and changes no state (R2 keeps a final state)."""


def _escalate(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    """An escalation (DESIGN §11) is recorded on the view and changes no state."""
    fact = entry.fact
    assert isinstance(fact, Escalated)
    view.escalations.append((entry.at_ms, fact.by, fact.reason, fact.note, fact.auto))


def _bug(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    raise UsageError(f"fact {entry.fact.KIND!r} (seq {entry.seq}) cannot apply to state {view.state.value!r}")


def _withdraw(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    """Cancel or supersede: ends an open or provisionally-final prompt (R3)."""
    fact = entry.fact
    if isinstance(fact, Superseded):
        view.superseded_by = fact.by_prompt_id
        target, by = State.SUPERSEDED, fact.by
    else:
        assert isinstance(fact, Cancelled)
        target, by = State.CANCELLED, fact.by
    if view.state in OPEN or (view.state in PROVISIONAL_FINALS and not view.firm):
        previous = view.state.value
        view.cancelled_by = by
        _final(view, target, entry.at_ms, f"by {by}" if view.state in OPEN else f"by {by}, after {previous}")


def _link_only(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    """Supersede of a prompt that is firmly final keeps its state and records the link."""
    fact = entry.fact
    assert isinstance(fact, Superseded)
    view.superseded_by = fact.by_prompt_id


def _attempt(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    fact = entry.fact
    assert isinstance(fact, DeliveryAttempted)
    view.attempts = max(view.attempts, fact.attempt)
    view.last_attempt_at_ms = entry.at_ms
    view.next_attempt_at_ms = fact.next_attempt_at_ms if view.state == State.PENDING else None
    view.last_error = fact.error


def _replayed(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    view.replays += 1


def _give_up(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    fact = entry.fact
    assert isinstance(fact, GaveUp)
    reason = fact.reason.value + (f": {fact.detail}" if fact.detail else "")
    view.next_attempt_at_ms = None
    _final(view, State.FAILED_TO_DELIVER, entry.at_ms, reason)


def _reject(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    fact = entry.fact
    assert isinstance(fact, Rejected)
    view.next_attempt_at_ms = None
    _final(view, State.FAILED_TO_DELIVER, entry.at_ms, f"{GiveUpReason.REJECTED_BY_RUNTIME.value}: {fact.reason}")


def _receive(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    if view.received_at_ms is None:
        view.received_at_ms = entry.at_ms
    view.next_attempt_at_ms = None
    if view.state in OPEN:
        # A receipt after the runtime reported it held nothing is the replayed delivery
        # arriving (R5): it holds the prompt again, and the held digest must say so.
        view.runtime_holds_no_decision = False
    if view.state == State.PENDING:
        view.state = State.DELIVERED


def _acknowledge(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    _receive(view, entry, config)
    if view.acknowledged_at_ms is None:
        view.acknowledged_at_ms = entry.at_ms
    if view.state in OPEN:
        view.state = State.ACKNOWLEDGED


def _late(view: PromptView, fact: Decided, entry: Entry, why: str) -> None:
    if view.late_decision is None:
        view.late_decision = LateDecision(fact.decision, fact.decided_at_ms, entry.at_ms, why)


def _decide(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    """R3 and R4: a decision resolves an open or provisional prompt if it was made in time."""
    fact = entry.fact
    assert isinstance(fact, Decided)
    # A decision committed before expires_at was made before it, whatever the runtime's clock said.
    made_at_ms = min(fact.decided_at_ms, entry.at_ms)
    if view.received_at_ms is None:
        view.received_at_ms = entry.at_ms
    if view.state in WITHDRAWN:
        _late(view, fact, entry, f"arrived after {view.state.value}")
        return
    if view.state in DECIDED:
        if fact.decision != view.decision:
            _late(view, fact, entry, f"conflicts with {view.state.value}")
        return
    if view.firm:
        _late(view, fact, entry, f"arrived after {view.state.value} became firm")
        return
    if not view.adopted and fact.decided_at_ms < view.created_at_ms - config.skew_ms:
        # A runtime decides only what it was delivered, after creation: an earlier time is
        # false (``decided_at_ms = 0`` would otherwise pass as "before expires_at", R4). The
        # bridge refuses such a frame; this keeps a fact stored before that rule from counting.
        _late(view, fact, entry, "decided_at is before the prompt was created")
        return
    if made_at_ms > view.expires_at_ms + config.skew_ms:
        _late(view, fact, entry, "made after expires_at")
        return
    previous = view.state
    late = view.late_decision
    if late is not None:
        # A decision judged late against the provisional final is re-judged against the one
        # honoured now: the same answer is no longer news; another answer conflicts with it.
        same = late.decision == fact.decision
        view.late_decision = (
            None if same else replace(late, why=f"conflicts with {_DECISION_STATE[fact.decision].value}")
        )
    view.decision = fact.decision
    view.decided_at_ms = made_at_ms
    view.synced_at_ms = entry.at_ms
    view.decided_how = fact.how
    view.decided_seq, view.decided_key_id, view.decided_sig = entry.seq, fact.key_id, fact.sig
    view.decided_display = fact.display
    view.next_attempt_at_ms = None
    reason = fact.how if previous in OPEN else f"{fact.how}; honoured after {previous.value} (R4)"
    _final(view, _DECISION_STATE[fact.decision], entry.at_ms, reason)


def _firm_by_report(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    view.runtime_holds_no_decision = True
    if view.state in PROVISIONAL_FINALS:
        view.firm, view.provisional = True, False


def _note_no_decision(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    view.runtime_holds_no_decision = True


def _window(view: PromptView, entry: Entry, config: ReconcileConfig) -> None:
    """An approval window's start, end or revocation (DESIGN §13); the actor commits only the
    ones that apply (a start of an approved prompt's asked window, an end or a revocation of
    an active one), so the fold just records them. It changes no prompt state."""
    fact, window = entry.fact, view.window
    if window is None:
        return
    if isinstance(fact, WindowStarted):
        if window.started_at_ms is None:
            window.minutes, window.started_at_ms, window.ends_at_ms = fact.minutes, fact.started_at_ms, fact.ends_at_ms
            window.state = "active"
    elif window.state == "active":
        if isinstance(fact, WindowEnded):
            window.state, window.ended_at_ms = "ended", fact.ended_at_ms
        elif isinstance(fact, WindowRevoked):
            window.state, window.revoked_at_ms = "revoked", fact.revoked_at_ms
            window.revoked_by, window.revoked_by_user = fact.by, fact.user


def _window_due(view: PromptView, now_ms: int) -> None:
    """A window whose time is up reads as ended before the alarm records it; one asked of a
    prompt that ended without approval was not granted."""
    window = view.window
    if window is not None and window.state == "asked" and view.final and view.state != State.APPROVED:
        window.state = "not_granted"
    if (
        window is not None
        and window.state == "active"
        and window.ends_at_ms is not None
        and window.ends_at_ms <= now_ms
    ):
        window.state, window.ended_at_ms = "ended", window.ends_at_ms


def _build_table() -> dict[tuple[State, str], Handler]:
    """Expand the rows below into one entry per (state, fact kind) and prove it complete."""
    shown = frozenset(State) - {State.NEW}
    rows: dict[str, dict[frozenset[State], Handler]] = {
        Created.KIND: {frozenset({State.NEW}): _create, shown: _bug},
        Cancelled.KIND: {OPEN | PROVISIONAL_FINALS: _withdraw, DECIDED | WITHDRAWN: _record_only},
        Superseded.KIND: {OPEN | PROVISIONAL_FINALS: _withdraw, DECIDED | WITHDRAWN: _link_only},
        DeliveryAttempted.KIND: {shown: _attempt},
        Replayed.KIND: {shown: _replayed},
        GaveUp.KIND: {frozenset({State.PENDING}): _give_up, shown - {State.PENDING}: _record_only},
        Rejected.KIND: {frozenset({State.PENDING}): _reject, shown - {State.PENDING}: _record_only},
        SignatureRefused.KIND: {shown: _record_only},
        Escalated.KIND: {shown: _escalate},
        Received.KIND: {shown: _receive},
        Acknowledged.KIND: {shown: _acknowledge},
        Decided.KIND: {shown: _decide},
        NoDecisionHeld.KIND: {PROVISIONAL_FINALS: _firm_by_report, shown - PROVISIONAL_FINALS: _note_no_decision},
        WindowStarted.KIND: {shown: _window},
        WindowEnded.KIND: {shown: _window},
        WindowRevoked.KIND: {shown: _window},
    }
    table: dict[tuple[State, str], Handler] = {}
    for kind, groups in rows.items():
        if kind != Created.KIND:
            groups = {**groups, frozenset({State.NEW}): _bug}  # nothing happens before creation
        for states, handler in groups.items():
            for state in states:
                if (state, kind) in table:
                    raise UsageError(f"transition ({state.value}, {kind}) defined twice")
                table[(state, kind)] = handler
    missing = [(s.value, k) for s in State for k in rows if (s, k) not in table]
    if missing:
        raise UsageError(f"transition table incomplete: {missing}")
    return table


TRANSITIONS: dict[tuple[State, str], Handler] = _build_table()


# --- the moments in time --------------------------------------------------------------------


def _expire(view: PromptView, at_ms: int) -> None:
    """``expires_at`` passed: an undelivered prompt failed to deliver, a delivered one expired."""
    if view.state == State.PENDING:
        reason = GiveUpReason.NO_RECEIPT if view.attempts else GiveUpReason.ENDPOINT_UNREACHABLE
        view.next_attempt_at_ms = None
        _final(view, State.FAILED_TO_DELIVER, at_ms, reason.value)
    elif view.state in OPEN:
        _final(view, State.EXPIRED, at_ms, "no decision before expires_at")


def _due_moments(view: PromptView, until_ms: int, inclusive: bool, config: ReconcileConfig) -> None:
    """Apply ``expire`` and ``firm`` whose moment is before ``until_ms`` (or at it)."""

    def due(moment: int) -> bool:
        return moment < until_ms or (inclusive and moment == until_ms)

    if view.state in OPEN and due(view.expires_at_ms):
        _expire(view, view.expires_at_ms)
        view.events.append(
            TimelineEvent(None, Source.BRIDGE, "expired", view.expires_at_ms, {"state": view.state.value})
        )
    if view.provisional and not view.firm and view.final_at_ms is not None:
        firm_at = view.final_at_ms + config.firm_horizon_ms
        if due(firm_at):
            view.firm, view.provisional = True, False
            view.events.append(TimelineEvent(None, Source.BRIDGE, "firmed", firm_at, {"after": "horizon"}))


def reconcile(
    prompt_id: str,
    entries: Iterable[Entry],
    now_ms: int,
    config: ReconcileConfig = ReconcileConfig(),
) -> PromptView:
    """Fold one prompt's committed entries (any order, duplicates allowed) into its view."""
    by_seq: dict[int, Entry] = {}
    for entry in entries:
        existing = by_seq.get(entry.seq)
        if existing is not None and existing != entry:
            raise UsageError(f"two different facts share seq {entry.seq} in prompt {prompt_id}")
        by_seq[entry.seq] = entry
    view = PromptView(prompt_id=prompt_id)
    for seq in sorted(by_seq):
        entry = by_seq[seq]
        if view.state != State.NEW:
            _due_moments(view, entry.at_ms, inclusive=True, config=config)
        TRANSITIONS[(view.state, entry.fact.KIND)](view, entry, config)
        kind, fields = entry.record or fact_to_record(entry.fact)
        view.events.append(TimelineEvent(entry.seq, source_of(entry.fact), kind, entry.at_ms, fields))
    if view.state != State.NEW:
        _due_moments(view, now_ms, inclusive=True, config=config)
    _window_due(view, now_ms)
    return view


def next_moment_ms(view: PromptView, config: ReconcileConfig = ReconcileConfig()) -> int | None:
    """The next time this view changes by the clock alone — for the host's alarm."""
    if view.state in OPEN:
        return view.expires_at_ms
    if view.provisional and not view.firm and view.final_at_ms is not None:
        return view.final_at_ms + config.firm_horizon_ms
    return None


def runtime_status(view: PromptView) -> str | None:
    """What the bridge believes the runtime holds open for this prompt (for the held digest)."""
    if view.received_at_ms is None or view.runtime_holds_no_decision or view.final:
        # Decided prompts are acked on commit, so the runtime drops them from its report;
        # withdrawn or expired ones it closes. A runtime that disagrees shows up as a
        # digest mismatch, and its full report repairs the difference.
        return None
    return "acknowledged" if view.acknowledged_at_ms is not None else "received"


__all__ = [
    "DECIDED",
    "FINAL",
    "OPEN",
    "PROVISIONAL_FINALS",
    "TRANSITIONS",
    "WITHDRAWN",
    "ApprovalWindow",
    "Fact",
    "LateDecision",
    "PromptView",
    "ReconcileConfig",
    "State",
    "TimelineEvent",
    "next_moment_ms",
    "reconcile",
    "runtime_status",
]
