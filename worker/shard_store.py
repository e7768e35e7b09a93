"""Many endpoint actors in one SQLite file: the local host's storage at fleet scale (issue 15).

One file per endpoint mirrors one Durable Object per endpoint, and costs three descriptors
while open. Past a few thousand endpoints the open-files limit cannot hold them all, so files
were closed and reopened all the time — after a restart, with every agent's ``hello`` needing
its file, 10,000 agents took 131 s to come back, nearly all of it opening files, recovering
their write-ahead logs and closing them again. Here a fixed number of *shard* files (256) hold every
endpoint, each endpoint in its own tables:

- an endpoint's tables and indexes are the actor's own schema with a per-endpoint prefix
  (``prompts`` → ``e17_prompts``), so the actor's SQL, its transactions and its migrations
  are exactly those it runs on its own file or in a Durable Object — ``EndpointTables``
  rewrites the names (cached per statement), nothing else changes;
- a shard's ``shard_members`` table maps endpoint ids (case-insensitive, as the host keys its
  actors) to their prefix number; the shard for an id is a stable hash of it;
- a shard is one connection, always open: 256 files at most whatever the fleet's size, and the
  commits of all its endpoints share one write-ahead log, which the output gate syncs once
  per round for all of them (group commit across actors).

The actor model is unchanged: one ``EndpointBridge`` per endpoint, its own rows, one alarm.
Transactions of two actors never interleave: the actor is synchronous and a transaction is
opened and committed within one call on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from worker.admission import HAS_TABLE_SQL
from worker.endpoint_schema import MIGRATIONS, migrate
from worker.host import Row, SqlValue
from worker.output_gate import OutputGate
from worker.sqlite_store import SqliteStore

T = TypeVar("T")

# 256 files: about 40 endpoints each at 10,000 (some 800 tables and indexes per file, where
# SQLite's schema changes stay cheap), 768 descriptors in all.
SHARDS = 256
SHARD_GLOB = "shard-*.sqlite3"
# Statements a shard's connection keeps prepared. A shard serves 1/256 of the fleet, and
# each endpoint's statements differ by their prefix, so the default of 128 would re-prepare
# nearly every statement of a busy shard.
SHARD_STATEMENT_CACHE = 1024
# Page cache per shard connection. SQLite's default (2 MiB) held the hot pages of a shard's
# first few dozen endpoints only: every table and index of an endpoint is at least a page of
# its own, and an agent's reconnect touches a dozen of them.
SHARD_PAGE_CACHE_KIB = 4096
# Page size of a new shard file. A commit appends every page it changed to the write-ahead log,
# and an event changes a page or two in each of a dozen small tables (its endpoint's own): with
# SQLite's 4,096-byte pages a prompt's round trip (create, receipt, decision) wrote 150 KB of
# log, which the output gate then syncs; with 1,024-byte pages 45 KB (measured: bench
# ``actor_cpu``'s endpoint, WAL growth per event). Files made before keep their page size.
SHARD_PAGE_BYTES = 1024
OPEN_THREADS = 4  # shard files opened at once at start (``open_existing``)
# Threads that open a shard an agent waits for, ahead of the start's pass (``Shards.ready``).
URGENT_OPEN_THREADS = 4
_MARK = "\x00"  # stands for the prefix in a rewritten statement; never in our SQL


def _current_schema() -> tuple[frozenset[str], list[str], list[tuple[str, str | None]]]:
    """The endpoint schema as its migrations leave it (run once on ``:memory:``): every table
    and index name, the statements that create it as it is now, and its ``meta`` rows."""
    scratch = SqliteStore(":memory:")
    try:
        migrate(scratch, MIGRATIONS)
        objects = scratch.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC, rowid"
        )  # tables before indexes
        names = {str(row["name"]) for row in objects}
        columns = {
            str(col["name"])
            for row in objects
            if row["type"] == "table"
            for col in scratch.execute(f"SELECT name FROM pragma_table_info('{row['name']}')")
        }
        meta = [(str(row["key"]), row["value"]) for row in scratch.execute("SELECT key, value FROM meta")]
    finally:
        scratch.close()
    # The rewrite finds names as words outside string literals: a column with a table's name
    # would be renamed too. None exists; keep it so.
    clash = names & columns
    if clash:
        raise RuntimeError(f"a column shares a name with a table or index: {sorted(clash)}")
    return frozenset(names), [str(row["sql"]) for row in objects], meta


SCHEMA_NAMES, _CREATE_CURRENT, _META_CURRENT = _current_schema()
SCHEMA_TABLES = frozenset(
    name for name in SCHEMA_NAMES if any(sql.startswith(f"CREATE TABLE {name} ") for sql in _CREATE_CURRENT)
)
_NAME_RE = re.compile(r"\b(" + "|".join(sorted(SCHEMA_NAMES, key=len, reverse=True)) + r")\b")
_LITERAL_RE = re.compile(r"('(?:[^']|'')*')")


def _template(sql: str) -> str:
    """``sql`` with a mark before every schema name outside string literals."""
    parts = _LITERAL_RE.split(sql)
    for i in range(0, len(parts), 2):  # even parts are outside literals
        parts[i] = _NAME_RE.sub(lambda m: _MARK + m.group(1), parts[i])
    return "".join(parts)


_templates: dict[str, str] = {}


def rewrite(sql: str, prefix: str) -> str:
    """``sql`` with the endpoint's tables and indexes named with ``prefix``."""
    template = _templates.get(sql)
    if template is None:
        if len(_templates) > 4096:  # statements built with varying text: keep the cache bounded
            _templates.clear()
        template = _templates[sql] = _template(sql)
    return template.replace(_MARK, prefix)


def _index(path: Path) -> int:
    """The shard number in a shard file's name."""
    return int(path.stem.split("-")[1])


def shard_of(endpoint_id: str, shards: int = SHARDS) -> int:
    """The shard that holds ``endpoint_id`` (case-insensitive, stable across runs)."""
    return zlib.crc32(endpoint_id.lower().encode()) % shards


class Shard:
    """One shard file: one open connection and the endpoints it holds."""

    def __init__(self, path: Path, gate: OutputGate | None) -> None:
        self.store = SqliteStore(path, gate, cached_statements=SHARD_STATEMENT_CACHE, page_size=SHARD_PAGE_BYTES)
        self.store.execute(f"PRAGMA cache_size = -{SHARD_PAGE_CACHE_KIB}")
        self.path = path
        self.wal = self.store.wal
        self.store.execute(
            "CREATE TABLE IF NOT EXISTS shard_members ("
            "endpoint_key TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, ns INTEGER NOT NULL UNIQUE)"
        )
        self.members: dict[str, tuple[str, int]] = {
            str(row["endpoint_key"]): (str(row["endpoint_id"]), int(row["ns"]))
            for row in self.store.execute("SELECT endpoint_key, endpoint_id, ns FROM shard_members")
        }

    def tables(self, endpoint_id: str, *, create: bool) -> EndpointTables | None:
        """The endpoint's tables; None when it has none here and ``create`` is false."""
        key = endpoint_id.lower()
        member = self.members.get(key)
        if member is None:
            if not create:
                return None
            ns = 1 + max((n for _, n in self.members.values()), default=0)
            self.store.transaction(lambda: self._add(key, endpoint_id, ns))
            member = self.members[key] = (endpoint_id, ns)
        return EndpointTables(self, key, member[1])

    def _add(self, key: str, endpoint_id: str, ns: int) -> None:
        """A new member with the current schema made at once: replaying every migration
        (ALTER TABLE checks the whole file's schema each time) costs tens of milliseconds
        per endpoint in a shard of thousands of tables; a new endpoint has no rows to migrate."""
        prefix = f"e{ns}_"
        self.store.execute(
            "INSERT INTO shard_members (endpoint_key, endpoint_id, ns) VALUES (?, ?, ?)", (key, endpoint_id, ns)
        )
        for sql in _CREATE_CURRENT:
            self.store.execute(rewrite(sql, prefix))
        for meta_key, value in _META_CURRENT:
            self.store.execute(f"INSERT INTO {prefix}meta (key, value) VALUES (?, ?)", (meta_key, value))

    def drop(self, tables: EndpointTables) -> None:
        """Remove an endpoint's tables and membership (an endpoint that registered nothing)."""
        prefix = tables.prefix

        def drop_all() -> None:
            for name in sorted(SCHEMA_NAMES):
                kind = self.store.execute("SELECT type FROM sqlite_master WHERE name = ?", (prefix + name,))
                if kind and kind[0]["type"] == "table":  # its indexes go with it
                    self.store.execute(f'DROP TABLE "{prefix}{name}"')
            self.store.execute("DELETE FROM shard_members WHERE endpoint_key = ?", (tables.key,))

        self.store.transaction(drop_all)
        self.members.pop(tables.key, None)

    def close(self) -> None:
        self.store.close()


class EndpointTables:
    """``SqlStore`` for one endpoint inside a shard: its own tables, the shard's connection."""

    def __init__(self, shard: Shard, key: str, ns: int) -> None:
        self.shard = shard
        self.key = key
        self.prefix = f"e{ns}_"
        self.path = shard.path
        self.wal = shard.wal
        # The output gate's number of this endpoint's latest commit: its outputs wait for that
        # one (``OutputGate.wait_for``), not for other endpoints' commits to the same file.
        self.last_commit = 0

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        store = self.shard.store
        before = store.last_commit
        try:
            return self._execute(sql, params)
        finally:
            if store.last_commit != before:  # a write outside a transaction: its own commit
                self.last_commit = store.last_commit

    def _execute(self, sql: str, params: Sequence[SqlValue]) -> list[Row]:
        if sql == HAS_TABLE_SQL and len(params) == 1 and params[0] in SCHEMA_TABLES:
            # ``admission`` asks whether the endpoint has its schema before every agent socket:
            # a member has all of it (made whole when it joined, migrated on every construction),
            # while the question scans the whole shard's schema, a few hundred rows.
            return [{"1": 1}]
        if "sqlite_master" in sql:  # a name asked about as a value (``admission``): ours
            params = tuple(self.prefix + p if isinstance(p, str) and p in SCHEMA_NAMES else p for p in params)
        return self.shard.store.execute(rewrite(sql, self.prefix), params)

    def transaction(self, fn: Callable[[], T]) -> T:
        store = self.shard.store
        before = store.last_commit
        try:
            return store.transaction(fn)
        finally:
            if store.last_commit != before:
                self.last_commit = store.last_commit

    def close(self) -> None:
        """Nothing to close: the shard's connection stays open for all its endpoints."""


class Shards:
    """The shard files of one data directory, opened on first use.

    The number of shards is fixed when the directory gets its first one (``shards`` holds
    it): an endpoint's shard is its id's hash modulo that number, for the directory's life."""

    def __init__(self, directory: Path, gate: OutputGate | None, count: int = SHARDS) -> None:
        self.directory = directory
        self.gate = gate
        recorded = directory / "shards"
        if recorded.exists():
            count = int(recorded.read_text().strip())
        else:
            recorded.write_text(f"{count}\n")
        self.count = count
        self._open: dict[int, Shard] = {}
        self._opening: dict[int, Future[Shard]] = {}  # being opened on a thread (``open_existing``)
        self._urgent: ThreadPoolExecutor | None = None  # opens for ``ready``, made on first need

    def _file(self, index: int) -> Path:
        return self.directory / f"shard-{index:02d}.sqlite3"

    def shard(self, index: int) -> Shard:
        shard = self._open.get(index)
        if shard is None:
            opening = self._opening.pop(index, None)
            if opening is not None and not opening.cancel():
                shard = opening.result()  # a thread is recovering it now: wait for that one
            else:
                shard = Shard(self._file(index), self.gate)  # not started yet: open it here
            self._open[index] = shard
        return shard

    async def ready(self, endpoint_id: str) -> None:
        """Wait, off the event loop, until the shard of ``endpoint_id`` is open if the start's
        pass is opening it (``open_existing``); at once otherwise.

        After a kill -9 every agent reconnects while the shards are still being opened, and
        opening one recovers its write-ahead log. ``shard`` would open one not started yet on
        the loop, holding every other agent meanwhile; here it is opened on a thread of its
        own, ahead of the pass's queue, and the loop keeps serving."""
        index = shard_of(endpoint_id, self.count)
        opening = self._opening.get(index)
        if opening is None or index in self._open:
            return
        if not opening.running() and not opening.done() and opening.cancel():
            if self._urgent is None:
                self._urgent = ThreadPoolExecutor(
                    max_workers=URGENT_OPEN_THREADS, thread_name_prefix="caisey-shard-open-now"
                )
            opening = self._opening[index] = self._urgent.submit(Shard, self._file(index), self.gate)
        with contextlib.suppress(Exception):  # a failed open is raised again by ``shard``
            await asyncio.wrap_future(opening)
        if self._opening.get(index) is opening:
            self.shard(index)  # open now: take it out of ``_opening``

    def tables(self, endpoint_id: str, *, create: bool) -> EndpointTables | None:
        """An endpoint's tables; a lookup (not ``create``) never makes a shard file."""
        index = shard_of(endpoint_id, self.count)
        if not create and index not in self._open and not self._file(index).exists():
            return None
        return self.shard(index).tables(endpoint_id, create=create)

    async def open_existing(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open every existing shard file on worker threads (a few at a time): the first read
        of a file left by a kill -9 recovers its write-ahead log, and SQLite does that without
        holding the GIL, so the loop keeps accepting the agents that reconnect meanwhile."""
        paths = [p for p in sorted(self.directory.glob(SHARD_GLOB)) if _index(p) not in self._open]
        with ThreadPoolExecutor(max_workers=OPEN_THREADS, thread_name_prefix="caisey-shard-open") as pool:
            for path in paths:
                self._opening[_index(path)] = pool.submit(Shard, path, self.gate)
            pending = list(self._opening.items())
            for index, future in pending:
                try:
                    shard = await asyncio.wrap_future(future, loop=loop)
                except asyncio.CancelledError:
                    if future.cancelled():
                        continue  # ``shard`` needed it first and opened it on the loop
                    raise
                if self._opening.pop(index, None) is future:
                    self._open[index] = shard

    def endpoint_ids(self) -> list[str]:
        """Every endpoint held in an existing shard file (opening those files)."""
        found: list[str] = []
        for path in sorted(self.directory.glob(SHARD_GLOB)):
            index = _index(path)
            found.extend(endpoint_id for endpoint_id, _ in self.shard(index).members.values())
        return found

    def close(self) -> None:
        if self._urgent is not None:
            self._urgent.shutdown(wait=True)
            self._urgent = None
        for shard in self._open.values():
            shard.close()
        self._open.clear()


def locate(directory: Path, endpoint_id: str) -> tuple[Path, str] | None:
    """Where an endpoint's tables are on disk, for tools that read files directly (read-only):
    ``(file, table prefix)``; an old-layout file has the prefix ''. None when it has none."""
    legacy = directory / f"{endpoint_id}.sqlite3"
    if legacy.exists():
        return legacy, ""
    recorded = directory / "shards"
    if not recorded.exists():
        return None
    path = directory / f"shard-{shard_of(endpoint_id, int(recorded.read_text().strip())):02d}.sqlite3"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
            row = db.execute("SELECT ns FROM shard_members WHERE endpoint_key = ?", (endpoint_id.lower(),)).fetchone()
    except sqlite3.Error:
        return None
    return (path, f"e{row[0]}_") if row else None
