"""Issue 11 item 9: token names. "Admin" and "ADMIN" would read as the built-in admin in
audit trails (``created_by``, ``cancelled_by``, event ``detail.by``): reserved names are
refused in any case, and a name differing from an existing one only in case is taken."""

from __future__ import annotations

import pytest

from tests.bridge_hosts import BridgeUnderTest, enroll
from tests.security.conftest import PROMPT, eid


@pytest.mark.parametrize("name", ["admin", "Admin", "ADMIN", "aDmIn", "Unknown", "SYSTEM", "Bridge", "runtime"])
async def test_reserved_names_are_refused_in_any_case(bridge: BridgeUnderTest, name: str) -> None:
    r = await bridge.request("POST", "/api/tokens", token=bridge.admin_token, body={"name": name, "role": "admin"})
    assert r.status == 400 and r.body["error"]["code"] == "reserved_name", r.body


async def test_a_name_differing_only_in_case_is_taken(bridge: BridgeUnderTest) -> None:
    name = "bob-" + eid()
    first = await bridge.request("POST", "/api/tokens", token=bridge.admin_token, body={"name": name})
    assert first.status == 201
    r = await bridge.request("POST", "/api/tokens", token=bridge.admin_token, body={"name": name.upper()})
    assert r.status == 409 and r.body["error"]["code"] == "token_exists", r.body


async def test_the_audit_trail_names_only_the_real_admin_as_admin(bridge: BridgeUnderTest) -> None:
    """The built-in admin is the only "admin" a prompt's trail can show."""
    ep = await enroll(bridge, eid())
    alice = await bridge.request("POST", "/api/tokens", token=bridge.admin_token, body={"name": "alice-" + eid()})
    r = await bridge.request(
        "POST", f"/api/endpoints/{ep.endpoint_id}/prompts", token=alice.body["token"], body=dict(PROMPT, expires_in=60)
    )
    assert r.status == 201 and r.body["created_by"] == alice.body["name"]
    r = await bridge.request(
        "POST", f"/api/endpoints/{ep.endpoint_id}/prompts", token=bridge.admin_token, body=dict(PROMPT, expires_in=60)
    )
    assert r.body["created_by"] == "admin"
