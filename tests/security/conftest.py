"""Fixtures of the security tests (issue 11): the bridge on each host, as in
``tests/test_bridge_behaviour.py`` — the local host as a real process, the Cloudflare
adapter on the Workers stand-in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.bridge_hosts import BridgeUnderTest, LocalBridgeProcess

HOSTS = ["local"]
try:  # the Workers stand-in host, when present
    from tests.workers_host import WorkersBridge  # noqa: F401

    HOSTS.append("workers")
except ImportError:
    pass


@pytest.fixture(scope="module")
def local_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBridgeProcess]:
    bridge = LocalBridgeProcess(tmp_path_factory.mktemp("bridge") / "data", heartbeat_ms=2_000)
    bridge.start()
    yield bridge
    bridge.kill()


@pytest.fixture(params=HOSTS)
def bridge(request: pytest.FixtureRequest) -> BridgeUnderTest:
    if request.param == "local":
        local: BridgeUnderTest = request.getfixturevalue("local_bridge")
        return local
    from tests.workers_host import WorkersBridge

    return WorkersBridge()


def eid() -> str:
    return "ep-" + uuid.uuid4().hex[:10]


PROMPT = {"title": "Allow remote control?", "message": "Alice from the help desk", "action": "remote_control"}
