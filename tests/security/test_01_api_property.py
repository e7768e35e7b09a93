"""Issue 11 item 1, the class of bug: no request built from the documented API makes the
local host answer 5xx, and every refusal has the documented error shape.

Hypothesis builds requests from the README's API table — every route and method (and some
that are not routes), path parameters that are valid, unknown or hostile, query strings,
bodies with the documented fields holding any JSON value (NaN, ±Infinity, huge numbers, lone
surrogates, control characters, nesting) or raw bytes, and the documented headers — and
sends them to a real ``caisey-bridge serve`` process over HTTP.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.bridge_hosts import LocalBridgeProcess

ENDPOINT = "prop-laptop"
ERROR_CODES = {  # the README's list of error codes (item 1: "a documented code")
    "malformed_json", "invalid_field", "field_too_long", "invalid_expiry", "invalid_limit",
    "invalid_endpoint_id", "invalid_idempotency_key", "reserved_name", "missing_field",
    "missing_token", "invalid_token", "invalid_agent_secret", "invalid_enrollment_token",
    "forbidden", "unknown_endpoint", "unknown_prompt", "unknown_token", "not_found",
    "method_not_allowed", "upgrade_required", "already_final", "token_exists",
    "endpoint_id_conflict", "body_too_large", "idempotency_key_reused", "too_many_open_prompts",
    "endpoint_quota_exceeded", "invalid_query", "client_out_of_scope", "client_mismatch",
    "site_mismatch", "endpoint_removed",
}  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    bridge = LocalBridgeProcess(Path(tmp_path_factory.mktemp("prop")) / "data")
    bridge.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10)
        conn.request(
            "POST",
            "/api/enrollments",
            json.dumps({"endpoint_id": ENDPOINT, "label": "prop"}),
            {"Authorization": f"Bearer {bridge.admin_token}"},
        )
        assert conn.getresponse().status == 201
        conn.close()
        yield {"bridge": bridge}
    finally:
        bridge.kill()


# --- what a request is made of -------------------------------------------------------------------

hostile_text = st.text(
    st.characters(codec=None, categories=None, exclude_categories=()),  # any code point, surrogates too
    max_size=40,
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 2**53, 2**64, 10**400]),
    hostile_text,
    st.sampled_from(["²", "\x1b[8m", "\x1b]52;c;SGVsbG8=\x07", "\u009b31m", "\ud800", "CON", "Admin", "a" * 3000]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "title", "message", "action", "expires_in", "expires_at", "on_no_user", "supersedes",
    "endpoint_id", "label", "enrollment_token", "name", "role", "max_endpoints", "client", "site",
    "clients",
]  # fmt: skip
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=7).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(
        {"title": json_values, "action": json_values, "expires_in": json_values},
        optional={"message": json_values, "on_no_user": json_values, "expires_at": json_values},
    ).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.just(b"{" * 5000),
)
path_params = st.one_of(
    st.just(ENDPOINT),
    st.sampled_from(["PROP-LAPTOP", "unknown-ep", "con", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "..", "%2e%2e", "a" * 80]),
    hostile_text,
)
ROUTES = [  # method, path template ({e}: endpoint id, {p}: prompt id, {n}: token name)
    ("POST", "/api/tokens"),
    ("DELETE", "/api/tokens/{n}"),
    ("GET", "/api/tokens"),
    ("GET", "/api/whoami"),
    ("PATCH", "/api/endpoints/{e}"),
    ("DELETE", "/api/endpoints/{e}"),
    ("GET", "/api/endpoints"),
    ("GET", "/api/limits"),
    ("PUT", "/api/limits"),
    ("POST", "/api/enrollments"),
    ("POST", "/api/agent/enroll"),
    ("POST", "/api/endpoints/{e}/prompts"),
    ("GET", "/api/endpoints/{e}/prompts"),
    ("GET", "/api/endpoints/{e}/prompts/{p}"),
    ("POST", "/api/endpoints/{e}/prompts/{p}/cancel"),
    ("POST", "/api/endpoints/{e}/prompts/{p}/retry"),
    ("GET", "/api/endpoints/{e}/agent"),
    ("GET", "/api/endpoints/{e}/stats"),  # issue 14
    ("GET", "/api/patterns"),
    ("PATCH", "/api/endpoints/{e}/prompts"),
    ("GET", "/api/nothing/{e}"),
]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    method, template = draw(st.sampled_from(ROUTES))

    def segment() -> str:  # a lone surrogate travels as the bytes UTF-8 would give it (invalid UTF-8)
        return quote(draw(path_params).encode("utf-8", "surrogatepass"), safe="")

    path = template.format(e=segment(), p=segment(), n=segment())
    query = draw(
        st.dictionaries(
            st.sampled_from(["limit", "x", "days", "client", "site", "include_removed", "findings"]),
            hostile_text | st.integers().map(str),
            max_size=2,
        )
    )
    if query:
        path += "?" + urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in query.items()})
    headers: dict[str, str] = {}
    auth = draw(st.sampled_from(["admin", "none", "bogus", "scheme"]))
    if auth == "admin":
        headers["Authorization"] = "Bearer {admin}"
    elif auth == "bogus":
        headers["Authorization"] = "Bearer " + draw(header_text)
    elif auth == "scheme":
        headers["Authorization"] = draw(header_text)
    for name in ("Idempotency-Key", "If-None-Match", "X-Caisey-Technician", "X-Caisey-Role"):
        if draw(st.booleans()):
            headers[name] = draw(header_text)
    body = draw(bodies) if method in ("POST", "PUT", "PATCH", "DELETE") else b""
    return method, path, body, headers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
@example(request=("GET", f"/api/endpoints/{ENDPOINT}/prompts?limit=%C2%B2", b"", {"Authorization": "Bearer {admin}"}))
@example(
    request=(
        "POST",
        f"/api/endpoints/{ENDPOINT}/prompts",
        b'{"title": "t", "action": "a", "expires_in": NaN}',
        {"Authorization": "Bearer {admin}"},
    )
)
@example(
    request=(
        "POST",
        f"/api/endpoints/{ENDPOINT}/prompts",
        b'{"title": "t\\ud800", "action": "a", "expires_in": 60}',
        {"Authorization": "Bearer {admin}"},
    )
)
@example(
    request=(
        "POST",
        "/api/enrollments",
        b'{"endpoint_id": "prop-2", "label": "\\udfff"}',
        {"Authorization": "Bearer {admin}"},
    )
)
def test_no_request_from_the_documented_api_gets_a_5xx(
    live: dict[str, Any], request: tuple[str, str, bytes, dict[str, str]]
) -> None:
    bridge: LocalBridgeProcess = live["bridge"]
    method, path, body, headers = request
    headers = {k: v.replace("{admin}", bridge.admin_token) for k, v in headers.items()}
    conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    assert response.status < 500, (response.status, raw[:300])
    if response.status >= 400 and raw:
        error = json.loads(raw)["error"]
        assert set(error) == {"code", "message"}, error
        assert error["code"] in ERROR_CODES, error
        assert isinstance(error["message"], str)
