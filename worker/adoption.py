"""What the bridge believes of a runtime's claims (DESIGN §4 R4, R6; issue 11 item 3).

An agent holds a valid secret for its own endpoint, but it is neither a technician nor the
bridge's clock. A hostile one (or a broken one) could otherwise use adoption (R6) and R4 to
write facts only the console or the bridge may write. Adopting rebuilds a prompt from the
runtime's copy, so every field of that copy is a claim; the bridge takes:

- **the id** only when it has the shape of the ids the bridge makes (``caisey.ids``) and was
  made no later than now (plus the skew allowance) and no earlier than ``max_age_ms``: a
  crafted id such as ``ZZZ…`` would otherwise sort first ("newest") in every list;
- **the creation time** from that id — the bridge stamped it when it created the prompt —
  never from the copy's ``created_at_ms``;
- **the expiry** clamped to what a create may ask: at most ``max_expires_in_ms`` from now
  (a copy may say 9999-12-31);
- **the requester** as a claim of the endpoint, ``endpoint (claimed: NAME)``, never as a
  technician: technician names (``worker.api.NAME_RE``) hold no spaces or parentheses, so
  the two cannot be confused on the console;
- **no more open prompts than a technician may open** (``wire.MAX_OPEN_PROMPTS``), counted
  line by line, so no report (nor three of them) pushes the endpoint past the limit that
  answers technicians 429.

A decision whose ``decided_at_ms`` is before the prompt's creation, minus the skew allowance,
is refused (an ``error`` frame; nothing committed): a runtime decides only what it was
delivered, which is after creation. Without this, ``decided_at_ms = 0`` turned a provisional
``expired`` into ``approved`` "at 1970" (R4 honours decisions made before ``expires_at``).

Pure functions; the actor (``worker.endpoint``) applies them.
"""

from __future__ import annotations

from caisey import wire
from caisey.ids import id_time_ms

ADOPTED_REQUESTER_PREFIX = "endpoint (claimed: "
ADOPTED_REQUESTER_SUFFIX = ")"
# What a runtime's copy may claim as requester once wrapped: the whole must stay a valid
# ``requested_by`` (``wire.MAX_NAME_CHARS``), because an adopted prompt can be delivered again (R5).
MAX_CLAIMED_NAME_CHARS = wire.MAX_NAME_CHARS - len(ADOPTED_REQUESTER_PREFIX) - len(ADOPTED_REQUESTER_SUFFIX)
# Runtime statuses after which an adopted prompt is final whatever its expiry.
_FINAL_LINE_STATUSES = ("decided", "rejected")


def adopted_requester(claimed: str) -> str:
    """How the console shows the requester of an adopted prompt: the endpoint's claim."""
    name = " ".join(claimed.split())  # no newlines or tabs from a claim
    if not name:
        return "endpoint (no requester claimed)"
    if len(name) > MAX_CLAIMED_NAME_CHARS:
        name = name[: MAX_CLAIMED_NAME_CHARS - 1] + "…"
    return ADOPTED_REQUESTER_PREFIX + name + ADOPTED_REQUESTER_SUFFIX


def id_refusal(prompt_id: str, now_ms: int, skew_ms: int, max_age_ms: int) -> str | None:
    """Why a runtime's prompt id cannot be adopted, or None when it can."""
    made_ms = id_time_ms(prompt_id)
    if made_ms is None:
        return "the prompt id is not one this bridge makes"
    if made_ms > now_ms + skew_ms:
        return "the prompt id claims a creation time in the future"
    if made_ms < now_ms - max_age_ms:
        return "the prompt id is older than any prompt the bridge could have lost"
    return None


def adopted_times(copy: wire.PromptCopy, now_ms: int, max_expires_in_ms: int) -> tuple[int, int]:
    """``(created_at_ms, expires_at_ms)`` of an adopted prompt: creation from its id (checked
    by ``id_refusal`` first), expiry clamped to the create bounds."""
    made_ms = id_time_ms(copy.prompt_id)
    assert made_ms is not None, "id_refusal accepts only ids with a time"
    created_at_ms = min(made_ms, now_ms)
    return created_at_ms, min(copy.expires_at_ms, now_ms + max_expires_in_ms)


def stays_open(held: wire.HeldPrompt, expires_at_ms: int, now_ms: int) -> bool:
    """Whether adopting this report line adds an open prompt (what the limit counts)."""
    return held.status not in _FINAL_LINE_STATUSES and expires_at_ms > now_ms


def decision_time_refusal(decided_at_ms: int, created_at_ms: int, skew_ms: int) -> str | None:
    """Why a decision's time cannot be true, or None: it cannot precede the prompt's creation."""
    if decided_at_ms < created_at_ms - skew_ms:
        return (
            f"decided_at_ms {decided_at_ms} is before the prompt was created ({created_at_ms}) "
            f"by more than the {skew_ms} ms skew allowance"
        )
    return None


__all__ = [
    "ADOPTED_REQUESTER_PREFIX",
    "adopted_requester",
    "adopted_times",
    "decision_time_refusal",
    "id_refusal",
    "stays_open",
]
