"""Issue 11 item 4: the browser surface. Both hosts send a CSP that allows only the console's
own scripts and styles, ``frame-ancestors 'none'`` (and X-Frame-Options), ``nosniff`` and
``Referrer-Policy: no-referrer``; API answers (tokens, enrollment tokens, agent secrets,
prompts) are ``Cache-Control: no-store``; the local host names no versions in ``Server``."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.bridge_hosts import BridgeUnderTest, LocalBridgeProcess, enroll
from tests.security.conftest import PROMPT, eid
from worker.api import API_SECURITY_HEADERS, CONSOLE_SECURITY_HEADERS

ROOT = Path(__file__).resolve().parents[2]


def _check_api(headers: dict[str, str]) -> None:
    h = {k.lower(): v for k, v in headers.items()}
    assert h.get("cache-control") == "no-store", h
    assert h.get("x-content-type-options") == "nosniff", h
    assert h.get("referrer-policy") == "no-referrer", h
    assert h.get("x-frame-options") == "DENY", h
    assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), h


def _check_console(headers: dict[str, str]) -> None:
    h = {k.lower(): v for k, v in headers.items()}
    csp = h.get("content-security-policy", "")
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") == "default-src 'none'", csp
    assert directives.get("script-src") == "script-src 'self'", csp  # no inline, no eval, no other origin
    assert directives.get("style-src") == "style-src 'self'", csp
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", csp
    assert h.get("x-content-type-options") == "nosniff", h
    assert h.get("referrer-policy") == "no-referrer", h
    assert h.get("x-frame-options") == "DENY", h


async def test_every_api_answer_carries_the_security_headers(bridge: BridgeUnderTest) -> None:
    """Including the ones that carry secrets: a token, an enrollment token, an agent secret."""
    admin = bridge.admin_token
    token = await bridge.request("POST", "/api/tokens", token=admin, body={"name": eid(), "role": "technician"})
    assert token.status == 201 and "token" in token.body
    _check_api(token.headers)
    endpoint_id = eid()
    enrollment = await bridge.request("POST", "/api/enrollments", token=admin, body={"endpoint_id": endpoint_id})
    assert enrollment.status == 201
    _check_api(enrollment.headers)
    secret = await bridge.request(
        "POST", "/api/agent/enroll", body={"enrollment_token": enrollment.body["enrollment_token"]}
    )
    assert secret.status == 200 and "agent_secret" in secret.body
    _check_api(secret.headers)
    created = await bridge.request(
        "POST", f"/api/endpoints/{endpoint_id}/prompts", token=admin, body=dict(PROMPT, expires_in=60)
    )
    _check_api(created.headers)
    for path in ("/api/endpoints", f"/api/endpoints/{endpoint_id}/prompts", "/api/limits"):
        r = await bridge.request("GET", path, token=admin)
        assert r.status == 200
        _check_api(r.headers)
    refused = await bridge.request("GET", "/api/endpoints")
    assert refused.status == 401
    _check_api(refused.headers)


@pytest.mark.parametrize("path", ["/", "/index.html", "/js/main.js", "/style.css", "/favicon.svg"])
async def test_the_console_carries_a_csp_and_cannot_be_framed(bridge: BridgeUnderTest, path: str) -> None:
    if isinstance(bridge, LocalBridgeProcess):
        async with aiohttp.ClientSession() as session, session.get(bridge.url + path) as r:
            assert r.status == 200
            headers = dict(r.headers)
    else:  # the Workers stand-in applies console_static/_headers to asset responses, as Cloudflare does
        from tests.workers_host import WorkersBridge

        assert isinstance(bridge, WorkersBridge)
        response = await bridge.harness.fetch("GET", path)
        assert response.status == 200
        headers = dict(response.headers)
    _check_console(headers)


async def test_the_local_host_names_no_versions(local_bridge: LocalBridgeProcess) -> None:
    await enroll(local_bridge, eid())
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/api/endpoints", "/api/nothing"):
            async with session.get(local_bridge.url + path) as r:
                server = r.headers.get("Server", "")
                assert "Python" not in server and "aiohttp" not in server, server


def test_cloudflare_headers_file_says_what_the_local_host_sends() -> None:
    """console_static/_headers (Cloudflare's static assets) and worker.api are one policy."""
    lines = (ROOT / "console_static" / "_headers").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "/*"
    parsed = {}
    for line in rules[1:]:
        assert line.startswith("  "), line
        name, _, value = line.strip().partition(": ")
        parsed[name.lower()] = value
    assert parsed == CONSOLE_SECURITY_HEADERS
    assert API_SECURITY_HEADERS["cache-control"] == "no-store"


def test_the_console_needs_nothing_the_csp_forbids() -> None:
    """No inline script or style, no handler attributes, no other origin: 'self' suffices."""
    html = (ROOT / "console_static" / "index.html").read_text()
    assert "<style" not in html and " style=" not in html and " on" not in html.replace("<noscript>", "")
    import re

    for tag in re.findall(r"<script[^>]*>", html):
        assert 'src="' in tag, tag
    for js in (ROOT / "console_static" / "js").glob("*.js"):
        source = js.read_text().replace('"http://www.w3.org/2000/svg"', "")  # a namespace name, not a URL
        # Text the Add endpoint page shows for copying (a launchd plist's DOCTYPE, the pipx
        # package placeholder): strings a person pastes elsewhere, never loaded by the page.
        for shown in ('"http://www.apple.com/DTDs/PropertyList-1.0.dtd"', "git+https://github.com/YOUR-ORG/"):
            source = source.replace(shown, "")
        for forbidden in ("eval(", "new Function", "innerHTML", '"style"', "style:", "http://", "https://"):
            assert forbidden not in source, (js.name, forbidden)
