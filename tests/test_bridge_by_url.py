"""The behaviour suite's third host kind, ``url`` (any running bridge, known by
``CAISEY_BRIDGE_URL`` and ``CAISEY_BRIDGE_ADMIN_TOKEN``), exercised the way
``scripts/test-worker`` uses it: here against the local host started as a separate process,
so the by-URL path itself — environment, fixture, skips — is tested in CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge_hosts import (
    BRIDGE_ADMIN_TOKEN_ENV,
    BRIDGE_URL_ENV,
    ROOT,
    LocalBridgeProcess,
    UrlBridge,
    skip_without_host_access,
)

BEHAVIOUR = "tests/test_bridge_behaviour.py"


@pytest.mark.slow
def test_the_behaviour_suite_passes_against_a_bridge_known_only_by_its_url(tmp_path: Path) -> None:
    bridge = LocalBridgeProcess(tmp_path / "data", admin_token="cst_by-url-admin", heartbeat_ms=2_000)
    bridge.start()
    try:
        env = dict(os.environ, **{BRIDGE_URL_ENV: bridge.url + "/", BRIDGE_ADMIN_TOKEN_ENV: bridge.admin_token})
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "url", BEHAVIOUR],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        bridge.kill()
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    summary = re.search(r"(\d+) passed", done.stdout)
    behaviour = (ROOT / BEHAVIOUR).read_text()
    tests = len(re.findall(r"^async def test_", behaviour, re.M))
    skipped = int(m.group(1)) if (m := re.search(r"(\d+) skipped", done.stdout)) else 0
    assert summary is not None and int(summary.group(1)) + skipped == tests, tail
    # the suite did talk to this process: its admin token enrolled endpoints there
    assert any((tmp_path / "data" / "endpoints").iterdir())


def test_a_test_that_needs_the_host_itself_skips_for_a_url_bridge_saying_why() -> None:
    with pytest.raises(pytest.skip.Exception, match="kills the bridge process: the bridge at CAISEY_BRIDGE_URL"):
        skip_without_host_access(UrlBridge("http://bridge.example", "cst_x"), "kills the bridge process")
    skip_without_host_access(LocalBridgeProcess(Path("/nonexistent/data")), "kills the bridge process")  # runs


def test_the_url_kind_needs_its_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BRIDGE_URL_ENV, "http://bridge.example/")
    monkeypatch.delenv(BRIDGE_ADMIN_TOKEN_ENV, raising=False)
    with pytest.raises(RuntimeError, match=BRIDGE_ADMIN_TOKEN_ENV):
        UrlBridge.from_env()
    monkeypatch.setenv(BRIDGE_ADMIN_TOKEN_ENV, "cst_x")
    bridge = UrlBridge.from_env()
    assert bridge is not None and bridge.url == "http://bridge.example" and bridge.admin_token == "cst_x"
    monkeypatch.delenv(BRIDGE_URL_ENV)
    assert UrlBridge.from_env() is None
