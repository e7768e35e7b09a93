"""``wrangler deploy --dry-run`` builds the upload offline: it must hold the Worker's modules
and nothing else (DESIGN §2: deployable with ``wrangler deploy`` as the repository stands).

Needs the pinned wrangler in node_modules (``npm ci``; ``scripts/setup`` runs it). A missing
install fails this test — a skipped check here would let a broken deploy pass CI.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Not uploaded (scripts/stage-worker.mjs): the main module comes from `main`; the local host
# and its sqlite3 store are not part of the Worker.
NOT_UPLOADED = {
    "worker/entry.py",
    "worker/local_host.py",
    "worker/sqlite_store.py",
    "worker/ed25519_local.py",
    "worker/webhook_sender.py",
}
# What the Worker may import besides the standard library and its own packages.
RUNTIME_MODULES = {"js", "pyodide", "workers"}


def expected_modules() -> set[str]:
    names = {"entry.py"}
    for package in ("caisey", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            name = path.relative_to(ROOT).as_posix()
            if "__pycache__" not in name and name not in NOT_UPLOADED:
                names.add(name)
    return names


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    wrangler = ROOT / "node_modules" / "wrangler" / "package.json"
    if not wrangler.exists() or shutil.which("npx") is None:
        pytest.fail("wrangler is not installed: run `npm ci` in the repository root (scripts/setup does it)")
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["wrangler"]
    installed = json.loads(wrangler.read_text())["version"]
    assert installed == pinned, f"node_modules has wrangler {installed}, package.json pins {pinned}: run `npm ci`"
    out = tmp_path_factory.mktemp("wrangler-out")
    env = dict(
        os.environ,
        WRANGLER_SEND_METRICS="false",
        WRANGLER_HIDE_BANNER="true",
        WRANGLER_LOG_PATH=str(out.parent / "wrangler-logs"),
        NO_COLOR="1",
        CI="1",
    )
    done = subprocess.run(
        ["npx", "--no-install", "wrangler", "deploy", "--dry-run", "--outdir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout + done.stderr


def test_the_upload_is_entry_plus_the_worker_and_caisey_packages(dry_run: tuple[Path, str]) -> None:
    out, _ = dry_run
    uploaded = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"README.md"}
    assert uploaded == expected_modules()
    assert not {name for name in uploaded if name.split("/")[0] in ("agent", "tests", "bench", "sim", "console_static")}
    assert (out / "entry.py").read_bytes() == (ROOT / "worker" / "entry.py").read_bytes()


def test_the_bindings_are_the_ones_entry_py_expects(dry_run: tuple[Path, str]) -> None:
    _, output = dry_run
    assert "env.ENDPOINTS (EndpointBridgeObject)" in output
    assert "env.FLEET (FleetIndexObject)" in output
    assert "env.ASSETS" in output


def test_uploaded_modules_import_only_the_standard_library_the_runtime_and_each_other(
    dry_run: tuple[Path, str],
) -> None:
    out, _ = dry_run
    allowed = set(sys.stdlib_module_names) | RUNTIME_MODULES | {"worker", "caisey"}
    offending = []
    for path in sorted(out.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            offending += [f"{path.relative_to(out)}: {root}" for root in roots if root not in allowed]
    assert not offending, "the Worker would fail to import: " + ", ".join(offending)


def test_everything_entry_imports_from_its_packages_is_uploaded(dry_run: tuple[Path, str]) -> None:
    out, _ = dry_run
    seen: set[str] = set()
    todo = [out / "entry.py"]
    missing = []
    while todo:
        path = todo.pop()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in ("worker", "caisey") or name in seen:
                    continue
                seen.add(name)
                module = out / (name.replace(".", "/") + ".py")
                package = out / name.replace(".", "/") / "__init__.py"
                if module.exists():
                    todo.append(module)
                elif package.exists():
                    todo.append(package)
                elif "." in name and (out / (name.rsplit(".", 1)[0].replace(".", "/") + ".py")).exists():
                    continue  # `from worker.api import match`: a name inside an uploaded module
                else:
                    missing.append(name)
    assert not missing, f"entry.py imports modules the upload lacks: {missing}"
