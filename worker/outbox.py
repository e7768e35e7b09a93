"""The endpoint actor's outbox (DESIGN §5): frames owed to the runtime, retried until answered.

``Outbox`` is part of ``EndpointBridge`` (a mixin). A ``prompt.deliver`` leaves the outbox when
the runtime's receipt (or any later runtime fact) is committed, when the prompt turns final, or
when attempts run out; a ``prompt.cancel`` or ``window.notice`` when the runtime acks it.
``_send_due`` hands out what is due and records each attempt (with full-jitter backoff).

Issue 15: most events (every receipt and decision) owe nothing, and learning so was a read per
event. ``_outbox_due`` is what this object knows of the earliest ``next_attempt_at_ms``: set
from the rows at the end of every event (``EndpointBridge._finish`` reads it with the tallies),
lowered by every write that can make a row due sooner (a row added, a cancel queued again) and
left alone by the others (an attempt moves its row later, a delete removes it), so it is never
later than the rows' minimum. When it is later than now nothing is due, and the read is
skipped. It is dropped with the rest of the actor's memory when a transaction rolls back
(``worker.actor_memory``: the actor is the only writer of its tables).
"""

from __future__ import annotations

import math
from typing import Any

from caisey import wire
from caisey.facts import DeliveryAttempted, GaveUp, GiveUpReason
from caisey.prompt import PromptView

# meta key: a socket was accepted and its ``hello`` has not arrived (see ``agent_opened``).
AWAITING_HELLO = "awaiting_hello"


class Outbox:
    """The outbox of one endpoint; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge.
    _q: Any
    _ids: Any
    _meta: Any
    _view: Any
    _append: Any
    _refresh: Any
    config: Any
    entropy: Any

    # The earliest next_attempt_at_ms as known here (a lower bound; math.inf: the outbox is
    # empty; None: not known). See the module docstring.
    _outbox_due: float | None = None

    def _outbox_known(self, earliest: int | None) -> None:
        """The rows' earliest next attempt, just read (None: the outbox is empty)."""
        self._outbox_due = math.inf if earliest is None else float(earliest)

    def _outbox_sooner(self, at_ms: int) -> None:
        if self._outbox_due is not None:
            self._outbox_due = min(self._outbox_due, float(at_ms))

    def _queue_cancel(self, prompt_id: str, reason: str, now_ms: int) -> None:
        existing = self._q("SELECT 1 FROM outbox WHERE prompt_id = ? AND kind = 'cancel'", prompt_id)
        if existing:
            self._q(
                "UPDATE outbox SET next_attempt_at_ms = ? WHERE prompt_id = ? AND kind = 'cancel'", now_ms, prompt_id
            )
            self._outbox_sooner(now_ms)
            return
        event_id = self._ids.new(now_ms)
        frame = wire.encode(wire.PromptCancel(id=event_id, prompt_id=prompt_id, reason=reason))
        self._outbox_add(event_id, prompt_id, "cancel", frame, now_ms)

    def _queue_deliver(self, deliver_id: str, view: PromptView, now_ms: int) -> None:
        """Queue ``prompt.deliver`` for a prompt; a replay (R5) passes its original id."""
        copy = wire.PromptCopy(
            prompt_id=view.prompt_id,
            title=view.title,
            message=view.message,
            action=view.action,
            created_at_ms=view.created_at_ms,
            expires_at_ms=view.expires_at_ms,
            on_no_user=view.on_no_user,
            requested_by=view.created_by,
            **view.extras,  # every optional field the Created fact set (DESIGN §13)
        )
        self._outbox_add(
            deliver_id, view.prompt_id, "deliver", wire.encode(wire.PromptDeliver(deliver_id, copy)), now_ms
        )

    def _outbox_add(self, event_id: str, prompt_id: str, kind: str, frame: str, now_ms: int) -> None:
        self._q(
            "INSERT INTO outbox (event_id, prompt_id, kind, frame, attempts, next_attempt_at_ms) VALUES (?, ?, ?, ?, 0, ?)",
            event_id,
            prompt_id,
            kind,
            frame,
            now_ms,
        )
        self._outbox_sooner(now_ms)

    def _send_due(self, now_ms: int, connected: bool, *, flush: bool = False) -> list[str]:
        """Frames owed now (all of them when ``flush``); records each attempt. Call inside a transaction."""
        if not connected or self._meta(AWAITING_HELLO):
            return []  # DESIGN §5: no attempt is burned while the runtime is away (or not yet greeted)
        if flush:
            rows = self._q("SELECT * FROM outbox ORDER BY event_id")
        elif self._outbox_due is not None and self._outbox_due > now_ms:
            rows = []  # nothing is due yet (see ``_outbox_due``): no read
        else:
            rows = self._q("SELECT * FROM outbox WHERE next_attempt_at_ms <= ? ORDER BY event_id", now_ms)
        frames = []
        backoff = self.config.backoff
        for row in rows:
            attempts = int(row["attempts"])
            prompt_id = row["prompt_id"]
            if row["kind"] == "deliver":
                view = self._view(prompt_id, now_ms)
                if view.final:
                    self._q("DELETE FROM outbox WHERE event_id = ?", row["event_id"])
                    continue
                if attempts >= backoff.max_attempts:
                    self._q("DELETE FROM outbox WHERE event_id = ?", row["event_id"])
                    self._append(
                        prompt_id, now_ms, GaveUp(reason=GiveUpReason.NO_RECEIPT, detail=f"{attempts} attempts")
                    )
                    self._refresh(prompt_id, now_ms)
                    continue
            elif attempts >= backoff.max_attempts:
                # A cancel nobody acked: drop it; a later report re-queues it if still needed.
                self._q("DELETE FROM outbox WHERE event_id = ?", row["event_id"])
                continue
            next_at = now_ms + max(1, backoff.delay_ms(attempts, self.entropy.uniform))
            self._q(
                "UPDATE outbox SET attempts = ?, next_attempt_at_ms = ? WHERE event_id = ?",
                attempts + 1,
                next_at,
                row["event_id"],
            )
            if row["kind"] == "deliver":
                self._append(prompt_id, now_ms, DeliveryAttempted(attempt=attempts + 1, next_attempt_at_ms=next_at))
                self._refresh(prompt_id, now_ms)
            frames.append(row["frame"])
        return frames


__all__ = ["AWAITING_HELLO", "Outbox"]
