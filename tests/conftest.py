"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bridge_hosts import BridgeUnderTest, LocalBridgeProcess
from tests.xvfb import xdisplay

__all__ = ["HOSTS", "bridge", "bridge_of_kind", "local_bridge", "xdisplay"]

HOSTS = ["local"]
try:  # the Workers stand-in host, when present
    from tests.workers_host import WorkersBridge  # noqa: F401

    HOSTS.append("workers")
except ImportError:
    pass


@pytest.fixture(scope="module")
def local_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBridgeProcess]:
    """The local host as a real process, one per test module (each test uses its own endpoint)."""
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("bridge") / "data", heartbeat_ms=2_000)
    bridge.start()
    yield bridge
    bridge.kill()


@pytest.fixture(params=HOSTS)
def bridge(request: pytest.FixtureRequest) -> BridgeUnderTest:
    """The bridge under test, on every host: the local process and the Worker on the stand-in.
    (tests/test_bridge_behaviour.py adds a bridge at a URL.)"""
    return bridge_of_kind(request, request.param)


def bridge_of_kind(request: pytest.FixtureRequest, kind: str) -> BridgeUnderTest:
    if kind == "local":
        local: BridgeUnderTest = request.getfixturevalue("local_bridge")
        return local
    from tests.workers_host import WorkersBridge

    return WorkersBridge()
