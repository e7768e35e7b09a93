"""Many endpoint actors in one SQLite file (``worker.shard_store``): each keeps its own rows."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from worker import shard_store
from worker.credentials import secret_hash
from worker.endpoint import EndpointBridge
from worker.host import Entropy
from worker.local_host import LocalBridge
from worker.output_gate import OutputGate
from worker.shard_store import SCHEMA_NAMES, Shards, locate, rewrite, shard_of
from worker.sqlite_store import SqliteStore


def test_rewrite_renames_schema_names_only_outside_string_literals() -> None:
    sql = "SELECT p.state FROM prompts p JOIN facts f ON f.prompt_id = p.prompt_id WHERE f.kind = 'prompts facts'"
    assert rewrite(sql, "e7_") == (
        "SELECT p.state FROM e7_prompts p JOIN e7_facts f ON f.prompt_id = p.prompt_id WHERE f.kind = 'prompts facts'"
    )
    # An index whose name starts with a table's is its own name, not the table's.
    assert rewrite("CREATE INDEX IF NOT EXISTS prompts_open ON prompts (final)", "e7_") == (
        "CREATE INDEX IF NOT EXISTS e7_prompts_open ON e7_prompts (final)"
    )
    assert {"prompts", "facts", "meta", "outbox", "prompts_open"} <= SCHEMA_NAMES


def _shared_pair(directory: Path) -> tuple[str, str]:
    """Two endpoint ids that land in the same shard."""
    first = "ep-0"
    for i in range(1, 10_000):
        other = f"ep-{i}"
        if shard_of(other) == shard_of(first):
            return first, other
    raise AssertionError("no two ids share a shard")


def test_two_endpoints_in_one_shard_keep_their_own_rows(tmp_path: Path) -> None:
    shards = Shards(tmp_path, None)
    a_id, b_id = _shared_pair(tmp_path)
    a = shards.tables(a_id, create=True)
    b = shards.tables(b_id, create=True)
    assert a is not None and b is not None and a.path == b.path and a.prefix != b.prefix
    for tables, endpoint_id in ((a, a_id), (b, b_id)):
        EndpointBridge(tables, Entropy(), None)  # migrates its own tables
        tables.execute("INSERT INTO meta (key, value) VALUES ('endpoint_id', ?)", (endpoint_id,))
    assert a.execute("SELECT value FROM meta WHERE key = 'endpoint_id'") == [{"value": a_id}]
    assert b.execute("SELECT value FROM meta WHERE key = 'endpoint_id'") == [{"value": b_id}]
    # A table asked about by name (``worker.admission``) is the endpoint's own.
    assert a.execute("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?", ("meta",)) == [{"x": 1}]
    # A transaction that fails rolls back that endpoint's writes and nobody else's.
    with pytest.raises(RuntimeError):

        def fail() -> None:
            a.execute("UPDATE meta SET value = 'changed' WHERE key = 'endpoint_id'")
            raise RuntimeError("boom")

        a.transaction(fail)
    assert a.execute("SELECT value FROM meta WHERE key = 'endpoint_id'") == [{"value": a_id}]
    # Dropping one endpoint leaves the other whole; case does not make a second endpoint.
    assert shards.tables(a_id.upper(), create=False) is not None
    a.shard.drop(a)
    assert shards.tables(a_id, create=False) is None
    assert b.execute("SELECT value FROM meta WHERE key = 'endpoint_id'") == [{"value": b_id}]
    shards.close()
    # Reopened: the membership and the rows are the file's, and tools find them read-only.
    again = Shards(tmp_path, None, count=3)  # the count recorded at creation wins
    assert again.count == shards.count
    assert again.endpoint_ids() == [b_id]
    where = locate(tmp_path, b_id)
    assert where is not None
    with sqlite3.connect(f"file:{where[0]}?mode=ro", uri=True) as db:
        assert db.execute(f"SELECT value FROM {where[1]}meta WHERE key = 'endpoint_id'").fetchall() == [(b_id,)]
    assert locate(tmp_path, a_id) is None
    again.close()


def test_a_lookup_never_makes_a_shard_file(tmp_path: Path) -> None:
    shards = Shards(tmp_path, None)
    assert shards.tables("nobody", create=False) is None
    assert list(tmp_path.glob("shard-*")) == []


def test_a_new_shard_gets_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """A commit logs every page it changed: small pages make the log the output gate syncs
    smaller. A shard file made before keeps its page size (SQLite cannot change it in WAL mode)."""
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    new_dir.mkdir()
    old_dir.mkdir()
    shards = Shards(new_dir, None)
    assert shards.tables("ep-0", create=True) is not None
    old_file = old_dir / f"shard-{shard_of('ep-0'):02d}.sqlite3"
    made_before = SqliteStore(old_file)  # SQLite's default page size, as shards were made before
    made_before.close()
    old_shards = Shards(old_dir, None)
    old_tables = old_shards.tables("ep-0", create=True)
    assert old_tables is not None
    old_tables.execute("INSERT INTO meta (key, value) VALUES ('endpoint_id', 'ep-0')")
    shards.close()
    old_shards.close()

    def page_size(path: Path) -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("PRAGMA page_size").fetchone()[0])

    assert page_size(new_dir / f"shard-{shard_of('ep-0'):02d}.sqlite3") == shard_store.SHARD_PAGE_BYTES == 1024
    assert page_size(old_file) == 4096
    with sqlite3.connect(old_file) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_local_host_serves_an_old_layout_file_and_puts_new_endpoints_in_shards(tmp_path: Path) -> None:
    """A data directory from before shards: its endpoint keeps its own file and is found at start."""
    (tmp_path / "endpoints").mkdir(parents=True, mode=0o700)
    old = SqliteStore(tmp_path / "endpoints" / "old-laptop.sqlite3")
    actor = EndpointBridge(old, Entropy(), None)
    old.execute("INSERT INTO meta (key, value) VALUES ('endpoint_id', 'old-laptop')")
    assert actor.endpoint_id == "old-laptop"
    old.close()

    async def scenario() -> None:
        bridge = LocalBridge(tmp_path, secret_hash("admin-secret"))
        await bridge.start()
        await asyncio.wait_for(bridge.started.wait(), 10)
        assert "old-laptop" in bridge.endpoints
        assert bridge.endpoints["old-laptop"].store.path == tmp_path / "endpoints" / "old-laptop.sqlite3"
        fresh = bridge.endpoint("new-laptop", create=True)
        assert fresh is not None and str(fresh.store.path).endswith(f"shard-{shard_of('new-laptop'):02d}.sqlite3")
        await bridge.stop()

    asyncio.run(scenario())


def test_a_new_member_gets_exactly_the_schema_its_migrations_would_give(tmp_path: Path) -> None:
    """The shard makes a new endpoint's tables at the current schema in one step, instead of
    replaying every migration: the result must be what the migrations give, object for object."""
    from worker.endpoint_schema import MIGRATIONS, SCHEMA_VERSION, migrate

    scratch = SqliteStore(":memory:")
    migrate(scratch, MIGRATIONS)
    expected = {(r["type"], r["name"], r["sql"]) for r in scratch.execute("SELECT type, name, sql FROM sqlite_master")}
    scratch.close()
    shards = Shards(tmp_path, None)
    tables = shards.tables("fresh-one", create=True)
    assert tables is not None
    prefix = tables.prefix
    rows = tables.shard.store.execute("SELECT type, name, sql FROM sqlite_master WHERE name LIKE ?", (f"%{prefix}%",))
    got = {(r["type"], r["name"].replace(prefix, ""), r["sql"].replace(prefix, "") if r["sql"] else None) for r in rows}
    assert got == expected
    assert tables.execute("SELECT value FROM meta WHERE key = 'schema_version'") == [{"value": str(SCHEMA_VERSION)}]
    shards.close()


def test_a_shard_needed_while_the_start_opens_them_on_threads_is_opened_once(tmp_path: Path) -> None:
    """After a restart agents reconnect while the shards are being opened on threads: one
    needed first is waited for (being opened) or opened on the loop (not started yet), never
    opened twice, and the background pass still finishes."""
    first = Shards(tmp_path, None, count=8)
    for i in range(40):
        assert first.tables(f"ep-{i}", create=True) is not None
    first.close()

    async def scenario() -> None:
        shards = Shards(tmp_path, None)
        loop = asyncio.get_running_loop()
        background = asyncio.ensure_future(shards.open_existing(loop))
        await asyncio.sleep(0)  # the pass has submitted every file
        early = [shards.tables(f"ep-{i}", create=False) for i in range(0, 40, 5)]
        await background
        assert all(t is not None for t in early)
        assert len(shards._open) == 8 and not shards._opening
        assert sorted(shards.endpoint_ids()) == sorted(f"ep-{i}" for i in range(40))
        for tables in early:
            assert tables is not None and tables.shard is shards._open[shard_of(tables.key, 8)]
        shards.close()

    asyncio.run(scenario())


def test_the_schema_question_admission_asks_is_answered_as_the_shard_would(tmp_path: Path) -> None:
    """``admission`` asks "has this endpoint its tables?" before every agent socket; a member
    answers from what it knows, which must be what scanning the shard's schema says."""
    from worker.admission import HAS_TABLE_SQL
    from worker.shard_store import SCHEMA_TABLES

    shards = Shards(tmp_path, None)
    tables = shards.tables("ep-schema", create=True)
    assert tables is not None
    for name in sorted(SCHEMA_TABLES):
        scanned = tables.shard.store.execute(HAS_TABLE_SQL, (tables.prefix + name,))
        assert tables.execute(HAS_TABLE_SQL, (name,)) == scanned == [{"1": 1}], name
    assert tables.execute(HAS_TABLE_SQL, ("tokens",)) == []  # not an endpoint table: asked for real
    shards.close()


def test_a_shard_an_agent_waits_for_is_opened_on_a_thread_ahead_of_the_start_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ready``: a shard the start's pass has not started opening is opened on a thread of its
    own (not on the loop), exactly once; the pass skips it and still finishes."""
    first = Shards(tmp_path, None, count=8)
    for i in range(40):
        assert first.tables(f"ep-{i}", create=True) is not None
    first.close()

    class SlowOnThePass(shard_store.Shard):
        def __init__(self, path: Path, gate: OutputGate | None) -> None:
            if not threading.current_thread().name.startswith("caisey-shard-open-now"):
                time.sleep(0.3)  # the pass's threads are busy recovering other files
            super().__init__(path, gate)

    monkeypatch.setattr(shard_store, "Shard", SlowOnThePass)

    async def scenario() -> None:
        shards = Shards(tmp_path, None)
        loop = asyncio.get_running_loop()
        background = asyncio.ensure_future(shards.open_existing(loop))
        await asyncio.sleep(0)  # the pass has submitted every file; its 4 threads took the first 4
        last = max(range(40), key=lambda i: shard_of(f"ep-{i}", 8))
        index = shard_of(f"ep-{last}", 8)
        assert index >= shard_store.OPEN_THREADS
        queued = shards._opening[index]
        await shards.ready(f"ep-{last}")
        assert index in shards._open and index not in shards._opening
        assert queued.cancelled() and not background.done()  # opened ahead of the pass
        opened = shards._open[index]
        await shards.ready(f"ep-{last}")  # open already: at once, nothing reopened
        await shards.ready("never-enrolled-anywhere")
        await background
        assert shards._open[index] is opened
        assert len(shards._open) == 8 and not shards._opening
        assert sorted(shards.endpoint_ids()) == sorted(f"ep-{i}" for i in range(40))
        tables = shards.tables(f"ep-{last}", create=False)
        assert tables is not None and tables.shard is opened
        shards.close()

    asyncio.run(scenario())
