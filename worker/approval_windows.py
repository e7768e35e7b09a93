"""Approval windows behind the endpoint actor (DESIGN §13, issue 16).

A prompt may ask for a window (``grant_minutes``): the user's approval then grants access for
that long, or shorter if the user chose so in the dialog. ``ApprovalWindows`` is part of
``EndpointBridge`` (a mixin, like ``worker.hooks``). The window's life is recorded facts of
its prompt (``caisey.facts``), each on the timeline and in the audit chain:

- ``window_started`` — the agent's ``window.update`` (event ``start``) after the approval:
  the minutes granted (never more than asked) from the decision's time, signed by the
  endpoint key under ``caisey/window/v1``. Only for an approved prompt that asked for one.
- ``window_ended`` — its time was up: the one alarm includes the next end (read with the
  actor's tallies, ``FleetLine._tallies``); the agent is told with a ``window.notice`` (outboxed until acked).
- ``window_revoked`` — by the user (``window.update`` event ``revoke``, signed) or by a
  technician (``POST …/prompts/{pid}/revoke``; the agent is told with a ``window.notice``).
  A revocation only ever shortens access: it applies to an active window only.

Each fires a webhook (``window.started``, ``window.ended``, ``window.revoked``). The
``windows`` table (endpoint schema 8) holds each started window's end and whether it is still
active, so the alarm finds the next end without reading facts.

Signatures follow ``worker.signed_answers``: ``window_claims`` lists what a ``window.update``
claims under the current key (outside the event), the host verifies, and inside the event the
update commits only if the claim rebuilt then is among the verified ones. A refused update is
answered with an ``error`` frame and not acked (a resend is refused the same way), and recorded
once as a ``signature_refused`` fact (answer ``window_start`` or ``window_revoke``); one that
can never apply (no window asked, more minutes than asked, a prompt not approved) is acked
with an ``error`` so the agent stops sending it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from caisey import wire
from caisey.errors import ProtocolError
from caisey.facts import (
    Created,
    Decided,
    SignatureRefused,
    WindowEnded,
    WindowRevoked,
    WindowStarted,
    fact_to_record,
)
from caisey.prompt import State
from caisey.signing import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SignatureClaim,
    b64decode,
    created_sha256,
    window_message,
)
from worker.api import TECHNICIAN_HEADER, ApiError, ApiRequest, ApiResponse, Route
from worker.endpoint_keys import REFUSALS
from worker.host import Effects

MINUTE_MS = 60_000

WINDOWS_MIGRATION = [
    """CREATE TABLE IF NOT EXISTS windows (
        prompt_id TEXT PRIMARY KEY, ends_at_ms INTEGER NOT NULL, active INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS windows_active ON windows (ends_at_ms) WHERE active = 1",
]


class ApprovalWindows:
    """Approval windows; mixed into ``EndpointBridge``."""

    # Provided by EndpointBridge.
    _q: Any
    _ids: Any
    _view: Any
    _append: Any
    _entries: Any
    _existing: Any
    _api_view: Any
    _created: Any
    _seen: Any
    _known: Any
    _ack: Any
    _error_frame: Any
    _outbox_add: Any
    _send_due: Any
    _atomically: Any
    _hooks_queue: Any
    _prompt_data: Any
    _verified: Any
    endpoint_id: Any
    keys: Any
    config: Any

    # --- signatures ------------------------------------------------------------------------------

    def window_claims(self, message: wire.WindowUpdate) -> list[SignatureClaim]:
        """What a ``window.update`` claims under the current key (see ``signature_claims``)."""
        created = self._created(message.prompt_id) if self._known_id(message.prompt_id) else None
        claim = self._window_claim(message, created)
        return [claim] if claim is not None else []

    def _known_id(self, prompt_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM prompts WHERE prompt_id = ?", prompt_id))

    def _window_claim(
        self, msg: wire.WindowUpdate, created: Created | None, key_id: str | None = None
    ) -> SignatureClaim | None:
        key = self.keys.get(key_id) if key_id is not None else self.keys.current()
        if key is None or created is None or msg.sig is None or msg.key_id != key.key_id:
            return None
        try:
            signature = b64decode(msg.sig, SIGNATURE_BYTES, "sig")
            public_key = b64decode(key.public_key, PUBLIC_KEY_BYTES, "public_key")
        except ProtocolError:
            return None
        message = window_message(
            endpoint_id=self.endpoint_id or "",
            prompt_id=msg.prompt_id,
            event=msg.event,
            minutes=msg.minutes,
            at_ms=msg.at_ms,
            prompt_hash=created_sha256(created),
        )
        return SignatureClaim(public_key, message, signature)

    def _window_refusal(
        self, msg: wire.WindowUpdate, created: Created, verified: Collection[SignatureClaim]
    ) -> str | None:
        """None when the update's signature holds (or the endpoint never had a key)."""
        if msg.sig is None or msg.key_id is None:
            return None if self.keys.current() is None else "missing_signature"
        known = self.keys.get(msg.key_id)
        if known is None:
            return "unknown_key"
        if known.valid_until_ms is not None:
            return "retired_key"
        claim = self._window_claim(msg, created, key_id=known.key_id)
        if claim is None or claim not in verified:
            return "bad_signature"
        return None

    # --- the agent's window.update -----------------------------------------------------------------

    def _on_window_update(self, msg: wire.WindowUpdate, now_ms: int, effects: Effects) -> None:
        if self._seen(msg.id):
            # A start refused for good was acked with its error; if that error was lost, the
            # runtime resends and must hear it again, or its window stays "active" there (the
            # simulation, seed 216). An update that applied finds no problem now: ack only.
            if self._known_id(msg.prompt_id):
                problem, final = self._window_problem(msg, self._view(msg.prompt_id, now_ms), now_ms)
                if problem is not None and final:
                    effects.send.append(self._error_frame(problem[0], problem[1], msg.id, now_ms))
            effects.send.append(self._ack(msg.id, now_ms))
            return
        if not self._known_id(msg.prompt_id):
            # As for any runtime fact: not acked; the runtime's report lets us adopt the prompt.
            effects.send.append(
                self._error_frame("unknown_prompt", f"no prompt {msg.prompt_id}; send a state.report", msg.id, now_ms)
            )
            return
        created = self._created(msg.prompt_id)
        assert created is not None, "a known prompt starts with its created fact"
        view = self._view(msg.prompt_id, now_ms)
        problem, final = self._window_problem(msg, view, now_ms)
        if problem is None:
            refusal = self._window_refusal(msg, created, self._verified)
            if refusal is not None:
                problem, final = ("signature_refused", f"{msg.prompt_id}: {refusal}: {REFUSALS[refusal]}"), False
                self._record_window_refusal(msg, refusal, now_ms)
        if problem is not None:
            code, text = problem
            effects.send.append(self._error_frame(code, text, msg.id, now_ms))
            if final:  # it can never apply: acked, so the runtime stops sending it
                self._q("INSERT INTO seen_events (event_id, at_ms) VALUES (?, ?)", msg.id, now_ms)
                effects.send.append(self._ack(msg.id, now_ms))
            return

        def commit() -> list[str]:
            if msg.event == "start":
                if view.window.state == "asked":  # (a resent start: recorded already)
                    self._window_start(msg, view.window.asked, now_ms)
            elif view.window.state == "active" and msg.at_ms < (view.window.ends_at_ms or 0):
                fact = WindowRevoked(by="user", user=True, revoked_at_ms=msg.at_ms, key_id=msg.key_id, sig=msg.sig)
                self._window_close(msg.prompt_id, fact, now_ms, notify=False)
            # (a revocation of a window already over changes nothing: acked all the same)
            self._q("INSERT INTO seen_events (event_id, at_ms) VALUES (?, ?)", msg.id, now_ms)
            return list(self._send_due(now_ms, True))

        effects.send.extend(self._atomically(commit))
        effects.send.append(self._ack(msg.id, now_ms))

    def _record_window_refusal(self, msg: wire.WindowUpdate, reason: str, now_ms: int) -> None:
        """A ``signature_refused`` fact (answer ``window_start`` / ``window_revoke``), once per
        distinct refusal, as for answers (``worker.signed_answers``); it changes nothing."""
        refused = SignatureRefused(
            answer=f"window_{msg.event}", how="user", reason=reason, key_id=msg.key_id, decided_at_ms=msg.at_ms
        )
        fields = json.dumps(fact_to_record(refused)[1], separators=(",", ":"))
        if not self._q(
            "SELECT 1 FROM facts WHERE prompt_id = ? AND kind = ? AND fields = ?", msg.prompt_id, refused.KIND, fields
        ):
            self._append(msg.prompt_id, now_ms, refused, msg.id)

    def _window_problem(self, msg: wire.WindowUpdate, view: Any, now_ms: int) -> tuple[tuple[str, str] | None, bool]:
        """((code, message), final) when the update cannot apply now — final: never will."""
        window = view.window
        pid = msg.prompt_id
        if window is None:
            return ("no_window", f"prompt {pid} asked for no approval window"), True
        skew = self.config.reconcile.skew_ms
        if msg.event == "start":
            if window.state == "not_granted":
                return ("not_approved", f"prompt {pid} is {view.state.value}; no window starts"), True
            if window.state != "asked":
                return None, False  # a resent start: already recorded (or the window is over)
            if msg.minutes > window.asked:
                return ("window_too_long", f"{msg.minutes} minutes granted; the prompt asked for {window.asked}"), True
            if view.state != State.APPROVED:
                if view.final:
                    return ("not_approved", f"prompt {pid} is {view.state.value}; no window starts"), True
                return ("not_decided", f"prompt {pid} has no approval recorded yet"), False
            decided = self._decided_at(pid, view)
            if decided is None or msg.at_ms != decided:
                return ("invalid_at", f"a window starts at its approval ({decided}), not at {msg.at_ms}"), True
            return None, False
        # revoke
        if window.started_at_ms is None:
            return ("window_not_started", f"prompt {pid}'s window has not started"), view.final and (
                view.state != State.APPROVED
            )
        if msg.minutes != window.minutes:
            return ("invalid_minutes", f"the window granted {window.minutes} minutes, not {msg.minutes}"), True
        if not window.started_at_ms <= msg.at_ms <= now_ms + skew:
            return ("invalid_at", f"a revocation at {msg.at_ms} is outside the window's life"), True
        return None, False

    def _decided_at(self, prompt_id: str, view: Any) -> int | None:
        """The standing decision's own ``decided_at_ms`` (what the agent signed)."""
        for entry in self._entries(prompt_id):
            if entry.seq == view.decided_seq and isinstance(entry.fact, Decided):
                return int(entry.fact.decided_at_ms)
        return None

    def _window_start(self, msg: wire.WindowUpdate, asked: int, now_ms: int) -> None:
        ends_at = msg.at_ms + msg.minutes * MINUTE_MS
        fact = WindowStarted(
            minutes=msg.minutes,
            asked=asked,
            started_at_ms=msg.at_ms,
            ends_at_ms=ends_at,
            key_id=msg.key_id,
            sig=msg.sig,
        )
        self._append(msg.prompt_id, now_ms, fact)
        self._q(
            "INSERT INTO windows (prompt_id, ends_at_ms, active) VALUES (?, ?, 1) ON CONFLICT (prompt_id) DO NOTHING",
            msg.prompt_id,
            ends_at,
        )
        self._window_hook("window.started", msg.prompt_id, now_ms)
        if ends_at <= now_ms:  # the approval reached us after the window's time: over already
            self._window_close(msg.prompt_id, WindowEnded(ended_at_ms=ends_at), now_ms, notify=True)

    def _window_close(self, prompt_id: str, fact: WindowEnded | WindowRevoked, now_ms: int, *, notify: bool) -> None:
        """Commit an end or a revocation of an active window; tell the agent when it did not
        say so itself (``notify``)."""
        self._append(prompt_id, now_ms, fact)
        self._q("UPDATE windows SET active = 0 WHERE prompt_id = ?", prompt_id)
        if isinstance(fact, WindowEnded):
            self._window_hook("window.ended", prompt_id, now_ms)
            notice = wire.WindowNotice(self._ids.new(now_ms), prompt_id, "ended", fact.ended_at_ms)
        else:
            self._window_hook("window.revoked", prompt_id, now_ms)
            notice = wire.WindowNotice(self._ids.new(now_ms), prompt_id, "revoked", fact.revoked_at_ms, by=fact.by)
        if notify:
            self._outbox_add(notice.id, prompt_id, "window", wire.encode(notice), now_ms)

    def _window_hook(self, event_type: str, prompt_id: str, now_ms: int) -> None:
        view = self._view(prompt_id, now_ms)

        def data() -> dict[str, Any]:
            body: dict[str, Any] = self._prompt_data(view)
            body["window"] = view.window.to_api() if view.window is not None else None
            return body

        self._hooks_queue(event_type, prompt_id, data, now_ms)

    # --- time ---------------------------------------------------------------------------------------

    def _windows_end_due(self, now_ms: int) -> None:
        """Inside the alarm's event: record the end of every window whose time is up."""
        for row in self._q("SELECT prompt_id, ends_at_ms FROM windows WHERE active = 1 AND ends_at_ms <= ?", now_ms):
            self._window_close(row["prompt_id"], WindowEnded(ended_at_ms=int(row["ends_at_ms"])), now_ms, notify=True)

    # --- the technician's revocation -------------------------------------------------------------

    def _op_revoke_window(
        self, route: Route, req: ApiRequest, now_ms: int, connected: bool, effects: Effects
    ) -> ApiResponse:
        prompt_id = self._existing(route)
        view = self._view(prompt_id, now_ms)
        window = view.window
        if window is None:
            raise ApiError(409, "no_window", "this prompt asked for no approval window")
        if window.state == "revoked":
            return ApiResponse(200, self._api_view(view))  # revoked already: said as it is
        as_it_is = {"prompt": self._api_view(view)}
        if window.state == "asked":
            raise ApiError(409, "window_not_started", "the approval window has not started: not approved yet", as_it_is)
        if window.state == "not_granted":
            message = f"the prompt ended {view.state.value}: no window was granted"
            raise ApiError(409, "window_not_granted", message, as_it_is)
        if window.state == "ended":
            raise ApiError(409, "window_ended", "the approval window has already ended", as_it_is)
        technician = req.header(TECHNICIAN_HEADER) or "unknown"

        def commit() -> list[str]:
            fact = WindowRevoked(by=technician, user=False, revoked_at_ms=now_ms)
            self._window_close(prompt_id, fact, now_ms, notify=True)
            return list(self._send_due(now_ms, connected))

        effects.send.extend(self._atomically(commit))
        return ApiResponse(200, self._api_view(self._view(prompt_id, now_ms)))


__all__ = ["WINDOWS_MIGRATION", "ApprovalWindows"]
