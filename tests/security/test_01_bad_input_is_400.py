"""Issue 11 item 1: input that made either host answer 500 is a documented 400, and nothing
is written. (The property test over the whole API is ``test_01_api_property.py``.)"""

from __future__ import annotations

import json

import pytest

from tests.bridge_hosts import BridgeUnderTest, LocalBridgeProcess, enroll
from tests.security.conftest import PROMPT, eid


def _error(body: object) -> str:
    assert isinstance(body, dict) and set(body["error"]) == {"code", "message"}, body
    code = body["error"]["code"]
    assert isinstance(code, str) and isinstance(body["error"]["message"], str)
    return code


async def _prompts(bridge: BridgeUnderTest, endpoint_id: str) -> list[dict]:
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token)
    assert r.status == 200, r.body
    return list(r.body["prompts"])


@pytest.mark.parametrize("limit", ["²", "½", "٣", "１０", "-1", "0", "201", "1e3", ""])
async def test_a_limit_that_is_not_ascii_digits_in_range_is_400(bridge: BridgeUnderTest, limit: str) -> None:
    ep = await enroll(bridge, eid())
    from urllib.parse import quote

    r = await bridge.request(
        "GET", f"/api/endpoints/{ep.endpoint_id}/prompts?limit={quote(limit)}", token=bridge.admin_token
    )
    assert r.status == 400 and _error(r.body) == "invalid_limit", (r.status, r.body)


@pytest.mark.parametrize(
    ("expires_in", "code"),
    [
        ("NaN", "malformed_json"),  # not JSON (RFC 8259), though Python's parser reads it
        ("Infinity", "malformed_json"),
        ("-Infinity", "malformed_json"),
        ("1e308", "invalid_expiry"),  # * 1000 overflows to inf
        ("1e999", "invalid_expiry"),  # valid JSON that parses to inf
        ("-1e999", "invalid_expiry"),
        ("1" + "0" * 400, "invalid_expiry"),
    ],
)
async def test_an_expiry_that_is_not_a_finite_number_is_400(
    bridge: BridgeUnderTest, expires_in: str, code: str
) -> None:
    ep = await enroll(bridge, eid())
    body = json.dumps(PROMPT)[:-1] + f', "expires_in": {expires_in}}}'
    r = await bridge.request(
        "POST", f"/api/endpoints/{ep.endpoint_id}/prompts", token=bridge.admin_token, raw=body.encode()
    )
    assert r.status == 400 and _error(r.body) == code, (r.status, r.body)
    assert await _prompts(bridge, ep.endpoint_id) == []


@pytest.mark.parametrize("field", ["title", "message", "action"])
async def test_a_lone_surrogate_in_a_prompt_text_is_400(bridge: BridgeUnderTest, field: str) -> None:
    ep = await enroll(bridge, eid())
    fields = dict(PROMPT, expires_in=60)
    fields[field] = "Allow \ud800 this"
    raw = json.dumps(fields).encode()  # ensure_ascii: the surrogate travels as the escape "\ud800"
    assert b"\\ud800" in raw
    r = await bridge.request("POST", f"/api/endpoints/{ep.endpoint_id}/prompts", token=bridge.admin_token, raw=raw)
    assert r.status == 400 and _error(r.body) == "invalid_field", (r.status, r.body)
    assert field in r.body["error"]["message"]
    assert await _prompts(bridge, ep.endpoint_id) == []


async def test_a_lone_surrogate_elsewhere_is_400_or_404(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    path = f"/api/endpoints/{ep.endpoint_id}/prompts"
    raw = json.dumps(dict(PROMPT, expires_in=60, supersedes="\udc00")).encode()
    r = await bridge.request("POST", path, token=bridge.admin_token, raw=raw)
    assert r.status == 404 and _error(r.body) == "unknown_prompt", (r.status, r.body)
    raw = json.dumps({"enrollment_token": "cse_" + ep.endpoint_id + "~\ud800"}).encode()
    r = await bridge.request("POST", "/api/agent/enroll", raw=raw)
    assert r.status == 401 and _error(r.body) == "invalid_enrollment_token", (r.status, r.body)
    assert await _prompts(bridge, ep.endpoint_id) == []


async def test_a_lone_surrogate_in_a_label_is_400_and_registers_nothing(bridge: BridgeUnderTest) -> None:
    endpoint_id = eid()
    raw = json.dumps({"endpoint_id": endpoint_id, "label": "Reception \udfff PC"}).encode()
    r = await bridge.request("POST", "/api/enrollments", token=bridge.admin_token, raw=raw)
    assert r.status == 400 and _error(r.body) == "invalid_field", (r.status, r.body)
    r = await bridge.request("GET", f"/api/endpoints/{endpoint_id}/prompts", token=bridge.admin_token)
    assert r.status == 404 and _error(r.body) == "unknown_endpoint"
    fleet = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    assert endpoint_id not in {e["endpoint_id"] for e in fleet.body["endpoints"]}
    if isinstance(bridge, LocalBridgeProcess):  # no stray endpoint file
        assert not list((bridge.data / "endpoints").glob(f"{endpoint_id}*"))


async def test_a_refused_first_enrollment_leaves_no_endpoint_file(local_bridge: LocalBridgeProcess) -> None:
    """Whatever the actor refuses on a first enrollment, the local host deletes the file it opened."""
    endpoint_id = eid()
    r = await local_bridge.request(
        "POST", "/api/enrollments", token=local_bridge.admin_token, body={"endpoint_id": endpoint_id, "label": 7}
    )
    assert r.status == 400 and _error(r.body) == "invalid_field"
    assert not list((local_bridge.data / "endpoints").glob(f"{endpoint_id}*"))


async def test_a_superscript_content_length_is_not_a_500_on_the_worker() -> None:
    """The Worker read Content-Length with ``str.isdigit`` too ("²" passes, ``int`` refuses)."""
    from tests.workers_host import WorkersBridge

    bridge = WorkersBridge()
    r = await bridge.harness.fetch(
        "POST", "/api/enrollments", headers={"authorization": f"Bearer {bridge.admin_token}", "content-length": "²"}
    )
    assert r.status < 500, r.status


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("DELETE", "/api/tokens/%0A", 404, "unknown_token"),  # found by the property test
        ("GET", "/api/endpoints/%0A/prompts", 400, "invalid_endpoint_id"),
        ("GET", "/api/x%0Ay", 404, "not_found"),
    ],
)
async def test_a_newline_in_the_path_gets_the_api_error_shape(
    bridge: BridgeUnderTest, method: str, path: str, status: int, code: str
) -> None:
    """On the local host aiohttp's ``{tail:.*}`` stopped at a newline and answered its own
    text 404; every /api path is the API's, with its JSON error."""
    r = await bridge.request(method, path, token=bridge.admin_token)
    assert (r.status, r.body["error"]["code"]) == (status, code), r.body
