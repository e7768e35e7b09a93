"""Signed answers behind the actor (DESIGN §10): what a frame's signatures claim, and the
check, the refusal and its record when one does not hold.

``SignedAnswers`` is part of ``EndpointBridge`` (a mixin, like ``worker.enrollment``). The
actor is synchronous and standard-library only, and WebCrypto is asynchronous, so checking a
signature is split in two: ``signature_claims`` lists what an incoming frame's signatures
claim under the endpoint's current key (outside any event); the host verifies those with its
crypto; inside the event, an answer commits only if the claim rebuilt then — against the rows
as they are then — is among the verified ones (``worker.endpoint_keys.EndpointKeys.refusal``).
A refused answer changes nothing and is recorded once as a ``signature_refused`` fact.
"""

from __future__ import annotations

import json
from typing import Any

from caisey import wire
from caisey.errors import ProtocolError
from caisey.facts import Acknowledged, Created, Decided, Fact, SignatureRefused, fact_from_record, fact_to_record
from caisey.signing import SignatureClaim, signed_answer
from worker.endpoint_keys import REFUSALS
from worker.runtime_facts import adopted_created, report_facts, update_fact


class SignedAnswers:
    """The signature side of runtime answers; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge.
    _q: Any
    _facts: Any
    _append: Any
    _error_frame: Any
    _verified: Any
    endpoint_id: Any
    keys: Any

    def signature_claims(self, raw: str | bytes) -> list[SignatureClaim]:
        """What the signed answers in an agent frame claim, under the current key: the host
        verifies these (asynchronously on Cloudflare) and passes the ones that hold to
        ``agent_frame``. Most frames carry no signature and cost a substring test."""
        if ('"sig"' if isinstance(raw, str) else b'"sig"') not in raw:  # type: ignore[operator]
            return []
        endpoint_id = self.endpoint_id
        try:
            message = wire.decode(raw)
        except ProtocolError:
            return []
        if endpoint_id is None:
            return []
        if isinstance(message, wire.WindowUpdate):  # DESIGN §13 (``worker.approval_windows``)
            return self.window_claims(message)  # type: ignore[attr-defined, no-any-return]
        answers: list[tuple[str, Fact, Created | None]] = []
        if isinstance(message, wire.PromptUpdate):
            answers.append((message.prompt_id, update_fact(message), None))
        elif isinstance(message, wire.StateReport):
            for held in message.prompts:
                answers.extend((held.prompt.prompt_id, f, adopted_created(held.prompt)) for f in report_facts(held))
        claims = []
        for prompt_id, fact, adopted in answers:
            answer = signed_answer(fact)
            if answer is None or not isinstance(fact, Decided | Acknowledged):
                continue
            created = self._created(prompt_id) or adopted
            claim = self.keys.claim(endpoint_id, prompt_id, created, fact, answer) if created is not None else None
            if claim is not None:
                claims.append(claim)
        return claims

    def _created(self, prompt_id: str) -> Created | None:
        """The prompt's first fact: what was delivered (one row read, unless the event has them)."""
        entries = self._facts.get(prompt_id)
        if entries is not None:
            first: Fact | None = entries[0].fact if entries else None
        else:
            rows = self._q("SELECT kind, fields FROM facts WHERE prompt_id = ? ORDER BY seq LIMIT 1", prompt_id)
            first = fact_from_record(rows[0]["kind"], json.loads(rows[0]["fields"])) if rows else None
        return first if isinstance(first, Created) else None

    def _refusal_frame(self, prompt_id: str, refusal: str, of: str | None, now_ms: int) -> str:
        return self._error_frame("signature_refused", f"{prompt_id}: {refusal}: {REFUSALS[refusal]}", of, now_ms)

    def _signature_refusal(self, prompt_id: str, fact: Fact) -> str | None:
        """DESIGN §10: an answer commits only with a valid signature of the current key (or
        unsigned, from an endpoint that has never had a key)."""
        answer = signed_answer(fact)
        if answer is None or not isinstance(fact, Decided | Acknowledged):
            return None
        created = self._created(prompt_id)
        assert created is not None, "a known prompt starts with its created fact"
        return self.keys.refusal(self.endpoint_id or "", prompt_id, created, fact, answer, self._verified)

    def _record_refusal(self, prompt_id: str, fact: Fact, reason: str, now_ms: int, event_id: str | None) -> None:
        """A ``signature_refused`` fact, once per distinct refusal (a resent frame or a report
        that repeats the same answer adds nothing)."""
        assert isinstance(fact, Decided | Acknowledged)
        refused = SignatureRefused(
            answer=signed_answer(fact) or "",
            how=fact.how,
            reason=reason,
            key_id=fact.key_id,
            decided_at_ms=fact.decided_at_ms if isinstance(fact, Decided) else None,
        )
        fields = json.dumps(fact_to_record(refused)[1], separators=(",", ":"))
        if not self._q(
            "SELECT 1 FROM facts WHERE prompt_id = ? AND kind = ? AND fields = ?", prompt_id, refused.KIND, fields
        ):
            self._append(prompt_id, now_ms, refused, event_id)
