"""The agent's SQLite store and secrets file (DESIGN §6)."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from agent.store import _SCHEMA, DB_FILE, SCHEMA_VERSION, SECRET_FILE, Store, StoreError, default_state_dir
from tests.agent_harness import T0, make_prompt

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL: a commit fsyncs the WAL


@posix_only
def test_secret_file_is_0600_and_the_dir_0700(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.open(state)
    old_umask = os.umask(0o000)  # even a careless umask cannot widen it
    try:
        path = store.write_secret("s3cret")
    finally:
        os.umask(old_umask)
    assert path == state / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert store.read_secret() == "s3cret"
    store.write_secret("rotated")  # replaced atomically, still 0600
    assert store.read_secret() == "rotated"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@posix_only
def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    path = store.write_secret("s3cret")
    path.chmod(0o644)
    with pytest.raises(StoreError, match="readable by others"):
        store.read_secret()


def test_missing_secret_says_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="enroll"):
        Store.open(tmp_path).read_secret()


def test_memory_store_has_no_secrets() -> None:
    with pytest.raises(StoreError):
        Store.memory().write_secret("x")


def test_state_persists_across_reopen(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store.transaction():
        store.insert_prompt(make_prompt("P1"), "D1", T0, "received")
        store.mark_seen("D1", "prompt.deliver", "P1", T0)
        store.outbox_add("R1", "P1", "prompt.receipt", False, '{"frame": 1}', T0)
    store.meta_set("endpoint_id", "ep-1")
    store.close()

    again = Store.open(tmp_path)
    held = again.get_prompt("P1")
    assert held is not None and held.prompt == make_prompt("P1") and held.status == "received"
    assert again.seen("D1") and not again.seen("D2")
    assert [r.id for r in again.outbox_all()] == ["R1"]
    assert again.meta_get("endpoint_id") == "ep-1"
    assert (tmp_path / DB_FILE).exists()


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_prompt(make_prompt("P1"), "D1", T0, "received")
        raise RuntimeError("crash between the two writes")
    assert store.get_prompt("P1") is None


def test_schema_is_idempotent_and_versioned(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    store = Store.open(tmp_path)
    assert store.pragma("user_version") == SCHEMA_VERSION == 4  # 3: display evidence (issue 16), 4: windows
    store._db.execute("PRAGMA user_version=99")
    store.close()
    with pytest.raises(StoreError, match="newer agent"):
        Store.open(tmp_path)


def test_a_version_1_store_gains_the_signature_columns_and_keeps_its_prompts(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_FILE)
    for statement in _SCHEMA.split(";"):  # what agent 0.1 left on disk
        if statement.strip():
            db.execute(statement)
    db.execute(
        "INSERT INTO prompts (prompt_id, seq, copy_json, deliver_id, received_at_ms, status, updated_at_ms) "
        "VALUES ('P1', 1, ?, 'D1', 1, 'received', 1)",
        (json.dumps(dataclasses.asdict(make_prompt("P1"))),),
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = Store.open(tmp_path)
    assert store.pragma("user_version") == SCHEMA_VERSION
    assert store._db.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == 0  # issue 16's tables too
    row = store.get_prompt("P1")
    assert row is not None and row.key_id is None and row.sig is None
    store.update_prompt("P1", 2, status="decided", decision="approve", key_id="k", sig="s")
    row = store.get_prompt("P1")
    assert row is not None and (row.key_id, row.sig) == ("k", "s")


def test_prune_forgets_only_old_final_and_acked(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store.transaction():
        for pid, final_acked, in_outbox in (("OLD", True, False), ("OPEN", False, False), ("OWED", True, True)):
            store.insert_prompt(make_prompt(pid), f"D-{pid}", T0, "closed")
            store.update_prompt(pid, T0, final_acked=final_acked)
            if in_outbox:
                store.outbox_add(f"U-{pid}", pid, "prompt.update", False, "{}", T0)
        store.mark_seen("D-OLD", "prompt.deliver", "OLD", T0)
    assert store.prune(T0 + 1) == 1
    assert store.get_prompt("OLD") is None
    assert store.get_prompt("OPEN") is not None and store.get_prompt("OWED") is not None
    assert not store.seen("D-OLD")


def test_state_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAISEY_AGENT_HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home"
    monkeypatch.delenv("CAISEY_AGENT_HOME")
    assert "caisey-agent" in str(default_state_dir())
