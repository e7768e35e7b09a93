"""Issue 11 item 7: no request without valid credentials writes storage anywhere.

An unauthenticated WebSocket upgrade to ``/api/endpoints/<any>/agent``, or ``POST
/api/agent/enroll`` with a junk token, used to construct that endpoint's Durable Object and
write its schema (≈70 KB each in the stand-in): storage and billing grew with no credentials
at all. Here 100 such requests of each kind (and technician calls without a valid token) are
sent to the Worker on the Workers stand-in, which counts the objects that have storage, and
to the real local host process, whose data directory must not gain a file or a byte.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from tests.bridge_hosts import LocalBridgeProcess, Resp, enroll
from tests.workers_host import WorkersBridge

ATTEMPTS = 100


def _junk_requests(i: int, registered: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Requests an attacker without credentials can send: (kind, endpoint, details)."""
    name = f"junk-{i}-{uuid.uuid4().hex[:8]}"
    # Shaped like real credentials, so only the endpoint itself can tell they are wrong.
    plausible_secret = "csa_" + hashlib.sha256(name.encode()).hexdigest()[:43]
    plausible_token = f"cse_{name}~" + hashlib.sha256(name.encode()).hexdigest()[:32]
    return [
        ("agent", name, {"secret": None}),
        ("agent", name, {"secret": "csa_junk"}),
        ("agent", name, {"secret": plausible_secret}),
        ("agent", registered, {"secret": plausible_secret}),
        ("enroll", name, {"token": plausible_token}),
        ("enroll", name, {"token": f"cse_{name}~x"}),
        ("enroll", name, {"token": "junk"}),
        ("enroll", registered, {"token": f"cse_{registered}~" + "A" * 32}),
        ("technician", name, {"token": None}),
        ("technician", name, {"token": "cst_wrong-" + name}),
    ]


async def _attack(bridge: Any, registered: str) -> list[int]:
    statuses = []
    for i in range(ATTEMPTS):
        for kind, endpoint_id, details in _junk_requests(i, registered):
            if kind == "agent":
                result = await bridge.connect_agent(endpoint_id, details["secret"])
                assert isinstance(result, Resp), "a socket opened without credentials"
                statuses.append(result.status)
            elif kind == "enroll":
                r = await bridge.request("POST", "/api/agent/enroll", body={"enrollment_token": details["token"]})
                statuses.append(r.status)
            else:
                r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts", token=details["token"])
                statuses.append(r.status)
    return statuses


async def test_the_worker_creates_no_storage_for_requests_without_credentials() -> None:
    # A fresh deployment: not even the fleet index exists yet.
    bridge = WorkersBridge()
    harness = bridge.harness
    statuses = await _attack(bridge, "not-registered-either")
    assert set(statuses) <= {401, 404}, sorted(set(statuses))
    assert harness.objects_with_storage() == []
    # A deployment in use: a registered endpoint (and the fleet index) gain no write either.
    ep = await enroll(bridge, "lap-registered")
    writes_before = {name: harness.record(*name.split("/", 1)).db.writes for name in harness.objects_with_storage()}
    statuses = await _attack(bridge, ep.endpoint_id)
    assert set(statuses) <= {401, 404}, sorted(set(statuses))
    writes_after = {name: harness.record(*name.split("/", 1)).db.writes for name in harness.objects_with_storage()}
    assert writes_after == writes_before  # same objects with storage, not one more write
    assert len(writes_before) == 2  # the fleet index and the one registered endpoint


def _snapshot(data: Path) -> dict[str, str]:
    """Every file's hash; SQLite's ``-shm`` index is left out (readers touch it, it is not data)."""
    return {
        str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data.rglob("*"))
        if p.is_file() and not p.name.endswith("-shm")
    }


async def test_the_local_host_writes_no_file_for_requests_without_credentials(tmp_path: Path) -> None:
    bridge = LocalBridgeProcess(tmp_path / "data")
    bridge.start()
    try:
        ep = await enroll(bridge, "lap-registered")
        # Let the registration's writes settle (fleet line flushed, WAL checkpoints).
        await bridge.advance(1_500)
        before = _snapshot(bridge.data)
        statuses = await _attack(bridge, ep.endpoint_id)
        assert set(statuses) <= {401, 404}, sorted(set(statuses))
        await bridge.advance(500)
        after = _snapshot(bridge.data)
        assert sorted(after) == sorted(before)  # no new file (no endpoint created)
        changed = [name for name in after if after[name] != before[name]]
        assert changed == [], changed
    finally:
        bridge.kill()
