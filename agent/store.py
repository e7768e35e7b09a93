"""The agent's durable state (DESIGN §6): one SQLite file plus a 0600 secrets file.

The runtime is the only authority for what its user decided, so its facts must survive a
crash, a kill -9 or a power cut between any two steps. Every write is one transaction,
committed with ``synchronous=FULL`` in WAL mode: when ``commit()`` returns the WAL has been
fsynced, so a receipt or decision is never sent for something the disk does not hold
(DESIGN §5 "persist before send").

Tables (schema version in ``PRAGMA user_version``; migrations only add):

- ``prompts``  — each prompt copy with its local status (received → acknowledged →
  decided | closed | rejected), the decision and how many times it was shown;
  ``final_acked`` is set once the bridge acked the update that made it final, after which
  it leaves the ``state.report``.
- ``seen_events`` — ids of frames from the bridge already processed (deliver, cancel).
- ``tombstones`` — prompts cancelled before we held them, so a late deliver is not shown.
- ``outbox``   — our own receipts and updates, resent with the same id until acked.
- ``meta``     — endpoint id, bridge URL, clock offset, connection times.

The store holds no protocol logic: ``agent.core`` decides, the store remembers.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.windows import WINDOWS_SCHEMA
from caisey.wire import DisplayEvidence, PromptCopy

SCHEMA_VERSION = 4  # 3: the display evidence, 4: approval windows (issue 16)
DB_FILE = "agent.sqlite3"
SECRET_FILE = "agent_secret"
LOCK_FILE = "run.lock"
ENV_HOME = "CAISEY_AGENT_HOME"
# A secret longer than this is not one the bridge issued; refuse to read a runaway file.
MAX_SECRET_BYTES = 4096

OPEN_STATUSES = ("received", "acknowledged")
FINAL_STATUSES = ("decided", "closed", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id      TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL,
    copy_json      TEXT NOT NULL,
    deliver_id     TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    status         TEXT NOT NULL,
    how            TEXT,
    decision       TEXT,
    decided_at_ms  INTEGER,
    decided_local_ms INTEGER,
    detail         TEXT,
    shown_count    INTEGER NOT NULL DEFAULT 0,
    first_shown_at_ms INTEGER,
    dismissed      INTEGER NOT NULL DEFAULT 0,
    final_acked    INTEGER NOT NULL DEFAULT 0,
    updated_at_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS prompts_by_status ON prompts(status, seq);
CREATE TABLE IF NOT EXISTS seen_events (
    event_id  TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    prompt_id TEXT,
    at_ms     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    prompt_id TEXT PRIMARY KEY,
    reason    TEXT NOT NULL,
    at_ms     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id           TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL,
    prompt_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    final        INTEGER NOT NULL,
    frame        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# Additive upgrades by schema version (the table above is version 1's, made if missing).
_UPGRADES: dict[int, tuple[str, ...]] = {
    # The endpoint key's signature of the answer, kept to resend in reports (DESIGN §10).
    2: ("ALTER TABLE prompts ADD COLUMN key_id TEXT", "ALTER TABLE prompts ADD COLUMN sig TEXT"),
    # How the answered prompt was shown (DESIGN §13), signed with it and resent in reports.
    3: ("ALTER TABLE prompts ADD COLUMN display_json TEXT",),
    # Approval windows and the requests of ``caisey-agent revoke`` (``agent.windows``).
    4: WINDOWS_SCHEMA,
}


class StoreError(Exception):
    """The state directory cannot be used (missing enrollment, bad permissions, locked)."""


def write_private(path: Path, data: bytes) -> None:
    """Write a file only this user can read (0600), atomically and durably: secrets, keys."""
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the umask cannot widen it, but an odd FS might
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_private(path: Path, max_bytes: int, what: str, missing_hint: str) -> bytes:
    """Read a private file; refuse one others can read, or one too large to be ``what``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise StoreError(f"no {what} at {path}: {missing_hint}") from None
    if sys.platform != "win32" and info.st_mode & 0o077:
        raise StoreError(f"{path} is readable by others (mode {info.st_mode & 0o777:o}); chmod 600 it")
    if info.st_size > max_bytes:
        raise StoreError(f"{path} is too large to be {what}")
    return path.read_bytes()


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One prompt as the runtime holds it."""

    prompt: PromptCopy
    seq: int
    deliver_id: str
    received_at_ms: int  # runtime clock
    status: str  # received | acknowledged | decided | closed | rejected
    how: str | None  # shown|dismissed (acknowledged) or user|no_user_policy (decided)
    decision: str | None
    decided_at_ms: int | None  # bridge time (DESIGN §4 R4)
    decided_local_ms: int | None  # runtime clock, for the local record
    detail: str | None  # closed: expired|cancelled|superseded; rejected: why
    shown_count: int
    first_shown_at_ms: int | None
    dismissed: bool
    final_acked: bool
    updated_at_ms: int
    key_id: str | None = None  # the signed answer (decision or dismissal), DESIGN §10
    sig: str | None = None
    display: DisplayEvidence | None = None  # how the decision's prompt was shown (DESIGN §13)

    @property
    def prompt_id(self) -> str:
        return self.prompt.prompt_id

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One of our own frames waiting for the bridge's ack."""

    id: str
    seq: int
    prompt_id: str
    kind: str  # prompt.receipt | prompt.update
    final: bool  # acking it makes the prompt final-and-acked
    frame: str  # the encoded frame, resent byte for byte
    created_at_ms: int
    attempts: int
    next_attempt_at_ms: int | None


def default_state_dir() -> Path:
    """``$CAISEY_AGENT_HOME`` if set, else the platform's per-user data dir."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("caisey-agent", appauthor=False))


def _prompt_to_json(prompt: PromptCopy) -> str:
    return json.dumps(
        {
            "prompt_id": prompt.prompt_id,
            "title": prompt.title,
            "message": prompt.message,
            "action": prompt.action,
            "created_at_ms": prompt.created_at_ms,
            "expires_at_ms": prompt.expires_at_ms,
            "on_no_user": prompt.on_no_user,
            "requested_by": prompt.requested_by,
            # The optional fields (DESIGN §13) too: the copy's hash, which signatures cover,
            # must be the same after a restart.
            **{name: value for name, value in prompt.extras().items() if value is not None},
        },
        ensure_ascii=False,
    )


def _row_to_prompt(row: sqlite3.Row) -> PromptRow:
    return PromptRow(
        prompt=PromptCopy.from_json(json.loads(row["copy_json"]), "stored prompt"),
        seq=row["seq"],
        deliver_id=row["deliver_id"],
        received_at_ms=row["received_at_ms"],
        status=row["status"],
        how=row["how"],
        decision=row["decision"],
        decided_at_ms=row["decided_at_ms"],
        decided_local_ms=row["decided_local_ms"],
        detail=row["detail"],
        shown_count=row["shown_count"],
        first_shown_at_ms=row["first_shown_at_ms"],
        dismissed=bool(row["dismissed"]),
        final_acked=bool(row["final_acked"]),
        updated_at_ms=row["updated_at_ms"],
        key_id=row["key_id"],
        sig=row["sig"],
        display=(
            DisplayEvidence.from_json(json.loads(row["display_json"]), "stored display")
            if row["display_json"]
            else None
        ),
    )


def _row_to_outbox(row: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        seq=row["seq"],
        prompt_id=row["prompt_id"],
        kind=row["kind"],
        final=bool(row["final"]),
        frame=row["frame"],
        created_at_ms=row["created_at_ms"],
        attempts=row["attempts"],
        next_attempt_at_ms=row["next_attempt_at_ms"],
    )


class Store:
    """The agent's SQLite store. ``Store.open(dir)`` for a real agent, ``Store.memory()`` for
    simulations (reuse the same object across ``AgentCore`` instances to model a restart)."""

    def __init__(self, db: sqlite3.Connection, state_dir: Path | None) -> None:
        self._db = db
        self._db.row_factory = sqlite3.Row
        self.state_dir = state_dir
        self._in_tx = False
        self._ensure_schema()

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path | str) -> Store:
        """Open (creating if needed) the store in ``state_dir``, private to this user."""
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if sys.platform != "win32":
            with contextlib.suppress(PermissionError):
                os.chmod(path, 0o700)
        db = sqlite3.connect(path / DB_FILE, isolation_level=None, timeout=10.0)
        # WAL: readers (``caisey-agent status``) never block the running agent.
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot put {path / DB_FILE} in WAL mode (got {mode})")
        return cls(db, path)

    @classmethod
    def memory(cls) -> Store:
        """An in-memory store with the same schema; no secrets file."""
        return cls(sqlite3.connect(":memory:", isolation_level=None), None)

    def _ensure_schema(self) -> None:
        # FULL: a commit fsyncs the WAL, so a decision is on disk before it is reported.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"state was written by a newer agent (schema {version} > {SCHEMA_VERSION})")
        with self.transaction():
            # executescript would COMMIT the open transaction; run statement by statement.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            for upgrade in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                for statement in _UPGRADES.get(upgrade, ()):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the tables another module owns (``agent.windows``)."""
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable unit; nested use joins the outer transaction."""
        if self._in_tx:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._in_tx = False
            self._db.execute("ROLLBACK")
            raise
        self._in_tx = False
        self._db.execute("COMMIT")

    def pragma(self, name: str) -> Any:
        """Read one PRAGMA (tests check WAL and synchronous=FULL)."""
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    # --- meta ------------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def meta_int(self, key: str) -> int | None:
        value = self.meta_get(key)
        return None if value is None else int(value)

    def meta_set(self, key: str, value: str | int | None) -> None:
        with self.transaction():
            if value is None:
                self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, str(value)),
                )

    # --- prompts ---------------------------------------------------------------------------

    def get_prompt(self, prompt_id: str) -> PromptRow | None:
        row = self._db.execute("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else _row_to_prompt(row)

    def open_prompts(self) -> list[PromptRow]:
        """Prompts held open and undecided, oldest first (the display order)."""
        rows = self._db.execute("SELECT * FROM prompts WHERE status IN ('received', 'acknowledged') ORDER BY seq")
        return [_row_to_prompt(r) for r in rows]

    def count_prompts(self) -> int:
        return int(self._db.execute("SELECT count(*) AS n FROM prompts").fetchone()["n"])

    def forget_oldest_final_acked(self, n: int, expired_by_ms: int) -> int:
        """Forget up to ``n`` prompts final and acked, none with frames owed: what a full store
        gives up first. Those whose ``expires_at_ms`` (bridge time) is at or before
        ``expired_by_ms`` go first — a redelivery of one is closed on arrival, never shown
        again — then the oldest of the rest. Returns how many went."""
        forgotten = 0
        for expired_only in (True, False):
            if forgotten >= n:
                break
            # One statement each, atomic on its own; when nothing qualifies it writes nothing.
            forgotten += self._db.execute(
                "DELETE FROM prompts WHERE prompt_id IN (SELECT prompt_id FROM prompts WHERE final_acked = 1 "
                "AND prompt_id NOT IN (SELECT prompt_id FROM outbox) "
                + ("AND json_extract(copy_json, '$.expires_at_ms') <= ? " if expired_only else "AND ? IS NOT NULL ")
                + "ORDER BY seq LIMIT ?)",
                (expired_by_ms, n - forgotten),
            ).rowcount
        return forgotten

    def trim_seen(self, keep: int) -> None:
        """Keep the newest ``keep`` processed frame ids (a bound against floods)."""
        self._trim("seen_events", keep)

    def trim_tombstones(self, keep: int) -> None:
        self._trim("tombstones", keep)

    def _trim(self, table: str, keep: int) -> None:
        # rowid order is insertion order here (rows are never updated in these tables).
        self._db.execute(
            f"DELETE FROM {table} WHERE rowid <= (SELECT rowid FROM {table} ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (keep,),
        )

    def count_open(self) -> int:
        row = self._db.execute("SELECT count(*) AS n FROM prompts WHERE status IN ('received', 'acknowledged')")
        return int(row.fetchone()["n"])

    def reportable_prompts(self, limit: int) -> list[PromptRow]:
        """Every prompt not final-and-acked: open first, then decisions, then the rest."""
        rows = self._db.execute(
            """SELECT * FROM prompts WHERE final_acked = 0
               ORDER BY CASE status WHEN 'received' THEN 0 WHEN 'acknowledged' THEN 0
                                    WHEN 'decided' THEN 1 ELSE 2 END, seq
               LIMIT ?""",
            (limit,),
        )
        return [_row_to_prompt(r) for r in rows]

    def final_acked_since(self, since_ms: int, limit: int, offset: int) -> list[PromptRow]:
        """A page of prompts final and acked, updated at or after ``since_ms`` (runtime clock)."""
        rows = self._db.execute(
            "SELECT * FROM prompts WHERE final_acked = 1 AND updated_at_ms >= ? ORDER BY seq LIMIT ? OFFSET ?",
            (since_ms, limit, offset),
        )
        return [_row_to_prompt(r) for r in rows]

    def all_prompts(self) -> list[PromptRow]:
        return [_row_to_prompt(r) for r in self._db.execute("SELECT * FROM prompts ORDER BY seq")]

    def insert_prompt(self, prompt: PromptCopy, deliver_id: str, received_at_ms: int, status: str) -> None:
        seq = self._db.execute("SELECT coalesce(max(seq), 0) + 1 AS s FROM prompts").fetchone()["s"]
        self._db.execute(
            """INSERT INTO prompts(prompt_id, seq, copy_json, deliver_id, received_at_ms, status, updated_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (prompt.prompt_id, seq, _prompt_to_json(prompt), deliver_id, received_at_ms, status, received_at_ms),
        )

    _UPDATABLE = frozenset(
        {
            "status",
            "how",
            "decision",
            "decided_at_ms",
            "decided_local_ms",
            "detail",
            "shown_count",
            "first_shown_at_ms",
            "dismissed",
            "final_acked",
            "key_id",
            "sig",
            "display",
        }
    )

    def update_prompt(self, prompt_id: str, now_ms: int, **fields: Any) -> None:
        unknown = set(fields) - self._UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        names = sorted(fields)
        assignments = ", ".join(f"{name} = ?" for name in names)
        if "display" in fields:  # stored as JSON in display_json
            value = fields.pop("display")
            fields["display_json"] = None if value is None else json.dumps(value.to_json(), ensure_ascii=False)
            names = sorted(fields)
            assignments = ", ".join(f"{name} = ?" for name in names)
        values = [int(fields[n]) if isinstance(fields[n], bool) else fields[n] for n in names]
        self._db.execute(
            f"UPDATE prompts SET {assignments}, updated_at_ms = ? WHERE prompt_id = ?",
            (*values, now_ms, prompt_id),
        )

    # --- seen events and tombstones ----------------------------------------------------------

    def seen(self, event_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM seen_events WHERE event_id = ?", (event_id,)).fetchone() is not None

    def mark_seen(self, event_id: str, kind: str, prompt_id: str | None, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO seen_events(event_id, kind, prompt_id, at_ms) VALUES (?, ?, ?, ?)",
            (event_id, kind, prompt_id, now_ms),
        )

    def tombstone(self, prompt_id: str) -> str | None:
        row = self._db.execute("SELECT reason FROM tombstones WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else str(row["reason"])

    def add_tombstone(self, prompt_id: str, reason: str, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO tombstones(prompt_id, reason, at_ms) VALUES (?, ?, ?)", (prompt_id, reason, now_ms)
        )

    # --- outbox ----------------------------------------------------------------------------

    def outbox_add(self, frame_id: str, prompt_id: str, kind: str, final: bool, frame: str, now_ms: int) -> None:
        seq = self._db.execute("SELECT coalesce(max(seq), 0) + 1 AS s FROM outbox").fetchone()["s"]
        self._db.execute(
            """INSERT INTO outbox(id, seq, prompt_id, kind, final, frame, created_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (frame_id, seq, prompt_id, kind, int(final), frame, now_ms),
        )

    def outbox_remove_kind(self, prompt_id: str, kind: str) -> None:
        self._db.execute("DELETE FROM outbox WHERE prompt_id = ? AND kind = ?", (prompt_id, kind))

    def outbox_drop_nonfinal(self, prompt_id: str) -> None:
        """The prompt is final and the bridge knows it: its receipt and acknowledged updates
        add nothing any more, and resending them forever to a bridge that lost the prompt
        would only ask for reports it cannot use."""
        self._db.execute("DELETE FROM outbox WHERE prompt_id = ? AND final = 0", (prompt_id,))

    def outbox_all(self) -> list[OutboxRow]:
        return [_row_to_outbox(r) for r in self._db.execute("SELECT * FROM outbox ORDER BY seq")]

    def outbox_get(self, frame_id: str) -> OutboxRow | None:
        row = self._db.execute("SELECT * FROM outbox WHERE id = ?", (frame_id,)).fetchone()
        return None if row is None else _row_to_outbox(row)

    def outbox_for(self, prompt_id: str) -> list[OutboxRow]:
        rows = self._db.execute("SELECT * FROM outbox WHERE prompt_id = ? ORDER BY seq", (prompt_id,))
        return [_row_to_outbox(r) for r in rows]

    def outbox_next_attempt_ms(self) -> int | None:
        row = self._db.execute("SELECT min(next_attempt_at_ms) AS t FROM outbox").fetchone()
        return None if row["t"] is None else int(row["t"])

    def outbox_mark_sent(self, frame_id: str, attempts: int, next_attempt_at_ms: int) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = ?, next_attempt_at_ms = ? WHERE id = ?",
            (attempts, next_attempt_at_ms, frame_id),
        )

    def outbox_delete(self, frame_id: str) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (frame_id,))

    # --- housekeeping ------------------------------------------------------------------------

    def prune(self, before_ms: int) -> int:
        """Forget final-and-acked prompts, seen ids and tombstones older than ``before_ms``.

        Safe because a deliver replayed after this horizon is long past ``expires_at``: it is
        stored and closed locally, never shown (see ``agent.core``)."""
        with self.transaction():
            n = self._db.execute(
                "DELETE FROM prompts WHERE final_acked = 1 AND updated_at_ms < ? "
                "AND prompt_id NOT IN (SELECT prompt_id FROM outbox)",
                (before_ms,),
            ).rowcount
            self._db.execute("DELETE FROM seen_events WHERE at_ms < ?", (before_ms,))
            self._db.execute("DELETE FROM tombstones WHERE at_ms < ?", (before_ms,))
        return int(n)

    def reset_prompts(self) -> None:
        """Drop all prompt state (re-enrolling as another endpoint)."""
        with self.transaction():
            for table in ("prompts", "seen_events", "tombstones", "outbox"):
                self._db.execute(f"DELETE FROM {table}")

    # --- secrets ---------------------------------------------------------------------------

    def _secret_path(self) -> Path:
        if self.state_dir is None:
            raise StoreError("an in-memory store has no secrets file")
        return self.state_dir / SECRET_FILE

    def write_secret(self, secret: str) -> Path:
        """Write the agent secret readable by this user only (mode 0600), atomically."""
        path = self._secret_path()
        write_private(path, secret.encode("utf-8"))
        return path

    def read_secret(self) -> str:
        path = self._secret_path()
        raw = read_private(path, MAX_SECRET_BYTES, "an agent secret", "run `caisey-agent enroll` first")
        return raw.decode("utf-8").strip()
