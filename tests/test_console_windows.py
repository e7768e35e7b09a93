"""The console's approval windows (issue 16, DESIGN §13) against a real ``caisey-bridge serve``:
the prompt page shows "access until 10:35" for an active window and the technician's Revoke
button, which ends it; a window the user revoked reads "revoked by the user at 10:20".

The endpoint is test_console_consent's scripted one (a real Ed25519 key, signing as the agent
does); the bridge, browser and page fixtures are test_console.py's.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent.identity import EndpointKey
from caisey import wire
from caisey.signing import b64encode, copy_sha256, window_message
from tests import test_console, test_console_consent
from tests.test_console import Bridge, expect, shot, sign_in
from tests.test_console_consent import Endpoint, Loop, enroll, errors

bridge = test_console.bridge
browser = test_console.browser
console = test_console.console
page = test_console.page
tech_token = test_console.tech_token
loop = test_console_consent.loop

pytestmark = [pytest.mark.slow]


def window_frame(ep: Endpoint, pid: str, event: str, minutes: int, at_ms: int) -> wire.WindowUpdate:
    assert ep.key is not None
    message = window_message(
        endpoint_id=ep.runtime.endpoint.endpoint_id,
        prompt_id=pid,
        event=event,
        minutes=minutes,
        at_ms=at_ms,
        prompt_hash=copy_sha256(ep.copies[pid]),
    )
    return wire.WindowUpdate(
        ep.runtime.new_id(), pid, event, minutes, at_ms, key_id=ep.key.key_id, sig=b64encode(ep.key.sign(message))
    )


def approved_window(bridge: Bridge, ep: Endpoint, endpoint_id: str, title: str, granted: int) -> str:
    body = {"title": title, "message": "", "action": "remote_control", "expires_in": 600, "grant_minutes": 30}
    pid: str = bridge.ok("POST", f"/api/endpoints/{endpoint_id}/prompts", body)["prompt_id"]
    ep.receive(pid)
    decided = [f for f in ep.answer(pid, "approve") if isinstance(f, wire.Ack)]
    assert decided
    at = bridge.ok("GET", f"/api/endpoints/{endpoint_id}/prompts/{pid}")["events"][-1]["detail"]["decided_at_ms"]
    ep.loop.run(ep.runtime.send(window_frame(ep, pid, "start", granted, at)))
    frames = ep.loop.run(ep.runtime.drain())
    assert errors(frames) == [], frames
    return pid


def test_the_prompt_page_shows_the_window_and_the_technician_revokes_it(
    page: Any, bridge: Bridge, tech_token: str, loop: Loop
) -> None:
    key = EndpointKey.generate()
    ep = Endpoint(bridge, loop, enroll(bridge, "pc-window", "Window laptop", key), key)
    try:
        ep.connect()
        by_tech = approved_window(bridge, ep, "pc-window", "Allow remote control for a while?", granted=10)
        by_user = approved_window(bridge, ep, "pc-window", "Install updates for a while?", granted=30)
        now = bridge.ok("GET", f"/api/endpoints/pc-window/prompts/{by_user}")["window"]["started_at"]
        assert now
        ep.loop.run(ep.runtime.send(window_frame(ep, by_user, "revoke", 30, ep.runtime.bridge.now_ms())))
        assert errors(ep.loop.run(ep.runtime.drain())) == []

        sign_in(page, bridge, tech_token, f"#/endpoint/pc-window/prompt/{by_tech}")
        window = page.locator("#prompt-window")
        expect(window).to_contain_text("Access until")
        assert re.search(
            r"Access until \d\d:\d\d — \d+ min left \(the user granted 10 min of the 30 min asked\)",
            window.inner_text(),
        )
        expect(page.locator("#timeline-rows tr[data-type=window_started]")).to_contain_text(
            "Approval window started: 10 min, access until"
        )
        revoke = page.get_by_role("button", name="Revoke access now")
        expect(revoke).to_be_visible()
        shot(page, "window-active")
        revoke.click()
        expect(page.locator("#prompt-result")).to_contain_text("Access revoked — the bridge answered 200 OK")
        expect(window).to_contain_text("Revoked by tech")
        expect(revoke).to_be_hidden()
        notices = [f for f in ep.loop.run(ep.runtime.drain()) if isinstance(f, wire.WindowNotice)]
        assert {(n.prompt_id, n.state) for n in notices} == {(by_tech, "revoked")}

        page.goto(f"{bridge.url}/#/endpoint/pc-window/prompt/{by_user}")
        expect(page.locator("#prompt-window")).to_contain_text("Revoked by the user at")
        assert re.search(
            r"Revoked by the user at \d\d:\d\d \(access was until \d\d:\d\d\)",
            page.locator("#prompt-window").inner_text(),
        )
        expect(page.get_by_role("button", name="Revoke access now")).to_be_hidden()
        expect(page.locator("#timeline-rows tr[data-type=window_revoked]")).to_contain_text(
            "Approval window revoked by the user on the endpoint (signed by the endpoint)"
        )
        shot(page, "window-revoked-by-user")
    finally:
        ep.close()
