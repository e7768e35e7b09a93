"""The local host's output gate: nothing is released before the files written ahead of it are
synced, commits queued during a round share the next one, and a failed sync releases nothing."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from worker.output_gate import OutputGate, fsync_path
from worker.sqlite_store import SqliteStore


class RecordingSync:
    """Stands in for fsync: records the paths and blocks until the test lets it go."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.fail: Exception | None = None

    def __call__(self, path: str) -> None:
        self.calls.append(path)
        if not self.release.wait(timeout=10):
            raise TimeoutError("the test never released the sync")
        if self.fail is not None:
            raise self.fail


async def until(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.001)


def test_a_waiter_is_released_only_after_its_file_is_synced() -> None:
    async def scenario() -> None:
        sync = RecordingSync()
        gate = OutputGate(sync)
        gate.written("a-wal")
        waiter = asyncio.ensure_future(gate.wait())
        await until(lambda: sync.calls == ["a-wal"])
        await asyncio.sleep(0.02)
        assert not waiter.done(), "released before the sync returned"
        sync.release.set()
        await asyncio.wait_for(waiter, 5)
        assert not gate.pending and gate.rounds == 1
        gate.close()

    asyncio.run(scenario())


def test_commits_during_a_round_share_the_next_round() -> None:
    async def scenario() -> None:
        sync = RecordingSync()
        gate = OutputGate(sync)
        gate.written("a-wal")
        first = asyncio.ensure_future(gate.wait())
        await until(lambda: len(sync.calls) == 1)
        # Three more commits on two files while the first round is on disk.
        gate.written("b-wal")
        gate.written("c-wal")
        gate.written("b-wal")
        later = [asyncio.ensure_future(gate.wait()) for _ in range(3)]
        sync.release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), 5)
        assert gate.rounds == 2, "the queued commits must share one round"
        assert sorted(sync.calls[1:]) == ["b-wal", "c-wal"]
        gate.close()

    asyncio.run(scenario())


def test_nothing_written_means_nothing_to_wait_for() -> None:
    async def scenario() -> None:
        sync = RecordingSync()
        gate = OutputGate(sync)
        await asyncio.wait_for(gate.wait(), 1)
        assert sync.calls == [] and gate.rounds == 0
        gate.close()

    asyncio.run(scenario())


def test_a_failed_sync_releases_nothing_and_the_file_stays_due() -> None:
    async def scenario() -> None:
        sync = RecordingSync()
        sync.fail = OSError(5, "Input/output error")
        sync.release.set()
        gate = OutputGate(sync)
        gate.written("a-wal")
        with pytest.raises(OSError, match="Input/output error"):
            await gate.wait()
        assert gate.pending
        sync.fail = None
        await asyncio.wait_for(gate.wait(), 5)
        assert not gate.pending and sync.calls == ["a-wal", "a-wal"]
        gate.close()

    asyncio.run(scenario())


def test_the_store_reports_writing_commits_only(tmp_path: Path) -> None:
    reported: list[str] = []

    class Spy(OutputGate):
        def written(self, path: str) -> None:
            reported.append(path)
            super().written(path)

    gate = Spy(fsync_path)
    store = SqliteStore(tmp_path / "e.sqlite3", gate)
    wal = f"{tmp_path / 'e.sqlite3'}-wal"
    assert store.execute("PRAGMA synchronous")[0]["synchronous"] == 1  # NORMAL: the gate syncs
    store.execute("CREATE TABLE t (x INTEGER)")
    assert reported == [wal]  # a write outside a transaction commits on its own
    store.transaction(lambda: store.execute("SELECT * FROM t"))
    assert reported == [wal], "a read-only transaction must not make anyone wait"
    store.transaction(lambda: store.execute("INSERT INTO t VALUES (1)"))
    assert reported == [wal, wal]
    with pytest.raises(RuntimeError):

        def fail() -> None:
            store.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("rolled back")

        store.transaction(fail)
    assert reported == [wal, wal], "a rolled-back transaction wrote nothing"
    asyncio.run(gate.wait())
    assert not gate.pending
    store.close()
    gate.close()
    alone = SqliteStore(tmp_path / "alone.sqlite3")
    assert alone.execute("PRAGMA synchronous")[0]["synchronous"] == 2  # FULL without a gate
    alone.close()


def test_fsync_path_tolerates_a_log_checkpointed_away(tmp_path: Path) -> None:
    fsync_path(str(tmp_path / "gone.sqlite3-wal"))  # no error: closed and checkpointed
    (tmp_path / "here").write_text("x")
    fsync_path(str(tmp_path / "here"))


def test_the_local_host_answers_only_after_the_endpoint_file_is_synced(tmp_path: Path) -> None:
    import json

    from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
    from worker.credentials import secret_hash
    from worker.local_host import LocalBridge

    async def scenario() -> None:
        bridge = LocalBridge(tmp_path, secret_hash("admin-secret"))
        sync = RecordingSync()
        bridge.gate.close()
        bridge.gate = bridge.shards.gate = OutputGate(sync)
        headers = {TECHNICIAN_HEADER: "alice", ROLE_HEADER: "admin", "x-caisey-endpoint": "ep-1"}
        body = json.dumps({"endpoint_id": "ep-1", "label": "one"}).encode()
        call = asyncio.ensure_future(
            bridge.endpoint_call("ep-1", ApiRequest("POST", "/api/enrollments", headers, body))
        )
        await until(lambda: bool(sync.calls))
        # The endpoint's shard file (``worker.shard_store``), which holds its tables.
        assert sync.calls[0] == bridge.endpoints["ep-1"].store.wal
        assert sync.calls[0].startswith(str(tmp_path / "endpoints" / "shard-"))
        await asyncio.sleep(0.02)
        assert not call.done(), "the 201 left before the enrollment was on disk"
        sync.release.set()
        response = await asyncio.wait_for(call, 5)
        assert response.status == 201
        await bridge.stop()

    asyncio.run(scenario())


def test_a_waiter_for_one_file_waits_for_that_file_only() -> None:
    async def scenario() -> None:
        sync = RecordingSync()
        gate = OutputGate(sync)
        gate.written("a-wal")
        # Another actor's output, whose file has nothing unsynced, leaves at once...
        await asyncio.wait_for(gate.wait("b-wal"), 1)
        assert sync.calls == []
        # ...while a's waits for a's commit to be synced.
        waiter = asyncio.ensure_future(gate.wait("a-wal"))
        await until(lambda: sync.calls == ["a-wal"])
        assert not waiter.done()
        sync.release.set()
        await asyncio.wait_for(waiter, 5)
        await asyncio.wait_for(gate.wait("a-wal"), 1)  # synced: nothing more to wait for
        assert gate.rounds == 1
        gate.close()

    asyncio.run(scenario())


def test_an_output_waits_for_its_own_commit_not_for_later_ones_to_the_same_file() -> None:
    """Endpoints sharing a shard file share its write-ahead log: one's output waits for its
    own latest commit (``wait_for``), never for a neighbour's later one."""

    async def scenario() -> None:
        sync = RecordingSync()
        gate = OutputGate(sync)
        mine = gate.written("shard-wal")
        theirs = gate.written("shard-wal")
        assert theirs > mine
        # Nothing of mine is pending beyond ``mine``: a waiter for commit 0 leaves at once.
        await asyncio.wait_for(gate.wait_for(0), 1)
        assert sync.calls == []
        waiter = asyncio.ensure_future(gate.wait_for(mine))
        await until(lambda: sync.calls == ["shard-wal"])
        assert not waiter.done()  # not before the fsync that covers it
        sync.release.set()
        await asyncio.wait_for(waiter, 1)
        gate.close()

    asyncio.run(scenario())


def test_an_output_in_flight_when_the_bridge_stops_is_still_synced_before_it_leaves() -> None:
    """``stop()`` closes the gate's threads while a frame an agent sent may still be waiting:
    its round runs on the loop then — synced, not refused with "cannot schedule new futures
    after shutdown" (a traceback per socket in every benchmark's shutdown before)."""

    async def scenario() -> None:
        sync = RecordingSync()
        sync.release.set()
        gate = OutputGate(sync)
        gate.close()
        commit = gate.written("late-wal")
        await asyncio.wait_for(gate.wait_for(commit), 5)
        assert sync.calls == ["late-wal"] and not gate.pending

    asyncio.run(scenario())
