"""What an endpoint signs when it decides a prompt, byte for byte (DESIGN §10).

The proof that a recorded approval is the endpoint user's is an Ed25519 signature made by
the agent's endpoint key (generated at enrollment, never sent) over a canonical encoding of
the decision *and of the prompt as delivered*: a decision cannot be moved to another prompt,
another endpoint or another text. The encoding lives here once; the agent signs it, the
bridge and ``caisey-audit verify`` rebuild it from their own records and check it.

The encoding is length-prefixed, so it needs no escaping rules to reimplement: a domain tag,
then each field as a 4-byte big-endian byte count followed by its UTF-8 bytes; integers are
written in decimal ASCII. ``prompt_sha256`` is SHA-256 (hex) of the same encoding of the
prompt's fields under the tag ``caisey/prompt/v1`` — or, when the prompt carries any of the
optional fields (``caisey.wire.PROMPT_EXTRA_FIELDS``: reason, ticket, approval window,
locked-screen rule, branding), under ``caisey/prompt/v2`` with those appended in that order,
an absent one as the empty string and the logo as the SHA-256 (hex) of its base64 text; ``decision_message`` is the encoding of
``endpoint_id, prompt_id, decision, how, decided_at_ms, prompt_sha256`` under
``caisey/decision/v1``. An answer that carries the agent's evidence of display
(``caisey.wire.DisplayEvidence``, DESIGN §13) is signed as ``caisey/decision/v2`` instead:
v1's six fields, then ``outcome, user, session, locked, presenter, shown_at_ms, locale,
template_id, template_version, shown_sha256`` (an absent one as the empty string, ``locked``
as 1 or 0), where ``shown_sha256`` is *recomputed* from the evidence's ``shown_text``
(``caisey.wire.shown_text_sha256``) — so a changed shown text fails the signature — or, when
the text was left out, taken as carried. Signatures and public keys travel as unpadded URL-safe base64; a key
id is the first 16 hex digits of SHA-256 of the raw 32-byte public key.

No cryptography happens here (the core is standard-library only and runs on Pyodide):
hosts verify with what they have — the ``cryptography`` package on CPython, WebCrypto in
the Worker — and hand the actor the ``SignatureClaim``s that verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from caisey.errors import ProtocolError
from caisey.facts import Acknowledged, Created, Decided
from caisey.wire import PROMPT_EXTRA_FIELDS, DisplayEvidence, PromptCopy, logo_sha256, shown_text_sha256

PROMPT_TAG = "caisey/prompt/v1"
PROMPT_V2_TAG = "caisey/prompt/v2"  # v1 and the optional fields (a prompt that has any)
DECISION_TAG = "caisey/decision/v1"
DECISION_V2_TAG = "caisey/decision/v2"  # v1 and the evidence of display (DESIGN §13)
PUBLIC_KEY_BYTES = 32  # Ed25519 raw public key
SIGNATURE_BYTES = 64  # Ed25519 signature
KEY_ID_HEX = 16  # 64 bits of fingerprint: a name for a key, not its proof
# What a signature may stand for: the two decisions, and "seen, no choice" (a dismissal).
SIGNED_ANSWERS = ("approve", "deny", "dismiss")


def length_prefixed(tag: str, *fields: str | int) -> bytes:
    """The encoding every signed or hashed structure uses (see the module docstring)."""
    out = bytearray()
    for value in (tag, *fields):
        raw = str(value).encode("utf-8") if isinstance(value, int) else value.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def prompt_sha256(
    *,
    title: str,
    message: str,
    action: str,
    expires_at_ms: int,
    requested_by: str,
    on_no_user: str,
    extras: dict[str, str | int | None] | None = None,
) -> str:
    """SHA-256 (hex) of the prompt as delivered: what the user was shown and was asked.

    ``extras`` holds the optional fields by name; a prompt with none of them set hashes as v1,
    so the signatures of agents and records from before them still verify."""
    base = (title, message, action, expires_at_ms, requested_by, on_no_user)
    extras = dict(extras or {})
    logo = extras.get("brand_logo_png")
    # The logo is covered by its hash, so a copy may carry the hash alone (report lines).
    extras["brand_logo_png"] = logo_sha256(str(logo)) if logo is not None else extras.get("brand_logo_sha256")
    values = [extras.get(name) for name in PROMPT_EXTRA_FIELDS]
    if all(value is None for value in values):
        encoded = length_prefixed(PROMPT_TAG, *base)
    else:
        encoded = length_prefixed(PROMPT_V2_TAG, *base, *("" if value is None else value for value in values))
    return hashlib.sha256(encoded).hexdigest()


def _extras_of(holder: object) -> dict[str, str | int | None]:
    names = (*PROMPT_EXTRA_FIELDS, "brand_logo_sha256")
    return {name: getattr(holder, name, None) for name in names}


def signed_answer(fact: object) -> str | None:
    """What a runtime fact answers, if it is an answer — approve, deny, or dismiss (seen, no
    choice) — and so what its signature must cover; None for facts that sign nothing."""
    if isinstance(fact, Decided):
        return fact.decision.value
    if isinstance(fact, Acknowledged) and fact.how == "dismissed":
        return "dismiss"
    return None


def created_sha256(created: Created) -> str:
    """The hash of the prompt a ``Created`` fact delivers (the deliver frame's copy is built
    from the same fields, ``requested_by`` being the creator), or the adopted copy's."""
    if created.delivered_sha256 is not None:
        return created.delivered_sha256
    return prompt_sha256(
        title=created.title,
        message=created.message,
        action=created.action,
        expires_at_ms=created.expires_at_ms,
        requested_by=created.by,
        on_no_user=created.on_no_user.value,
        extras=_extras_of(created),
    )


def copy_sha256(copy: PromptCopy) -> str:
    """The hash of a prompt as the runtime holds it (what it showed)."""
    return prompt_sha256(
        title=copy.title,
        message=copy.message,
        action=copy.action,
        expires_at_ms=copy.expires_at_ms,
        requested_by=copy.requested_by,
        on_no_user=copy.on_no_user,
        extras=_extras_of(copy),
    )


def answer_message(
    endpoint_id: str,
    copy: PromptCopy,
    answer: str,
    how: str,
    decided_at_ms: int,
    display: DisplayEvidence | None = None,
) -> bytes:
    """What a runtime signs to answer the prompt it holds (``decided_at_ms`` 0 for a dismissal);
    v2 when it reports how the prompt was shown (``display``)."""
    return decision_message(
        endpoint_id=endpoint_id,
        prompt_id=copy.prompt_id,
        decision=answer,
        how=how,
        decided_at_ms=decided_at_ms,
        prompt_hash=copy_sha256(copy),
        display=display,
    )


def display_fields(display: DisplayEvidence) -> tuple[str | int, ...]:
    """The evidence's part of a v2 decision message, in order (see the module docstring)."""

    def opt(value: str | int | None) -> str | int:
        return "" if value is None else value

    # With the text, its hash recomputed (a text edited after signing fails the signature);
    # without it (a report line that had to leave it out), the hash as carried.
    shown = (
        (display.shown_sha256 or "")
        if display.shown_text is None
        else shown_text_sha256(display.locale, display.template_id, display.template_version, display.shown_text)
    )
    return (
        display.outcome,
        opt(display.user),
        display.session,
        1 if display.locked else 0,
        display.presenter,
        opt(display.shown_at_ms),
        opt(display.locale),
        opt(display.template_id),
        opt(display.template_version),
        shown,
    )


def decision_message(
    *,
    endpoint_id: str,
    prompt_id: str,
    decision: str,
    how: str,
    decided_at_ms: int,
    prompt_hash: str,
    display: DisplayEvidence | None = None,
) -> bytes:
    """The bytes an endpoint key signs for one answer to one prompt: ``caisey/decision/v1``, or
    v2 when the answer carries evidence of display."""
    base = (endpoint_id, prompt_id, decision, how, decided_at_ms, prompt_hash)
    if display is None:
        return length_prefixed(DECISION_TAG, *base)
    return length_prefixed(DECISION_V2_TAG, *base, *display_fields(display))


def key_id(public_key: bytes) -> str:
    """The short fingerprint that names a public key (shown by the agent and the console)."""
    return hashlib.sha256(public_key).hexdigest()[:KEY_ID_HEX]


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def b64decode(text: str, expected_len: int, name: str) -> bytes:
    """Unpadded URL-safe base64 of exactly ``expected_len`` bytes, or ``ProtocolError``."""
    if not isinstance(text, str) or len(text) > 4 * expected_len:
        raise ProtocolError("invalid_field", f"{name} must be base64 of {expected_len} bytes")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_field", f"{name} is not URL-safe base64") from None
    if len(raw) != expected_len:
        raise ProtocolError("invalid_field", f"{name} must be {expected_len} bytes, got {len(raw)}")
    return raw


WINDOW_TAG = "caisey/window/v1"
WINDOW_EVENTS = ("start", "revoke")


def window_message(
    *, endpoint_id: str, prompt_id: str, event: str, minutes: int, at_ms: int, prompt_hash: str
) -> bytes:
    """The bytes an endpoint key signs for an approval window's start or its revocation by the
    user (DESIGN §13): ``endpoint_id, prompt_id, event (start|revoke), minutes (granted),
    at_ms (bridge time: the approval's for a start, the revocation's for a revoke),
    prompt_sha256`` under ``caisey/window/v1``. The decision's own encoding is unchanged."""
    return length_prefixed(WINDOW_TAG, endpoint_id, prompt_id, event, minutes, at_ms, prompt_hash)


@dataclass(frozen=True, slots=True)
class SignatureClaim:
    """ "``public_key`` signed ``message`` with ``signature``" — what a host verifies.

    The actor lists the claims a frame makes (it knows the keys and the prompts), the host
    checks them with its crypto, and the actor commits a signed answer only when the exact
    claim it rebuilds at commit time is among the verified ones."""

    public_key: bytes
    message: bytes
    signature: bytes


__all__ = [
    "DECISION_TAG",
    "DECISION_V2_TAG",
    "PROMPT_TAG",
    "PROMPT_V2_TAG",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "SIGNED_ANSWERS",
    "WINDOW_EVENTS",
    "WINDOW_TAG",
    "SignatureClaim",
    "answer_message",
    "b64decode",
    "b64encode",
    "copy_sha256",
    "created_sha256",
    "decision_message",
    "display_fields",
    "key_id",
    "length_prefixed",
    "prompt_sha256",
    "signed_answer",
    "window_message",
]
