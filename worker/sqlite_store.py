"""``SqlStore`` over one SQLite file (or ``:memory:``): the local host's, the simulation's and
the benchmarks' storage. WAL. Alone, ``synchronous=FULL``: a commit is on disk when it returns.
With an ``OutputGate``, ``synchronous=NORMAL`` and the gate syncs the file before any output
leaves the host — a Durable Object's write is durable before its output gate opens, too."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from worker.host import Row, SqlValue
from worker.output_gate import OutputGate

T = TypeVar("T")


def wal_path(path: Path | str) -> str:
    """The write-ahead log a commit to ``path`` appends to: what the output gate syncs."""
    return f"{path}-wal"


class SqliteStore:
    """``SqlStore`` over one SQLite file: WAL; durable at commit, or at the ``gate``'s next round."""

    def __init__(
        self,
        path: Path | str,
        gate: OutputGate | None = None,
        cached_statements: int = 128,
        page_size: int | None = None,
    ) -> None:
        self.path = path
        self.gate = gate
        self.wal = wal_path(path)
        self.db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, cached_statements=cached_statements
        )
        self.db.row_factory = sqlite3.Row
        if page_size is not None:
            # Takes effect on a new file only, and only before it is put in WAL mode; an
            # existing file keeps the page size it was made with.
            self.db.execute(f"PRAGMA page_size={int(page_size)}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL" if gate is not None else "PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._depth = 0
        self.last_commit = 0  # the output gate's number of this connection's latest commit

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        rows = [dict(row) for row in self.db.execute(sql, params).fetchall()]
        if self.gate is not None and not self._depth and sql.lstrip()[:6].upper() not in ("SELECT", "PRAGMA"):
            self.last_commit = self.gate.written(self.wal)  # a write outside a transaction commits on its own
        return rows

    def transaction(self, fn: Callable[[], T]) -> T:
        if self._depth:
            return fn()  # already inside one: the outer transaction owns commit/rollback
        self.db.execute("BEGIN IMMEDIATE")
        changes = self.db.total_changes
        self._depth += 1
        try:
            result = fn()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._depth -= 1
        self.db.execute("COMMIT")
        if self.gate is not None and self.db.total_changes != changes:  # a read-only event waits for nothing
            self.last_commit = self.gate.written(self.wal)
        return result

    def close(self) -> None:
        self.db.close()


# An open WAL database holds three descriptors: the file, its -wal and its -shm. (Exclusive
# locking would save the -shm, but then no other process could read the file while the
# bridge runs — tests and operators do.)
FDS_PER_STORE = 3


class StorePool:
    """Bounds how many ``PooledStore`` s are open at once, so many endpoints fit the fd limit.

    One file per endpoint costs three descriptors while open, and every connected agent holds
    a socket: with the usual hard limit of a few ten thousand, a bridge with thousands of
    endpoints cannot keep them all open. ``capacity()`` is asked on every open; above it a
    random open store is closed (uniform eviction: an endpoint's traffic is periodic — a
    heartbeat every 15 s — for which least-recently-used would evict exactly the store needed
    next). A closed store reopens on its next statement; its rows are the truth, nothing
    lives only in the connection.
    """

    def __init__(self, capacity: Callable[[], int], rng: random.Random | None = None) -> None:
        self.capacity = capacity
        self._rng = rng or random.Random()
        self._open: list[PooledStore] = []
        self.evictions = 0

    def admit(self, store: PooledStore) -> None:
        """``store`` is about to open: make room first."""
        self.trim(room=1)
        store._slot = len(self._open)
        self._open.append(store)

    def trim(self, room: int = 0) -> None:
        """Close stores until ``room`` more fit under the capacity (call when it shrinks)."""
        limit = max(1, self.capacity()) - room
        while len(self._open) > max(0, limit):
            victim = self._rng.choice(self._open)
            if victim._store is not None and victim._store._depth:
                break  # never inside a transaction (cannot happen single-threaded; be safe)
            victim.release()
            self.evictions += 1

    def forget(self, store: PooledStore) -> None:
        """``store`` closed: swap-remove it (O(1))."""
        slot = store._slot
        if slot is None:
            return
        last = self._open.pop()
        if last is not store:
            self._open[slot] = last
            last._slot = slot
        store._slot = None

    def __len__(self) -> int:
        return len(self._open)


class PooledStore:
    """``SqlStore`` over one SQLite file, opened on use and closed by its ``StorePool``."""

    def __init__(self, path: Path | str, pool: StorePool, gate: OutputGate | None = None) -> None:
        self.path = path
        self.wal = wal_path(path)
        self.pool = pool
        self.gate = gate
        self._store: SqliteStore | None = None
        self._slot: int | None = None  # index in the pool's open list
        # The output gate's number of this file's latest commit, kept across reopenings: what
        # this endpoint's outputs wait for (``OutputGate.wait_for``), as in ``EndpointTables``.
        self.last_commit = 0

    def _db(self) -> SqliteStore:
        if self._store is None:
            self.pool.admit(self)
            self._store = SqliteStore(self.path, self.gate)
        return self._store

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        store = self._db()
        try:
            return store.execute(sql, params)
        finally:
            self.last_commit = max(self.last_commit, store.last_commit)

    def transaction(self, fn: Callable[[], T]) -> T:
        store = self._db()
        try:
            return store.transaction(fn)
        finally:
            self.last_commit = max(self.last_commit, store.last_commit)

    def release(self) -> None:
        """Close the connection now (the pool's eviction); the next statement reopens it."""
        if self._store is not None:
            self._store.close()
            self._store = None
            self.pool.forget(self)

    def close(self) -> None:
        self.release()
