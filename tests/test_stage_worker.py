"""``scripts/stage-worker.mjs`` stages the Worker's modules atomically: ``wrangler dev`` reloads
while it runs, and once read the upload directory half copied
("ModuleNotFoundError: No module named 'caisey.errors'", docs/WORKERS_RUNTIME.md "Observed later").

The script runs on a copy of the repository's ``caisey/``, ``worker/`` and ``scripts/`` in a
temporary directory, with ``fs.copyFileSync`` wrapped (a ``node --import`` module) so that every
copy first looks at the upload directory as a concurrent reader would, and one copy can fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HOOK = """
import fs from "node:fs";
import { join } from "node:path";
import { syncBuiltinESMExports } from "node:module";

const out = process.env.STAGE_OUT, log = process.env.STAGE_LOG;
const expected = JSON.parse(process.env.STAGE_EXPECTED || "null");
const failAt = Number(process.env.STAGE_FAIL_AT || 0);
const copy = fs.copyFileSync;
let calls = 0;

function listed(dir, prefix = "") {
  if (!fs.existsSync(dir)) return null;
  const names = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const name = prefix + entry.name;
    if (entry.isDirectory()) names.push(...listed(join(dir, entry.name), name + "/"));
    else names.push(name);
  }
  return names.sort();
}

fs.copyFileSync = (...args) => {
  calls += 1;
  if (expected !== null) {
    const seen = listed(out);
    if (JSON.stringify(seen) !== JSON.stringify(expected)) {
      fs.appendFileSync(log, JSON.stringify({ call: calls, seen: seen === null ? null : seen.length }) + "\\n");
    }
  }
  if (calls === failAt) throw new Error("disk full (simulated)");
  return copy(...args);
};
syncBuiltinESMExports();
"""


def modules(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is not installed (scripts/setup needs Node 20)")
    for name in ("caisey", "worker"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "stage-worker.mjs", tmp_path / "scripts")
    (tmp_path / "hook.mjs").write_text(HOOK)
    return tmp_path


def stage(tree: Path, **env: str) -> subprocess.CompletedProcess[str]:
    out = tree / "build" / "worker-upload"
    return subprocess.run(
        ["node", "--import", "./hook.mjs", "scripts/stage-worker.mjs"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "STAGE_OUT": str(out), "STAGE_LOG": str(tree / "log"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_reader_never_sees_the_upload_directory_half_copied(tree: Path) -> None:
    first = stage(tree)
    assert first.returncode == 0, first.stderr
    out = tree / "build" / "worker-upload"
    staged = modules(out)
    assert "caisey/errors.py" in staged and "worker/endpoint.py" in staged and "worker/entry.py" not in staged
    again = stage(tree, STAGE_EXPECTED=json.dumps(staged))
    assert again.returncode == 0, again.stderr
    log = tree / "log"
    assert not log.exists(), f"read mid-staging: {log.read_text()[:500]}"
    assert modules(out) == staged
    assert sorted(p.name for p in out.parent.iterdir()) == ["worker-upload"]  # no staging left behind


def test_a_staging_that_fails_midway_leaves_the_previous_upload_whole(tree: Path) -> None:
    assert stage(tree).returncode == 0
    out = tree / "build" / "worker-upload"
    staged = modules(out)
    (tree / "caisey" / "zz_new.py").write_text("X = 1\n")
    failed = stage(tree, STAGE_FAIL_AT="5")
    assert failed.returncode != 0 and "disk full" in failed.stderr
    assert modules(out) == staged
    retried = stage(tree)
    assert retried.returncode == 0, retried.stderr
    assert modules(out) == sorted([*staged, "caisey/zz_new.py"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["worker-upload"]  # the failed attempt's copy is gone
