"""Issue 11 item 6: endpoint ids on case-insensitive file systems. "LAPTOP" and "laptop"
are one file on macOS and Windows: a second id differing only in case is refused (409
``endpoint_id_conflict``, the first keeps its label), the local host never opens one file in
two actors, and Windows device names (CON, nul, COM1, LPT9 …, with any extension) are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bridge_hosts import BridgeUnderTest, enroll
from tests.security.conftest import eid
from worker.local_host import LocalBridge


async def test_an_id_differing_only_in_case_is_a_conflict(bridge: BridgeUnderTest) -> None:
    base = eid()
    upper, lower = base.upper(), base.lower()
    first = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": upper, "label": "Reception PC"}
    )
    assert first.status == 201
    for other in (lower, base.capitalize()):
        r = await bridge.request(
            "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": other, "label": "Hijacked"}
        )
        assert r.status == 409 and r.body["error"]["code"] == "endpoint_id_conflict", r.body
        assert upper in r.body["error"]["message"]
        gone = await bridge.request("GET", f"/api/endpoints/{other}/prompts", token=bridge.admin_token)
        assert gone.status == 404 and gone.body["error"]["code"] == "unknown_endpoint"
    fleet = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    lines = [e for e in fleet.body["endpoints"] if e["endpoint_id"].lower() == lower]
    assert [(e["endpoint_id"], e["label"]) for e in lines] == [(upper, "Reception PC")]
    again = await bridge.request(  # the same id in the same case is a re-enrollment, as before
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": upper}
    )
    assert again.status == 201


@pytest.mark.parametrize("endpoint_id", ["CON", "con", "nul", "Nul.laptop", "PRN", "aux", "COM1", "com9.x", "LPT9"])
async def test_reserved_device_names_are_refused(bridge: BridgeUnderTest, endpoint_id: str) -> None:
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id})
    assert r.status == 400 and r.body["error"]["code"] == "invalid_endpoint_id", r.body


@pytest.mark.parametrize("endpoint_id", ["console-1", "com10", "lpt", "nullable", "auxiliary.pc"])
async def test_names_that_only_look_like_devices_are_fine(bridge: BridgeUnderTest, endpoint_id: str) -> None:
    await enroll(bridge, endpoint_id)


async def test_the_local_host_opens_one_actor_per_file_whatever_the_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a case-insensitive file system "laptop.sqlite3" *is* "LAPTOP.sqlite3". Simulated here
    by resolving every endpoint's file name in lower case, as such a file system would."""
    monkeypatch.setattr(
        LocalBridge, "_path", lambda self, endpoint_id: self.data / "endpoints" / f"{endpoint_id.lower()}.sqlite3"
    )
    bridge = LocalBridge(tmp_path / "data", "0" * 64)
    try:
        upper = bridge.endpoint("LAPTOP", create=True)
        assert upper is not None
        lower = bridge.endpoint("laptop")
        assert lower is upper, "a second actor opened the same file"
        assert len(bridge.endpoints) == 1
    finally:
        await bridge.stop()
