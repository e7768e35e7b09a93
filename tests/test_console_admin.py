"""Console administration (issue 17) in Debian's chromium against a real bridge and a real agent.

An admin adds an endpoint in the console; the test runs the Linux enroll command the page
shows, verbatim (``caisey-agent`` resolves to this venv's through PATH; the agent's state
goes to a temporary ``CAISEY_AGENT_HOME``), then starts the agent; the fleet row flips from
"Waiting for its agent" to online without a reload. The admin creates a scoped technician
token (shown once); the technician signs in and sees no admin action anywhere; the admin
revokes the token and the technician's open console signs out within one poll. The admin
box relabels the endpoint and removes it, and the real agent is refused from then on.

Screenshots: ``docs/console-add-endpoint.png``, ``docs/console-tokens.png`` and
``docs/console-endpoint-admin.png``, written when missing or with ``CAISEY_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api

from tests import test_console
from tests.test_console import (
    Bridge,
    ConsoleLog,
    open_page,
    shot,
    sign_in,
)

expect = sync_api.expect
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent
POLL_MS = 2_000  # console_static/js/main.js

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    b = Bridge(tmp_path_factory.mktemp("admin-console") / "data")
    b.start()
    yield b
    b.stop()


browser = test_console.browser  # one Chromium per module, launched as test_console.py does


def publish(path: Path, name: str) -> None:
    target = DOCS / name
    if not target.exists() or os.environ.get("CAISEY_UPDATE_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, target)


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_admin_adds_an_endpoint_its_agent_comes_online_and_a_revoked_technician_is_signed_out(
    browser: Any, bridge: Bridge, tmp_path: Path
) -> None:
    console = ConsoleLog()
    console.allow(r"Failed to load resource: the server responded with a status of 401")
    admin = open_page(browser, console)
    agent: subprocess.Popen[bytes] | None = None
    agent_home = tmp_path / "agent-home"
    agent_log = tmp_path / "agent.log"
    try:
        # --- the admin adds an endpoint -----------------------------------------------------------
        sign_in(admin, bridge, bridge_admin_token())
        expect(admin.locator("#whoami")).to_contain_text("admin · admin")
        admin.get_by_role("link", name="Add endpoint").click()
        expect(admin.get_by_role("heading", name="Add endpoint", exact=True)).to_be_focused()
        admin.fill("#add-eid", "pc-frontdesk")
        admin.fill("#add-label", "Front desk PC")
        admin.fill("#add-client", "Acme Dental")
        admin.fill("#add-site", "Main street")
        admin.press("#add-site", "Enter")  # keyboard: Enter submits
        expect(admin.locator("#add-result")).to_contain_text("Enrollment created")
        token = admin.locator("#enrollment-token").inner_text().strip()
        assert token.startswith("cse_pc-frontdesk~"), token
        expect(admin.locator("#enrollment-expiry")).to_have_text(re.compile(r"^2[34] h \d\d min \d\d s$"))
        first = admin.locator("#enrollment-expiry").inner_text()
        expect(admin.locator("#enrollment-expiry")).not_to_have_text(first, timeout=3_000)  # it counts down
        linux = admin.locator("section[data-os=linux]")
        enroll_cmd = linux.locator("pre[data-step=enroll]").inner_text()
        assert f"--bridge '{bridge.url}'" in enroll_cmd and token in enroll_cmd
        assert "--token " not in enroll_cmd  # never on the command line
        for os_name in ("macos", "windows"):
            expect(admin.locator(f"section[data-os={os_name}] pre[data-step=enroll]")).to_contain_text(token)
            expect(admin.locator(f"section[data-os={os_name}] pre[data-step=service]")).not_to_be_empty()
        expect(linux.locator("pre[data-step=service]")).to_contain_text(
            "systemctl --user enable --now caisey-agent.service"
        )
        expect(linux.locator("pre[data-step=install]")).to_contain_text("pipx install")
        publish(shot(admin, "add-endpoint"), "console-add-endpoint.png")

        # The fleet: waiting for its agent.
        admin.click(".brand")
        row = admin.locator("#fleet-rows tr[data-eid='pc-frontdesk']")
        expect(row).to_contain_text("Waiting for its agent")
        expect(row).to_contain_text("Acme Dental · Main street")

        # --- the shown Linux enroll command, verbatim; then the agent -----------------------------
        env = dict(
            os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", CAISEY_AGENT_HOME=str(agent_home)
        )
        env["PYTHONPATH"] = str(ROOT)
        assert shutil.which("caisey-agent", path=env["PATH"]) == str(VENV_BIN / "caisey-agent")
        done = subprocess.run(["bash", "-e", "-c", enroll_cmd], env=env, cwd=tmp_path, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        with open(agent_log, "wb") as log:
            agent = subprocess.Popen(
                ["caisey-agent", "run", "--presenter", "exec:/bin/true"],
                env=dict(env, PYTHONUNBUFFERED="1"),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        expect(row.locator(".conn")).to_have_text("Online", timeout=20_000)  # no reload

        # --- a scoped technician token, shown once --------------------------------------------------
        admin.get_by_role("link", name="Tokens").click()
        expect(admin.get_by_role("heading", name="Tokens", exact=True)).to_be_visible()
        admin.fill("#tok-name", "sam")
        admin.select_option("#tok-role", "technician")
        admin.fill("#tok-clients", "Acme Dental")
        admin.click("#tok-submit")
        expect(admin.locator("#tok-secret")).to_contain_text("it will not be shown again")
        expect(admin.get_by_role("button", name="Copy token")).to_be_visible()
        sam_token = admin.locator("#new-token-secret").inner_text().strip()
        assert sam_token.startswith("cst_")
        sam_row = admin.locator("#token-rows tr[data-name='sam']")
        expect(sam_row).to_contain_text("Acme Dental")
        expect(sam_row).to_contain_text("never")
        publish(shot(admin, "tokens"), "console-tokens.png")

        # --- the technician: no admin actions -------------------------------------------------------
        tech = open_page(browser, console)
        try:
            sign_in(tech, bridge, sam_token)
            expect(tech.locator("#whoami")).to_contain_text("sam · technician · Acme Dental")
            expect(tech.locator("#fleet-rows tr[data-eid='pc-frontdesk']")).to_be_visible()
            expect(tech.get_by_role("link", name="Tokens")).to_have_count(0)
            # Adding an endpoint, a scoped technician may name only its own clients.
            tech.get_by_role("link", name="Add endpoint").click()
            expect(tech.locator("#add-client option")).to_have_text(["Acme Dental"])
            tech.goto(bridge.url + "/#/tokens")  # typed by hand: still no tokens page
            expect(tech.get_by_role("heading", name="Fleet")).to_be_visible()
            tech.goto(bridge.url + "/#/endpoint/pc-frontdesk")
            expect(tech.locator("#prompts-h")).to_be_visible()
            expect(tech.locator("#admin-box")).to_have_count(0)
            for name in ("Re-issue enrollment", "Remove endpoint", "Revoke"):
                expect(tech.get_by_role("button", name=name)).to_have_count(0)
            # The admin sees the token used.
            expect(sam_row).not_to_contain_text("never", timeout=10_000)

            # --- the admin revokes it: the technician's open console signs out within one poll ----
            sam_row.get_by_role("button", name="Revoke sam").click()
            expect(sam_row.locator(".confirm")).to_contain_text("Revoke the token “sam”?")
            revoked_at = time.monotonic()
            admin.keyboard.press("Enter")  # the confirmation's own button has the focus
            expect(admin.locator("#token-rows tr[data-name='sam']")).to_have_count(0)
            expect(tech.locator("#signin-error")).to_contain_text(
                "no longer accepts this token", timeout=POLL_MS + 3_000
            )
            assert time.monotonic() - revoked_at < (POLL_MS + 3_000) / 1000
        finally:
            tech.context.close()

        # --- the endpoint's admin box: relabel, then remove ------------------------------------------
        admin.goto(bridge.url + "/#/endpoint/pc-frontdesk")
        box = admin.locator("#admin-box")
        expect(box.locator("#adm-label")).to_have_value("Front desk PC")
        admin.fill("#adm-label", "Reception PC")
        admin.click("#adm-save")
        expect(box.locator("#adm-result")).to_contain_text("Saved: label")
        expect(admin.get_by_role("heading", name="Reception PC pc-frontdesk")).to_be_visible(timeout=10_000)
        box.get_by_role("button", name="Re-issue enrollment").click()
        expect(box.locator("#adm-confirm")).to_contain_text("the current agent is refused")
        publish(shot(admin, "endpoint-admin"), "console-endpoint-admin.png")
        box.get_by_role("button", name="Cancel").click()
        box.get_by_role("button", name="Remove endpoint").click()
        expect(box.locator("#adm-confirm")).to_contain_text("Remove the endpoint “pc-frontdesk”?")
        box.get_by_role("button", name="Remove pc-frontdesk").click()
        expect(box.locator("#adm-removed")).to_contain_text("Removed")
        expect(admin.locator("#endpoint-line")).to_contain_text("Removed", timeout=10_000)
        # The real agent is refused from then on (it keeps retrying with backoff, told why).
        wait_for(
            lambda: b"an admin removed this endpoint" in agent_log.read_bytes(), 30, "the agent told it was removed"
        )
        admin.click(".brand")
        expect(admin.locator("#fleet-summary")).to_be_visible()
        expect(admin.locator("#fleet-rows tr[data-eid='pc-frontdesk']")).to_have_count(0)
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(15)
        admin.context.close()
    assert console.unexpected() == [], console.unexpected()


def test_admin_pages_keyboard_and_200_percent_zoom(browser: Any, bridge: Bridge) -> None:
    console = ConsoleLog()
    console.allow(r"Failed to load resource: the server responded with a status of 409")  # provoked below
    page = open_page(browser, console, device_scale_factor=2)
    try:
        page.set_viewport_size({"width": 640, "height": 450})
        sign_in(page, bridge, bridge_admin_token(), "#/add")
        expect(page.get_by_role("heading", name="Add endpoint", exact=True)).to_be_visible()
        page.focus("#add-eid")
        page.keyboard.type("pc-zoom")
        page.keyboard.press("Tab")
        page.keyboard.type("Zoom PC")
        page.keyboard.press("Enter")
        expect(page.locator("#enrollment-token")).to_be_visible()
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert page.evaluate(overflow) <= 0, "the add-endpoint page scrolls sideways at 200% zoom"
        # A refusal in plain words: the id differs from a registered one only in case.
        page.fill("#add-eid", "PC-ZOOM")
        page.click("#add-submit")
        expect(page.locator("#add-result")).to_contain_text("That endpoint id is already taken")
        for hash_, ready, name in (
            ("#/tokens", "#token-form", "tokens"),
            ("#/endpoint/pc-zoom", "#admin-box", "endpoint-admin"),
        ):
            page.evaluate(f"location.hash = {hash_!r}")
            expect(page.locator(ready)).to_be_visible()
            assert page.evaluate(overflow) <= 0, f"{name} scrolls sideways at 200% zoom"
            shot(page, f"zoom200-{name}", full_page=False)
    finally:
        page.context.close()
    assert console.unexpected() == [], console.unexpected()


def test_revoking_your_own_token_signs_you_out_and_the_fleet_filters_by_client(browser: Any, bridge: Bridge) -> None:
    console = ConsoleLog()
    ops_token = bridge.ok("POST", "/api/tokens", {"name": "ops", "role": "admin"})["token"]
    bridge.ok("POST", "/api/enrollments", {"endpoint_id": "pc-globex", "label": "Globex PC", "client": "Globex"})
    bridge.ok("POST", "/api/enrollments", {"endpoint_id": "pc-loose", "label": "Unowned PC"})
    page = open_page(browser, console)
    try:
        sign_in(page, bridge, ops_token)
        # The fleet's client filter: one client, or the endpoints without one.
        expect(page.locator("#fleet-rows tr[data-eid='pc-globex']")).to_be_visible()
        page.select_option("#fleet-client", label="Globex")
        expect(page.locator("#fleet-rows tr:visible")).to_have_count(1)
        page.select_option("#fleet-client", label="(no client)")
        expect(page.locator("#fleet-rows tr[data-eid='pc-loose']")).to_be_visible()
        expect(page.locator("#fleet-rows tr[data-eid='pc-globex']")).to_be_hidden()
        page.select_option("#fleet-client", label="all clients")

        page.get_by_role("link", name="Tokens").click()
        row = page.locator("#token-rows tr[data-name='ops']")
        expect(row).to_contain_text("(you)")
        row.get_by_role("button", name="Revoke ops").click()
        expect(row.locator(".confirm")).to_contain_text("you will be signed out")
        page.keyboard.press("Escape")  # changed my mind: nothing happens
        expect(row.locator(".confirm")).to_be_hidden()
        expect(row.get_by_role("button", name="Revoke ops")).to_be_focused()
        row.get_by_role("button", name="Revoke ops").click()
        row.get_by_role("button", name="Revoke ops").last.click()
        expect(page.locator("#signin-error")).to_contain_text("You revoked the token “ops” you were signed in with")
        assert page.evaluate("sessionStorage.getItem('caisey.token')") is None
        status, _ = bridge.call("GET", "/api/whoami", token=ops_token)
        assert status == 401
    finally:
        page.context.close()
    assert console.unexpected() == [], console.unexpected()


def bridge_admin_token() -> str:
    from tests.test_console import ADMIN_TOKEN

    return ADMIN_TOKEN
