"""The facts each authority writes about a prompt (DESIGN §4).

Every fact has exactly one writer, named by its ``SOURCE``: the console (technician
transitions), the bridge (delivery status) or the runtime (what the endpoint's user did).
The bridge commits facts in one order (R1); a committed fact is an ``Entry``: the fact plus
its commit sequence number and the bridge's clock at commit. ``reconcile`` folds entries.

Facts are plain frozen data with a stable ``KIND`` string and a JSON form, so hosts can
store them as rows and rebuild them exactly (``fact_to_record`` / ``fact_from_record``).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from caisey.errors import ProtocolError
from caisey.wire import DisplayEvidence


class Source(enum.StrEnum):
    CONSOLE = "console"
    BRIDGE = "bridge"
    RUNTIME = "runtime"


class Decision(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class NoUserPolicy(enum.StrEnum):
    """What the runtime does when no interactive user can be asked (DESIGN §6)."""

    DENY = "deny"
    APPROVE = "approve"
    WAIT = "wait"


class GiveUpReason(enum.StrEnum):
    ENDPOINT_UNREACHABLE = "endpoint_unreachable"
    NO_RECEIPT = "no_receipt"
    REJECTED_BY_RUNTIME = "rejected_by_runtime"


# --- console -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    """A technician created the prompt; or, when ``adopted``, the bridge rebuilt it from the
    runtime's copy because its own record was lost (R6)."""

    KIND: ClassVar[str] = "created"
    SOURCE: ClassVar[Source] = Source.CONSOLE
    title: str
    message: str
    action: str
    expires_at_ms: int
    on_no_user: NoUserPolicy
    by: str
    supersedes: str | None = None
    adopted: bool = False
    # For an adoption (R6): SHA-256 of the runtime's copy as it holds it (``caisey.signing``),
    # which the endpoint's signatures cover; a create's own hash is derived from its fields.
    delivered_sha256: str | None = None
    # Optional (``caisey.wire.PROMPT_EXTRA_FIELDS``, DESIGN §13): the technician's reason and
    # ticket, the approval window asked for, the locked-screen rule and the client's branding
    # the policy gave the prompt. Delivered with it and covered by its hash.
    reason: str | None = None
    ticket_id: str | None = None
    ticket_url: str | None = None
    grant_minutes: int | None = None
    on_locked: str | None = None
    brand_name: str | None = None
    brand_logo_png: str | None = None


@dataclass(frozen=True, slots=True)
class Cancelled:
    KIND: ClassVar[str] = "cancelled"
    SOURCE: ClassVar[Source] = Source.CONSOLE
    by: str


@dataclass(frozen=True, slots=True)
class Superseded:
    KIND: ClassVar[str] = "superseded"
    SOURCE: ClassVar[Source] = Source.CONSOLE
    by_prompt_id: str
    by: str


# --- bridge --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryAttempted:
    """The bridge sent ``prompt.deliver`` (attempt is 1-based)."""

    KIND: ClassVar[str] = "delivery_attempted"
    SOURCE: ClassVar[Source] = Source.BRIDGE
    attempt: int
    next_attempt_at_ms: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Replayed:
    """The runtime said it does not hold a prompt the bridge thought delivered; the bridge
    re-queued it with the same event id (R5)."""

    KIND: ClassVar[str] = "replayed"
    SOURCE: ClassVar[Source] = Source.BRIDGE
    reason: str


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The bridge stopped delivering before expiry: attempts exhausted, or runtime rejection."""

    KIND: ClassVar[str] = "gave_up"
    SOURCE: ClassVar[Source] = Source.BRIDGE
    reason: GiveUpReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SignatureRefused:
    """The bridge refused a runtime answer whose signature did not hold (DESIGN §10): missing,
    made by an unknown or retired key, or not over this decision of this prompt as delivered.
    Kept for the timeline and the audit; it changes no state."""

    KIND: ClassVar[str] = "signature_refused"
    SOURCE: ClassVar[Source] = Source.BRIDGE
    answer: str  # approve | deny | dismiss
    how: str
    reason: str  # missing_signature | unknown_key | retired_key | bad_signature
    key_id: str | None = None
    decided_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Escalated:
    """The prompt was escalated (DESIGN §11, issue 13): by the bridge (``by`` "bridge",
    ``auto``) when it was not decided ``escalate_after`` after its creation or when it failed
    to deliver, or by a technician by hand (``by`` their name, with a ``note``). ``reason`` is
    in words ("not answered in 10 min"). It changes no state; the console shows it, and a
    ``prompt.escalated`` webhook fires for it."""

    KIND: ClassVar[str] = "escalated"
    SOURCE: ClassVar[Source] = Source.BRIDGE
    by: str
    reason: str
    note: str | None = None
    auto: bool = False


# --- runtime -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """The runtime committed the prompt to its store (its receipt)."""

    KIND: ClassVar[str] = "received"
    SOURCE: ClassVar[Source] = Source.RUNTIME
    runtime_at_ms: int


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The user has seen the prompt: ``how`` is ``shown`` or ``dismissed``. A dismissal is an
    answer ("seen, no choice") and is signed like a decision (``key_id``, ``sig``)."""

    KIND: ClassVar[str] = "acknowledged"
    SOURCE: ClassVar[Source] = Source.RUNTIME
    how: str
    key_id: str | None = None
    sig: str | None = None


@dataclass(frozen=True, slots=True)
class Decided:
    """The user (or the no-user policy) decided. ``decided_at_ms`` is bridge time: the runtime's
    clock corrected by the offset it had measured when the decision was made. ``key_id`` and
    ``sig`` are the endpoint key's signature (``caisey.signing``), verified before commit;
    both None for a decision recorded before signing or from an endpoint without a key."""

    KIND: ClassVar[str] = "decided"
    SOURCE: ClassVar[Source] = Source.RUNTIME
    decision: Decision
    decided_at_ms: int
    how: str = "user"
    key_id: str | None = None
    sig: str | None = None
    # How the prompt was shown and who answered (DESIGN §13), as the runtime reported and
    # signed it (``caisey/decision/v2``); None from agents that predate it. Omitted from the
    # record when None, so a decision without it is stored (and chained) as before.
    display: DisplayEvidence | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    KIND: ClassVar[str] = "rejected"
    SOURCE: ClassVar[Source] = Source.RUNTIME
    reason: str


@dataclass(frozen=True, slots=True)
class NoDecisionHeld:
    """The runtime's report says it holds no decision for this prompt, and never will
    (absent, or closed locally without one). Firms a provisional final (R4)."""

    KIND: ClassVar[str] = "no_decision_held"
    SOURCE: ClassVar[Source] = Source.RUNTIME
    detail: str


# --- approval windows (DESIGN §13) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowStarted:
    """The user's approval opened the approval window the prompt asked for: ``minutes`` as
    granted (at most ``asked``; the user may shorten it in the dialog), from ``started_at_ms``
    (the decision's time, bridge clock) to ``ends_at_ms``. Signed by the endpoint key under
    ``caisey/window/v1`` (``caisey.signing.window_message``)."""

    KIND: ClassVar[str] = "window_started"
    SOURCE: ClassVar[Source] = Source.RUNTIME
    minutes: int
    asked: int
    started_at_ms: int
    ends_at_ms: int
    key_id: str | None = None
    sig: str | None = None


@dataclass(frozen=True, slots=True)
class WindowEnded:
    """The window's time was up (the bridge's alarm): access granted by it is over."""

    KIND: ClassVar[str] = "window_ended"
    SOURCE: ClassVar[Source] = Source.BRIDGE
    ended_at_ms: int


@dataclass(frozen=True, slots=True)
class WindowRevoked:
    """The window was closed early: by the endpoint's user (``user``; signed by the endpoint
    key under ``caisey/window/v1``) or by a technician (``by`` names them)."""

    KIND: ClassVar[str] = "window_revoked"
    SOURCE: ClassVar[Source] = Source.RUNTIME
    by: str
    user: bool
    revoked_at_ms: int
    key_id: str | None = None
    sig: str | None = None


Fact = (
    Created
    | Cancelled
    | Superseded
    | DeliveryAttempted
    | Replayed
    | GaveUp
    | SignatureRefused
    | Escalated
    | Received
    | Acknowledged
    | Decided
    | Rejected
    | NoDecisionHeld
    | WindowStarted
    | WindowEnded
    | WindowRevoked
)

FACT_TYPES: dict[str, type[Any]] = {
    cls.KIND: cls
    for cls in (
        Created,
        Cancelled,
        Superseded,
        DeliveryAttempted,
        Replayed,
        GaveUp,
        SignatureRefused,
        Escalated,
        Received,
        Acknowledged,
        Decided,
        Rejected,
        NoDecisionHeld,
        WindowStarted,
        WindowEnded,
        WindowRevoked,
    )
}

# Each fact type's field names in order: ``dataclasses.fields`` per call showed in the storm
# profile (it rebuilds the tuple every time).
_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in FACT_TYPES.values()
}
_ENUM_FIELDS: dict[str, type[enum.Enum]] = {
    "on_no_user": NoUserPolicy,
    "decision": Decision,
    "reason": GiveUpReason,
}


def source_of(fact: Fact) -> Source:
    if isinstance(fact, Created) and fact.adopted:
        return Source.RUNTIME
    if isinstance(fact, Escalated) and not fact.auto:
        return Source.CONSOLE  # a technician escalated it by hand
    if isinstance(fact, WindowRevoked) and not fact.user:
        return Source.CONSOLE  # a technician revoked the window
    return fact.SOURCE


@dataclass(frozen=True, slots=True)
class Entry:
    """A fact as committed by the bridge: ``seq`` orders facts (R1), ``at_ms`` is bridge time.
    ``record``: ``fact_to_record(fact)`` when the maker already had it (the bridge does, as it
    stores the fact), so ``reconcile`` need not rebuild it for every view; not compared. Read
    only, as the fields are shared by every view built from this entry."""

    seq: int
    at_ms: int
    fact: Fact
    record: tuple[str, dict[str, Any]] | None = dataclasses.field(default=None, compare=False, repr=False)


def fact_to_record(fact: Fact) -> tuple[str, dict[str, Any]]:
    """``(kind, fields)`` with enums as their values — JSON-ready."""
    fields: dict[str, Any] = {}
    for name in _FIELD_NAMES[type(fact)]:
        value = getattr(fact, name)
        if isinstance(value, DisplayEvidence):
            fields[name] = value.to_json()
        elif value is None and name == "display":
            continue  # added with issue 16: a decision without it records as before
        else:
            fields[name] = value.value if isinstance(value, enum.Enum) else value
    return fact.KIND, fields


def fact_from_record(kind: str, fields: dict[str, Any]) -> Fact:
    """Inverse of ``fact_to_record``; a stored row we cannot read is a ``ProtocolError``."""
    cls = FACT_TYPES.get(kind)
    if cls is None:
        raise ProtocolError("unknown_fact", f"unknown fact kind {kind!r}")
    args = dict(fields)
    try:
        for name, enum_type in _ENUM_FIELDS.items():
            if name in args and name in _FIELD_NAMES[cls]:
                if cls is not GaveUp and name == "reason":
                    continue
                args[name] = enum_type(args[name])
        if cls is Decided and args.get("display") is not None:
            args["display"] = DisplayEvidence.from_json(args["display"], "decided.display")
        fact: Fact = cls(**args)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("bad_fact", f"cannot rebuild {kind!r}: {exc}") from None
    return fact
