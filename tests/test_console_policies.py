"""Consent policies in the console (issue 16), in Debian's chromium against a real bridge.

The admin edits the client's and the endpoint's policy on the endpoint page and sees the
effective policy with where each value comes from; a technician sees the same table and no edit
control, a reason marked as required, the bridge's 422 for a create beyond the longest expiry,
and a create with reason and ticket whose prompt page shows "Why: …" and the ticket as a link —
text that looks like HTML stays text, and a ticket URL that is not https is never a link.

Screenshots: ``docs/console-policy.png`` and ``docs/console-why.png``, written when missing or
with ``CAISEY_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright import sync_api

from tests import test_console
from tests.test_console import ADMIN_TOKEN, ARTIFACTS, Bridge, ConsoleLog, open_page, shot, sign_in
from tests.test_console_admin import publish

expect = sync_api.expect
pytestmark = [pytest.mark.slow]
EID = "pc-policy"
HOSTILE = 'printer queue <img src=x onerror="document.title=1"> stuck'


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    b = Bridge(tmp_path_factory.mktemp("policy-console") / "data")
    b.start()
    yield b
    b.stop()


browser = test_console.browser  # one Chromium per module, launched as test_console.py does


def row(page: Any, field: str) -> Any:
    return page.locator(f"#policy-rows tr[data-field={field}]")


def test_admin_edits_policies_technician_sees_them_enforced_and_the_why(browser: Any, bridge: Bridge) -> None:
    bridge.ok(
        "POST",
        "/api/enrollments",
        {"endpoint_id": EID, "label": "Reception", "client": "Acme Dental", "site": "Main street"},
    )
    tech = bridge.ok("POST", "/api/tokens", {"name": "tess", "role": "technician", "clients": ["Acme Dental"]})["token"]
    console = ConsoleLog()
    # The two refusals this test provokes on purpose (the browser logs every 4xx it fetches).
    console.allow(r"status of 400 \(Bad Request\)")
    console.allow(r"status of 422 \(Unprocessable Entity\)")
    admin = open_page(browser, console)
    techpage = open_page(browser, console)
    try:
        # --- the admin: the effective policy, then the client's and the endpoint's levels ---------
        sign_in(admin, bridge, ADMIN_TOKEN, f"#/endpoint/{EID}")
        expect(row(admin, "require_reason")).to_contain_text("no")
        expect(row(admin, "require_reason")).to_contain_text("deployment default")
        expect(admin.locator("#policy-level option")).to_have_count(3)  # endpoint, site, client
        admin.select_option("#policy-level", "client")
        expect(admin.locator("#policy-brand-name")).to_be_visible()  # branding: per client only
        admin.select_option("#policy-require-reason", "true")
        admin.fill("#policy-expires-max", "600")
        admin.fill("#policy-brand-name", "Acme IT")
        admin.click("#policy-save")
        expect(admin.locator("#policy-result")).to_contain_text("Saved")
        expect(row(admin, "require_reason")).to_contain_text("yes")
        expect(row(admin, "require_reason")).to_contain_text("from its client")
        expect(row(admin, "brand_name")).to_contain_text("Acme IT")
        admin.select_option("#policy-level", "endpoint")
        expect(admin.locator("#policy-brand-name")).to_be_hidden()
        expect(admin.locator("#policy-expires-max")).to_have_value("")  # the endpoint's own level sets nothing yet
        admin.fill("#policy-expires-max", "300")
        admin.click("#policy-save")
        expect(row(admin, "expires_in_max")).to_contain_text("5 min")
        expect(row(admin, "expires_in_max")).to_contain_text("set on this endpoint")
        # Values that disagree (a default above the longest): the bridge's refusal, word for word.
        admin.fill("#policy-expires-default", "900")
        admin.click("#policy-save")
        expect(admin.locator("#policy-result")).to_contain_text("400 invalid_field")
        expect(admin.locator("#policy-result")).to_contain_text("expires_in_default must not exceed expires_in_max")
        assert bridge.ok("GET", f"/api/endpoints/{EID}/policy")["effective"]["expires_in_max"]["value"] == 300
        shot(admin, "policy-admin")
        card = ARTIFACTS / "console-policy-card.png"
        admin.locator("#policy-card").screenshot(path=str(card))
        publish(card, "console-policy.png")

        # --- the technician: the same table, no editor, the policy enforced -------------------
        sign_in(techpage, bridge, tech, f"#/endpoint/{EID}")
        expect(row(techpage, "expires_in_max")).to_contain_text("set on this endpoint")
        expect(techpage.locator("#policy-editor")).to_have_count(0)  # no edit control at all
        expect(techpage.locator("label[for=new-reason]")).to_have_text("Reason (required by policy)")
        assert techpage.locator("#new-reason").evaluate("el => el.required") is True
        techpage.fill("#new-title", "Allow remote control?")
        techpage.fill("#new-reason", HOSTILE)
        techpage.fill("#new-expiry", "10")
        techpage.select_option("#new-expiry-unit", "min")
        techpage.click("#create-submit")
        expect(techpage.locator("#create-result")).to_contain_text("policy_violation")
        expect(techpage.locator("#create-result")).to_contain_text("expires_in_max")
        techpage.fill("#new-expiry", "4")
        techpage.fill("#new-ticket-id", "T-42")
        techpage.fill("#new-ticket-url", "https://tickets.example/T-42")
        techpage.click("#create-submit")
        expect(techpage.locator("#create-result")).to_contain_text("201")
        techpage.locator("li.prompt a.prompt-title", has_text="Allow remote control?").first.click()
        why = techpage.locator("#prompt-why")
        expect(why).to_contain_text(f"Why: {HOSTILE}")  # HTML-looking text stays text
        assert why.locator("img").count() == 0 and techpage.title() != "1"
        link = techpage.locator("#prompt-why a.ticket-link")
        expect(link).to_have_text("T-42")
        expect(link).to_have_attribute("href", "https://tickets.example/T-42")
        expect(techpage.locator("#prompt-facts")).to_contain_text("Acme IT")
        created = techpage.locator("#timeline-rows tr[data-type=created]")
        expect(created).to_contain_text(f"why: {HOSTILE}")  # the timeline too, as text
        expect(created).to_contain_text("ticket T-42")
        publish(shot(techpage, "policy-why", full_page=False), "console-why.png")
        # Only an https URL becomes a link; anything else is shown as text.
        kinds = techpage.evaluate(
            """async () => {
              const { whyParts } = await import("/js/policy.js");
              const kind = (url) => {
                const [, v] = whyParts({ ticket: { id: "T-1", url } })[0];
                return v instanceof Element ? v.tagName : typeof v;
              };
              return [kind("https://t.example/1"), kind("javascript:alert(1)"), kind("http://t.example/1"), kind(null)];
            }"""
        )
        assert kinds == ["A", "string", "string", "string"]
        # The prompt as the bridge holds it carries the reason, the ticket and the branding.
        prompt = bridge.ok("GET", f"/api/endpoints/{EID}/prompts")["prompts"][0]
        assert (prompt["request_reason"], prompt["ticket"]["id"], prompt["brand_name"]) == (HOSTILE, "T-42", "Acme IT")
    finally:
        admin.context.close()
        techpage.context.close()
    assert console.unexpected() == [], console.errors
