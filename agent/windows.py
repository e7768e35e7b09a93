"""Approval windows on the endpoint (DESIGN §13, issue 16).

A prompt may ask for a window (``grant_minutes``): the user's approval then grants access
for that long — or shorter, if the user chose so in the dialog (``on_user_approve``). The
agent keeps each window in its store (``windows``), tells the bridge it started with a
signed ``window.update`` (event ``start``, in the same transaction as the decision), and
revokes it on the user's word: the Revoke button of the indicator, or
``caisey-agent revoke`` (``request_revoke``), which leaves a row in ``revoke_requests`` that
the running agent picks up within a second (``take_revoke_requests``). The bridge answers a
technician's revocation or the window's end with a ``window.notice``; the agent acks it.

Security (a local attacker): the request travels through the agent's own state directory
(0700, the database private to the agent's user), so only that user — or root — can make
one. A request names a prompt id (or all) and nothing else: the agent signs the revocation
itself, with its own clock, and only ever turns an *active* window into a revoked one — a
request can shorten access, never grant or extend it.

``AgentWindows`` is mixed into ``agent.core.AgentCore``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from caisey.signing import b64encode, copy_sha256, window_message
from caisey.wire import MAX_GRANT_MINUTES, Ack, PromptCopy, WindowNotice, WindowUpdate, encode

log = logging.getLogger("caisey.agent.windows")

MINUTE_MS = 60_000
ALL = "*"  # a revoke request for every active window
# The bridge's refusals of a window start that no resend can change (``worker.approval_windows``).
REFUSED_FOR_GOOD = ("no_window", "window_too_long", "not_approved", "invalid_at")

WINDOWS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS windows (
        prompt_id     TEXT PRIMARY KEY,
        title         TEXT NOT NULL,
        requested_by  TEXT NOT NULL,
        minutes       INTEGER NOT NULL,
        started_at_ms INTEGER NOT NULL,
        ends_at_ms    INTEGER NOT NULL,
        state         TEXT NOT NULL,
        closed_by     TEXT,
        closed_at_ms  INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS revoke_requests (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        prompt_id     TEXT NOT NULL,
        requested_at_ms INTEGER NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class Grant:
    """A presenter's answer "approve, for ``minutes`` of the window asked" (the dialog's
    shorter choice; a program prints ``approve:MINUTES``)."""

    minutes: int


def grant_of(word: str) -> Grant | None:
    """``approve:MINUTES`` → ``Grant`` (None for anything else)."""
    head, _, tail = word.partition(":")
    if head != "approve" or not (tail.isascii() and tail.isdigit()) or len(tail) > 4:
        return None
    return Grant(int(tail))


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One approval window as the agent holds it; times are bridge time."""

    prompt_id: str
    title: str
    requested_by: str
    minutes: int
    started_at_ms: int
    ends_at_ms: int
    state: str  # active | ended | revoked | refused (by the bridge)
    closed_by: str | None
    closed_at_ms: int | None


@dataclass(frozen=True, slots=True)
class WindowShown:
    """Display command: show the indicator of an active window until ``ends_at_local_ms``."""

    window: WindowRow
    ends_at_local_ms: int


@dataclass(frozen=True, slots=True)
class WindowGone:
    """Display command: take the window's indicator down (``why``: ended, revoked)."""

    prompt_id: str
    why: str


def windows(db: Any, *, active_at_ms: int | None = None) -> list[WindowRow]:
    """The windows in a store's database, newest first (only those active at a bridge time)."""
    sql = "SELECT * FROM windows"
    params: tuple[Any, ...] = ()
    if active_at_ms is not None:
        sql += " WHERE state = 'active' AND ends_at_ms > ?"
        params = (active_at_ms,)
    rows = db.execute(sql + " ORDER BY started_at_ms DESC", params).fetchall()
    return [
        WindowRow(
            r["prompt_id"],
            r["title"],
            r["requested_by"],
            int(r["minutes"]),
            int(r["started_at_ms"]),
            int(r["ends_at_ms"]),
            r["state"],
            r["closed_by"],
            r["closed_at_ms"],
        )
        for r in rows
    ]


def request_revoke(db: Any, prompt_id: str | None, now_ms: int) -> None:
    """``caisey-agent revoke``: leave the request for the running agent (one row)."""
    db.execute("INSERT INTO revoke_requests (prompt_id, requested_at_ms) VALUES (?, ?)", (prompt_id or ALL, now_ms))


def pending_revoke_requests(db: Any) -> int:
    return int(db.execute("SELECT COUNT(*) AS n FROM revoke_requests").fetchone()["n"])


def granted_minutes(asked: int | None, chosen: int | None) -> int | None:
    """What the user grants: the asked minutes, or fewer if chosen — never more, never none."""
    if asked is None:
        return None
    if chosen is None or isinstance(chosen, bool) or not isinstance(chosen, int) or not 1 <= chosen <= asked:
        return asked
    return min(chosen, MAX_GRANT_MINUTES)


class AgentWindows:
    """Approval windows; mixed into ``AgentCore``."""

    # Provided by AgentCore.
    store: Any
    signer: Any
    endpoint_id: str
    _out: Any
    _grants: dict[str, int]
    _new_id: Any
    _send_new: Any
    _drain: Any
    _require_started: Any
    on_user_answer: Any
    bridge_time: Any

    # --- the user's approval -----------------------------------------------------------------

    def on_user_approve(self, prompt_id: str, minutes: int | None, now_ms: int, display: Any = None) -> Any:
        """The user approved, granting ``minutes`` of the window asked for (None: all of it);
        ``display``: how it was shown, signed with the decision (as ``on_user_answer``)."""
        if minutes is not None:
            self._grants[prompt_id] = minutes
        try:
            return self.on_user_answer(prompt_id, "approve", now_ms, display=display)
        finally:
            self._grants.pop(prompt_id, None)

    def _window_after_decision(self, prompt: PromptCopy, decision: str, decided_at_ms: int, now_ms: int) -> None:
        """Inside the decision's transaction: an approval starts the window the prompt asked for."""
        minutes = granted_minutes(prompt.grant_minutes, self._grants.get(prompt.prompt_id))
        if decision != "approve" or minutes is None:
            return
        ends_at = decided_at_ms + minutes * MINUTE_MS
        self.store.db.execute(
            "INSERT OR IGNORE INTO windows (prompt_id, title, requested_by, minutes, started_at_ms, ends_at_ms, state) "
            "VALUES (?, ?, ?, ?, ?, ?, 'active')",
            (prompt.prompt_id, prompt.title, prompt.requested_by, minutes, decided_at_ms, ends_at),
        )
        self._queue_window(prompt, "start", minutes, decided_at_ms, now_ms)
        log.info("prompt %s: approval window of %d min started", prompt.prompt_id, minutes)
        self._out.display.append(WindowShown(self._window(prompt.prompt_id), ends_at - self.bridge_time(0)))

    def _window(self, prompt_id: str) -> WindowRow:
        return next(w for w in windows(self.store.db) if w.prompt_id == prompt_id)

    def _queue_window(self, prompt: PromptCopy, event: str, minutes: int, at_ms: int, now_ms: int) -> None:
        key_id = sig = None
        if self.signer is not None:
            message = window_message(
                endpoint_id=self.endpoint_id,
                prompt_id=prompt.prompt_id,
                event=event,
                minutes=minutes,
                at_ms=at_ms,
                prompt_hash=copy_sha256(prompt),
            )
            key_id, sig = self.signer.key_id, b64encode(self.signer.sign(message))
        update = WindowUpdate(self._new_id(now_ms), prompt.prompt_id, event, minutes, at_ms, key_id=key_id, sig=sig)
        # final: acking it must not drop it as a leftover of a final prompt (``outbox_drop_nonfinal``)
        self.store.outbox_add(update.id, prompt.prompt_id, WindowUpdate.TYPE, True, encode(update), now_ms)

    # --- the user's revocation ---------------------------------------------------------------

    def on_user_revoke(self, prompt_id: str | None, now_ms: int) -> Any:
        """The user revoked one window (the indicator's button) or all (``None``)."""
        self._require_started()
        self._revoke(prompt_id, now_ms)
        return self._drain()

    def take_revoke_requests(self, now_ms: int) -> Any:
        """Apply and delete the requests ``caisey-agent revoke`` left (``request_revoke``)."""
        self._require_started()
        rows = self.store.db.execute("SELECT id, prompt_id FROM revoke_requests ORDER BY id").fetchall()
        for row in rows:
            self._revoke(None if row["prompt_id"] == ALL else str(row["prompt_id"]), now_ms)
            with self.store.transaction():
                self.store.db.execute("DELETE FROM revoke_requests WHERE id = ?", (row["id"],))
        return self._drain()

    def _revoke(self, prompt_id: str | None, now_ms: int) -> None:
        at = self.bridge_time(now_ms)
        for window in windows(self.store.db, active_at_ms=at):
            if prompt_id is not None and window.prompt_id != prompt_id:
                continue
            held = self.store.get_prompt(window.prompt_id)
            if held is None:
                continue
            with self.store.transaction():
                self.store.db.execute(
                    "UPDATE windows SET state = 'revoked', closed_by = 'user', closed_at_ms = ? "
                    "WHERE prompt_id = ? AND state = 'active'",
                    (at, window.prompt_id),
                )
                self._queue_window(held.prompt, "revoke", window.minutes, at, now_ms)
            log.info("prompt %s: approval window revoked by the user", window.prompt_id)
            self._out.display.append(WindowGone(window.prompt_id, "revoked"))
            self._send_new(window.prompt_id, now_ms)

    def _on_window_refused(self, error: Any) -> None:
        """The bridge refused a window start for good (its ``error`` precedes its ack): the
        window is none of the bridge's, so its indicator goes, rather than claim access.

        A window that ran out here before the refusal came (the approval crossed a partition
        while the technician withdrew the prompt) is recorded as refused too: it was granted on
        the endpoint alone, and the agent's record must not say the bridge knew of it."""
        row = self.store.outbox_get(error.of) if error.of else None
        if row is None or row.kind != WindowUpdate.TYPE or error.code not in REFUSED_FOR_GOOD:
            return
        held = self.store.db.execute("SELECT state FROM windows WHERE prompt_id = ?", (row.prompt_id,)).fetchone()
        if held is None or held["state"] not in ("active", "ended"):
            return
        with self.store.transaction():
            # An ended window keeps the time it ended (``closed_at_ms``); an active one closes now.
            self.store.db.execute(
                "UPDATE windows SET state = 'refused', closed_by = 'bridge', "
                "closed_at_ms = COALESCE(closed_at_ms, ?) WHERE prompt_id = ?",
                (self.bridge_time(0), row.prompt_id),
            )
        if held["state"] == "active":
            self._out.display.append(WindowGone(row.prompt_id, "refused"))

    # --- the bridge lost storage (R6) ----------------------------------------------------------

    def _resend_windows(self, since_ms: int, now_ms: int) -> None:
        """After a history request (the bridge restored an old backup): send again the starts
        and the user's revocations of windows started since ``since_ms`` (bridge time), after
        the history that relearns their approvals. The same signed bytes (Ed25519 is
        deterministic) under new ids; the bridge records only what it does not hold."""
        for window in windows(self.store.db):
            if window.started_at_ms < since_ms:
                continue
            held = self.store.get_prompt(window.prompt_id)
            owed = any(r.kind == WindowUpdate.TYPE for r in self.store.outbox_for(window.prompt_id))
            if held is None or owed:
                continue
            with self.store.transaction():
                self._queue_window(held.prompt, "start", window.minutes, window.started_at_ms, now_ms)
                if window.state == "revoked" and window.closed_by == "user" and window.closed_at_ms is not None:
                    self._queue_window(held.prompt, "revoke", window.minutes, window.closed_at_ms, now_ms)
            self._send_new(window.prompt_id, now_ms)

    # --- the bridge's notice -----------------------------------------------------------------

    def _on_window_notice(self, message: WindowNotice, now_ms: int) -> None:
        if not self.store.seen(message.id):
            with self.store.transaction():
                self.store.mark_seen(message.id, WindowNotice.TYPE, message.prompt_id, now_ms)
                self.store.db.execute(
                    "UPDATE windows SET state = ?, closed_by = ?, closed_at_ms = ? "
                    "WHERE prompt_id = ? AND state = 'active'",
                    (message.state, message.by, message.at_ms, message.prompt_id),
                )
            log.info("prompt %s: approval window %s (%s)", message.prompt_id, message.state, message.by or "its time")
            self._out.display.append(WindowGone(message.prompt_id, message.state))
        self._out.send.append(encode(Ack(self._new_id(now_ms), message.id)))

    def _windows_due(self, now_ms: int) -> None:
        """A window whose time is up is over here too (the bridge's notice may be late)."""
        at = self.bridge_time(now_ms)
        rows = self.store.db.execute(
            "SELECT prompt_id FROM windows WHERE state = 'active' AND ends_at_ms <= ?", (at,)
        ).fetchall()
        for row in rows:
            with self.store.transaction():
                self.store.db.execute(
                    "UPDATE windows SET state = 'ended', closed_at_ms = ends_at_ms WHERE prompt_id = ?",
                    (row["prompt_id"],),
                )
            self._out.display.append(WindowGone(row["prompt_id"], "ended"))

    def _show_windows(self, now_ms: int) -> None:
        """After a (re)start: the indicator of every window still active."""
        self._windows_due(now_ms)
        offset = self.bridge_time(0)
        for window in self.active_windows(now_ms):
            self._out.display.append(WindowShown(window, window.ends_at_ms - offset))

    def _windows_deadline(self) -> int | None:
        """The next local time an active window ends (for ``next_deadline_ms``)."""
        row = self.store.db.execute("SELECT MIN(ends_at_ms) AS t FROM windows WHERE state = 'active'").fetchone()
        return None if row["t"] is None else int(row["t"]) - self.bridge_time(0)

    def active_windows(self, now_ms: int) -> list[WindowRow]:
        return windows(self.store.db, active_at_ms=self.bridge_time(now_ms))


__all__ = [
    "ALL",
    "WINDOWS_SCHEMA",
    "AgentWindows",
    "Grant",
    "WindowGone",
    "WindowRow",
    "WindowShown",
    "grant_of",
    "granted_minutes",
    "pending_revoke_requests",
    "request_revoke",
    "windows",
]
