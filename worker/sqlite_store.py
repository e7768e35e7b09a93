"""``SqlStore`` over one SQLite file (or ``:memory:``): the local host's, the simulation's and
the benchmarks' storage. WAL and ``synchronous=FULL``: a commit is on disk, as a Durable
Object's write is durable before its output gate opens."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from worker.host import Row, SqlValue

T = TypeVar("T")


class SqliteStore:
    """``SqlStore`` over one SQLite file: WAL, synchronous=FULL (a commit is on disk)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._depth = 0

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        return [dict(row) for row in self.db.execute(sql, params).fetchall()]

    def transaction(self, fn: Callable[[], T]) -> T:
        if self._depth:
            return fn()  # already inside one: the outer transaction owns commit/rollback
        self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            result = fn()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._depth -= 1
        self.db.execute("COMMIT")
        return result

    def close(self) -> None:
        self.db.close()
