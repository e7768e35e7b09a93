"""Issue 11 item 5: the local host's data at rest. The data directory is 0700 and every file
in it 0600 — the SQLite files with their -wal and -shm, the admin token — and a data
directory other users can write to is refused at start. Real ``caisey-bridge serve`` processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge_hosts import ROOT, LocalBridgeProcess, enroll, free_port
from tests.security.conftest import PROMPT
from worker.shard_store import locate


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _all_private(data: Path) -> list[str]:
    """Every path under ``data`` whose mode lets another user in (should be empty)."""
    wrong = []
    for path in [data, *data.rglob("*")]:
        expected = 0o700 if path.is_dir() else 0o600
        if _mode(path) != expected:
            wrong.append(f"{path.relative_to(data.parent)} {_mode(path):04o}")
    return wrong


async def test_a_new_data_dir_and_every_file_in_it_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a usual login umask: files would be born 0644
    try:
        bridge = LocalBridgeProcess(tmp_path / "data")
        bridge.start()
    finally:
        os.umask(old_umask)
    try:
        ep = await enroll(bridge, "laptop-1", label="Reception")
        r = await bridge.request(
            "POST",
            f"/api/endpoints/{ep.endpoint_id}/prompts",
            token=bridge.admin_token,
            body=dict(PROMPT, expires_in=60),
        )
        assert r.status == 201
        files = {p.name for p in (tmp_path / "data").rglob("*")}
        # The files that hold prompt texts, technician names and token hashes, with their WAL and shm.
        assert {"fleet.sqlite3", "fleet.sqlite3-wal", "fleet.sqlite3-shm", "endpoints"} <= files, files
        shard = locate(tmp_path / "data" / "endpoints", "laptop-1")
        assert shard is not None, files
        assert {shard[0].name, f"{shard[0].name}-wal", f"{shard[0].name}-shm", "shards"} <= files, files
        assert _all_private(tmp_path / "data") == []
    finally:
        bridge.kill()


async def test_an_existing_data_dir_is_made_private_at_start(tmp_path: Path) -> None:
    """An install from before: 0755 directories, 0644 files — tightened, and it still serves."""
    data = tmp_path / "data"
    bridge = LocalBridgeProcess(data)
    bridge.start()
    await enroll(bridge, "laptop-2")
    bridge.terminate()
    for path in [data, *data.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    bridge.start()
    try:
        assert _all_private(data) == []
        r = await bridge.request("GET", "/api/endpoints/laptop-2/prompts", token=bridge.admin_token)
        assert r.status == 200
    finally:
        bridge.kill()


def test_the_admin_token_file_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "CAISEY_ADMIN_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.local_host", "serve", "--data", str(data), "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert b"admin token" in proc.stdout.readline()
        assert _mode(data / "admin-token") == 0o600 and _mode(data) == 0o700
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize(("where", "mode"), [("data", 0o777), ("data", 0o775), ("endpoints", 0o757)])
def test_a_data_dir_others_can_write_to_is_refused(tmp_path: Path, where: str, mode: int) -> None:
    data = tmp_path / "data"
    (data / "endpoints").mkdir(parents=True)
    os.chmod(data if where == "data" else data / "endpoints", mode)
    proc = subprocess.run(
        [sys.executable, "-m", "worker.local_host", "serve", "--data", str(data), "--port", str(free_port())],
        cwd=ROOT,
        env=dict(os.environ, CAISEY_ADMIN_TOKEN="cst_x"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "refusing to start" in proc.stderr and "writable by group or others" in proc.stderr, proc.stderr
    assert not (data / "fleet.sqlite3").exists()  # nothing was written there
