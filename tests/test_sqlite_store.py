"""``worker.sqlite_store``: the SQLite ``SqlStore`` and the pool that bounds open files."""

from __future__ import annotations

import os
import random
from pathlib import Path

from worker.output_gate import OutputGate
from worker.sqlite_store import PooledStore, SqliteStore, StorePool


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sqlite_store_is_wal_and_fully_synchronous(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.sqlite3")
    assert store.execute("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert store.execute("PRAGMA synchronous")[0]["synchronous"] == 2  # FULL
    store.close()


def test_pool_keeps_at_most_capacity_open_and_rows_survive_reopening(tmp_path: Path) -> None:
    pool = StorePool(lambda: 4, random.Random(7))
    stores = [PooledStore(tmp_path / f"{i}.sqlite3", pool) for i in range(12)]
    before = open_fds()
    for i, store in enumerate(stores):
        store.execute("CREATE TABLE t (v INTEGER)")
        store.transaction(lambda store=store, i=i: store.execute("INSERT INTO t VALUES (?)", (i,)))
        assert len(pool) <= 4
    assert open_fds() - before <= 4 * 3  # the file, its -wal and its -shm
    for i, store in enumerate(stores):  # every one reopens with its committed rows
        assert store.execute("SELECT v FROM t") == [{"v": i}]
    assert pool.evictions >= 12 - 4
    for store in stores:
        store.close()
    assert len(pool) == 0


def test_pool_never_closes_the_store_inside_a_transaction(tmp_path: Path) -> None:
    pool = StorePool(lambda: 1, random.Random(1))
    a, b = PooledStore(tmp_path / "a.sqlite3", pool), PooledStore(tmp_path / "b.sqlite3", pool)
    a.execute("CREATE TABLE t (v INTEGER)")
    b.execute("CREATE TABLE t (v INTEGER)")

    def both() -> None:
        a.execute("INSERT INTO t VALUES (1)")
        b.execute("INSERT INTO t VALUES (2)")  # opening b must not close a mid-transaction
        a.execute("INSERT INTO t VALUES (3)")

    a.transaction(both)
    assert a.execute("SELECT v FROM t ORDER BY v") == [{"v": 1}, {"v": 3}]
    assert b.execute("SELECT v FROM t") == [{"v": 2}]


def test_a_pooled_store_remembers_its_latest_commit_across_reopening(tmp_path: Path) -> None:
    """The local host's output gate waits for an endpoint's latest commit (``wait_for``): a
    store the pool closed and reopened must still know it, or its next output would not wait."""
    gate = OutputGate(lambda path: None)
    pool = StorePool(lambda: 1, random.Random(3))
    a, b = PooledStore(tmp_path / "a.sqlite3", pool, gate), PooledStore(tmp_path / "b.sqlite3", pool, gate)
    a.execute("CREATE TABLE t (x INTEGER)")
    a.transaction(lambda: a.execute("INSERT INTO t VALUES (1)"))
    written = a.last_commit
    assert written > 0
    b.execute("CREATE TABLE t (x INTEGER)")  # the pool closes a to open b
    assert a.execute("SELECT COUNT(*) AS n FROM t")[0]["n"] == 1  # reopened; a read commits nothing
    assert a.last_commit == written and b.last_commit > written
    a.transaction(lambda: a.execute("INSERT INTO t VALUES (2)"))
    assert a.last_commit > b.last_commit
    for store in (a, b):
        store.close()
    gate.close()
