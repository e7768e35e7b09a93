"""The endpoint's signing keys and the check of a signed answer (DESIGN §10).

The agent registers an Ed25519 public key when it exchanges its enrollment token; a later
(admin-only) re-enrollment registers a new one and retires the old at that moment. The
history is kept in ``endpoint_keys`` (and, tamper-evidently, as ``key_registered`` facts of
the audit chain). An endpoint with no key at all was enrolled before signing existed (or by
an agent that predates it): its answers are accepted unsigned and shown as such; once it has
a key, every answer must be signed by its *current* key.

Verifying a signature is asynchronous on Cloudflare (WebCrypto), so the actor never does
it: ``claims`` lists what a frame's signatures claim, the host verifies them, and
``refusal`` — run inside the event, against the rows as they are then — accepts an answer
only if the exact claim it rebuilds is among the verified ones.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from caisey.clock import to_rfc3339
from caisey.errors import ProtocolError
from caisey.facts import Acknowledged, Created, Decided
from caisey.signing import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SignatureClaim,
    b64decode,
    b64encode,
    created_sha256,
    decision_message,
    key_id,
)
from worker.host import SqlStore

# Why an answer was refused (the ``signature_refused`` fact's ``reason``, the error frame's text).
REFUSALS = {
    "missing_signature": "this endpoint signs its answers, and this one carries no signature",
    "unknown_key": "the answer is signed by a key this endpoint never registered",
    "retired_key": "the answer is signed by a key retired by a re-enrollment",
    "bad_signature": "the signature does not verify over this answer to this prompt as delivered",
}


@dataclass(frozen=True, slots=True)
class EndpointKey:
    key_id: str
    public_key: str  # unpadded URL-safe base64 of the raw 32 bytes
    valid_from_ms: int
    valid_until_ms: int | None
    registered_by: str

    def to_api(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "public_key": self.public_key,
            "valid_from": to_rfc3339(self.valid_from_ms),
            "valid_until": to_rfc3339(self.valid_until_ms) if self.valid_until_ms is not None else None,
            "registered_by": self.registered_by,
        }


def parse_public_key(text: Any) -> bytes:
    """The raw key from an enroll body's ``public_key``, or ``ProtocolError``."""
    if not isinstance(text, str):
        raise ProtocolError("invalid_field", "public_key must be a string")
    return b64decode(text, PUBLIC_KEY_BYTES, "public_key")


class EndpointKeys:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        # Every key row, in order, once read: kept across events (the actor is the only writer
        # of its keys: ``worker.actor_memory``), dropped by ``register`` and on a rollback.
        self._all: list[EndpointKey] | None = None

    def forget(self) -> None:
        self._all = None

    def history(self) -> list[EndpointKey]:
        if self._all is None:
            self._all = [
                EndpointKey(
                    r["key_id"],
                    r["public_key"],
                    int(r["valid_from_ms"]),
                    int(r["valid_until_ms"]) if r["valid_until_ms"] is not None else None,
                    r["registered_by"],
                )
                for r in self.store.execute("SELECT * FROM endpoint_keys ORDER BY valid_from_ms, rowid")
            ]
        return list(self._all)

    def current(self) -> EndpointKey | None:
        return next((k for k in self.history() if k.valid_until_ms is None), None)

    def get(self, wanted: str) -> EndpointKey | None:
        return next((k for k in self.history() if k.key_id == wanted), None)

    def register(self, public_key: bytes, now_ms: int, by: str) -> tuple[EndpointKey, EndpointKey | None]:
        """Make ``public_key`` the current key (inside the caller's transaction); the
        previous one, if any, is retired now. Returns (new, previous)."""
        previous = self.current()
        self._all = None  # read again after these writes
        if previous is not None:
            self.store.execute(
                "UPDATE endpoint_keys SET valid_until_ms = ? WHERE key_id = ?", (now_ms, previous.key_id)
            )
        new = EndpointKey(key_id(public_key), b64encode(public_key), now_ms, None, by)
        self.store.execute(
            "INSERT INTO endpoint_keys (key_id, public_key, valid_from_ms, valid_until_ms, registered_by) "
            "VALUES (?, ?, ?, NULL, ?) ON CONFLICT (key_id) DO UPDATE SET valid_from_ms = excluded.valid_from_ms, "
            "valid_until_ms = NULL, registered_by = excluded.registered_by",
            (new.key_id, new.public_key, now_ms, by),
        )
        return new, previous

    def claim(
        self,
        endpoint_id: str,
        prompt_id: str,
        created: Created,
        fact: Decided | Acknowledged,
        answer: str,
        current: EndpointKey | None = None,
    ) -> SignatureClaim | None:
        """The claim a signed answer makes under the current key (None: nothing to verify).
        ``current``: the current key when the caller has already read it."""
        current = current or self.current()
        if current is None or fact.sig is None or fact.key_id != current.key_id:
            return None
        try:
            signature = b64decode(fact.sig, SIGNATURE_BYTES, "sig")
            public_key = b64decode(current.public_key, PUBLIC_KEY_BYTES, "public_key")
        except ProtocolError:
            return None
        message = decision_message(
            endpoint_id=endpoint_id,
            prompt_id=prompt_id,
            decision=answer,
            how=fact.how,
            decided_at_ms=fact.decided_at_ms if isinstance(fact, Decided) else 0,
            prompt_hash=created_sha256(created),
            display=fact.display if isinstance(fact, Decided) else None,  # v2 (DESIGN §13)
        )
        return SignatureClaim(public_key, message, signature)

    def refusal(
        self,
        endpoint_id: str,
        prompt_id: str,
        created: Created,
        fact: Decided | Acknowledged,
        answer: str,
        verified: Collection[SignatureClaim],
    ) -> str | None:
        """None when the answer may be committed; else the reason (a key of ``REFUSALS``)."""
        if fact.sig is None or fact.key_id is None:
            return None if self.current() is None else "missing_signature"
        known = self.get(fact.key_id)
        if known is None:
            return "unknown_key"
        if known.valid_until_ms is not None:
            return "retired_key"
        claim = self.claim(endpoint_id, prompt_id, created, fact, answer, current=known)
        if claim is None or claim not in verified:
            return "bad_signature"
        return None


__all__ = ["REFUSALS", "EndpointKey", "EndpointKeys", "parse_public_key"]
