"""What installs what: the Worker's upload carries no third-party package, under ``wrangler``
and under ``pywrangler`` (workers-py) alike; the agent and the local host get theirs as extras.

pywrangler (read from workers-py 1.17.9's source: ``pywrangler/resolve.py``, ``sync.py``):
``pywrangler dev|deploy|publish|versions|preview`` first run ``sync``, which finds the
``pyproject.toml`` nearest the working directory, compiles ``uv pip compile pyproject.toml``
(that is ``[project].dependencies``, no extras) plus its own ``workers-runtime-sdk`` for
Pyodide into ``pylock.toml``, installs that into ``python_modules/`` next to it, and wrangler
uploads ``python_modules/`` (from the directory of ``wrangler.toml``) with the Worker, minus
``[python_modules] exclude``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Third-party distributions by the top-level module they provide.
DISTRIBUTIONS = {"aiohttp": "aiohttp", "platformdirs": "platformdirs", "cryptography": "cryptography"}


def pywrangler_requirements(start: Path) -> list[str]:
    """What pywrangler 1.17.9 resolves for the project (``resolve.parse_requirements``): the
    ``[project].dependencies`` of the nearest ``pyproject.toml`` at or above ``start``."""
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            data = tomllib.loads((directory / "pyproject.toml").read_text())
            return list(data.get("project", {}).get("dependencies", []))
    raise AssertionError("pywrangler would find no pyproject.toml")


def test_pywrangler_would_vendor_none_of_the_projects_packages() -> None:
    assert pywrangler_requirements(ROOT) == []  # wrangler.toml's directory: where pywrangler runs
    try:
        from pywrangler.resolve import parse_requirements  # when workers-py is installed
    except ImportError:
        return
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)
        assert parse_requirements() == []
    finally:
        os.chdir(cwd)


def third_party_imports(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            found.update(DISTRIBUTIONS[r] for r in roots if r in DISTRIBUTIONS)
    return found


def names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for r in requirements}


def test_each_extra_holds_what_its_part_imports() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    agent = third_party_imports(sorted((ROOT / "agent").rglob("*.py")))
    bridge = third_party_imports(
        [p for p in sorted((ROOT / "worker").rglob("*.py")) if p.name != "entry.py"]
    )  # the local host, its store, Ed25519 and caisey-audit
    assert agent == {"aiohttp", "platformdirs", "cryptography"}
    assert agent <= names(extras["agent"])
    assert bridge == {"aiohttp", "cryptography"}
    assert bridge <= names(extras["bridge"])
    assert "caisey[agent,bridge]" in extras["dev"]  # the test suite drives both
    assert third_party_imports(sorted((ROOT / "caisey").rglob("*.py"))) == set()


def test_every_install_line_names_the_extra_it_needs() -> None:
    lines = {
        path: [
            line for line in (ROOT / path).read_text().splitlines() if "pip install" in line or "pipx install" in line
        ]
        for path in ("README.md", "agent/INSTALL.md", "scripts/setup")
    }
    project_installs = [
        (path, line)
        for path, found in lines.items()
        for line in found
        if "caisey" in line or " -e " in line or "/path/to" in line
    ]
    assert project_installs
    for path, line in project_installs:
        assert "[" in line, f"{path}: {line.strip()!r} installs the project without an extra: nothing runs"


@pytest.fixture(scope="module")
def dry_run_with_vendored_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``wrangler deploy --dry-run`` on a copy of the project with a ``python_modules/`` as
    ``pywrangler sync`` leaves it (its SDK and a stray package)."""
    wrangler = ROOT / "node_modules" / ".bin" / "wrangler"
    if not wrangler.exists():
        pytest.fail("wrangler is not installed: run `npm ci` in the repository root (scripts/setup does it)")
    tree = tmp_path_factory.mktemp("pywrangler-project")
    for name in ("caisey", "worker", "console_static", "scripts"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "wrangler.toml", tree)
    for module in ("workers/__init__.py", "workers/_workers.js", "aiohttp/__init__.py"):
        (tree / "python_modules" / module).parent.mkdir(parents=True, exist_ok=True)
        (tree / "python_modules" / module).write_text("# vendored\n")
    out = tree / "out"
    env = dict(os.environ, WRANGLER_SEND_METRICS="false", WRANGLER_HIDE_BANNER="true", NO_COLOR="1", CI="1")
    env["WRANGLER_LOG_PATH"] = str(tree / "logs")
    done = subprocess.run(
        [str(wrangler), "deploy", "--dry-run", "--outdir", str(out)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_nothing_vendored_is_uploaded_even_when_python_modules_exists(dry_run_with_vendored_modules: Path) -> None:
    out = dry_run_with_vendored_modules
    assert (out / "entry.py").is_file() and (out / "worker" / "endpoint.py").is_file()
    assert not (out / "python_modules").exists(), sorted(p.name for p in (out / "python_modules").rglob("*"))
