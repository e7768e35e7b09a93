"""The console's evidence of display (issue 16): "shown to DOMAIN\\alice on the console session
at 10:04, answered 10:05", "screen locked — answered by the no-user rule", "nobody logged in —
…", and the exact text shown, on the endpoint and prompt pages. The bridge, browser and page
fixtures are test_console.py's; the scripted endpoint is test_console_consent.py's."""

from __future__ import annotations

from typing import Any

import pytest

from agent.identity import EndpointKey
from caisey import wire
from caisey.signing import answer_message, b64encode
from tests import test_console, test_console_consent
from tests.test_console import Bridge, expect, shot, sign_in
from tests.test_console_consent import Endpoint, create, enroll, errors

bridge = test_console.bridge
browser = test_console.browser
console = test_console.console
page = test_console.page
tech_token = test_console.tech_token
loop = test_console_consent.loop

pytestmark = [pytest.mark.slow]


def answer_with(ep: Endpoint, prompt_id: str, decision: str, how: str, display: wire.DisplayEvidence) -> list[Any]:
    copy = ep.copies[prompt_id]
    at = ep.runtime.bridge.now_ms()
    assert ep.key is not None
    message = answer_message(ep.runtime.endpoint.endpoint_id, copy, decision, how, at, display)
    update = wire.PromptUpdate(
        id=ep.runtime.new_id(),
        prompt_id=prompt_id,
        status="decided",
        how=how,
        decision=decision,
        decided_at_ms=at,
        key_id=ep.key.key_id,
        sig=b64encode(ep.key.sign(message)),
        display=display,
    )
    ep.loop.run(ep.runtime.send(update))
    return ep._take(ep.loop.run(ep.runtime.drain()))


def test_evidence_of_display_on_the_endpoint_and_prompt_pages(
    page: Any, bridge: Bridge, tech_token: str, loop: Any
) -> None:
    key = EndpointKey.generate()
    ep = Endpoint(bridge, loop, enroll(bridge, "pc-shown", "Reception PC", key), key)
    shown = create(bridge, "pc-shown", "Allow remote control?")
    locked = create(bridge, "pc-shown", "Install the update", on_no_user="deny")
    nobody = create(bridge, "pc-shown", "Restart tonight", on_no_user="deny")
    text = "Caisey — Freigabe angefordert\nAllow remote control?\n[Ablehnen] [Zulassen]"
    try:
        ep.connect()
        for pid in (shown, locked, nobody):
            ep.receive(pid)
        at = ep.runtime.bridge.now_ms() - 60_000
        evidence = wire.DisplayEvidence(
            outcome="shown",
            session="console",
            presenter="tk",
            user="ACME\\alice",
            shown_at_ms=at,
            locale="de",
            template_id="remote_control",
            template_version=1,
            shown_text=text,
            shown_sha256=wire.shown_text_sha256("de", "remote_control", 1, text),
        )
        assert errors(answer_with(ep, shown, "approve", "user", evidence)) == []
        is_locked = wire.DisplayEvidence(outcome="locked", session="console", locked=True, user="ACME\\alice")
        assert errors(answer_with(ep, locked, "deny", "no_user_policy", is_locked)) == []
        assert errors(answer_with(ep, nobody, "deny", "no_user_policy", wire.DisplayEvidence(outcome="no_user"))) == []
    finally:
        ep.close()

    sign_in(page, bridge, tech_token, "#/endpoint/pc-shown")
    item = page.locator(f"li.prompt[data-pid='{shown}']")
    expect(item.locator(".detail")).to_contain_text("shown to ACME\\alice on the console session at ")
    expect(item.locator(".detail")).to_contain_text(", answered ")
    expect(page.locator(f"li.prompt[data-pid='{locked}'] .detail")).to_contain_text(
        "screen locked — answered by the no-user rule"
    )
    expect(page.locator(f"li.prompt[data-pid='{nobody}'] .detail")).to_contain_text(
        "nobody logged in — answered by the no-user rule"
    )
    expect(page.locator("#endpoint-locale")).to_have_text(
        "The agent reports no language: prompts are shown in English."
    )
    shot(page, "display-endpoint-outcomes")

    page.goto(f"{bridge.url}/#/endpoint/pc-shown/prompt/{shown}")
    facts = page.locator("#prompt-facts")
    expect(facts).to_contain_text("shown to ACME\\alice on the console session at ")
    expect(facts.locator("pre.shown-text")).to_have_text(text)
    expect(facts).to_contain_text("tk, de, template remote_control v1 — SHA-256 ")
    expect(page.locator("#timeline-rows tr[data-type=decided]")).to_contain_text("User answered 'approve' at ")
    expect(page.locator("#timeline-rows tr[data-type=decided]")).to_contain_text(
        "(shown to ACME\\alice on the console session)"
    )
    shot(page, "display-prompt-shown")

    page.goto(f"{bridge.url}/#/endpoint/pc-shown/prompt/{locked}")
    expect(page.locator("#prompt-facts")).to_contain_text("screen locked — answered by the no-user rule")
    expect(page.locator("#timeline-rows tr[data-type=decided]")).to_contain_text(
        "Screen locked — the no-user policy answered 'deny' at "
    )
    page.goto(f"{bridge.url}/#/endpoint/pc-shown/prompt/{nobody}")
    expect(page.locator("#timeline-rows tr[data-type=decided]")).to_contain_text(
        "Nobody logged in — the no-user policy answered 'deny' at "
    )
