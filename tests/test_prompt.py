"""Tests for ``caisey.prompt``: the transition table, reconcile's properties and one named
example per reconcile rule (DESIGN §3, §4 R1–R7, §9 I2 and I3).

The examples read as stories about one prompt: ``Log`` commits facts the way the bridge does
(seq increasing, bridge clock nondecreasing) and ``Log.view(now_ms)`` folds them. The
properties feed ``reconcile`` random but realistic histories built by ``histories()``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caisey.errors import UsageError
from caisey.facts import (
    FACT_TYPES,
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
    NoUserPolicy,
    Received,
    Rejected,
    Replayed,
    SignatureRefused,
    Source,
    Superseded,
    WindowEnded,
    WindowRevoked,
    WindowStarted,
)
from caisey.prompt import (
    DECIDED,
    FINAL,
    OPEN,
    PROVISIONAL_FINALS,
    TRANSITIONS,
    WITHDRAWN,
    PromptView,
    ReconcileConfig,
    State,
    next_moment_ms,
    reconcile,
    runtime_status,
)

PID = "01JDQ8Z6N1XQ3V9V5Y4W2K7T0A"
NEW_PID = "01JDQ9A0000000000000000000"
T0 = 1_764_151_440_000  # 2025-11-26T10:04:00.000Z on the bridge clock: the prompt is created
LIFETIME_MS = 300_000
EXPIRES = T0 + LIFETIME_MS
SKEW_MS = 10_000
HORIZON_MS = 3_600_000
CONFIG = ReconcileConfig(skew_ms=SKEW_MS, firm_horizon_ms=HORIZON_MS)
APPROVE, DENY = Decision.APPROVE, Decision.DENY


def created(**fields: Any) -> Created:
    base: dict[str, Any] = {
        "title": "Allow remote control?",
        "message": "Alice from the help desk wants to see your screen.",
        "action": "remote_control",
        "expires_at_ms": EXPIRES,
        "on_no_user": NoUserPolicy.WAIT,
        "by": "alice",
    }
    base.update(fields)
    return Created(**base)


class Log:
    """One prompt's entries in the order the bridge committed them (R1)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def commit(self, at_ms: int, fact: Fact) -> Log:
        if self.entries:
            assert at_ms >= self.entries[-1].at_ms, "the bridge clock does not run backwards in a test story"
        seq = self.entries[-1].seq + 1 if self.entries else 1
        self.entries.append(Entry(seq, at_ms, fact))
        return self

    def view(self, now_ms: int, config: ReconcileConfig = CONFIG) -> PromptView:
        return reconcile(PID, self.entries, now_ms, config)


def new_log(**created_fields: Any) -> Log:
    return Log().commit(T0, created(**created_fields))


def delivered_log() -> Log:
    return new_log().commit(T0 + 1_000, DeliveryAttempted(1, T0 + 2_000)).commit(T0 + 1_200, Received(T0 + 1_150))


# --- the transition table ------------------------------------------------------------------

# One plausible fact of every kind, to drive every (state, fact kind) pair.
SAMPLE_FACTS: dict[str, Fact] = {
    Created.KIND: created(),
    Cancelled.KIND: Cancelled(by="bob"),
    Superseded.KIND: Superseded(by_prompt_id=NEW_PID, by="bob"),
    DeliveryAttempted.KIND: DeliveryAttempted(attempt=3, next_attempt_at_ms=T0 + 200_000, error="timeout"),
    Replayed.KIND: Replayed(reason="runtime does not hold it"),
    GaveUp.KIND: GaveUp(GiveUpReason.NO_RECEIPT, "8 attempts"),
    Received.KIND: Received(runtime_at_ms=T0 + 100_000),
    Acknowledged.KIND: Acknowledged(how="shown"),
    Decided.KIND: Decided(APPROVE, decided_at_ms=T0 + 100_000),
    Rejected.KIND: Rejected(reason="unsupported action"),
    NoDecisionHeld.KIND: NoDecisionHeld(detail="absent"),
    SignatureRefused.KIND: SignatureRefused(answer="approve", how="user", reason="bad_signature", key_id="ab12"),
    Escalated.KIND: Escalated(by="bob", reason="escalated by bob", note="call the user"),
    WindowStarted.KIND: WindowStarted(minutes=5, asked=5, started_at_ms=T0 + 100_000, ends_at_ms=T0 + 400_000),
    WindowEnded.KIND: WindowEnded(ended_at_ms=T0 + 400_000),
    WindowRevoked.KIND: WindowRevoked(by="bob", user=False, revoked_at_ms=T0 + 120_000),
}


def reach(state: State) -> tuple[Log, int]:
    """A history that leaves the prompt in ``state``, and a bridge time at which it is."""
    at = T0 + 150_000
    if state == State.NEW:
        return Log(), at
    if state == State.PENDING:
        return new_log(), at
    if state == State.DELIVERED:
        return delivered_log(), at
    if state == State.ACKNOWLEDGED:
        return delivered_log().commit(T0 + 2_000, Acknowledged("shown")), at
    if state in DECIDED:
        decision = APPROVE if state == State.APPROVED else DENY
        return delivered_log().commit(T0 + 3_000, Decided(decision, T0 + 2_900)), at
    if state == State.EXPIRED:
        return delivered_log(), EXPIRES + 1
    if state == State.FAILED_TO_DELIVER:
        return new_log().commit(T0 + 5_000, GaveUp(GiveUpReason.NO_RECEIPT)), at
    if state == State.CANCELLED:
        return new_log().commit(T0 + 5_000, Cancelled("alice")), at
    assert state == State.SUPERSEDED
    return new_log().commit(T0 + 5_000, Superseded(NEW_PID, "alice")), at


def test_transition_table_has_every_state_and_fact_kind() -> None:
    missing = [(s.value, k) for s in State for k in FACT_TYPES if (s, k) not in TRANSITIONS]
    assert missing == []
    assert len(TRANSITIONS) == len(State) * len(FACT_TYPES)
    assert set(SAMPLE_FACTS) == set(FACT_TYPES)


@pytest.mark.parametrize("kind", sorted(FACT_TYPES))
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_every_state_and_fact_pair_applies_or_is_a_usage_error(state: State, kind: str) -> None:
    log, at = reach(state)
    assert log.view(at).state == state
    log.commit(at, SAMPLE_FACTS[kind])
    if (state == State.NEW) != (kind == Created.KIND):  # only a Created starts, and only once
        with pytest.raises(UsageError):
            log.view(at)
        return
    view = log.view(at)
    assert view.events[-1].type == kind
    assert view.events[-1].seq == log.entries[-1].seq
    if state in FINAL and state not in PROVISIONAL_FINALS:
        assert view.state == state  # R2: firm finals stay


@pytest.mark.parametrize("kind", sorted(set(FACT_TYPES) - {Created.KIND}))
def test_a_fact_before_created_is_a_usage_error(kind: str) -> None:
    with pytest.raises(UsageError, match="cannot apply to state 'new'"):
        reconcile(PID, [Entry(1, T0, SAMPLE_FACTS[kind])], T0)


def test_a_second_created_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        new_log().commit(T0 + 1, created(title="again")).view(T0 + 2)


def test_two_different_facts_with_one_seq_are_a_usage_error() -> None:
    entries = [Entry(1, T0, created()), Entry(2, T0 + 1, Cancelled("a")), Entry(2, T0 + 1, Cancelled("b"))]
    with pytest.raises(UsageError, match="share seq 2"):
        reconcile(PID, entries, T0 + 2)


def test_no_entries_is_a_prompt_that_does_not_exist_yet() -> None:
    view = reconcile(PID, [], T0)
    assert view.state == State.NEW and view.events == [] and next_moment_ms(view) is None


# --- random realistic histories --------------------------------------------------------------

TECHNICIANS = st.sampled_from(["alice", "bob", "carol"])
KINDS_AFTER_CREATE: tuple[str, ...] = tuple(k for k in FACT_TYPES if k != Created.KIND)
BOOKKEEPING_KINDS: tuple[str, ...] = (DeliveryAttempted.KIND, Replayed.KIND)


@dataclasses.dataclass(frozen=True)
class History:
    entries: tuple[Entry, ...]
    now_ms: int
    config: ReconcileConfig

    @property
    def expires_at_ms(self) -> int:
        first = self.entries[0].fact
        assert isinstance(first, Created)
        return first.expires_at_ms


def fact_of(kind: str, at_ms: int, expires_at_ms: int) -> st.SearchStrategy[Fact]:
    """A plausible fact of ``kind`` committed at bridge time ``at_ms``."""
    if kind == Cancelled.KIND:
        return st.builds(Cancelled, by=TECHNICIANS)
    if kind == Superseded.KIND:
        return st.builds(Superseded, by_prompt_id=st.just(NEW_PID), by=TECHNICIANS)
    if kind == DeliveryAttempted.KIND:
        return st.builds(
            DeliveryAttempted,
            attempt=st.integers(1, 10),
            next_attempt_at_ms=st.none() | st.integers(at_ms, at_ms + 60_000),
            error=st.none() | st.sampled_from(["timeout", "socket closed"]),
        )
    if kind == Replayed.KIND:
        return st.just(Replayed(reason="runtime does not hold it"))
    if kind == GaveUp.KIND:
        return st.builds(GaveUp, reason=st.sampled_from(GiveUpReason), detail=st.sampled_from(["", "8 attempts"]))
    if kind == Received.KIND:
        return st.builds(Received, runtime_at_ms=st.integers(max(0, at_ms - 60_000), at_ms + 60_000))
    if kind == Acknowledged.KIND:
        return st.builds(Acknowledged, how=st.sampled_from(["shown", "dismissed"]))
    if kind == Decided.KIND:
        decided_at = st.one_of(
            st.integers(max(0, at_ms - 600_000), at_ms),  # runtime clock right, or the update waited
            st.integers(at_ms, at_ms + 60_000),  # runtime clock ahead of the bridge's
            st.integers(max(0, expires_at_ms - 30_000), expires_at_ms + 30_000),  # near the deadline
        )
        return st.builds(
            Decided,
            decision=st.sampled_from(Decision),
            decided_at_ms=decided_at,
            how=st.sampled_from(["user", "no_user_policy"]),
            key_id=st.none() | st.just("0123456789abcdef"),
        ).map(lambda d: d if d.key_id is None else dataclasses.replace(d, sig="c2ln"))
    if kind == Rejected.KIND:
        return st.builds(Rejected, reason=st.sampled_from(["unsupported action", "bad request"]))
    if kind == SignatureRefused.KIND:
        return st.builds(
            SignatureRefused,
            answer=st.sampled_from(["approve", "deny", "dismiss"]),
            how=st.just("user"),
            reason=st.sampled_from(["missing_signature", "bad_signature", "retired_key"]),
        )
    if kind == Escalated.KIND:
        return st.builds(
            Escalated,
            by=st.sampled_from(["bridge", "bob"]),
            reason=st.sampled_from(["not answered in 10 min", "escalated by bob"]),
            note=st.none() | st.just("call the user"),
            auto=st.booleans(),
        )
    if kind == WindowStarted.KIND:
        return st.integers(1, 30).map(
            lambda m: WindowStarted(minutes=m, asked=30, started_at_ms=at_ms, ends_at_ms=at_ms + m * 60_000)
        )
    if kind == WindowEnded.KIND:
        return st.builds(WindowEnded, ended_at_ms=st.integers(max(0, at_ms - 60_000), at_ms))
    if kind == WindowRevoked.KIND:
        return st.builds(
            WindowRevoked, by=st.sampled_from(["user", "bob"]), user=st.booleans(), revoked_at_ms=st.just(at_ms)
        )
    assert kind == NoDecisionHeld.KIND
    return st.builds(NoDecisionHeld, detail=st.sampled_from(["absent", "closed at expiry", "closed after cancel"]))


def time_steps(lifetime_ms: int, horizon_ms: int) -> st.SearchStrategy[int]:
    """Gaps between commits: same millisecond, seconds, up to a lifetime, past the horizon."""
    return st.one_of(
        st.just(0),
        st.integers(1, 5_000),
        st.integers(1, lifetime_ms),
        st.integers(1, lifetime_ms + horizon_ms),
    )


def kind_lists(pool: Sequence[str] = KINDS_AFTER_CREATE, max_size: int = 14) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), max_size=max_size)


@st.composite
def histories(draw: st.DrawFn, kinds: st.SearchStrategy[list[str]] | None = None) -> History:
    """A Created first, seq increasing (with gaps: seqs count all the endpoint's prompts),
    at_ms nondecreasing, then a random mix of facts with plausible fields."""
    config = ReconcileConfig(skew_ms=draw(st.integers(0, 20_000)), firm_horizon_ms=draw(st.integers(1_000, 1_200_000)))
    at = draw(st.integers(0, 2**41))
    lifetime = draw(st.integers(1_000, 600_000))
    first = Created(
        title=draw(st.sampled_from(["Allow remote control?", "Install the update now?"])),
        message="",
        action=draw(st.sampled_from(["remote_control", "install_update"])),
        expires_at_ms=at + lifetime,
        on_no_user=draw(st.sampled_from(NoUserPolicy)),
        by=draw(TECHNICIANS),
        supersedes=draw(st.none() | st.just("01JDQ7OLD00000000000000000")),
        adopted=draw(st.booleans()),
        grant_minutes=draw(st.none() | st.just(30)),  # an approval window asked (DESIGN §13)
    )
    entries = [Entry(draw(st.integers(1, 1_000)), at, first)]
    for kind in draw(kinds if kinds is not None else kind_lists()):
        at += draw(time_steps(lifetime, config.firm_horizon_ms))
        fact = draw(fact_of(kind, at, first.expires_at_ms))
        entries.append(Entry(entries[-1].seq + draw(st.integers(1, 3)), at, fact))
    now = at + draw(time_steps(lifetime, config.firm_horizon_ms))
    return History(tuple(entries), now, config)


def fold(h: History) -> PromptView:
    return reconcile(PID, h.entries, h.now_ms, h.config)


def snapshots(h: History) -> list[PromptView]:
    """The views a console polling the bridge could have seen, in time order: after every
    commit, just before the next commit (the clock alone moved), and at ``now``."""
    views = []
    for i in range(1, len(h.entries) + 1):
        prefix = h.entries[:i]
        views.append(reconcile(PID, prefix, prefix[-1].at_ms, h.config))
        if i < len(h.entries) and h.entries[i].at_ms - 1 > prefix[-1].at_ms:
            views.append(reconcile(PID, prefix, h.entries[i].at_ms - 1, h.config))
    views.append(fold(h))
    return views


def outcome(view: PromptView) -> dict[str, Any]:
    """Everything the facts decide, without the timeline's order or the expiry reason
    (which names whether delivery attempts happened before ``expires_at``)."""
    names = (
        "state",
        "provisional",
        "firm",
        "final_at_ms",
        "decision",
        "decided_at_ms",
        "synced_at_ms",
        "late_decision",
        "received_at_ms",
        "acknowledged_at_ms",
        "runtime_holds_no_decision",
        "attempts",
        "replays",
        "cancelled_by",
        "superseded_by",
    )
    return {name: getattr(view, name) for name in names}


# --- properties --------------------------------------------------------------------------------


@given(histories())
def test_reconcile_is_idempotent(h: History) -> None:
    once = fold(h)
    assert reconcile(PID, h.entries + h.entries, h.now_ms, h.config) == once
    assert reconcile(PID, [e for e in h.entries for _ in range(2)], h.now_ms, h.config) == once


@given(histories(), st.randoms(use_true_random=False))
def test_reconcile_ignores_the_order_it_is_handed_entries_r1(h: History, rnd: Any) -> None:
    shuffled = list(h.entries)
    rnd.shuffle(shuffled)
    assert reconcile(PID, shuffled, h.now_ms, h.config) == fold(h)


NON_BOOKKEEPING_KINDS: tuple[str, ...] = tuple(k for k in KINDS_AFTER_CREATE if k not in BOOKKEEPING_KINDS)
RUNTIME_PROGRESS_KINDS: tuple[str, ...] = (Received.KIND, Acknowledged.KIND, NoDecisionHeld.KIND)


@st.composite
def interleavings(draw: st.DrawFn, skeleton_kinds: Sequence[str]) -> tuple[History, History]:
    """One skeleton of non-bookkeeping facts with the bridge's delivery bookkeeping committed
    at two different random places. A bookkeeping entry takes the bridge time of the entry it
    follows, so the skeleton keeps its own times."""
    skeleton = draw(histories(kind_lists(skeleton_kinds, max_size=10)))
    n_extra = draw(st.integers(1, 8))
    bookkeeping = [
        draw(fact_of(draw(st.sampled_from(BOOKKEEPING_KINDS)), skeleton.entries[0].at_ms, skeleton.expires_at_ms))
        for _ in range(n_extra)
    ]

    def place() -> History:
        # slot k: right after skeleton entry k (0 is the Created)
        slots = draw(st.lists(st.integers(0, len(skeleton.entries) - 1), min_size=n_extra, max_size=n_extra))
        merged: list[tuple[int, Fact]] = []
        for k, entry in enumerate(skeleton.entries):
            merged.append((entry.at_ms, entry.fact))
            merged.extend((entry.at_ms, fact) for slot, fact in zip(slots, bookkeeping, strict=True) if slot == k)
        entries = tuple(Entry(seq, at, fact) for seq, (at, fact) in enumerate(merged, start=1))
        return History(entries, skeleton.now_ms, skeleton.config)

    return place(), place()


@given(interleavings(RUNTIME_PROGRESS_KINDS))
def test_bridge_bookkeeping_commutes_with_runtime_receipts_and_acknowledgements(pair: tuple[History, History]) -> None:
    # Skeletons of only Received/Acknowledged/NoDecisionHeld mostly stay open until expiry,
    # where a state change made by bookkeeping would show.
    a, b = pair
    assert outcome(fold(a)) == outcome(fold(b))


@given(interleavings(NON_BOOKKEEPING_KINDS))
def test_bridge_bookkeeping_commutes_with_console_and_runtime_facts(pair: tuple[History, History]) -> None:
    a, b = pair
    assert outcome(fold(a)) == outcome(fold(b))


@pytest.mark.parametrize("withdraw", [Cancelled("bob"), Superseded(NEW_PID, "bob")], ids=["cancel", "supersede"])
@pytest.mark.parametrize("runtime_fact", [Received(T0 + 1_000), Acknowledged("dismissed"), NoDecisionHeld("absent")])
def test_withdrawal_and_non_decision_runtime_facts_commute(withdraw: Fact, runtime_fact: Fact) -> None:
    # Console and runtime write at the same moment; either commit order gives the same state.
    one = new_log().commit(T0 + 5_000, withdraw).commit(T0 + 5_000, runtime_fact).view(T0 + 6_000)
    two = new_log().commit(T0 + 5_000, runtime_fact).commit(T0 + 5_000, withdraw).view(T0 + 6_000)
    assert outcome(one) == outcome(two)
    assert one.state in WITHDRAWN


def check_no_resurrection(before: PromptView, after: PromptView, config: ReconcileConfig) -> None:
    """I2: a final state changes only by R4, or when a technician withdraws a provisional final."""
    if not before.final:
        return
    if before.firm:
        assert after.state == before.state and after.firm, f"{before.state} firm became {after.state}"
        return
    assert before.state in PROVISIONAL_FINALS and before.provisional
    assert after.state == before.state or after.state in DECIDED | WITHDRAWN, f"{before.state} -> {after.state}"
    if after.state in DECIDED:  # by R4: a decision made in time
        assert after.decided_at_ms is not None
        assert after.decided_at_ms <= after.expires_at_ms + config.skew_ms
        assert after.late_decision is None or after.late_decision.why.startswith("conflicts")


def check_cancel_safety(views: Sequence[PromptView]) -> None:
    """I3: once cancelled or superseded, never approved or denied (nor anything else)."""
    withdrawn = [v.state for v in views if v.state in WITHDRAWN]
    for earlier, later in itertools.pairwise(views):
        if earlier.state in WITHDRAWN:
            assert later.state == earlier.state
            assert later.decision is None and later.decided_at_ms is None
    if withdrawn:
        assert views[-1].state == withdrawn[0]


@settings(max_examples=300)
@given(histories())
def test_i2_a_final_state_changes_only_by_r4_or_withdrawing_a_provisional_final(h: History) -> None:
    views = snapshots(h)
    for before, after in itertools.pairwise(views):
        check_no_resurrection(before, after, h.config)
        assert before.state == State.NEW or after.state != State.NEW
    assert views[-1].state != State.NEW


@settings(max_examples=300)
@given(histories())
def test_i3_cancelled_or_superseded_never_becomes_approved_or_denied(h: History) -> None:
    check_cancel_safety(snapshots(h))


WITHDRAW_THEN_DECIDE = st.tuples(
    kind_lists(max_size=5), st.sampled_from([Cancelled.KIND, Superseded.KIND]), kind_lists(max_size=5)
).map(lambda t: [*t[0], t[1], *t[2], Decided.KIND])


@settings(max_examples=300)
@given(histories(WITHDRAW_THEN_DECIDE))
def test_i3_a_decision_after_a_committed_withdrawal_is_only_a_late_decision(h: History) -> None:
    views = snapshots(h)
    check_cancel_safety(views)
    final = views[-1]
    if final.state in WITHDRAWN:  # the last entry is a Decided, committed after the withdrawal
        assert final.decision is None
        assert final.late_decision is not None
        at_withdrawal = next(v for v in views if v.state in WITHDRAWN)
        if at_withdrawal.late_decision is None:
            assert final.late_decision.why == f"arrived after {final.state.value}"
        else:  # only the first late decision is kept
            assert final.late_decision == at_withdrawal.late_decision


# --- R1–R7, one story each ----------------------------------------------------------------------


def test_r1_facts_take_effect_in_commit_order_not_list_order_or_runtime_clock() -> None:
    # The user clicked approve at T0+50 s by the runtime's clock, but the bridge committed the
    # technician's cancel (T0+60 s) before the decision reached it (T0+61 s).
    log = (
        delivered_log()
        .commit(T0 + 60_000, Cancelled("alice"))
        .commit(T0 + 61_000, Decided(APPROVE, decided_at_ms=T0 + 50_000))
    )
    view = reconcile(PID, reversed(log.entries), T0 + 62_000, CONFIG)
    assert view.state == State.CANCELLED
    assert [e.seq for e in view.events] == [e.seq for e in log.entries]
    # Had the bridge committed the decision first, the decision would stand.
    other = (
        delivered_log()
        .commit(T0 + 60_000, Decided(APPROVE, decided_at_ms=T0 + 50_000))
        .commit(T0 + 61_000, Cancelled("alice"))
    )
    assert other.view(T0 + 62_000).state == State.APPROVED


def test_r2_first_final_wins() -> None:
    log = (
        delivered_log()
        .commit(T0 + 10_000, Decided(APPROVE, decided_at_ms=T0 + 9_000))
        .commit(T0 + 11_000, Decided(DENY, decided_at_ms=T0 + 10_500))
        .commit(T0 + 12_000, GaveUp(GiveUpReason.NO_RECEIPT))
        .commit(T0 + 13_000, Rejected("unsupported action"))
        .commit(T0 + 14_000, Cancelled("alice"))
    )
    for now in (T0 + 15_000, EXPIRES, EXPIRES + 10 * HORIZON_MS):
        view = log.view(now)
        assert view.state == State.APPROVED
        assert (view.decision, view.decided_at_ms, view.final_at_ms) == (APPROVE, T0 + 9_000, T0 + 10_000)
        assert view.firm and not view.provisional and view.reason == "user"
        assert view.cancelled_by is None
        assert view.late_decision is not None
        assert view.late_decision.decision == DENY and view.late_decision.why == "conflicts with approved"


def test_r2_the_same_decision_twice_is_not_a_conflict() -> None:
    # The runtime re-sent its update under a new id; the bridge committed it twice.
    decided = Decided(DENY, decided_at_ms=T0 + 9_000)
    view = delivered_log().commit(T0 + 10_000, decided).commit(T0 + 20_000, decided).view(T0 + 30_000)
    assert view.state == State.DENIED and view.late_decision is None and view.synced_at_ms == T0 + 10_000


def test_r3_cancel_is_safe_a_late_decision_is_kept_for_audit() -> None:
    log = (
        delivered_log()
        .commit(T0 + 30_000, Acknowledged("shown"))
        .commit(T0 + 60_000, Cancelled("alice"))
        .commit(T0 + 70_000, Decided(APPROVE, decided_at_ms=T0 + 59_000))
        .commit(T0 + 80_000, Decided(DENY, decided_at_ms=T0 + 79_000))
    )
    view = log.view(EXPIRES + 2 * HORIZON_MS)
    assert view.state == State.CANCELLED
    assert view.reason == "by alice" and view.cancelled_by == "alice" and view.final_at_ms == T0 + 60_000
    assert view.decision is None and view.decided_at_ms is None
    assert view.late_decision is not None
    assert view.late_decision.decision == APPROVE  # the first late decision is the one kept
    assert view.late_decision.decided_at_ms == T0 + 59_000
    assert view.late_decision.synced_at_ms == T0 + 70_000
    assert view.late_decision.why == "arrived after cancelled"
    api = view.to_api("laptop-7")
    assert api["state"] == "cancelled" and api["late_decision"]["decision"] == "approve"


def test_r3_supersede_is_safe_and_links_the_prompts() -> None:
    log = (
        delivered_log()
        .commit(T0 + 60_000, Superseded(NEW_PID, "bob"))
        .commit(T0 + 61_000, Decided(DENY, decided_at_ms=T0 + 60_500))
    )
    view = log.view(T0 + 62_000)
    assert view.state == State.SUPERSEDED and view.superseded_by == NEW_PID
    assert view.late_decision is not None and view.late_decision.why == "arrived after superseded"
    successor = Log().commit(T0 + 60_000, created(supersedes=PID)).view(T0 + 60_000)
    assert successor.supersedes == PID and successor.to_api("laptop-7")["supersedes"] == PID


def test_r3_cancelling_a_provisional_final_makes_it_cancelled() -> None:
    # Deliberate choice (prompt.py docstring): the technician re-issues an unreachable prompt;
    # the old one must not flip to approved by R4 afterwards.
    log = new_log().commit(EXPIRES + 60_000, Cancelled("alice"))
    log.commit(EXPIRES + 120_000, Decided(APPROVE, decided_at_ms=EXPIRES - 1_000))
    view = log.view(EXPIRES + 130_000)
    assert view.state == State.CANCELLED and view.firm and not view.provisional
    assert view.reason == "by alice, after failed_to_deliver"
    assert view.late_decision is not None and view.late_decision.why == "arrived after cancelled"


def test_r3_cancel_after_a_decision_keeps_the_decision() -> None:
    # The host answers such a cancel with 409 and the current state; the core keeps the state.
    log = delivered_log().commit(T0 + 10_000, Decided(DENY, T0 + 9_000)).commit(T0 + 11_000, Cancelled("alice"))
    view = log.view(T0 + 12_000)
    assert view.state == State.DENIED and view.cancelled_by is None
    log.commit(T0 + 13_000, Superseded(NEW_PID, "alice"))
    view = log.view(T0 + 14_000)
    assert view.state == State.DENIED and view.superseded_by == NEW_PID


def test_r3_cancel_of_a_firm_expiry_keeps_it_expired() -> None:
    log = delivered_log().commit(EXPIRES + 1_000, NoDecisionHeld("closed at expiry"))
    log.commit(EXPIRES + 2_000, Cancelled("alice"))
    view = log.view(EXPIRES + 3_000)
    assert view.state == State.EXPIRED and view.firm and view.cancelled_by is None


def test_r4_decision_honoured_after_expiry() -> None:
    # The user approved a minute before expires_at; the laptop slept before the update left.
    log = delivered_log().commit(T0 + 3_000, Acknowledged("shown"))
    expired = log.view(EXPIRES + 1)
    assert expired.state == State.EXPIRED and expired.provisional and not expired.firm
    assert expired.final_at_ms == EXPIRES and expired.reason == "no decision before expires_at"
    log.commit(EXPIRES + 600_000, Decided(APPROVE, decided_at_ms=EXPIRES - 60_000))
    view = log.view(EXPIRES + 600_001)
    assert view.state == State.APPROVED and view.firm and not view.provisional
    assert view.decided_at_ms == EXPIRES - 60_000 and view.synced_at_ms == EXPIRES + 600_000
    assert view.reason == "user; honoured after expired (R4)"
    assert view.late_decision is None


def test_r4_decision_honoured_after_failed_to_deliver() -> None:
    # The receipt was lost: the bridge gave up at expires_at; the user had in fact decided.
    log = new_log().commit(T0 + 1_000, DeliveryAttempted(1, T0 + 3_000))
    failed = log.view(EXPIRES)
    assert failed.state == State.FAILED_TO_DELIVER and failed.reason == "no_receipt" and failed.provisional
    log.commit(EXPIRES + 30_000, Decided(DENY, decided_at_ms=T0 + 200_000, how="no_user_policy"))
    view = log.view(EXPIRES + 30_000)
    assert view.state == State.DENIED and view.decided_how == "no_user_policy"
    assert view.reason == "no_user_policy; honoured after failed_to_deliver (R4)"
    assert view.received_at_ms == EXPIRES + 30_000  # a decision proves receipt


def test_r4_firm_after_report() -> None:
    log = delivered_log().commit(EXPIRES + 5_000, NoDecisionHeld("closed at expiry"))
    firm = log.view(EXPIRES + 5_000)
    assert firm.state == State.EXPIRED and firm.firm and not firm.provisional
    assert next_moment_ms(firm, CONFIG) is None
    log.commit(EXPIRES + 6_000, Decided(APPROVE, decided_at_ms=EXPIRES - 1_000))
    view = log.view(EXPIRES + 7_000)
    assert view.state == State.EXPIRED
    assert view.late_decision is not None and view.late_decision.why == "arrived after expired became firm"


def test_r4_firm_after_horizon() -> None:
    log = delivered_log()
    before = log.view(EXPIRES + HORIZON_MS - 1)
    assert before.state == State.EXPIRED and before.provisional
    assert next_moment_ms(before, CONFIG) == EXPIRES + HORIZON_MS
    after = log.view(EXPIRES + HORIZON_MS)
    assert after.state == State.EXPIRED and after.firm and not after.provisional
    assert after.events[-1].type == "firmed" and after.events[-1].at_ms == EXPIRES + HORIZON_MS
    assert next_moment_ms(after, CONFIG) is None
    log.commit(EXPIRES + HORIZON_MS + 1, Decided(APPROVE, decided_at_ms=EXPIRES - 1))
    late = log.view(EXPIRES + HORIZON_MS + 2)
    assert late.state == State.EXPIRED and late.late_decision is not None


def test_r4_decision_committed_before_expiry_but_stamped_later_by_a_skewed_clock_is_honoured() -> None:
    # The runtime's clock runs an hour fast: it stamps the decision after expires_at, but the
    # bridge committed it before, so it was made before (made_at = min(decided_at, commit)).
    log = delivered_log().commit(EXPIRES - 1, Decided(APPROVE, decided_at_ms=EXPIRES + 3_600_000))
    view = log.view(EXPIRES + 1)
    assert view.state == State.APPROVED and view.reason == "user"
    assert view.decided_at_ms == EXPIRES - 1


def test_r4_decision_stamped_within_the_skew_tolerance_is_honoured() -> None:
    log = delivered_log().commit(EXPIRES + 60_000, Decided(DENY, decided_at_ms=EXPIRES + SKEW_MS))
    view = log.view(EXPIRES + 60_000)
    assert view.state == State.DENIED and view.decided_at_ms == EXPIRES + SKEW_MS


def test_r4_decision_stamped_after_expiry_plus_skew_is_late() -> None:
    log = delivered_log().commit(EXPIRES + 60_000, Decided(APPROVE, decided_at_ms=EXPIRES + SKEW_MS + 1))
    view = log.view(EXPIRES + 60_000)
    assert view.state == State.EXPIRED and view.provisional and view.decision is None
    assert view.late_decision is not None and view.late_decision.why == "made after expires_at"
    assert view.late_decision.decided_at_ms == EXPIRES + SKEW_MS + 1


@pytest.mark.parametrize("late_answer, expected_why", [(APPROVE, None), (DENY, "conflicts with approved")])
def test_r4_a_late_decision_is_rejudged_when_an_earlier_one_is_honoured(
    late_answer: Decision, expected_why: str | None
) -> None:
    # Found by the I2 property in CI: an answer made after expires_at lands first and is only
    # noted; then the answer made in time lands and R4 honours it. The note must not keep
    # saying "made after expires_at" beside an approved prompt.
    log = delivered_log().commit(EXPIRES + 60_000, Decided(late_answer, decided_at_ms=EXPIRES + SKEW_MS + 1))
    assert log.view(EXPIRES + 60_000).late_decision is not None
    log.commit(EXPIRES + 61_000, Decided(APPROVE, decided_at_ms=EXPIRES - 1_000))
    view = log.view(EXPIRES + 61_000)
    assert view.state == State.APPROVED and view.decided_at_ms == EXPIRES - 1_000
    if expected_why is None:
        assert view.late_decision is None
    else:
        assert view.late_decision is not None and view.late_decision.why == expected_why


def test_r4_decision_committed_exactly_at_expiry_is_honoured() -> None:
    view = delivered_log().commit(EXPIRES, Decided(APPROVE, decided_at_ms=EXPIRES)).view(EXPIRES)
    assert view.state == State.APPROVED


@pytest.mark.parametrize(
    "final_fact, final_state",
    [
        (Cancelled("alice"), State.CANCELLED),
        (Superseded(NEW_PID, "alice"), State.SUPERSEDED),
        (Decided(APPROVE, T0 + 9_000), State.APPROVED),
        (Decided(DENY, T0 + 9_000), State.DENIED),
    ],
)
def test_r4_never_replaces_cancelled_superseded_approved_or_denied(final_fact: Fact, final_state: State) -> None:
    log = delivered_log().commit(T0 + 10_000, final_fact)
    other = DENY if final_state == State.APPROVED else APPROVE
    log.commit(EXPIRES + 1_000, Decided(other, decided_at_ms=T0 + 20_000))
    view = log.view(EXPIRES + 2_000)
    assert view.state == final_state and view.firm and view.late_decision is not None


def test_r5_lost_delivery_is_replayed_and_the_prompt_stays_live() -> None:
    # The runtime's store was wiped after its receipt; its report says it does not hold the
    # prompt. The bridge re-queues the delivery under the same event id.
    log = delivered_log()
    assert runtime_status(log.view(T0 + 2_000)) == "received"
    log.commit(T0 + 30_000, NoDecisionHeld("absent")).commit(T0 + 30_000, Replayed("runtime does not hold it"))
    view = log.view(T0 + 30_000)
    assert view.state == State.DELIVERED and not view.final and view.replays == 1
    assert runtime_status(view) is None  # the digest now expects the runtime to hold nothing
    assert next_moment_ms(view, CONFIG) == EXPIRES
    log.commit(T0 + 31_000, DeliveryAttempted(2, None)).commit(T0 + 31_500, Received(T0 + 31_400))
    view = log.view(T0 + 32_000)
    assert view.attempts == 2
    assert runtime_status(view) == "received"  # it holds the prompt again; digests agree
    log.commit(T0 + 40_000, Decided(APPROVE, decided_at_ms=T0 + 39_000))
    assert log.view(T0 + 40_000).state == State.APPROVED


def test_r6_an_adopted_prompt_is_marked_and_follows_the_same_rules() -> None:
    # Bridge storage was restored from an old backup; the runtime's report held this prompt.
    log = Log().commit(T0 + 100_000, created(adopted=True, by="alice"))
    log.commit(T0 + 100_000, Received(T0 + 1_000))
    view = log.view(T0 + 100_000)
    assert view.adopted and view.state == State.DELIVERED
    assert view.events[0].source == Source.RUNTIME and view.events[0].type == "created"
    assert view.to_api("laptop-7")["adopted"] is True
    log.commit(T0 + 100_500, Decided(DENY, decided_at_ms=T0 + 100_400))
    assert log.view(T0 + 101_000).state == State.DENIED
    assert not new_log().view(T0).adopted and new_log().view(T0).events[0].source == Source.CONSOLE


@pytest.mark.parametrize(
    "story, final_state, reason",
    [
        ("unreachable", State.FAILED_TO_DELIVER, "endpoint_unreachable"),
        ("attempted", State.FAILED_TO_DELIVER, "no_receipt"),
        ("received", State.EXPIRED, "no decision before expires_at"),
        ("acknowledged", State.EXPIRED, "no decision before expires_at"),
    ],
)
def test_r7_only_expires_at_ends_a_prompt(story: str, final_state: State, reason: str) -> None:
    log = new_log()
    if story != "unreachable":
        log.commit(T0 + 1_000, DeliveryAttempted(1, T0 + 3_000, error="timeout"))
    if story in ("received", "acknowledged"):
        log.commit(T0 + 1_200, Received(T0 + 1_100))
    if story == "acknowledged":
        log.commit(T0 + 1_300, Acknowledged("shown"))
    live_state = log.view(T0 + 1_300).state
    assert live_state in OPEN
    # 90 s, then minutes of silence: something the console may show, never a state change.
    for now in (T0 + 90_000, T0 + 240_000, EXPIRES - 1):
        view = log.view(now)
        assert view.state == live_state and not view.final and view.reason is None
        assert next_moment_ms(view, CONFIG) == EXPIRES
    ended = log.view(EXPIRES)
    assert ended.state == final_state and ended.reason == reason
    assert ended.provisional and ended.final_at_ms == EXPIRES and ended.next_attempt_at_ms is None
    assert ended.events[-1].seq is None and ended.events[-1].type == "expired"
    assert next_moment_ms(ended, CONFIG) == EXPIRES + HORIZON_MS


def test_r7_a_runtime_that_reappears_makes_the_prompt_live_again() -> None:
    log = delivered_log()
    assert log.view(T0 + 200_000).state == State.DELIVERED  # silent for over three minutes
    log.commit(T0 + 200_000, Acknowledged("shown"))
    view = log.view(T0 + 200_000)
    assert view.state == State.ACKNOWLEDGED and view.acknowledged_at_ms == T0 + 200_000
    assert runtime_status(view) == "acknowledged"


# --- the view's other outputs ------------------------------------------------------------------


def test_delivery_record_follows_the_attempts() -> None:
    log = new_log().commit(T0 + 1_000, DeliveryAttempted(1, T0 + 2_000, error="timeout"))
    log.commit(T0 + 2_000, DeliveryAttempted(2, T0 + 6_000, error="socket closed"))
    view = log.view(T0 + 3_000)
    assert (view.attempts, view.last_attempt_at_ms, view.next_attempt_at_ms) == (2, T0 + 2_000, T0 + 6_000)
    assert view.last_error == "socket closed" and view.state == State.PENDING
    log.commit(T0 + 2_500, Received(T0 + 2_400))
    assert log.view(T0 + 3_000).next_attempt_at_ms is None


def test_rejection_by_the_runtime_fails_delivery_with_its_reason() -> None:
    view = new_log().commit(T0 + 1_000, Rejected("unsupported action")).view(T0 + 1_000)
    assert view.state == State.FAILED_TO_DELIVER and view.provisional
    assert view.reason == "rejected_by_runtime: unsupported action"


def test_to_api_has_the_fields_the_console_needs() -> None:
    view = delivered_log().view(T0 + 2_000)
    body = view.to_api("laptop-7", with_events=True)
    for key in (
        "prompt_id",
        "endpoint_id",
        "state",
        "provisional",
        "reason",
        "title",
        "message",
        "action",
        "created_at",
        "expires_at",
        "delivery",
        "decided_at",
        "late_decision",
        "supersedes",
        "superseded_by",
        "events",
    ):
        assert key in body
    assert body["created_at"] == "2025-11-26T10:04:00.000Z" and body["expires_at"] == "2025-11-26T10:09:00.000Z"
    assert body["delivery"]["attempts"] == 1
    assert [e["type"] for e in body["events"]] == ["created", "delivery_attempted", "received"]
    assert "events" not in view.to_api("laptop-7")


def test_an_approval_window_lives_by_its_facts_and_its_clock() -> None:
    """DESIGN §13: asked at creation, active from the start fact, ended by its time even
    before the bridge records the end, and a revocation only closes an active window."""
    log = delivered_log()
    log.commit(T0 + 50_000, Decided(APPROVE, decided_at_ms=T0 + 50_000))
    assert log.view(T0 + 60_000).window is None  # this prompt asked for none: facts change nothing
    base = Log()
    base.commit(T0, dataclasses.replace(created(), grant_minutes=10))
    assert base.view(T0).window is not None and base.view(T0).window.state == "asked"
    base.commit(T0 + 1, Decided(APPROVE, decided_at_ms=T0 + 1))
    base.commit(T0 + 2, WindowStarted(minutes=5, asked=10, started_at_ms=T0 + 1, ends_at_ms=T0 + 300_001))
    assert base.view(T0 + 3).window.state == "active"
    assert base.view(T0 + 300_001).window.state == "ended"  # by the clock
    base.commit(T0 + 10, WindowRevoked(by="user", user=True, revoked_at_ms=T0 + 9))
    window = base.view(T0 + 400_000).window
    assert (window.state, window.revoked_at_ms, window.revoked_by_user) == ("revoked", T0 + 9, True)
    base.commit(T0 + 20, WindowEnded(ended_at_ms=T0 + 300_001))  # after a revocation: no change
    assert base.view(T0 + 400_000).window.state == "revoked"
    api = base.view(T0 + 400_000).to_api("ep")["window"]
    assert api["minutes_asked"] == 10 and api["minutes_granted"] == 5 and api["revoked_by"] == "user"
