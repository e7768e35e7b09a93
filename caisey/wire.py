"""The agent ↔ bridge wire protocol (DESIGN §7): frames, their bounds, parse and serialise.

A frame is one WebSocket text message holding a JSON object
``{"v": 1, "type": …, "id": …, …fields}``. ``id`` is the event id: receivers deduplicate by
it and a replay reuses it (DESIGN §5). Times are integer epoch milliseconds, named ``*_ms``.

Every frame type is a frozen dataclass whose ``__post_init__`` runs the same checks for
frames we build and frames we parse (after websockets' ``frames.py``), so neither direction
can carry what the other would refuse. ``decode`` turns any input into a message or raises
``ProtocolError`` with a code a host can send back in an ``error`` frame; nothing else
escapes (fuzzed in ``tests/test_wire.py``). Unknown extra fields are ignored, so versions
can add fields; removing or retyping one needs ``v`` 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from caisey.errors import ProtocolError
from caisey.localtime import zone_problem

VERSION = 1
SUPPORTED_VERSIONS = (1,)

# --- limits, each with its reason ---------------------------------------------------------
# A full state.report is the largest frame: MAX_OPEN_PROMPTS prompts of at most ~2.5 KiB each
# fit in 512 KiB with room to spare. Anything larger is refused before parsing.
MAX_FRAME_BYTES = 512 * 1024
# Bound on prompts an endpoint may hold open at once. A person answers prompts one at a time;
# a hundred open is already a runaway console. It keeps a full report in one frame.
MAX_OPEN_PROMPTS = 100
MAX_ID_CHARS = 64  # ULIDs are 26; room for other sortable ids
MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 2000
MAX_ACTION_CHARS = 64
MAX_NAME_CHARS = 128  # technician names, agent versions, endpoint ids
MAX_TEXT_CHARS = 500  # error messages, reasons, free-form detail
MAX_DIGEST_CHARS = 64  # hex sha256
MAX_SIG_CHARS = 128  # an Ed25519 signature is 86 characters of unpadded base64 (caisey.signing)
# Epoch ms must stay exact in a JS number on the Workers runtime (< 2**53) and be writable as
# RFC 3339 for the API and console, whose years have four digits: 9999-12-31T23:59:59.999Z.
MAX_TIME_MS = 253_402_300_799_999

# --- liveness pings (added with issue 12; still v 1: an agent sends them only to a bridge that
# asked for them in ``hello.ok.digest_ms``) -----------------------------------------------------
# Constant frames on purpose: on Cloudflare the runtime answers an *exact* request string with
# a fixed response without waking the Durable Object (``setWebSocketAutoResponse``) and records
# when it did (``getWebSocketAutoResponseTimestamp``). They carry no id (an id would make every
# ping different) and are never deduplicated, acked or stored: proof of life, nothing more.
PING_FRAME = '{"v":1,"type":"ping"}'
PONG_FRAME = '{"v":1,"type":"pong"}'
# A full heartbeat (with the digest) at least this often when pinging.
MAX_DIGEST_MS = 3_600_000

_ID_RE = re.compile(r"[A-Za-z0-9._:-]+")  # used with fullmatch: "$" would let a trailing newline in
# A JSON "\ud800" escape decodes to a lone surrogate, which no UTF-8 frame can carry back out.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _need(fields: dict[str, Any], name: str, kind: type, frame: str) -> Any:
    if name not in fields:
        raise ProtocolError("missing_field", f"{frame} needs field {name!r}")
    value = fields[name]
    # bool is an int in Python; JSON true is never a valid number here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError("invalid_field", f"{frame}.{name} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _opt(fields: dict[str, Any], name: str, kind: type, frame: str) -> Any:
    if fields.get(name) is None:
        return None
    return _need(fields, name, kind, frame)


def check_text(value: str, name: str, max_chars: int, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise ProtocolError("invalid_field", f"{name} must be a string")
    if len(value) > max_chars:
        raise ProtocolError("field_too_long", f"{name} has {len(value)} characters; the limit is {max_chars}")
    if not value and not empty_ok:
        raise ProtocolError("invalid_field", f"{name} must not be empty")
    if _SURROGATE_RE.search(value):
        raise ProtocolError("invalid_field", f"{name} holds a lone surrogate, which is not Unicode text")


def check_id(value: str, name: str) -> None:
    check_text(value, name, MAX_ID_CHARS)
    if not _ID_RE.fullmatch(value):
        raise ProtocolError("invalid_field", f"{name} may hold only letters, digits and . _ : -")


def check_time(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIME_MS:
        raise ProtocolError("invalid_field", f"{name} must be epoch milliseconds in [0, {MAX_TIME_MS}]")


def check_proof(key_id: str | None, sig: str | None, name: str) -> None:
    """A signed answer names its key and carries its signature, both or neither."""
    if (key_id is None) != (sig is None):
        raise ProtocolError("invalid_field", f"{name}: key_id and sig come together")
    if key_id is not None and sig is not None:
        check_id(key_id, f"{name}.key_id")
        check_text(sig, f"{name}.sig", MAX_SIG_CHARS)


def check_time_zone(value: str | None) -> None:
    """An optional IANA zone name (``caisey.localtime``): its shape only; an unknown zone
    is the bridge's to note, not a protocol error."""
    if value is None:
        return
    problem = zone_problem(value)
    if problem is not None:
        raise ProtocolError("invalid_field", problem)


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ProtocolError("invalid_field", f"{name} must be one of {', '.join(choices)}; got {str(value)[:40]!r}")


DECISIONS = ("approve", "deny")
NO_USER_POLICIES = ("deny", "approve", "wait")
REPORT_SCOPES = ("open", "history")
RUNTIME_STATUSES = ("received", "acknowledged", "decided", "closed", "rejected")
# Consent policies and evidence (DESIGN §13): what a prompt may carry beyond its text.
MAX_REASON_CHARS = 500
MAX_TICKET_ID_CHARS = 64
MAX_URL_CHARS = 500
MAX_GRANT_MINUTES = 480  # an approval window of at most a working day
LOCKED_RULES = ("wait", "no_user")  # a locked screen: wait until unlocked, or treat as no user
MAX_BRAND_NAME_CHARS = 64
MAX_BRAND_LOGO_CHARS = 16_384  # a small PNG, base64 (about 12 KiB of image)
_PNG_B64_PREFIX = "iVBORw0KGgo"  # base64 of the PNG signature's first 8 bytes
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_URL_RE = re.compile(r"https://[!-~]+")  # printable ASCII, no spaces or controls

# The optional fields of a prompt, in the order ``caisey.signing`` hashes them: a prompt
# carrying none of them is hashed (and travels) exactly as before they existed.
PROMPT_EXTRA_FIELDS = (
    "reason",
    "ticket_id",
    "ticket_url",
    "grant_minutes",
    "on_locked",
    "brand_name",
    "brand_logo_png",
)


_HEX64_RE = re.compile(r"[0-9a-f]{64}")


def logo_sha256(brand_logo_png: str) -> str:
    """What a prompt's hash covers of its logo: SHA-256 (hex) of the base64 text."""
    return hashlib.sha256(brand_logo_png.encode("ascii")).hexdigest()


def check_prompt_extras(
    *,
    reason: str | None,
    ticket_id: str | None,
    ticket_url: str | None,
    grant_minutes: int | None,
    on_locked: str | None,
    brand_name: str | None,
    brand_logo_png: str | None,
    where: str,
) -> None:
    """The optional fields' shapes, wherever a prompt is built (API, wire, stored fact)."""
    if reason is not None:
        check_text(reason, f"{where}.reason", MAX_REASON_CHARS)
    if ticket_id is not None:
        check_text(ticket_id, f"{where}.ticket_id", MAX_TICKET_ID_CHARS)
    if ticket_url is not None:
        check_text(ticket_url, f"{where}.ticket_url", MAX_URL_CHARS)
        if not _URL_RE.fullmatch(ticket_url):
            raise ProtocolError("invalid_field", f"{where}.ticket_url must be an https:// URL without spaces")
        if ticket_id is None:
            raise ProtocolError("invalid_field", f"{where}.ticket_url needs a ticket_id")
    if grant_minutes is not None and (
        isinstance(grant_minutes, bool)
        or not isinstance(grant_minutes, int)
        or not 1 <= grant_minutes <= MAX_GRANT_MINUTES
    ):
        raise ProtocolError("invalid_field", f"{where}.grant_minutes must be an integer in [1, {MAX_GRANT_MINUTES}]")
    if on_locked is not None:
        check_choice(on_locked, f"{where}.on_locked", LOCKED_RULES)
    if brand_name is not None:
        check_text(brand_name, f"{where}.brand_name", MAX_BRAND_NAME_CHARS)
    if brand_logo_png is not None:
        check_text(brand_logo_png, f"{where}.brand_logo_png", MAX_BRAND_LOGO_CHARS)
        if not (_B64_RE.fullmatch(brand_logo_png) and brand_logo_png.startswith(_PNG_B64_PREFIX)):
            raise ProtocolError("invalid_field", f"{where}.brand_logo_png must be a PNG image in base64")


# --- evidence of display (DESIGN §13) ---------------------------------------------------------
# How a prompt was shown and who answered it, as the agent reports it with a decision. The
# agent signs it (``caisey.signing``, ``caisey/decision/v2``); agents that predate it send none.
DISPLAY_OUTCOMES = ("shown", "locked", "no_user")  # displayed | screen locked | nobody logged in
SESSION_KINDS = ("console", "rdp", "ssh", "unknown")
PRESENTER_KINDS = ("tk", "terminal", "exec", "none")
MAX_SHOWN_TEXT_CHARS = 8_000  # title, message, reason and the template's lines, as rendered
MAX_LOCALE_CHARS = 35  # a BCP 47 tag ("de-DE", "zh-Hant-TW")
_LOCALE_RE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


def check_locale(value: str | None, name: str) -> None:
    if value is None:
        return
    check_text(value, name, MAX_LOCALE_CHARS)
    if not _LOCALE_RE.fullmatch(value):
        raise ProtocolError("invalid_field", f"{name} must be a language tag such as de or de-DE")


@dataclass(frozen=True, slots=True)
class DisplayEvidence:
    """How a prompt reached the person who answered it (or why nobody could be asked).

    ``outcome``: ``shown`` (on screen; ``shown_at_ms`` says when), ``locked`` (the screen was
    locked and the prompt's ``on_locked`` rule said to treat that as no user) or ``no_user``
    (nobody logged in, or no interactive session to show it in). ``shown_at_ms`` is bridge
    time, like ``decided_at_ms``: the answer clock starts there. ``shown_text`` is the exact
    text the presenter showed (template lines in ``locale``, title and message as written);
    ``shown_sha256`` its hash (``shown_text_sha256``), which the signature covers. The text
    may be left out (a report line that would not fit in a frame carries the hash alone); when
    present, its hash must match."""

    outcome: str
    session: str = "unknown"
    locked: bool = False
    presenter: str = "none"
    user: str | None = None
    shown_at_ms: int | None = None
    locale: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    shown_text: str | None = None
    shown_sha256: str | None = None

    def __post_init__(self) -> None:
        check_choice(self.outcome, "display.outcome", DISPLAY_OUTCOMES)
        check_choice(self.session, "display.session", SESSION_KINDS)
        check_choice(self.presenter, "display.presenter", PRESENTER_KINDS)
        if not isinstance(self.locked, bool):
            raise ProtocolError("invalid_field", "display.locked must be a boolean")
        if self.user is not None:
            check_text(self.user, "display.user", MAX_NAME_CHARS)
        if self.shown_at_ms is not None:
            check_time(self.shown_at_ms, "display.shown_at_ms")
        check_locale(self.locale, "display.locale")
        if self.template_id is not None:
            check_id(self.template_id, "display.template_id")
        if self.template_version is not None and (
            isinstance(self.template_version, bool)
            or not isinstance(self.template_version, int)
            or not 0 <= self.template_version <= 1_000_000
        ):
            raise ProtocolError("invalid_field", "display.template_version must be an integer in [0, 1000000]")
        if self.shown_text is not None and self.shown_sha256 is None:
            raise ProtocolError("invalid_field", "display: shown_text needs its shown_sha256")
        if self.shown_sha256 is not None and not _HEX64_RE.fullmatch(self.shown_sha256):
            raise ProtocolError("invalid_field", "display.shown_sha256 must be 64 lowercase hex digits")
        if self.shown_text is not None and self.shown_sha256 is not None:
            check_text(self.shown_text, "display.shown_text", MAX_SHOWN_TEXT_CHARS, empty_ok=True)
            if self.shown_sha256 != shown_text_sha256(
                self.locale, self.template_id, self.template_version, self.shown_text
            ):
                raise ProtocolError("invalid_field", "display.shown_sha256 is not the hash of display.shown_text")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, value: Any, where: str) -> DisplayEvidence | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ProtocolError("invalid_field", f"{where} must be an object")
        locked = value.get("locked", False)
        if not isinstance(locked, bool):
            raise ProtocolError("invalid_field", f"{where}.locked must be a boolean")
        return cls(
            outcome=_need(value, "outcome", str, where),
            session=_opt(value, "session", str, where) or "unknown",
            locked=locked,
            presenter=_opt(value, "presenter", str, where) or "none",
            user=_opt(value, "user", str, where),
            shown_at_ms=_opt(value, "shown_at_ms", int, where),
            locale=_opt(value, "locale", str, where),
            template_id=_opt(value, "template_id", str, where),
            template_version=_opt(value, "template_version", int, where),
            shown_text=_opt(value, "shown_text", str, where),
            shown_sha256=_opt(value, "shown_sha256", str, where),
        )


SHOWN_TAG = "caisey/shown/v1"


def shown_text_sha256(locale: str | None, template_id: str | None, version: int | None, text: str) -> str:
    """SHA-256 (hex) of what a presenter showed: the length-prefixed encoding (as in
    ``caisey.signing``) of ``caisey/shown/v1``, the locale, the template id and version (empty
    when none) and the rendered text."""
    out = bytearray()
    for value in (SHOWN_TAG, locale or "", template_id or "", "" if version is None else str(version), text):
        raw = value.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return hashlib.sha256(bytes(out)).hexdigest()


# --- the prompt as it travels ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptCopy:
    """What the runtime stores and shows; also what it hands back for adoption (R6)."""

    prompt_id: str
    title: str
    message: str
    action: str
    created_at_ms: int
    expires_at_ms: int
    on_no_user: str
    requested_by: str
    # Optional (PROMPT_EXTRA_FIELDS); absent from bridges that predate them.
    reason: str | None = None
    ticket_id: str | None = None
    ticket_url: str | None = None
    grant_minutes: int | None = None
    on_locked: str | None = None
    brand_name: str | None = None
    brand_logo_png: str | None = None
    # A logo's SHA-256 (hex, of its base64 text) in its place: what report and history lines
    # carry, so a page of 100 prompts fits a frame; the prompt's hash is the same either way.
    brand_logo_sha256: str | None = None

    def __post_init__(self) -> None:
        check_id(self.prompt_id, "prompt.prompt_id")
        check_text(self.title, "prompt.title", MAX_TITLE_CHARS)
        check_text(self.message, "prompt.message", MAX_MESSAGE_CHARS, empty_ok=True)
        check_text(self.action, "prompt.action", MAX_ACTION_CHARS)
        check_time(self.created_at_ms, "prompt.created_at_ms")
        check_time(self.expires_at_ms, "prompt.expires_at_ms")
        check_choice(self.on_no_user, "prompt.on_no_user", NO_USER_POLICIES)
        check_text(self.requested_by, "prompt.requested_by", MAX_NAME_CHARS, empty_ok=True)
        check_prompt_extras(**self.extras(), where="prompt")
        if self.brand_logo_sha256 is not None:
            if not _HEX64_RE.fullmatch(self.brand_logo_sha256):
                raise ProtocolError("invalid_field", "prompt.brand_logo_sha256 must be 64 lowercase hex digits")
            if self.brand_logo_png is not None and logo_sha256(self.brand_logo_png) != self.brand_logo_sha256:
                raise ProtocolError(
                    "invalid_field", "prompt.brand_logo_sha256 is not the hash of prompt.brand_logo_png"
                )

    def without_logo(self) -> PromptCopy:
        """This copy with its logo's bytes replaced by their hash (for report lines)."""
        if self.brand_logo_png is None:
            return self
        return dataclasses.replace(self, brand_logo_png=None, brand_logo_sha256=logo_sha256(self.brand_logo_png))

    def extras(self) -> dict[str, Any]:
        """The optional fields by name (None where absent)."""
        return {name: getattr(self, name) for name in PROMPT_EXTRA_FIELDS}

    @classmethod
    def from_json(cls, value: Any, where: str) -> PromptCopy:
        if not isinstance(value, dict):
            raise ProtocolError("invalid_field", f"{where} must be an object")
        return cls(
            prompt_id=_need(value, "prompt_id", str, where),
            title=_need(value, "title", str, where),
            message=_need(value, "message", str, where),
            action=_need(value, "action", str, where),
            created_at_ms=_need(value, "created_at_ms", int, where),
            expires_at_ms=_need(value, "expires_at_ms", int, where),
            on_no_user=_need(value, "on_no_user", str, where),
            requested_by=_need(value, "requested_by", str, where),
            reason=_opt(value, "reason", str, where),
            ticket_id=_opt(value, "ticket_id", str, where),
            ticket_url=_opt(value, "ticket_url", str, where),
            grant_minutes=_opt(value, "grant_minutes", int, where),
            on_locked=_opt(value, "on_locked", str, where),
            brand_name=_opt(value, "brand_name", str, where),
            brand_logo_png=_opt(value, "brand_logo_png", str, where),
            brand_logo_sha256=_opt(value, "brand_logo_sha256", str, where),
        )


@dataclass(frozen=True, slots=True)
class HeldPrompt:
    """One line of a ``state.report``: a prompt the runtime holds and what happened to it."""

    prompt: PromptCopy
    status: str
    decision: str | None = None
    decided_at_ms: int | None = None
    how: str | None = None
    # The endpoint key's signature of the answer (``caisey.signing``): for a decision, or for
    # a dismissal (status acknowledged, how dismissed). Absent from agents that predate it.
    key_id: str | None = None
    sig: str | None = None
    # How it was shown and answered (DESIGN §13), on a decided line; absent from older agents.
    display: DisplayEvidence | None = None

    def __post_init__(self) -> None:
        check_choice(self.status, "report.status", RUNTIME_STATUSES)
        check_proof(self.key_id, self.sig, "report")
        if self.status == "decided" and (self.decision is None or self.decided_at_ms is None):
            raise ProtocolError("missing_field", "a decided report line needs decision and decided_at_ms")
        if self.decision is not None:
            check_choice(self.decision, "report.decision", DECISIONS)
        if self.decided_at_ms is not None:
            check_time(self.decided_at_ms, "report.decided_at_ms")
        if self.how is not None:
            check_text(self.how, "report.how", MAX_TEXT_CHARS)

    @classmethod
    def from_json(cls, value: Any) -> HeldPrompt:
        if not isinstance(value, dict):
            raise ProtocolError("invalid_field", "state.report prompts must be objects")
        return cls(
            prompt=PromptCopy.from_json(value.get("prompt"), "state.report prompt"),
            status=_need(value, "status", str, "state.report"),
            decision=_opt(value, "decision", str, "state.report"),
            decided_at_ms=_opt(value, "decided_at_ms", int, "state.report"),
            how=_opt(value, "how", str, "state.report"),
            key_id=_opt(value, "key_id", str, "state.report"),
            sig=_opt(value, "sig", str, "state.report"),
            display=DisplayEvidence.from_json(value.get("display"), "state.report display"),
        )


# --- frames --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    id: str
    endpoint_id: str
    agent_version: str
    sent_at_ms: int  # runtime clock: t0 of the offset exchange
    # The id of the last receipt, update or report the bridge acked. A bridge that has no
    # record of it lost storage (restored from a backup) and asks for the history (R6).
    last_acked_id: str | None = None
    # This agent sends ``PING_FRAME`` between full heartbeats when ``hello.ok`` gives
    # ``digest_ms`` (issue 12). Older agents leave it out; older bridges ignore it.
    pings: bool | None = None
    # The endpoint's IANA time zone (issue 14; ``caisey.localtime``): hours and weekdays in its
    # statistics are the user's local ones. Older agents leave it out; older bridges ignore it.
    time_zone: str | None = None
    # The user's locale (issue 16, a BCP 47 tag): the language prompts are shown in. Older
    # agents leave it out; older bridges ignore it.
    locale: str | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.endpoint_id, "endpoint_id")
        check_text(self.agent_version, "agent_version", MAX_NAME_CHARS)
        check_time(self.sent_at_ms, "sent_at_ms")
        if self.last_acked_id is not None:
            check_id(self.last_acked_id, "last_acked_id")
        check_time_zone(self.time_zone)
        check_locale(self.locale, "locale")


@dataclass(frozen=True, slots=True)
class HelloOk:
    TYPE: ClassVar[str] = "hello.ok"
    id: str
    in_reply_to: str
    received_at_ms: int  # bridge clock: t1
    sent_at_ms: int  # bridge clock: t2
    heartbeat_ms: int
    # Only to an agent whose hello said ``pings``: send ``PING_FRAME`` every ``heartbeat_ms``
    # and a full heartbeat (the digest, the clock sample) only every ``digest_ms``. Absent: a
    # full heartbeat every ``heartbeat_ms``, as before (old agents ignore the field).
    digest_ms: int | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.in_reply_to, "in_reply_to")
        check_time(self.received_at_ms, "received_at_ms")
        check_time(self.sent_at_ms, "sent_at_ms")
        if not 1_000 <= self.heartbeat_ms <= 3_600_000:
            raise ProtocolError("invalid_field", "heartbeat_ms must be between 1 s and 1 h")
        if self.digest_ms is not None and not self.heartbeat_ms <= self.digest_ms <= MAX_DIGEST_MS:
            raise ProtocolError("invalid_field", "digest_ms must be between heartbeat_ms and 1 h")


@dataclass(frozen=True, slots=True)
class PromptDeliver:
    TYPE: ClassVar[str] = "prompt.deliver"
    id: str
    prompt: PromptCopy

    def __post_init__(self) -> None:
        check_id(self.id, "id")


@dataclass(frozen=True, slots=True)
class PromptCancel:
    TYPE: ClassVar[str] = "prompt.cancel"
    id: str
    prompt_id: str
    reason: str  # "cancelled" or "superseded"

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.prompt_id, "prompt_id")
        check_choice(self.reason, "reason", ("cancelled", "superseded"))


@dataclass(frozen=True, slots=True)
class PromptReceipt:
    """The runtime committed the prompt delivered by frame ``deliver_id``."""

    TYPE: ClassVar[str] = "prompt.receipt"
    id: str
    prompt_id: str
    deliver_id: str
    received_at_ms: int  # runtime clock

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.prompt_id, "prompt_id")
        check_id(self.deliver_id, "deliver_id")
        check_time(self.received_at_ms, "received_at_ms")


@dataclass(frozen=True, slots=True)
class PromptUpdate:
    """A runtime fact: ``acknowledged`` (how: shown|dismissed), ``decided`` (decision,
    decided_at_ms in bridge time, how: user|no_user_policy|endpoint_policy), ``closed`` (held
    no decision at expiry or after a cancel; detail says which) or ``rejected`` (detail says
    why). A decision or a dismissal carries ``key_id`` and ``sig`` (DESIGN §10); a decision
    from an agent that reports it, ``display`` (how it was shown, DESIGN §13)."""

    TYPE: ClassVar[str] = "prompt.update"
    id: str
    prompt_id: str
    status: str
    how: str | None = None
    decision: str | None = None
    decided_at_ms: int | None = None
    detail: str | None = None
    key_id: str | None = None
    sig: str | None = None
    # How it was shown and answered (DESIGN §13), on a decision; absent from older agents.
    display: DisplayEvidence | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.prompt_id, "prompt_id")
        check_choice(self.status, "status", ("acknowledged", "decided", "closed", "rejected"))
        check_proof(self.key_id, self.sig, "prompt.update")
        if self.status == "decided" and (self.decision is None or self.decided_at_ms is None):
            raise ProtocolError("missing_field", "a decided update needs decision and decided_at_ms")
        # Checked whenever present, as in HeldPrompt: a frame never carries an unchecked value.
        if self.decision is not None:
            check_choice(self.decision, "decision", DECISIONS)
        if self.decided_at_ms is not None:
            check_time(self.decided_at_ms, "decided_at_ms")
        for name in ("how", "detail"):
            value = getattr(self, name)
            if value is not None:
                check_text(value, name, MAX_TEXT_CHARS, empty_ok=True)


@dataclass(frozen=True, slots=True)
class StateReport:
    TYPE: ClassVar[str] = "state.report"
    id: str
    prompts: tuple[HeldPrompt, ...]
    digest: str
    # ``open`` (default): every prompt held that is not final-and-acked — complete, so what it
    # leaves out the runtime does not hold (R5). ``history``: final-and-acked prompts sent
    # in pages after a ``state.request`` asked for them; absence means nothing.
    scope: str = "open"

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_choice(self.scope, "scope", REPORT_SCOPES)
        if len(self.prompts) > MAX_OPEN_PROMPTS:
            raise ProtocolError(
                "too_many_items", f"state.report holds {len(self.prompts)} prompts; the limit is {MAX_OPEN_PROMPTS}"
            )
        check_text(self.digest, "digest", MAX_DIGEST_CHARS)


@dataclass(frozen=True, slots=True)
class StateRequest:
    TYPE: ClassVar[str] = "state.request"
    id: str
    reason: str = ""
    # Also report final-and-acked prompts updated since then (``history`` reports): the
    # bridge lost storage and must relearn decisions it had already acknowledged.
    include_final_since_ms: int | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_text(self.reason, "reason", MAX_TEXT_CHARS, empty_ok=True)
        if self.include_final_since_ms is not None:
            check_time(self.include_final_since_ms, "include_final_since_ms")


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledges frame ``of``. Replying to a heartbeat it carries the bridge's t1/t2."""

    TYPE: ClassVar[str] = "ack"
    id: str
    of: str
    received_at_ms: int | None = None
    sent_at_ms: int | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.of, "of")
        for name in ("received_at_ms", "sent_at_ms"):
            value = getattr(self, name)
            if value is not None:
                check_time(value, name)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"
    id: str
    sent_at_ms: int  # runtime clock: t0
    digest: str
    # Only when the zone changed since this connection's hello (issue 14): the new one.
    time_zone: str | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_time(self.sent_at_ms, "sent_at_ms")
        check_text(self.digest, "digest", MAX_DIGEST_CHARS)
        check_time_zone(self.time_zone)


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[str] = "error"
    id: str
    code: str
    message: str
    of: str | None = None
    supported_versions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_text(self.code, "code", MAX_NAME_CHARS)
        check_text(self.message, "message", MAX_TEXT_CHARS, empty_ok=True)
        if self.of is not None:
            check_text(self.of, "of", MAX_ID_CHARS)


# --- approval windows (DESIGN §13; additive, still v 1: only sent about a prompt that asked
# for a window, which only a bridge that knows windows delivers) -------------------------------

WINDOW_UPDATE_EVENTS = ("start", "revoke")
WINDOW_NOTICE_STATES = ("ended", "revoked")


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """Runtime → bridge: the user's approval started the prompt's approval window with
    ``minutes`` granted (``at_ms`` the decision's time), or the user revoked it (``at_ms``
    when, bridge time). Signed by the endpoint key (``caisey.signing.window_message``);
    outboxed until acked, like a decision."""

    TYPE: ClassVar[str] = "window.update"
    id: str
    prompt_id: str
    event: str
    minutes: int
    at_ms: int
    key_id: str | None = None
    sig: str | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.prompt_id, "prompt_id")
        check_choice(self.event, "event", WINDOW_UPDATE_EVENTS)
        if (
            isinstance(self.minutes, bool)
            or not isinstance(self.minutes, int)
            or not 1 <= self.minutes <= MAX_GRANT_MINUTES
        ):
            raise ProtocolError("invalid_field", f"minutes must be an integer in [1, {MAX_GRANT_MINUTES}]")
        check_time(self.at_ms, "at_ms")
        check_proof(self.key_id, self.sig, "window.update")


@dataclass(frozen=True, slots=True)
class WindowNotice:
    """Bridge → runtime: the prompt's window is over — its time was up (``ended``) or a
    technician revoked it (``revoked``, ``by`` names them). The runtime closes its indicator
    and acks; resent until acked."""

    TYPE: ClassVar[str] = "window.notice"
    id: str
    prompt_id: str
    state: str
    at_ms: int
    by: str | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "id")
        check_id(self.prompt_id, "prompt_id")
        check_choice(self.state, "state", WINDOW_NOTICE_STATES)
        check_time(self.at_ms, "at_ms")
        if self.by is not None:
            check_text(self.by, "by", MAX_NAME_CHARS, empty_ok=True)


Message = (
    Hello
    | HelloOk
    | PromptDeliver
    | PromptCancel
    | PromptReceipt
    | PromptUpdate
    | StateReport
    | StateRequest
    | Ack
    | Heartbeat
    | Error
    | WindowUpdate
    | WindowNotice
)

MESSAGE_TYPES: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        HelloOk,
        PromptDeliver,
        PromptCancel,
        PromptReceipt,
        PromptUpdate,
        StateReport,
        StateRequest,
        Ack,
        Heartbeat,
        Error,
        WindowUpdate,
        WindowNotice,
    )
}


# --- encode / decode -----------------------------------------------------------------------


# Field names by class (None: not a dataclass). ``dataclasses.fields`` rebuilds its tuple on
# every call, and encoding runs for every frame the bridge sends.
_FIELD_NAMES: dict[type[Any], tuple[str, ...] | None] = {}


def _to_json(value: Any) -> Any:
    cls = type(value)
    try:
        names = _FIELD_NAMES[cls]
    except KeyError:
        names = tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None
        _FIELD_NAMES[cls] = names
    if names is not None:
        out = {}
        for name in names:
            field_value = getattr(value, name)
            if field_value is not None:
                out[name] = _to_json(field_value)
        return out
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    return value


def encode(message: Message) -> str:
    """Serialise a message to one JSON text frame."""
    body = {"v": VERSION, "type": message.TYPE}
    body.update(_to_json(message))
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_FRAME_BYTES:
        raise ProtocolError("frame_too_large", f"{message.TYPE} frame exceeds {MAX_FRAME_BYTES} bytes")
    return text


def peek_id(raw: str | bytes) -> str | None:
    """Best-effort event id of a frame that failed to decode, for the ``error`` reply."""
    try:
        if len(raw) > MAX_FRAME_BYTES:
            return None
        body = json.loads(raw)
        frame_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(frame_id, str):
            return None
        check_text(frame_id, "of", MAX_ID_CHARS)  # only what an ``error`` frame's ``of`` can carry
        return frame_id
    except (ValueError, RecursionError, TypeError, ProtocolError):
        return None


def decode(raw: str | bytes) -> Message:
    """Parse one frame. Raises ``ProtocolError`` for anything that is not a valid frame."""
    try:
        size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    except UnicodeEncodeError:  # a str holding lone surrogates did not come off a UTF-8 socket
        raise ProtocolError("malformed_json", "frame is not valid UTF-8 text") from None
    if size > MAX_FRAME_BYTES:
        raise ProtocolError("frame_too_large", f"frame of {size} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError("malformed_json", f"frame is not JSON: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise ProtocolError("not_an_object", "a frame must be a JSON object")
    version = body.get("v")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {str(version)[:20]!r} is not supported; supported versions: {list(SUPPORTED_VERSIONS)}",
        )
    frame_type = body.get("type")
    cls = MESSAGE_TYPES.get(frame_type) if isinstance(frame_type, str) else None
    if cls is None:
        raise ProtocolError(
            "unknown_type", f"unknown frame type {str(frame_type)[:40]!r}; known: {', '.join(MESSAGE_TYPES)}"
        )
    message: Message = _DECODERS[cls.TYPE](body)
    return message


def _decode_simple(cls: type[Any]) -> Any:
    """Decoder for frames whose fields are all scalars: types come from the annotations."""
    scalar = {"str": str, "int": int, "str | None": str, "int | None": int, "bool | None": bool}
    specs = []
    for f in dataclasses.fields(cls):
        annotation = str(f.type)
        kind = scalar[annotation]
        optional = annotation.endswith("| None") or f.default is not dataclasses.MISSING
        specs.append((f.name, kind, optional))

    def decoder(body: dict[str, Any]) -> Any:
        args = {}
        for name, kind, optional in specs:
            args[name] = (_opt if optional else _need)(body, name, kind, cls.TYPE)
            if args[name] is None:
                del args[name]
        return cls(**args)

    return decoder


def _decode_update(body: dict[str, Any]) -> PromptUpdate:
    where = "prompt.update"
    return PromptUpdate(
        id=_need(body, "id", str, where),
        prompt_id=_need(body, "prompt_id", str, where),
        status=_need(body, "status", str, where),
        how=_opt(body, "how", str, where),
        decision=_opt(body, "decision", str, where),
        decided_at_ms=_opt(body, "decided_at_ms", int, where),
        detail=_opt(body, "detail", str, where),
        key_id=_opt(body, "key_id", str, where),
        sig=_opt(body, "sig", str, where),
        display=DisplayEvidence.from_json(body.get("display"), "prompt.update display"),
    )


def _decode_deliver(body: dict[str, Any]) -> PromptDeliver:
    return PromptDeliver(
        id=_need(body, "id", str, "prompt.deliver"),
        prompt=PromptCopy.from_json(body.get("prompt"), "prompt.deliver prompt"),
    )


def _decode_report(body: dict[str, Any]) -> StateReport:
    items = _need(body, "prompts", list, "state.report")
    if len(items) > MAX_OPEN_PROMPTS:
        raise ProtocolError(
            "too_many_items", f"state.report holds {len(items)} prompts; the limit is {MAX_OPEN_PROMPTS}"
        )
    return StateReport(
        id=_need(body, "id", str, "state.report"),
        prompts=tuple(HeldPrompt.from_json(item) for item in items),
        digest=_need(body, "digest", str, "state.report"),
        scope=_opt(body, "scope", str, "state.report") or "open",
    )


def _decode_error(body: dict[str, Any]) -> Error:
    versions = body.get("supported_versions")
    if versions is not None and not (
        isinstance(versions, list)
        and len(versions) <= 16
        and all(isinstance(v, int) and not isinstance(v, bool) for v in versions)
    ):
        raise ProtocolError("invalid_field", "error.supported_versions must be a short list of integers")
    return Error(
        id=_need(body, "id", str, "error"),
        code=_need(body, "code", str, "error"),
        message=_need(body, "message", str, "error"),
        of=_opt(body, "of", str, "error"),
        supported_versions=tuple(versions) if versions is not None else None,
    )


_DECODERS: dict[str, Any] = {
    cls.TYPE: _decode_simple(cls)
    for cls in (
        Hello,
        HelloOk,
        PromptCancel,
        PromptReceipt,
        StateRequest,
        Ack,
        Heartbeat,
        WindowUpdate,
        WindowNotice,
    )
}
_DECODERS.update({PromptUpdate.TYPE: _decode_update})
_DECODERS.update({PromptDeliver.TYPE: _decode_deliver, StateReport.TYPE: _decode_report, Error.TYPE: _decode_error})
