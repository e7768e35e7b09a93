"""The tamper-evident audit chain of one endpoint and its offline verification (DESIGN §10).

Every fact the endpoint's actor commits — prompt facts (``caisey.facts``) and the endpoint's
own facts below (enrollments, keys) — is one link of a hash chain in commit order (R1):

    hash_0 = SHA-256(encode("caisey/audit/v1", endpoint_id))
    hash_n = SHA-256(hash_{n-1} || canonical(fact_n))

``canonical`` is the length-prefixed encoding of ``caisey.signing`` over the fact's ``seq``,
``prompt_id`` ('' for endpoint facts), ``at_ms``, ``kind``, its fields as canonical JSON
(sorted keys, no spaces, ASCII) and its ``event_id`` ('' when none). An edited, deleted,
inserted or reordered fact breaks every later link; the head hash names the whole history.

The export (``GET /api/endpoints/{eid}/audit``) is JSON Lines: a header, one line per fact
with its hash, and the head. ``verify_export`` checks every link, every signed answer
against the key the chain says was valid when the answer was committed, and gives a verdict
per prompt (its state by ``reconcile`` at export time, and whether its decision is signed).
Signature checks are the caller's (``verify``): this module stays standard-library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from caisey.clock import from_rfc3339, to_rfc3339
from caisey.errors import ProtocolError
from caisey.facts import Acknowledged, Created, Decided, Entry, WindowRevoked, WindowStarted, fact_from_record
from caisey.prompt import ReconcileConfig, decision_outcome, describe_outcome, reconcile
from caisey.signing import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SignatureClaim,
    b64decode,
    created_sha256,
    decision_message,
    key_id,
    length_prefixed,
    signed_answer,
    window_message,
)

CHAIN_TAG = "caisey/audit/v1"
FACT_TAG = "caisey/fact/v1"
EXPORT_FORMAT = "caisey.audit"
EXPORT_VERSION = 1

# Endpoint facts: rows of the chain with prompt_id ''. Their fields:
# - ``enrollment_issued``: by (who asked), expires_at_ms, rekey (the endpoint had an agent);
#   for the enrollment that registered the endpoint, its client and site when given.
# - ``key_registered``: key_id, public_key (base64), previous_key_id (or None), by (who issued
#   the enrollment it came with), rekey. The previous key is retired at this fact's time.
# - ``endpoint_updated``: by, and the new value of each of label, client, site that changed
#   (client or site None: taken away).
# - ``endpoint_removed``: by, cancelled (the prompt ids the removal cancelled). After it the
#   chain may hold no new prompt: a ``created`` fact after the removal is reported.
ENROLLMENT_ISSUED = "enrollment_issued"
KEY_REGISTERED = "key_registered"
ENDPOINT_UPDATED = "endpoint_updated"
ENDPOINT_REMOVED = "endpoint_removed"
ENDPOINT_FACT_KINDS = (ENROLLMENT_ISSUED, KEY_REGISTERED, ENDPOINT_UPDATED, ENDPOINT_REMOVED)


def genesis(endpoint_id: str) -> str:
    """The chain's hash before its first fact; binds the chain to its endpoint."""
    return hashlib.sha256(length_prefixed(CHAIN_TAG, endpoint_id)).hexdigest()


def canonical_fields(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def link(
    previous_hash: str, seq: int, prompt_id: str, at_ms: int, kind: str, fields: dict[str, Any], event_id: str | None
) -> str:
    """``hash_n`` from ``hash_{n-1}`` and fact n."""
    canonical = length_prefixed(FACT_TAG, seq, prompt_id, at_ms, kind, canonical_fields(fields), event_id or "")
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical).hexdigest()


def export_header(endpoint_id: str, exported_at_ms: int) -> dict[str, Any]:
    return {
        "type": "header",
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "endpoint_id": endpoint_id,
        "exported_at": to_rfc3339(exported_at_ms),
        "genesis": genesis(endpoint_id),
    }


def export_fact(row: dict[str, Any]) -> dict[str, Any]:
    """One fact line from a stored row (``seq, prompt_id, at_ms, kind, fields, event_id, hash``)."""
    return {
        "type": "fact",
        "seq": int(row["seq"]),
        "prompt_id": row["prompt_id"],
        "at_ms": int(row["at_ms"]),
        "at": to_rfc3339(int(row["at_ms"])),
        "kind": row["kind"],
        "fields": json.loads(row["fields"]) if isinstance(row["fields"], str) else row["fields"],
        "event_id": row["event_id"],
        "hash": row["hash"],
    }


def export_head(seq: int, head_hash: str, facts: int) -> dict[str, Any]:
    return {"type": "head", "seq": seq, "hash": head_hash, "facts": facts}


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    key_id: str
    public_key: bytes
    valid_from_ms: int
    valid_until_ms: int | None  # None: current


@dataclass(slots=True)
class PromptVerdict:
    prompt_id: str
    state: str = "unknown"
    decision: str | None = None
    signed_by: str | None = None  # key id of the honoured decision's valid signature
    verdict: str = ""
    ok: bool = True
    # Who or what answered (``caisey.prompt.decision_outcome``: user | locked | no_user) and
    # the signed evidence of display in words (DESIGN §13); None without a decision.
    outcome: str | None = None
    shown: str | None = None
    windows: list[str] = field(default_factory=list)  # its approval window's facts, in order (DESIGN §13)


@dataclass(slots=True)
class AuditReport:
    endpoint_id: str | None = None
    facts: int = 0
    head: str | None = None
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, what)
    prompts: list[PromptVerdict] = field(default_factory=list)
    keys: list[KeyPeriod] = field(default_factory=list)
    removed_at_ms: int | None = None  # the endpoint was removed (``endpoint_removed``)

    @property
    def ok(self) -> bool:
        return not self.problems and all(p.ok for p in self.prompts)


Verify = Callable[[SignatureClaim], bool]


def _key_at(keys: list[KeyPeriod], wanted: str, at_ms: int) -> tuple[KeyPeriod | None, str]:
    for period in keys:
        if period.key_id != wanted:
            continue
        if period.valid_from_ms <= at_ms and (period.valid_until_ms is None or at_ms < period.valid_until_ms):
            return period, ""
        return None, f"key {wanted} was not valid at {to_rfc3339(at_ms)}"
    return None, f"key {wanted} is not in this endpoint's key history"


def verify_export(lines: Iterable[str], verify: Verify, config: ReconcileConfig | None = None) -> AuditReport:
    """Check an export line by line; every problem names its (1-based) line."""
    report = AuditReport()
    config = config or ReconcileConfig()
    previous: str | None = None
    exported_at_ms: int | None = None
    last_seq = 0
    entries: dict[str, list[Entry]] = {}
    created: dict[str, Created] = {}
    sig_line: dict[tuple[str, int], int] = {}  # (prompt_id, seq) of a signed answer → line
    sig_ok: dict[tuple[str, int], bool] = {}
    window_minutes: dict[str, int] = {}  # prompt_id → minutes its window granted
    head_seen = False
    line_no = 0
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            report.problems.append((line_no, "not JSON"))
            continue
        kind = item.get("type") if isinstance(item, dict) else None
        if head_seen:
            report.problems.append((line_no, "a line after the head"))
            continue
        if kind == "header":
            if previous is not None:
                report.problems.append((line_no, "a second header"))
                continue
            if item.get("format") != EXPORT_FORMAT or item.get("version") != EXPORT_VERSION:
                report.problems.append((line_no, f"not a {EXPORT_FORMAT} v{EXPORT_VERSION} export"))
                return report
            report.endpoint_id = str(item.get("endpoint_id"))
            previous = genesis(report.endpoint_id)
            try:
                exported_at_ms = from_rfc3339(str(item.get("exported_at")))
            except ProtocolError:
                report.problems.append((line_no, "exported_at is not an RFC 3339 time"))
            continue
        if previous is None:
            report.problems.append((line_no, "no header before the first fact"))
            return report
        if kind == "head":
            head_seen = True
            if item.get("hash") != previous or item.get("seq") != last_seq or item.get("facts") != report.facts:
                report.problems.append((line_no, "the head does not match the chain (facts missing at the end?)"))
            report.head = previous
            continue
        if kind != "fact":
            report.problems.append((line_no, f"unknown line type {str(kind)[:40]!r}"))
            continue
        try:
            seq, prompt_id, at_ms = int(item["seq"]), str(item["prompt_id"]), int(item["at_ms"])
            fact_kind, fields, event_id = str(item["kind"]), dict(item["fields"]), item.get("event_id")
        except (KeyError, TypeError, ValueError):
            report.problems.append((line_no, "a fact line lacks seq, prompt_id, at_ms, kind or fields"))
            continue
        expected = link(previous, seq, prompt_id, at_ms, fact_kind, fields, event_id)
        stored = item.get("hash")
        if stored != expected:
            report.problems.append(
                (line_no, f"hash does not chain (fact seq {seq} edited, or a fact before it removed, added or moved)")
            )
        if seq <= last_seq:
            report.problems.append((line_no, f"seq {seq} is not after {last_seq}"))
        # After a broken link the next line is judged against the hash this one states, so an
        # edit, deletion or insertion is reported where it is, not again on every later line.
        resync = isinstance(stored, str) and len(stored) == 64 and all(c in "0123456789abcdef" for c in stored)
        previous, last_seq = (stored if resync else expected), seq
        report.facts += 1
        if prompt_id == "":
            _endpoint_fact(report, line_no, at_ms, fact_kind, fields)
            continue
        try:
            fact = fact_from_record(fact_kind, fields)
        except ProtocolError as exc:
            report.problems.append((line_no, exc.message))
            continue
        entries.setdefault(prompt_id, []).append(Entry(seq, at_ms, fact))
        if isinstance(fact, Created):
            created.setdefault(prompt_id, fact)
            if report.removed_at_ms is not None:
                report.problems.append((line_no, f"prompt {prompt_id} created after the endpoint was removed"))
        if isinstance(fact, WindowStarted | WindowRevoked):
            why = _check_window(report, verify, prompt_id, at_ms, created.get(prompt_id), fact, window_minutes)
            if why is not None:
                report.problems.append((line_no, why))
            continue
        answer = signed_answer(fact)
        if answer is None or not isinstance(fact, Decided | Acknowledged):
            continue
        why = _check_answer(report, verify, prompt_id, at_ms, created.get(prompt_id), fact, answer)
        sig_line[(prompt_id, seq)] = line_no
        sig_ok[(prompt_id, seq)] = why is None
        if why is not None:
            report.problems.append((line_no, why))
    if not head_seen:
        report.problems.append((line_no + 1, "no head line: the export is cut short"))
    now_ms = exported_at_ms if exported_at_ms is not None else 0
    for prompt_id, prompt_entries in entries.items():
        verdict = _verdict(prompt_id, prompt_entries, now_ms, config, sig_ok)
        if verdict.windows:  # DESIGN §13: its approval window's life, each step checked above
            words = (kind.removeprefix("window_") for kind in verdict.windows)
            verdict.verdict += "; approval window " + ", ".join(words)
        report.prompts.append(verdict)
    return report


def _endpoint_fact(report: AuditReport, line_no: int, at_ms: int, kind: str, fields: dict[str, Any]) -> None:
    if kind in (ENROLLMENT_ISSUED, ENDPOINT_UPDATED):
        return
    if kind == ENDPOINT_REMOVED:
        if report.removed_at_ms is not None:
            report.problems.append((line_no, "the endpoint is removed a second time"))
        report.removed_at_ms = at_ms
        return
    if kind != KEY_REGISTERED:
        report.problems.append((line_no, f"unknown endpoint fact {kind[:40]!r}"))
        return
    try:
        public_key = b64decode(str(fields.get("public_key")), PUBLIC_KEY_BYTES, "public_key")
    except ProtocolError as exc:
        report.problems.append((line_no, exc.message))
        return
    if key_id(public_key) != fields.get("key_id"):
        report.problems.append((line_no, "key_id is not the fingerprint of public_key"))
        return
    if report.keys and report.keys[-1].valid_until_ms is None:
        last = report.keys[-1]
        report.keys[-1] = KeyPeriod(last.key_id, last.public_key, last.valid_from_ms, at_ms)
    report.keys.append(KeyPeriod(key_id(public_key), public_key, at_ms, None))


def _check_answer(
    report: AuditReport,
    verify: Verify,
    prompt_id: str,
    at_ms: int,
    created: Created | None,
    fact: Decided | Acknowledged,
    answer: str,
) -> str | None:
    """None when the answer is unsigned-but-allowed or signed and valid; else what is wrong."""
    if fact.sig is None or fact.key_id is None:
        if report.keys and report.keys[0].valid_from_ms <= at_ms:
            return f"an unsigned {answer} of prompt {prompt_id}, committed while the endpoint had a key"
        return None  # recorded before the endpoint had a key: the verdict says "unsigned"
    if created is None:
        return f"a signed {answer} of prompt {prompt_id}, which was never created in this chain"
    period, why = _key_at(report.keys, fact.key_id, at_ms)
    if period is None:
        return why
    decided_at_ms = fact.decided_at_ms if isinstance(fact, Decided) else None
    try:
        signature = b64decode(fact.sig, SIGNATURE_BYTES, "sig")
    except ProtocolError as exc:
        return exc.message
    message = decision_message(
        endpoint_id=report.endpoint_id or "",
        prompt_id=prompt_id,
        decision=answer,
        how=fact.how,
        decided_at_ms=decided_at_ms if decided_at_ms is not None else 0,
        prompt_hash=created_sha256(created),
        display=fact.display if isinstance(fact, Decided) else None,  # caisey/decision/v2
    )
    if not verify(SignatureClaim(period.public_key, message, signature)):
        return f"the signature of this {answer} of prompt {prompt_id} does not verify with key {fact.key_id}"
    return None


def _check_window(
    report: AuditReport,
    verify: Verify,
    prompt_id: str,
    at_ms: int,
    created: Created | None,
    fact: WindowStarted | WindowRevoked,
    window_minutes: dict[str, int],
) -> str | None:
    """An approval window's start, or its revocation by the user, is signed by the endpoint
    key under ``caisey/window/v1`` (DESIGN §13); a technician's revocation is the console's."""
    if isinstance(fact, WindowStarted):
        event, minutes, when = "start", fact.minutes, fact.started_at_ms
        if fact.minutes > fact.asked or (created is not None and created.grant_minutes != fact.asked):
            return f"the window of prompt {prompt_id} grants {fact.minutes} minutes; {fact.asked} were asked"
        window_minutes[prompt_id] = fact.minutes
    elif not fact.user:
        return None
    else:
        event, when = "revoke", fact.revoked_at_ms
        if prompt_id not in window_minutes:
            return f"a revocation of prompt {prompt_id}'s window, which never started in this chain"
        minutes = window_minutes[prompt_id]
    if fact.sig is None or fact.key_id is None:
        if report.keys and report.keys[0].valid_from_ms <= at_ms:
            return f"an unsigned window {event} of prompt {prompt_id}, committed while the endpoint had a key"
        return None
    if created is None:
        return f"a signed window {event} of prompt {prompt_id}, which was never created in this chain"
    period, why = _key_at(report.keys, fact.key_id, at_ms)
    if period is None:
        return why
    try:
        signature = b64decode(fact.sig, SIGNATURE_BYTES, "sig")
    except ProtocolError as exc:
        return exc.message
    message = window_message(
        endpoint_id=report.endpoint_id or "",
        prompt_id=prompt_id,
        event=event,
        minutes=minutes,
        at_ms=when,
        prompt_hash=created_sha256(created),
    )
    if not verify(SignatureClaim(period.public_key, message, signature)):
        return f"the signature of the window {event} of prompt {prompt_id} does not verify with key {fact.key_id}"
    return None


def _verdict(
    prompt_id: str, entries: list[Entry], now_ms: int, config: ReconcileConfig, sig_ok: dict[tuple[str, int], bool]
) -> PromptVerdict:
    verdict = PromptVerdict(prompt_id)
    try:
        view = reconcile(prompt_id, entries, now_ms, config)
    except Exception as exc:  # a chain that verifies is from our reconcile; say what broke
        verdict.ok, verdict.verdict = False, f"cannot be replayed: {exc}"
        return verdict
    verdict.state = view.state.value
    verdict.decision = view.decision.value if view.decision else None
    verdict.windows = [e.fact.KIND for e in sorted(entries, key=lambda e: e.seq) if e.fact.KIND.startswith("window_")]
    if view.decision is None:
        verdict.verdict = f"{view.state.value}, no decision"
        return verdict
    honoured = next((e for e in entries if e.seq == view.decided_seq), None)
    verdict.outcome = decision_outcome(True, view.decided_how, view.decided_display)
    verdict.shown = describe_outcome(verdict.outcome, view.decided_display, view.decided_at_ms)
    if honoured is None or not isinstance(honoured.fact, Decided) or honoured.fact.key_id is None:
        verdict.verdict = f"{view.state.value}, unsigned (recorded before signing)"
        return verdict
    if sig_ok.get((prompt_id, honoured.seq), False):
        verdict.signed_by = honoured.fact.key_id
        verdict.verdict = f"{view.state.value}, signed by the endpoint (key {honoured.fact.key_id})"
    else:
        verdict.ok = False
        verdict.verdict = f"{view.state.value}, but its signature does not verify"
    return verdict


__all__ = [
    "CHAIN_TAG",
    "ENDPOINT_FACT_KINDS",
    "ENDPOINT_REMOVED",
    "ENDPOINT_UPDATED",
    "ENROLLMENT_ISSUED",
    "KEY_REGISTERED",
    "AuditReport",
    "KeyPeriod",
    "PromptVerdict",
    "canonical_fields",
    "export_fact",
    "export_head",
    "export_header",
    "genesis",
    "link",
    "verify_export",
]
