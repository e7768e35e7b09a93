"""The console's escalation views and Webhooks page (issue 13) against a real ``caisey-bridge
serve`` in real Chromium. The bridge, browser and page fixtures are test_console.py's; the
screenshots land with theirs (``shot``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests import test_console
from tests.test_console import ADMIN_TOKEN, Bridge, expect, shot, sign_in

bridge = test_console.bridge
browser = test_console.browser
console = test_console.console
page = test_console.page
tech_token = test_console.tech_token

pytestmark = [pytest.mark.slow]


def test_escalate_from_the_prompt_page_and_see_it_on_the_timeline(page: Any, bridge: Bridge, tech_token: str) -> None:
    bridge.register("esc-laptop", "Escalation laptop")
    created = bridge.ok(
        "POST",
        "/api/endpoints/esc-laptop/prompts",
        {"title": "Allow a reboot?", "action": "reboot", "expires_in": 600, "escalate_after": 5},
    )
    pid = created["prompt_id"]
    sign_in(page, bridge, tech_token, f"#/endpoint/esc-laptop/prompt/{pid}")
    # The bridge escalates it at escalate_after (the page polls every 2 s).
    expect(page.locator("#prompt-escalations")).to_contain_text("by the bridge: not answered in 5 s", timeout=20_000)
    page.fill("#escalate-note", "VIP — call the user")
    page.click("#prompt-escalate")
    expect(page.locator("#prompt-result")).to_contain_text("escalated by tech1")
    expect(page.locator("#prompt-escalations")).to_contain_text("Escalated 2 times")
    expect(page.locator("#prompt-escalations")).to_contain_text("by tech1 (“VIP — call the user”)")
    row = page.locator('tr[data-type="escalated"][data-source="console"]')
    expect(row).to_contain_text("Escalated by tech1 — “VIP — call the user”")
    expect(page.locator('tr[data-type="escalated"][data-source="bridge"]')).to_contain_text("not answered in 5 s")
    shot(page, "escalation")
    api = bridge.ok("GET", f"/api/endpoints/esc-laptop/prompts/{pid}")
    assert [e["by"] for e in api["escalations"]] == ["bridge", "tech1"]


def test_webhooks_page_adds_shows_the_secret_once_tests_and_deletes(
    page: Any, console: Any, bridge: Bridge, tech_token: str
) -> None:
    # The browser logs the refusal the page then explains (400 for a target).
    console.allow(r"status of 400 \(Bad Request\)")
    # A technician's console has no Webhooks page at all (role-aware, issue 17): the address
    # shows the fleet, and there is no link to it.
    sign_in(page, bridge, tech_token, "#/webhooks")
    expect(page.locator("#fleet-h")).to_have_text("Fleet")
    expect(page.locator("#nav-webhooks")).to_have_count(0)
    page.click("#signout")
    sign_in(page, bridge, ADMIN_TOKEN, "#/webhooks")
    expect(page.locator("#webhook-rows")).to_contain_text("No webhooks yet.")
    page.fill("#webhook-url", "https://127.0.0.1/hooks")
    page.click("#webhook-create")
    expect(page.locator("#webhook-result")).to_contain_text("400 webhook_target_refused")
    page.fill("#webhook-url", "https://psa.example.com/hooks/caisey")
    page.fill("#webhook-description", "PSA tickets")
    page.check("#ev-endpoint\\.offline")
    page.click("#webhook-create")
    expect(page.locator("#secret")).to_contain_text("whsec_")
    secret = page.locator("#secret").inner_text()
    row = page.locator("#webhook-rows tr", has_text="psa.example.com")
    expect(row).to_contain_text("nothing sent yet")
    expect(row).to_contain_text("endpoint.offline")
    listed = bridge.ok("GET", "/api/webhooks")
    assert secret not in str(listed) and len(listed["webhooks"]) == 1
    row.get_by_role("button", name="Test").click()
    # No route to the internet here: the attempt fails (or, with one, may succeed); either way
    # the page says so and the delivery log shows the test's outcome.
    expect(page.locator("#webhook-result")).to_contain_text("Test event msg_", timeout=20_000)
    expect(row.locator(".webhook-last")).to_contain_text("test_", timeout=10_000)
    shot(page, "webhooks")
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#webhook-rows")).to_contain_text("No webhooks yet.")
    assert bridge.ok("GET", "/api/webhooks") == {"webhooks": []}
