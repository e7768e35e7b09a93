"""The technician console (console_static/) against a real ``caisey-bridge serve``.

Each test drives Debian's chromium through Playwright against a bridge subprocess on a free
127.0.0.1 port with a temporary data directory. Every page collects console messages and
page errors; a test fails if the console logged an error it did not expect (the only
expected ones are the browser's own "Failed to load resource" lines for answers a test
provokes on purpose, such as a 401 or a refused connection).

Screenshots go to ``test-artifacts/`` (gitignored). ``docs/console.png`` is written when it
is missing or when ``CAISEY_UPDATE_SCREENSHOT=1``, so a normal run leaves the tree clean.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api  # scripts/setup installs it; a missing browser stack fails, never skips

expect = sync_api.expect

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "console.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_TOKEN = "cst_test-admin-token-for-console-tests"
FLEET_SIZE = 1_000
BRIDGE_START_TIMEOUT_S = 20

pytestmark = [pytest.mark.slow]
if not Path(CHROMIUM).exists():
    raise RuntimeError("the console tests need Debian's chromium at /usr/bin/chromium: run scripts/setup")


# --- the bridge --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bridge_command() -> list[str]:
    script = Path(sys.executable).parent / "caisey-bridge"
    if script.exists():
        return [str(script)]
    found = shutil.which("caisey-bridge")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from worker.local_host import main; sys.exit(main())"]


class Bridge:
    """A real ``caisey-bridge serve`` subprocess, stoppable and restartable on the same port."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data.parent / f"{data.name}-bridge.log"

    def start(self) -> None:
        env = dict(os.environ, CAISEY_ADMIN_TOKEN=ADMIN_TOKEN)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*bridge_command(), "serve", "--data", str(self.data), "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + BRIDGE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                status, _ = self.call("GET", "/api/endpoints")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"bridge did not start in {BRIDGE_START_TIMEOUT_S} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def call(
        self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, answer = self.call(method, path, body, **kw)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def register(self, endpoint_id: str, label: str = "") -> dict[str, Any]:
        answer: dict[str, Any] = self.ok("POST", "/api/enrollments", {"endpoint_id": endpoint_id, "label": label})
        return answer

    def technician(self, name: str) -> str:
        token: str = self.ok("POST", "/api/tokens", {"name": name, "role": "technician"})["token"]
        return token

    def prompts(self, endpoint_id: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.ok("GET", f"/api/endpoints/{endpoint_id}/prompts?limit=200")["prompts"]
        return answer


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    b = Bridge(tmp_path_factory.mktemp("console") / "data")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def tech_token(bridge: Bridge) -> str:
    return bridge.technician("tech1")


FLEET_TEST = "test_fleet_with_a_thousand_endpoints"


class FleetBridge:
    """A second bridge that registers FLEET_SIZE endpoints through the API in the background.

    Registering is ~10-30 ms of SQLite commits per endpoint, so it starts with the module
    (when the fleet test is selected) and overlaps the other tests; the fleet test waits.
    """

    def __init__(self, data: Path) -> None:
        self.bridge = Bridge(data)
        self.bridge.start()
        self.pool = concurrent.futures.ThreadPoolExecutor(8)
        self.done = [
            self.pool.submit(self.bridge.register, f"ws-{i:04d}", f"Workstation {i}") for i in range(FLEET_SIZE)
        ]

    def ready(self) -> Bridge:
        for future in self.done:
            future.result(timeout=120)
        return self.bridge

    def stop(self) -> None:
        for future in self.done:
            future.cancel()
        self.pool.shutdown(wait=True)
        self.bridge.stop()


@pytest.fixture(scope="module", autouse=True)
def fleet_bridge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetBridge | None]:
    if not any(item.name == FLEET_TEST for item in request.session.items):
        yield None
        return
    fleet = FleetBridge(tmp_path_factory.mktemp("fleet") / "data")
    yield fleet
    fleet.stop()


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class ConsoleLog:
    """Console errors and page errors of one page; only explicitly allowed lines may appear."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


def open_page(browser: Any, console: ConsoleLog, **context_options: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
    page = context.new_page()
    page.on("console", lambda m: console.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.errors.append(f"pageerror: {e}"))
    page.set_default_timeout(15_000)
    return page


@pytest.fixture
def page(browser: Any, console: ConsoleLog) -> Iterator[Any]:
    p = open_page(browser, console)
    yield p
    p.context.close()
    assert console.unexpected() == [], "the console logged errors"


def sign_in(page: Any, bridge: Bridge, token: str, hash_: str = "") -> None:
    page.goto(bridge.url + "/" + hash_)
    page.fill("#token", token)
    page.press("#token", "Enter")
    expect(page.locator("#signout")).to_be_visible()


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def publish(path: Path) -> None:
    """Copy the representative screenshot to docs/ (only when missing or asked to)."""
    if not DOCS_SCREENSHOT.exists() or os.environ.get("CAISEY_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)


def prompt_item(page: Any, title: str) -> Any:
    return page.locator("li.prompt", has=page.locator("a.prompt-title", has_text=title))


# --- plain words (pure functions, run in the browser) ------------------------------------------


DESCRIBE_CASES = """
async () => {
  const { describePrompt, describeEvent } = await import("/js/describe.js");
  const T0 = Date.parse("2026-03-02T10:00:00Z");
  const iso = (ms) => new Date(T0 + ms).toISOString();
  const base = (over) => ({
    prompt_id: "01X", endpoint_id: "pc", state: "pending", final: false, provisional: false, reason: null,
    title: "t", message: "", action: "remote_control", on_no_user: "wait", created_at: iso(0), created_by: "tech1",
    expires_at: iso(300_000), adopted: false, decision: null, decided_at: null, synced_at: null, decided_how: null,
    late_decision: null, cancelled_by: null, supersedes: null, superseded_by: null, final_at: null,
    delivery: { attempts: 0, last_attempt_at: null, next_attempt_at: null, last_error: null, replays: 0,
                received_at: null, acknowledged_at: null },
    ...over,
  });
  const hm = (ms) => { const d = new Date(T0 + ms); return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0"); };
  const now = T0 + 60_000;
  return {
    hm: { decided: hm(4 * 60_000), synced: hm(20 * 60_000) },
    unreachable: describePrompt(base({ state: "failed_to_deliver", final: true, provisional: true, reason: "no_receipt: 7 attempts",
      delivery: { attempts: 7, last_attempt_at: iso(300_000), received_at: null } }), T0 + 400_000),
    never_online: describePrompt(base({ state: "failed_to_deliver", final: true, provisional: true, reason: "endpoint_unreachable",
      expires_at: iso(6_000) }), T0 + 10_000),
    delivered: describePrompt(base({ state: "delivered", delivery: { attempts: 1, received_at: iso(1_000) } }), T0 + 30_000),
    pending_offline: describePrompt(base({ delivery: { attempts: 3, next_attempt_at: iso(9_000) } }), now, { online: false }),
    pending_sending: describePrompt(base({ delivery: { attempts: 3, next_attempt_at: iso(9_000) } }), now, { online: true }),
    delivered_silent: describePrompt(base({ state: "delivered", delivery: { attempts: 1, received_at: iso(1_000) } }), T0 + 121_000),
    approved_synced_late: describePrompt(base({ state: "approved", final: true, decision: "approve", decided_how: "user",
      decided_at: iso(4 * 60_000), synced_at: iso(20 * 60_000), reason: "user; honoured after expired (R4)" }), T0 + 21 * 60_000),
    approved_synced_at_once: describePrompt(base({ state: "approved", final: true, decision: "approve", decided_how: "user",
      decided_at: iso(4 * 60_000), synced_at: iso(4 * 60_000 + 800) }), now),
    cancelled_late: describePrompt(base({ state: "cancelled", final: true, reason: "by tech1", cancelled_by: "tech1",
      final_at: iso(30_000), late_decision: { decision: "approve", decided_at: iso(40_000), synced_at: iso(50_000),
      why: "arrived after cancelled" } }), now),
    expired_provisional: describePrompt(base({ state: "expired", final: true, provisional: true,
      reason: "no decision before expires_at", delivery: { attempts: 1, received_at: iso(1_000) } }), T0 + 400_000),
    expired_firm: describePrompt(base({ state: "expired", final: true, provisional: false }), T0 + 400_000),
    policy: describePrompt(base({ state: "denied", final: true, decision: "deny", decided_how: "no_user_policy",
      on_no_user: "deny", decided_at: iso(2_000), synced_at: iso(2_100) }), now),
    event: describeEvent({ source: "runtime", type: "decided", time: iso(5_000),
      detail: { decision: "approve", decided_at_ms: T0 + 4_000, how: "user" } }, now),
  };
}
"""


def test_states_in_plain_words(page: Any, bridge: Bridge) -> None:
    """DESIGN §3 states, with their reasons, as the console words them (crafted prompt objects)."""
    page.goto(bridge.url + "/")
    got = page.evaluate(DESCRIBE_CASES)
    decided, synced = got["hm"]["decided"], got["hm"]["synced"]
    assert got["unreachable"]["headline"].startswith("Could not reach endpoint — 7 attempts over 5 min")
    assert "provisional: a late answer made in time will still count" in got["unreachable"]["headline"]
    assert got["never_online"]["headline"].startswith(
        "Could not reach endpoint — offline for the prompt's whole 6 s life"
    )
    assert got["delivered"]["headline"] == "Delivered, not yet seen"
    assert got["pending_offline"]["headline"] == "Waiting for the endpoint to reconnect — 3 attempts so far, no receipt"
    assert got["pending_sending"]["headline"] == "Sending — attempt 3, no receipt yet"
    assert got["pending_sending"]["live"] is True
    # R7: after 90 s the console may say so, but the prompt stays live.
    assert got["delivered_silent"]["headline"] == "Delivered, not yet seen — no answer yet for 2 min"
    assert got["delivered_silent"]["live"] is True
    assert got["approved_synced_late"]["headline"] == f"Approved {decided} (synced {synced})"
    assert "after the prompt had been marked expired" in got["approved_synced_late"]["detail"]
    assert got["approved_synced_at_once"]["headline"] == f"Approved {decided}"
    assert got["cancelled_late"]["headline"] == "Cancelled — user answered 'approve' afterwards (ignored)"
    assert "by tech1" in got["cancelled_late"]["detail"]
    assert got["expired_provisional"]["headline"] == (
        "Expired — no answer (provisional: a late answer made in time will still count)"
    )
    assert got["expired_firm"]["headline"] == "Expired — no answer"
    assert "automatically: no user present (policy: deny)" in got["policy"]["detail"]
    assert got["event"]["who"] == "Endpoint" and "User answered 'approve'" in got["event"]["what"]


# --- sign-in -----------------------------------------------------------------------------------


def test_sign_in_rejects_bad_token_then_signs_in_and_out(
    page: Any, console: ConsoleLog, bridge: Bridge, tech_token: str
) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of 401")
    page.goto(bridge.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.fill("#token", "cst_not-a-real-token")
    page.click("button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("Not accepted")
    expect(page.locator("#signin-error")).to_contain_text("invalid_token")
    assert page.evaluate("sessionStorage.getItem('caisey.token')") is None

    page.fill("#token", tech_token)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('caisey.token')") == tech_token
    page.reload()  # the session survives a reload of the tab
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('caisey.token')") is None
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_revoked_token_signs_out(page: Any, console: ConsoleLog, bridge: Bridge) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of 401")
    token = bridge.technician("tech-revoked")
    sign_in(page, bridge, token)
    bridge.ok("DELETE", "/api/tokens/tech-revoked")
    expect(page.locator("#signin-error")).to_contain_text("no longer accepts this token", timeout=10_000)
    assert page.evaluate("sessionStorage.getItem('caisey.token')") is None


# --- endpoint: create, expiry, cancel, re-issue ------------------------------------------------


def create_via_form(page: Any, title: str, expires: str, unit: str = "s", on_no_user: str = "wait") -> None:
    page.fill("#new-title", title)
    page.fill("#new-expiry", expires)
    page.select_option("#new-expiry-unit", unit)
    page.check(f"input[name=on_no_user][value={on_no_user}]")
    page.click("#create-submit")


def test_unreachable_endpoint_prompt_ends_could_not_reach(page: Any, bridge: Bridge, tech_token: str) -> None:
    """I7 on the console: a prompt to an endpoint that never connects ends 'could not reach', by name."""
    bridge.register("kiosk-7", "Front desk kiosk")
    sign_in(page, bridge, tech_token, "#/endpoint/kiosk-7")
    expect(page.get_by_role("heading", name="Front desk kiosk kiosk-7")).to_be_visible()
    create_via_form(page, "Allow remote control?", "6", "s", "deny")
    expect(page.locator("#create-result")).to_contain_text("Created — the bridge answered 201 Created")
    item = prompt_item(page, "Allow remote control?")
    expect(item.locator(".state")).to_have_text("Waiting for the endpoint to connect")
    expect(item.locator(".detail")).to_contain_text("expires")
    expect(page.locator("#endpoint-line")).to_contain_text("1 open prompt")

    expect(item.locator(".state")).to_have_text(
        "Could not reach endpoint — offline for the prompt's whole 6 s life "
        "(provisional: a late answer made in time will still count)",
        timeout=12_000,
    )
    expect(page.locator("#endpoint-line")).to_contain_text("0 open prompts")
    # Patterns: the miss is counted in its hour and said in words.
    expect(page.locator(".patterns-summary")).to_contain_text("1 of 1 finished prompts went unanswered or undelivered")
    expect(page.locator(".hour-chart rect[data-bucket=failed]")).to_have_count(1)
    expect(page.locator(".history .cell.b-failed")).to_have_count(1)
    shot(page, "endpoint-unreachable")

    item.get_by_role("link", name="Timeline of “Allow remote control?”").click()
    expect(page.get_by_role("heading", name="Allow remote control?")).to_be_visible()
    rows = page.locator("#timeline-rows tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Console")
    expect(rows.nth(0)).to_contain_text("Created by tech1")
    expect(rows.nth(1)).to_contain_text("Bridge")
    expect(rows.nth(1)).to_contain_text("could not deliver")
    expect(page.locator("#prompt-facts")).to_contain_text("endpoint_unreachable")
    shot(page, "timeline-unreachable")

    # A provisional failure can still be withdrawn (so a late answer can never resolve it).
    page.click("#prompt-cancel")
    expect(page.locator("#prompt-result")).to_contain_text("Cancel accepted — the bridge answered 200 OK")
    expect(page.locator("#prompt-state")).to_have_text("Cancelled")
    expect(page.locator("#prompt-detail")).to_contain_text("after it could not be delivered")
    expect(rows).to_have_count(3)
    expect(rows.nth(2)).to_contain_text("Cancelled by tech1")
    expect(page.locator("#prompt-cancel")).to_be_hidden()


def test_cancel_and_reissue_show_the_bridges_answer(page: Any, bridge: Bridge, tech_token: str) -> None:
    bridge.register("pc-cancel", "Accounts laptop")
    sign_in(page, bridge, tech_token, "#/endpoint/pc-cancel")
    create_via_form(page, "Install update", "5", "min")
    item = prompt_item(page, "Install update")
    expect(item.locator(".state")).to_have_text("Waiting for the endpoint to connect")
    item.get_by_role("button", name="Cancel “Install update”").click()
    expect(item.locator(".result")).to_contain_text("Cancel accepted — the bridge answered 200 OK")
    expect(item.locator(".state")).to_have_text("Cancelled")
    expect(item.locator(".detail")).to_contain_text("cancelled by tech1")
    expect(item.get_by_role("button", name="Cancel “Install update”")).to_be_hidden()

    create_via_form(page, "Share screen", "5", "min")
    old = prompt_item(page, "Share screen")
    expect(old).to_have_count(1)
    old_id = old.get_attribute("data-pid")
    old.get_by_role("button", name="Re-issue “Share screen”").click()
    expect(page.locator(f"li.prompt[data-pid='{old_id}'] .result")).to_contain_text(
        "Re-issued — the bridge answered 201 Created: new prompt"
    )
    old = page.locator(f"li.prompt[data-pid='{old_id}']")
    expect(old.locator(".state")).to_have_text("Re-issued (replaced by a new prompt)")
    expect(old.locator(".meta")).to_contain_text("replaced by a newer prompt")
    expect(prompt_item(page, "Share screen")).to_have_count(2)
    newest = page.locator("li.prompt").first  # newest first
    expect(newest.locator(".meta")).to_contain_text("replaces an earlier prompt")
    expect(newest.locator(".state")).to_have_text("Waiting for the endpoint to connect")

    by_id = {p["prompt_id"]: p for p in bridge.prompts("pc-cancel")}
    assert by_id[old_id]["state"] == "superseded"
    new_id = by_id[old_id]["superseded_by"]
    assert by_id[new_id]["supersedes"] == old_id and by_id[new_id]["state"] == "pending"
    assert [p["state"] for p in bridge.prompts("pc-cancel")].count("cancelled") == 1

    # The old prompt's timeline links to its replacement; the replacement's to the old one.
    old.get_by_role("link", name="Timeline of “Share screen”").click()
    expect(page.locator("#timeline-rows tr").last).to_contain_text(f"Replaced by {new_id}")
    page.locator("#prompt-facts").get_by_role("link", name=new_id).click()
    expect(page.locator("#prompt-facts")).to_contain_text(old_id)
    expect(page.locator("#timeline-rows tr").first).to_contain_text(f"replaces {old_id}")


def test_create_retried_after_a_lost_answer_makes_one_prompt(
    page: Any, console: ConsoleLog, bridge: Bridge, tech_token: str
) -> None:
    """The bridge commits the create but its answer is lost: the retry (same key) gets the same prompt."""
    console.allow(r"Failed to load resource: net::ERR_")
    bridge.register("pc-idem", "Lab PC")
    keys: list[str | None] = []

    def lose_first_answer(route: Any, request: Any) -> None:
        if request.method != "POST":
            route.continue_()
            return
        keys.append(request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # the bridge receives and commits it…
            route.abort("connectionreset")  # …and the browser never hears back
        else:
            route.continue_()

    page.route(re.compile(r".*/api/endpoints/pc-idem/prompts$"), lose_first_answer)
    sign_in(page, bridge, tech_token, "#/endpoint/pc-idem")
    create_via_form(page, "Run diagnostics", "5", "min")
    expect(page.locator("#create-result")).to_contain_text(
        "Already created by an earlier try of this request — the bridge answered 200 OK with the same prompt"
    )
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
    assert keys[0].startswith("console-")
    assert len(bridge.prompts("pc-idem")) == 1
    expect(prompt_item(page, "Run diagnostics")).to_have_count(1)

    # A second, deliberate submission is a new request with a new key: a second prompt.
    create_via_form(page, "Run diagnostics", "5", "min")
    expect(page.locator("#create-result")).to_contain_text("Created — the bridge answered 201 Created")
    assert len(keys) == 3 and keys[2] != keys[0]
    expect(prompt_item(page, "Run diagnostics")).to_have_count(2)


def test_refusals_are_shown_with_code_and_message(
    page: Any, bridge: Bridge, console: ConsoleLog, tech_token: str
) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of (400|404)")
    bridge.register("pc-refuse", "")
    sign_in(page, bridge, tech_token, "#/endpoint/pc-refuse")
    create_via_form(page, "Too quick", "2", "s")
    expect(page.locator("#create-result")).to_contain_text(
        "Create refused — the bridge answered 400 Bad Request invalid_expiry"
    )
    expect(page.locator("li.prompt")).to_have_count(0)
    not_found: list[str] = []
    page.on("response", lambda r: not_found.append(r.url) if r.status == 404 else None)
    page.goto(bridge.url + "/#/endpoint/no-such-endpoint")
    expect(page.get_by_role("alert").filter(has_text="unknown_endpoint")).to_be_visible()
    page.wait_for_timeout(4_500)  # two more polls: the fleet is still checked, no 404 repeated
    # One poll asked for the prompts and the endpoint's record (keys, audit head); neither again.
    assert len(not_found) == len(set(not_found)) and len(not_found) <= 2, not_found
    expect(page.locator("#freshness")).to_contain_text("Live")


# --- reachability ------------------------------------------------------------------------------


def test_bridge_outage_shows_banner_and_recovers_without_reload(
    browser: Any, console: ConsoleLog, tmp_path: Path
) -> None:
    console.allow(r"Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE)")
    own = Bridge(tmp_path / "data")
    own.start()
    page = open_page(browser, console)
    try:
        own.register("pc-outage", "Warehouse PC")
        sign_in(page, own, own.technician("tech-outage"), "#/endpoint/pc-outage")
        expect(page.locator("#endpoint-line")).to_contain_text("Offline · never connected")
        expect(page.locator("#freshness")).to_contain_text("Live")
        page.evaluate("window.__sameDocument = true")

        own.stop()
        banner = page.locator("#banner")
        expect(banner).to_be_visible(timeout=8_000)
        expect(page.locator("#banner-msg")).to_have_text("Bridge unreachable — retrying")
        expect(page.locator("#banner-detail")).to_contain_text("the page shows data from")
        expect(page.locator("#freshness")).to_contain_text("old", timeout=8_000)
        expect(page.locator("#freshness")).to_contain_text("bridge unreachable")
        expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
        expect(page.locator("#banner-detail")).to_contain_text("failed tries", timeout=8_000)
        shot(page, "bridge-unreachable", full_page=False)

        own.start()
        expect(banner).to_be_hidden(timeout=15_000)
        expect(page.locator("#freshness")).to_contain_text("Live")
        expect(page.locator("body")).not_to_have_class(re.compile(r"\bstale\b"))
        assert page.evaluate("window.__sameDocument") is True  # recovered without a reload
        # And the page is live again: a change at the bridge shows within a poll.
        own.ok(
            "POST",
            "/api/endpoints/pc-outage/prompts",
            {"title": "After the outage", "action": "remote_control", "expires_in": 300},
        )
        expect(prompt_item(page, "After the outage")).to_have_count(1, timeout=6_000)
    finally:
        page.context.close()
        own.stop()
    assert console.unexpected() == []


# --- keyboard and zoom -------------------------------------------------------------------------


def test_keyboard_only_and_200_percent_zoom(browser: Any, console: ConsoleLog, bridge: Bridge, tech_token: str) -> None:
    """Everything reachable with Tab/Enter; at 200% zoom (a 640 px CSS viewport) nothing overflows sideways."""
    bridge.register("pc-keys", "Keyboard test PC")
    page = open_page(browser, console)
    try:
        page.goto(bridge.url + "/")
        expect(page.locator("#token")).to_be_focused()
        page.keyboard.type(tech_token)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Fleet")).to_be_focused()
        page.keyboard.press("Tab")  # the search box is the first control after the heading
        expect(page.locator("#fleet-search")).to_be_focused()
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), outline  # a visible focus ring
        page.keyboard.type("pc-keys")
        link = page.get_by_role("link", name="Keyboard test PC pc-keys")
        expect(link).to_be_visible()
        for _ in range(8):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('endpoint-link')"):
                break
        expect(link).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Keyboard test PC pc-keys")).to_be_focused()

        # Create with the keyboard only: focus the title, type, Enter submits the form.
        page.focus("#new-title")
        page.keyboard.press("Control+A")
        page.keyboard.type("Keyboard prompt")
        page.keyboard.press("Enter")
        expect(page.locator("#create-result")).to_contain_text("201 Created")
        cancel = page.get_by_role("button", name="Cancel “Keyboard prompt”")
        cancel.focus()
        page.keyboard.press("Enter")
        expect(prompt_item(page, "Keyboard prompt").locator(".state")).to_have_text("Cancelled")
    finally:
        page.context.close()

    zoomed = open_page(browser, console, device_scale_factor=2)
    try:
        zoomed.set_viewport_size({"width": 640, "height": 450})
        sign_in(zoomed, bridge, tech_token, "#/endpoint/pc-keys")
        pid = prompt_item(zoomed, "Keyboard prompt").get_attribute("data-pid")
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        for hash_, ready, name in [
            ("#/", "#fleet-rows tr", "fleet"),
            ("#/endpoint/pc-keys", "li.prompt", "endpoint"),
            (f"#/endpoint/pc-keys/prompt/{pid}", "#timeline-rows tr", "timeline"),
        ]:
            zoomed.evaluate(f"location.hash = {json.dumps(hash_)}")
            expect(zoomed.locator(ready).first).to_be_visible()
            assert zoomed.evaluate(overflow) <= 0, f"{name} scrolls sideways at 200% zoom"
            shot(zoomed, f"zoom200-{name}", full_page=False)
    finally:
        zoomed.context.close()
    assert console.unexpected() == []


# --- with the real agent -----------------------------------------------------------------------

# The agent's exec presenter: started once per displayed prompt with its JSON on stdin. It
# records that it was shown, then waits until the test writes an answer for this prompt
# (answers/<prompt_id>) or for any prompt (answers/default), and prints it.
GATE_PRESENTER = """
import json, pathlib, sys, time
gate = pathlib.Path(sys.argv[1])
prompt = json.load(sys.stdin)
pid = prompt["prompt_id"]
(gate / "shown" / pid).write_text(json.dumps(prompt))
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    for name in (pid, "default"):
        answer = gate / "answers" / name
        if answer.exists():
            word = answer.read_text().strip()
            print(word, flush=True)
            (gate / "answered" / pid).write_text(word)
            sys.exit(0)
    time.sleep(0.05)
"""


def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "caisey-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]


class Proxy:
    """A TCP forwarder between agent and bridge that can hold all traffic (a network stall).

    While paused, bytes read on either side are held, not forwarded, and new connections
    wait before they are connected upstream; ``resume`` lets everything through in order.
    """

    def __init__(self, target_port: int) -> None:
        import threading

        self._threading = threading
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.running = threading.Event()
        self.running.set()  # set = forwarding
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def close(self) -> None:
        self.closed = True
        self.running.set()
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.running.wait()
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        self.sockets += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self.running.wait()
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


class Agent:
    """A real ``caisey-agent`` enrolled for one endpoint, answering through the gate presenter."""

    def __init__(self, bridge: Bridge, endpoint_id: str, label: str, root: Path) -> None:
        self.bridge = bridge
        self.endpoint_id = endpoint_id
        self.state_dir = root / "agent-state"
        self.gate = root / "gate"
        for sub in ("shown", "answers", "answered"):
            (self.gate / sub).mkdir(parents=True, exist_ok=True)
        self.presenter = root / "gate_presenter.py"
        self.presenter.write_text(GATE_PRESENTER)
        self.log_path = root / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        token = bridge.register(endpoint_id, label)["enrollment_token"]
        subprocess.run(
            [*agent_command(), "enroll", "--bridge", bridge.url, "--token", token, "--state-dir", str(self.state_dir)],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self, via: str | None = None) -> None:
        presenter = f"exec:{sys.executable} {self.presenter} {self.gate}"
        cmd = [*agent_command(), "run", "--presenter", presenter, "--state-dir", str(self.state_dir)]
        if via:
            cmd += ["--bridge", via]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()

    def answer(self, prompt_id: str, word: str) -> None:
        (self.gate / "answers" / prompt_id).write_text(word)

    def shown(self, prompt_id: str) -> bool:
        return (self.gate / "shown" / prompt_id).exists()

    def local_decision(self, prompt_id: str) -> str | None:
        """The decision the agent has committed in its own store (``caisey-agent status --json``)."""
        out = subprocess.run(
            [*agent_command(), "status", "--json", "--state-dir", str(self.state_dir)],
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
        for p in json.loads(out)["prompts"]:
            if p["prompt_id"] == prompt_id:
                decision: str | None = p["decision"]
                return decision
        return None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def wait_for(predicate: Any, timeout_s: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def newest_prompt_id(bridge: Bridge, endpoint_id: str, title: str) -> str:
    def find() -> str | None:
        for p in bridge.prompts(endpoint_id):
            if p["title"] == title:
                pid: str = p["prompt_id"]
                return pid
        return None

    pid: str = wait_for(find, 5, f"prompt {title!r}")
    return pid


def test_agent_approves_and_a_late_cancel_is_refused_with_409(
    page: Any, console: ConsoleLog, bridge: Bridge, tech_token: str, tmp_path: Path
) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of 409")
    agent = Agent(bridge, "pc-agent", "Reception desk", tmp_path)
    agent.start()
    try:
        sign_in(page, bridge, tech_token, "#/endpoint/pc-agent")
        expect(page.locator("#endpoint-line")).to_contain_text("Online · connected now", timeout=15_000)
        create_via_form(page, "Allow remote control?", "5", "min")
        pid = newest_prompt_id(bridge, "pc-agent", "Allow remote control?")
        item = page.locator(f"li.prompt[data-pid='{pid}']")
        expect(item.locator(".state")).to_have_text("Seen by the user, no answer yet", timeout=10_000)
        # The agent reports "shown" as it starts the presenter, which then writes its file.
        assert wait_for(lambda: agent.shown(pid), 5, "the presenter's record of the prompt")

        # The technician's page is one poll behind: it still offers Cancel when the user approves.
        page.route(
            re.compile(r".*/api/endpoints/pc-agent/prompts\?limit=\d+$"),
            lambda route: route.fulfill(status=304, headers={"etag": 'W/"frozen"'}),
        )
        page.wait_for_timeout(300)
        agent.answer(pid, "approve")
        wait_for(
            lambda: bridge.ok("GET", f"/api/endpoints/pc-agent/prompts/{pid}")["state"] == "approved", 10, "approval"
        )
        expect(item.locator(".state")).to_have_text("Seen by the user, no answer yet")
        item.get_by_role("button", name="Cancel “Allow remote control?”").click()
        result = item.locator(".result")
        expect(result).to_contain_text(
            "Cancel refused — the bridge answered 409 Conflict already_final: prompt is already approved"
        )
        expect(result).to_contain_text(re.compile(r"Current state: Approved \d\d:\d\d\."))
        expect(item.locator(".state")).to_have_text(re.compile(r"^Approved \d\d:\d\d$"))
        expect(item.get_by_role("button", name="Cancel “Allow remote control?”")).to_be_hidden()
        page.unroute(re.compile(r".*/api/endpoints/pc-agent/prompts\?limit=\d+$"))
        expect(item.locator(".detail")).to_contain_text("by the user")

        # A second prompt, answered at once by the user: the whole timeline, all three sources.
        agent.answer("default", "approve")
        create_via_form(page, "Transfer diagnostics file", "5", "min")
        second = newest_prompt_id(bridge, "pc-agent", "Transfer diagnostics file")
        item2 = page.locator(f"li.prompt[data-pid='{second}']")
        expect(item2.locator(".state")).to_have_text(re.compile(r"^Approved \d\d:\d\d$"), timeout=10_000)
        shot(page, "endpoint-approved")
        item2.get_by_role("link", name="Timeline of “Transfer diagnostics file”").click()
        rows = page.locator("#timeline-rows tr")
        expect(rows.filter(has_text="User answered 'approve'")).to_have_count(1)
        types = [r.get_attribute("data-type") for r in rows.all()]
        sources = [r.get_attribute("data-source") for r in rows.all()]
        assert types[0] == "created" and types[-1] == "decided", types
        assert {"received", "acknowledged", "delivery_attempted"} <= set(types), types
        assert {"console", "bridge", "runtime"} == set(sources), sources
        expect(rows.filter(has_text="Endpoint stored the prompt (receipt)").locator(".ev-source")).to_have_text(
            "Endpoint"
        )
        expect(rows.filter(has_text="Delivery attempt 1").locator(".ev-source")).to_have_text("Bridge")
        expect(page.locator("#prompt-state")).to_have_text(re.compile(r"^Approved \d\d:\d\d$"))
        shot(page, "timeline-approved")

        page.get_by_role("link", name="Fleet").click()
        row = page.locator("#fleet-rows tr[data-eid='pc-agent']")
        expect(row).to_contain_text("Online")
        expect(row).to_contain_text("Approved ·")
    finally:
        agent.stop()


def test_stuck_prompt_cancelled_and_reissued_stays_cancelled_when_answered_late(
    page: Any, bridge: Bridge, tech_token: str, tmp_path: Path
) -> None:
    """R3/I3 on the console: a technician cancels a prompt the frozen agent holds, re-issues it;
    the re-issue is approved and the old one stays Cancelled though the user approves it later."""
    proxy = Proxy(bridge.port)
    agent = Agent(bridge, "pc-stuck", "Finance laptop", tmp_path)
    agent.start(via=proxy.url)
    try:
        sign_in(page, bridge, tech_token, "#/endpoint/pc-stuck")
        expect(page.locator("#endpoint-line")).to_contain_text("Online", timeout=15_000)
        # The agent shows one dialog at a time: while "Check disk" is up, the next prompt is
        # delivered (stored by the agent) but not yet seen.
        create_via_form(page, "Check disk", "5", "min")
        blocker = newest_prompt_id(bridge, "pc-stuck", "Check disk")
        expect(page.locator(f"li.prompt[data-pid='{blocker}'] .state")).to_have_text(
            "Seen by the user, no answer yet", timeout=10_000
        )
        create_via_form(page, "Allow remote control?", "5", "min")
        old = newest_prompt_id(bridge, "pc-stuck", "Allow remote control?")
        old_item = page.locator(f"li.prompt[data-pid='{old}']")
        expect(old_item.locator(".state")).to_have_text("Delivered, not yet seen", timeout=10_000)

        # The agent freezes (SIGSTOP) and its network stalls: the prompt stays live (R7).
        proxy.pause()
        agent.signal(signal.SIGSTOP)
        page.wait_for_timeout(2_500)
        expect(old_item.locator(".state")).to_have_text("Delivered, not yet seen")
        shot(page, "endpoint-delivered-not-seen")

        old_item.get_by_role("button", name="Cancel “Allow remote control?”").click()
        expect(old_item.locator(".result")).to_contain_text("Cancel accepted — the bridge answered 200 OK")
        expect(old_item.locator(".state")).to_have_text("Cancelled")
        old_item.get_by_role("button", name="Re-issue “Allow remote control?”").click()
        expect(old_item.locator(".result")).to_contain_text("Re-issued — the bridge answered 201 Created")
        new = bridge.ok("GET", f"/api/endpoints/pc-stuck/prompts/{old}")["superseded_by"]
        assert new, "the re-issue names the prompt it replaced"
        new_item = page.locator(f"li.prompt[data-pid='{new}']")
        expect(new_item.locator(".state")).to_have_text(re.compile(r"^(Queued for delivery|Sending — attempt \d+)"))
        expect(old_item.locator(".state")).to_have_text("Cancelled")  # re-issuing a cancelled prompt links only

        # The frozen agent wakes up; before it hears of the cancel the user answers both dialogs.
        agent.answer(blocker, "deny")
        agent.answer(old, "approve")
        agent.signal(signal.SIGCONT)
        wait_for(lambda: agent.local_decision(old) == "approve", 20, "the user's late approval on the agent")
        agent.answer("default", "approve")  # the re-issued prompt, once it arrives
        proxy.resume()

        expect(new_item.locator(".state")).to_have_text(re.compile(r"^Approved \d\d:\d\d$"), timeout=20_000)
        expect(old_item.locator(".state")).to_have_text(
            "Cancelled — user answered 'approve' afterwards (ignored)", timeout=10_000
        )
        expect(page.locator(f"li.prompt[data-pid='{blocker}'] .state")).to_have_text(
            re.compile(r"^Denied \d\d:\d\d"), timeout=10_000
        )
        old_view = bridge.ok("GET", f"/api/endpoints/pc-stuck/prompts/{old}")
        assert old_view["state"] == "cancelled" and old_view["late_decision"]["decision"] == "approve"
        publish(shot(page, "endpoint-agent"))

        old_item.get_by_role("link", name="Timeline of “Allow remote control?”").click()
        rows = page.locator("#timeline-rows tr")
        expect(rows.filter(has_text="User answered 'approve'")).to_have_count(1, timeout=10_000)
        types = [r.get_attribute("data-type") for r in rows.all()]
        assert types.index("cancelled") < types.index("decided"), types
        expect(page.locator("#prompt-facts")).to_contain_text("Late answer (ignored)")
        expect(page.locator("#prompt-state")).to_have_text("Cancelled — user answered 'approve' afterwards (ignored)")
        shot(page, "timeline-late-answer")
    finally:
        agent.stop()
        proxy.close()


# --- fleet -------------------------------------------------------------------------------------


def test_fleet_with_a_thousand_endpoints(page: Any, fleet_bridge: FleetBridge | None) -> None:
    assert fleet_bridge is not None
    bridge = fleet_bridge.ready()
    total = len(bridge.ok("GET", "/api/endpoints")["endpoints"])
    assert total == FLEET_SIZE
    tech_token = bridge.technician("tech-fleet")
    responses: list[tuple[str, int, str | None]] = []
    page.on(
        "response",
        lambda r: (
            responses.append((r.url, r.status, r.request.headers.get("if-none-match")))
            if r.url.endswith("/api/endpoints")
            else None
        ),
    )
    sign_in(page, bridge, tech_token)
    expect(page.locator("#fleet-summary")).to_contain_text(f"{total:,} endpoints")
    expect(page.locator("#fleet-rows tr")).to_have_count(total)
    perf = page.evaluate("window.__caiseyPerf")
    assert perf["fleetRows"] == total
    assert perf["fleetRenderMs"] < 1_500, perf  # one full render of the whole fleet

    row = page.locator("#fleet-rows tr[data-eid='ws-0042']")
    expect(row).to_contain_text("Workstation 42")
    expect(row).to_contain_text("Waiting for its agent")  # registered, its agent never connected
    expect(row).to_contain_text("never")
    expect(row).to_contain_text("none yet")

    # Search: typing filters 1,000 rows at once.
    elapsed_ms = page.evaluate(
        """() => {
        const input = document.getElementById('fleet-search');
        const t0 = performance.now();
        input.value = 'ws-0999';
        input.dispatchEvent(new Event('input'));
        return performance.now() - t0;
    }"""
    )
    assert elapsed_ms < 300, elapsed_ms
    expect(page.locator("#fleet-rows tr:visible")).to_have_count(1)
    expect(page.locator("#fleet-summary")).to_contain_text("showing 1")
    page.fill("#fleet-search", "workstation 12")
    expect(page.locator("#fleet-rows tr:visible")).to_have_count(11)  # 12, 120-129
    page.fill("#fleet-search", "")
    page.select_option("#fleet-status", "online")
    expect(page.locator("#fleet-rows tr:visible")).to_have_count(0)
    expect(page.get_by_text("No endpoint matches these filters.")).to_be_visible()
    page.select_option("#fleet-status", "")
    page.select_option("#fleet-attention", "never")
    expect(page.locator("#fleet-rows tr:visible")).to_have_count(total)
    page.select_option("#fleet-attention", "")
    shot(page, "fleet", full_page=False)

    # Polling with If-None-Match: unchanged data is a 304 and touches no row.
    page.evaluate(
        """() => {
        window.__fleetMutations = 0;
        new MutationObserver((records) => { window.__fleetMutations += records.length; })
          .observe(document.getElementById('fleet-rows'), {subtree: true, childList: true, characterData: true, attributes: true});
    }"""
    )
    seen = len(responses)
    page.wait_for_timeout(4_500)
    polls = responses[seen:]
    assert len(polls) >= 2, polls
    assert all(status == 304 and etag for _, status, etag in polls), polls
    assert page.evaluate("window.__fleetMutations") == 0

    # Open an endpoint from the fleet.
    page.get_by_role("link", name="Workstation 7 ws-0007").click()
    expect(page.get_by_role("heading", name="Workstation 7 ws-0007")).to_be_visible()
    expect(page.locator("#endpoint-line")).to_contain_text("Offline · never connected · 0 open prompts")
