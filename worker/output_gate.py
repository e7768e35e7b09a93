"""``OutputGate``: the local host's group commit — nothing leaves before its writes are on disk.

On Cloudflare a Durable Object's output gate holds every response and socket message until
the storage writes made before it are durable. The local host does the same, for the same
reason (persist before send, DESIGN §5), and it is what lets commits share an fsync:

- endpoint files commit with ``synchronous=NORMAL``: the transaction is appended to the
  file's write-ahead log, which survives a crash of this process but not yet a power cut;
- the store tells the gate which file it wrote (``written``);
- before a host sends a frame or a response it awaits ``wait()``, which returns once every
  file written so far has been fsynced. One round syncs every file written since the last
  round, on threads (fsyncs of different files overlap, and the event loop keeps serving
  while the disk works), so a burst of commits costs about one fsync, not one each.

A waiter that arrives while a round is in flight waits for that round and, when it wrote
after the round began, for the next one. A failed fsync fails the waiters (their outputs
are not sent) and the files stay due for the next round.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

SYNC_THREADS = 8


def fsync_path(path: str) -> None:
    """fsync one file by name. A write-ahead log that is gone was checkpointed into its
    database and synced on close (SQLite syncs a checkpoint even at ``synchronous=NORMAL``)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputGate:
    """Group commit for one process: ``written(path)`` after a commit, ``await wait()`` before output."""

    def __init__(self, sync: Callable[[str], None] = fsync_path, threads: int = SYNC_THREADS) -> None:
        self._sync = sync
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="caisey-fsync")
        self._dirty: set[str] = set()
        self._last: dict[str, int] = {}  # path → number of its latest commit not known durable
        self._written = 0  # commits reported so far
        self._durable = 0  # commits known to be on disk
        self._round: asyncio.Future[None] | None = None
        self.rounds = 0  # fsync rounds run (what group commit saves shows here)
        self._closed = False

    def written(self, path: str) -> int:
        """A transaction on ``path`` committed (not yet synced); its number, for ``wait_for``."""
        self._dirty.add(path)
        self._written += 1
        self._last[path] = self._written
        return self._written

    @property
    def pending(self) -> bool:
        return self._durable < self._written

    async def wait(self, path: str | None = None) -> None:
        """Return once every commit reported before this call is on disk — or, given ``path``,
        every commit on that file: an actor's outputs depend on its own writes only (a Durable
        Object's gate, too, holds an object's output for that object's writes)."""
        await self.wait_for(self._written if path is None else self._last.get(path, 0))

    async def wait_for(self, commit: int) -> None:
        """Return once commit number ``commit`` (and every one before it) is on disk. For an
        actor sharing its file with others (``worker.shard_store``): its output waits for its
        own last commit, not for the latest commit of the file — a steady heartbeat's ack, which
        follows no write of its own, leaves at once however busy its shard is."""
        while self._durable < commit:
            if self._round is None:
                self._round = asyncio.ensure_future(self._sync_round())
            await asyncio.shield(self._round)

    async def _sync_round(self) -> None:
        upto, paths, self._dirty = self._written, self._dirty, set()
        loop = asyncio.get_running_loop()
        # One job per thread, not per file: handing work to a thread costs the event loop
        # more than an fsync costs it, and a busy round has hundreds of files.
        ordered = sorted(paths)
        chunks = [ordered[i :: self._threads] for i in range(min(self._threads, len(ordered)))]
        try:
            if self._closed:
                # Shutting down: an output still in flight (a frame an agent sent as the bridge
                # stopped) is synced here, on the loop — the threads are gone.
                self._sync_all(ordered)
            else:
                await asyncio.gather(*(loop.run_in_executor(self._pool, self._sync_all, c) for c in chunks))
        except BaseException:
            self._dirty |= paths  # not known to be durable: the next round tries again
            raise
        finally:
            self._round = None
        self._durable = max(self._durable, upto)
        for path in paths:
            if self._last.get(path, 0) <= upto:
                del self._last[path]
        self.rounds += 1

    def _sync_all(self, paths: list[str]) -> None:
        for path in paths:
            self._sync(path)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
