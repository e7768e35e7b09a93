"""What the runtime's frames mean as facts (DESIGN §4, §7): the pure translation the endpoint
actor applies to every ``prompt.update`` and ``state.report`` line, and its dedup of facts
that add nothing to a view (beyond event ids).
"""

from __future__ import annotations

from caisey import wire
from caisey.facts import (
    Acknowledged,
    Created,
    Decided,
    Decision,
    Fact,
    NoDecisionHeld,
    NoUserPolicy,
    Received,
    Rejected,
)
from caisey.prompt import PromptView
from caisey.signing import copy_sha256
from worker.adoption import adopted_requester


def adopted_created(copy: wire.PromptCopy, expires_at_ms: int | None = None) -> Created:
    """R6: the created fact rebuilt from the runtime's copy — a claim, not a fact
    (``worker.adoption``): the requester shows as claimed by the endpoint, and the caller
    passes the expiry clamped to the create bounds. The endpoint's signatures cover the copy
    as it holds it, whose hash is kept."""
    return Created(
        title=copy.title,
        message=copy.message,
        action=copy.action,
        expires_at_ms=copy.expires_at_ms if expires_at_ms is None else expires_at_ms,
        on_no_user=NoUserPolicy(copy.on_no_user),
        by=adopted_requester(copy.requested_by),
        adopted=True,
        delivered_sha256=copy_sha256(copy),
        grant_minutes=copy.grant_minutes,  # its approval window (DESIGN §13)
    )


def update_fact(msg: wire.PromptUpdate) -> Fact:
    if msg.status == "acknowledged":
        return Acknowledged(how=msg.how or "shown", key_id=msg.key_id, sig=msg.sig)
    if msg.status == "decided":
        assert msg.decision is not None and msg.decided_at_ms is not None  # checked by wire
        return Decided(
            decision=Decision(msg.decision),
            decided_at_ms=msg.decided_at_ms,
            how=msg.how or "user",
            key_id=msg.key_id,
            sig=msg.sig,
            display=msg.display,
        )
    if msg.status == "closed":
        return NoDecisionHeld(detail=msg.detail or "closed")
    return Rejected(reason=msg.detail or "rejected")


def report_facts(held: wire.HeldPrompt) -> list[Fact]:
    """The facts a report line implies, oldest first; ``_is_news`` drops what is known."""
    facts: list[Fact] = [Received(runtime_at_ms=held.prompt.created_at_ms)]
    if held.status == "rejected":
        return [Rejected(reason=held.how or "rejected")]
    if held.status == "acknowledged":
        facts.append(Acknowledged(how=held.how or "shown", key_id=held.key_id, sig=held.sig))
    if held.decision is not None and held.decided_at_ms is not None:
        facts.append(
            Decided(
                decision=Decision(held.decision),
                decided_at_ms=held.decided_at_ms,
                how=held.how or "user",
                key_id=held.key_id,
                sig=held.sig,
                display=held.display,
            )
        )
    if held.status == "closed":
        facts.append(NoDecisionHeld(detail=held.how or "closed"))
    return facts


def is_news(view: PromptView, fact: Fact) -> bool:
    """Whether a runtime fact adds anything to the view (dedup beyond event ids)."""
    if isinstance(fact, Received):
        return view.received_at_ms is None
    if isinstance(fact, Acknowledged):
        return view.acknowledged_at_ms is None
    if isinstance(fact, Decided):
        late = view.late_decision
        return view.decision != fact.decision and not (late is not None and late.decision == fact.decision)
    if isinstance(fact, NoDecisionHeld):
        return not view.runtime_holds_no_decision
    if isinstance(fact, Rejected):
        return view.state.value == "pending"
    return True
