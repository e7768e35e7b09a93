"""The console's proof of consent (DESIGN §10) against a real ``caisey-bridge serve``.

What a technician must be able to read: whether a recorded answer is signed by the endpoint's
key (and which key) or unsigned; that the endpoint's own cap on unattended answers decided a
prompt; that the bridge refused an answer whose signature did not hold; the endpoint's key
history across an admin's re-enrollment; and the audit export, saved from the page and
checked with ``caisey-audit verify``.

The endpoint side is ``tests.bridge_hosts.ScriptedRuntime`` on its own event-loop thread
(Playwright's sync API owns the main thread): it enrolls with a real Ed25519 key
(``agent.identity.EndpointKey``) and signs answers exactly as ``agent.core.AgentCore._sign``
does. The bridge, browser and page fixtures are test_console.py's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.identity import EndpointKey
from caisey import wire
from caisey.signing import answer_message, b64encode
from tests import test_console
from tests.bridge_hosts import Enrolled, LocalBridgeProcess, ScriptedRuntime, of_type
from tests.test_console import ADMIN_TOKEN, Bridge, ConsoleLog, expect, open_page, prompt_item, shot, sign_in

# test_console.py's fixtures (one bridge and one browser for this module), found by name.
bridge = test_console.bridge
browser = test_console.browser
console = test_console.console
page = test_console.page
tech_token = test_console.tech_token

pytestmark = [pytest.mark.slow]

T = TypeVar("T")
FRAME_TIMEOUT_S = 15


# --- the endpoint side -------------------------------------------------------------------------


class _Host:
    """test_console's bridge process in the shape ``ScriptedRuntime`` talks to."""

    connect_agent = LocalBridgeProcess.connect_agent  # uses only ``self.url``

    def __init__(self, bridge: Bridge) -> None:
        self.url = bridge.url
        self.admin_token = ADMIN_TOKEN

    def now_ms(self) -> int:
        return LocalBridgeProcess.now_ms(self)  # type: ignore[arg-type]


class Loop:
    """One asyncio loop on a daemon thread; ``run`` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(FRAME_TIMEOUT_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


def enroll(bridge: Bridge, endpoint_id: str, label: str, key: EndpointKey | None) -> Enrolled:
    """Register (as admin) and exchange the token as an agent would, with ``key``'s public half."""
    token = bridge.register(endpoint_id, label)["enrollment_token"]
    body: dict[str, Any] = {"enrollment_token": token}
    if key is not None:
        body["public_key"] = key.public_key_b64
    answer = bridge.ok("POST", "/api/agent/enroll", body)
    if key is not None:
        assert answer["key_id"] == key.key_id, answer
    return Enrolled(endpoint_id, answer["agent_secret"])


class Endpoint:
    """A scripted endpoint: holds the prompts delivered to it and answers them, signed or not."""

    def __init__(self, bridge: Bridge, loop: Loop, enrolled: Enrolled, key: EndpointKey | None) -> None:
        self.loop = loop
        self.key = key
        self.runtime = ScriptedRuntime(_Host(bridge), enrolled)  # type: ignore[arg-type]
        self.copies: dict[str, wire.PromptCopy] = {}
        self.frames: list[wire.Message] = []

    def _take(self, frames: list[wire.Message]) -> list[wire.Message]:
        self.frames += frames
        for deliver in of_type(frames, wire.PromptDeliver):
            self.copies[deliver.prompt.prompt_id] = deliver.prompt
        return frames

    def connect(self) -> None:
        self._take(self.loop.run(self.runtime.connect()))

    def receive(self, prompt_id: str) -> wire.PromptCopy:
        """Wait for ``prompt_id``'s delivery and send its receipt."""
        for _ in range(20):
            if prompt_id in self.copies:
                break
            self._take(self.loop.run(self.runtime.drain(0.5)))
        deliver = next(f for f in self.frames if isinstance(f, wire.PromptDeliver) and f.prompt.prompt_id == prompt_id)
        self._take(self.loop.run(self.runtime.receipt(deliver)))
        return self.copies[prompt_id]

    def answer(
        self, prompt_id: str, decision: str, how: str = "user", *, signer: EndpointKey | None = None, sign: bool = True
    ) -> list[wire.Message]:
        """Send a ``decided`` update, signed like ``AgentCore._sign`` (by ``signer``, default
        this endpoint's key, always named as this endpoint's key id) unless ``sign`` is False."""
        copy = self.copies[prompt_id]
        decided_at_ms = self.runtime.bridge.now_ms()
        key_id = sig = None
        if sign and self.key is not None:
            message = answer_message(self.runtime.endpoint.endpoint_id, copy, decision, how, decided_at_ms)
            key_id, sig = self.key.key_id, b64encode((signer or self.key).sign(message))
        update = wire.PromptUpdate(
            id=self.runtime.new_id(),
            prompt_id=prompt_id,
            status="decided",
            how=how,
            decision=decision,
            decided_at_ms=decided_at_ms,
            key_id=key_id,
            sig=sig,
        )
        self.loop.run(self.runtime.send(update))
        return self._take(self.loop.run(self.runtime.drain()))

    def close(self) -> None:
        self.loop.run(self.runtime.close())


def create(bridge: Bridge, endpoint_id: str, title: str, on_no_user: str = "wait") -> str:
    body = {"title": title, "message": "", "action": "remote_control", "expires_in": 600, "on_no_user": on_no_user}
    pid: str = bridge.ok("POST", f"/api/endpoints/{endpoint_id}/prompts", body)["prompt_id"]
    return pid


def errors(frames: list[wire.Message]) -> list[str]:
    return [f"{f.code}: {f.message}" for f in of_type(frames, wire.Error)]


# --- plain words (pure functions, run in the browser) ------------------------------------------

CONSENT_CASES = """
async () => {
  const { describePrompt, describeEvent, describeKeys, describeAuditExport } = await import("/js/describe.js");
  const T0 = Date.parse("2026-03-02T10:00:00Z");
  const iso = (ms) => new Date(T0 + ms).toISOString();
  const decided = (over) => ({
    prompt_id: "01X", endpoint_id: "pc", state: "approved", final: true, provisional: false, reason: null,
    title: "t", message: "", action: "remote_control", on_no_user: "wait", created_at: iso(0), created_by: "tech1",
    expires_at: iso(300_000), adopted: false, decision: "approve", decided_at: iso(4_000), synced_at: iso(4_100),
    decided_how: "user", decision_signature: null, late_decision: null, cancelled_by: null, supersedes: null,
    superseded_by: null, final_at: iso(4_100),
    delivery: { attempts: 1, received_at: iso(1_000), acknowledged_at: iso(2_000) },
    ...over,
  });
  const now = T0 + 60_000;
  const keys = [
    { key_id: "ab12cd34ef567890", public_key: "AAA", valid_from: iso(0), valid_until: iso(30_000), registered_by: "admin" },
    { key_id: "cd34ef56ab127890", public_key: "BBB", valid_from: iso(30_000), valid_until: null, registered_by: "root" },
  ];
  const audit = [
    JSON.stringify({ type: "header", format: "caisey.audit", version: 1, endpoint_id: "pc" }),
    JSON.stringify({ type: "fact", seq: 1 }),
    JSON.stringify({ type: "head", seq: 1, hash: "0123456789abcdef0123", facts: 1 }),
  ].join("\\n") + "\\n";
  return {
    signed: describePrompt(decided({ decision_signature: { key_id: "ab12cd34ef567890", sig: "x" } }), now),
    unsigned: describePrompt(decided({}), now),
    open: describePrompt(decided({ state: "acknowledged", final: false, decision: null, decided_at: null }), now),
    capped: describePrompt(decided({ state: "denied", decision: "deny", decided_how: "endpoint_policy", on_no_user: "approve",
      decision_signature: { key_id: "ab12cd34ef567890", sig: "x" } }), now),
    capped_event: describeEvent({ source: "runtime", type: "decided", time: iso(5_000),
      detail: { decision: "deny", decided_at_ms: T0 + 4_000, how: "endpoint_policy", key_id: "ab12cd34ef567890", sig: "x" } }, now),
    refused: describeEvent({ source: "bridge", type: "signature_refused", time: iso(5_000),
      detail: { answer: "approve", how: "user", reason: "bad_signature", key_id: "ab12cd34ef567890", decided_at_ms: T0 + 4_000 } }, now),
    refused_missing: describeEvent({ source: "bridge", type: "signature_refused", time: iso(5_000),
      detail: { answer: "dismiss", how: "dismissed", reason: "missing_signature", key_id: null, decided_at_ms: null } }, now),
    keys: describeKeys({ key_id: "cd34ef56ab127890", enrolled_at: iso(30_000), keys }, now),
    no_key: describeKeys({ key_id: null, enrolled_at: iso(0), keys: [] }, now),
    never: describeKeys({ key_id: null, enrolled_at: null, keys: [] }, now),
    audit: describeAuditExport(audit, "pc"),
    audit_other: describeAuditExport(audit, "other"),
    audit_junk: describeAuditExport("<html>", "pc"),
  };
}
"""


def test_consent_in_plain_words(page: Any, bridge: Bridge) -> None:
    """DESIGN §10 as the console words it (crafted API objects)."""
    page.goto(bridge.url + "/")
    got = page.evaluate(CONSENT_CASES)
    assert got["signed"]["proof"]["text"] == "Signed by the endpoint (key ab12cd34…)"
    assert got["signed"]["proof"]["short"] == "signed by the endpoint (key ab12cd34…)"
    assert got["unsigned"]["proof"]["text"] == "Unsigned (recorded before signing, or the endpoint has no key)"
    assert got["open"]["proof"] is None  # nobody answered yet: nothing to prove
    assert got["capped"]["detail"].startswith(
        "Denied by the endpoint's own policy: nobody was present, and this endpoint does not allow "
        "unattended approval (the prompt asked to approve)"
    )
    assert got["capped_event"]["what"].startswith("Nobody present — the endpoint's own policy answered 'deny'")
    assert "signed by the endpoint (key ab12cd34…)" in got["capped_event"]["what"]
    assert got["refused"]["who"] == "Bridge"
    assert got["refused"]["what"].startswith(
        "The bridge refused an answer: its signature did not verify (bad_signature)"
    )
    assert "the prompt's state is unchanged" in got["refused"]["what"]
    assert "carried no signature" in got["refused_missing"]["what"] and "a dismissal" in got["refused_missing"]["what"]
    keys = got["keys"]
    assert keys["summary"].startswith("Answers from this endpoint are signed; current key cd34ef56ab127890")
    assert [k["rekey"] for k in keys["keys"]] == [False, True]
    assert [k["current"] for k in keys["keys"]] == [False, True]
    assert "re-key" in keys["keys"][1]["label"] and "until now (current)" in keys["keys"][1]["validity"]
    assert got["no_key"]["summary"] == "No key: this endpoint was enrolled before signing; its answers are unsigned"
    assert got["never"]["summary"].startswith("No key yet")
    assert got["audit"] == {
        "ok": True,
        "header": True,
        "facts": 1,
        "head": {"type": "head", "seq": 1, "hash": "0123456789abcdef0123", "facts": 1},
        "text": "1 fact, ending at seq 1 (head hash 0123456789ab…)",
    }
    assert got["audit_other"]["header"] is False and got["audit_junk"]["header"] is False


# --- signed, refused, capped -------------------------------------------------------------------


def test_signed_answer_refused_signature_and_endpoint_policy(
    page: Any, bridge: Bridge, tech_token: str, loop: Loop
) -> None:
    key = EndpointKey.generate()
    ep = Endpoint(bridge, loop, enroll(bridge, "pc-signed", "Signed laptop", key), key)
    short = key.key_id[:8] + "…"
    signed = create(bridge, "pc-signed", "Allow remote control?")
    forged = create(bridge, "pc-signed", "Transfer files")
    capped = create(bridge, "pc-signed", "Reboot overnight", on_no_user="approve")
    try:
        ep.connect()
        for pid in (signed, forged, capped):
            ep.receive(pid)
        assert errors(ep.answer(signed, "approve")) == []
        # Signed by another key under this endpoint's key id: refused, state unchanged…
        refused = ep.answer(forged, "approve", signer=EndpointKey.generate())
        assert any("bad_signature" in e for e in errors(refused)), refused
        assert bridge.ok("GET", f"/api/endpoints/pc-signed/prompts/{forged}")["state"] == "delivered"
        # …then the genuine answer is recorded.
        assert errors(ep.answer(forged, "deny")) == []
        # Nobody present; the prompt asks to approve; the endpoint's cap answers deny.
        assert errors(ep.answer(capped, "deny", how="endpoint_policy")) == []
    finally:
        ep.close()

    sign_in(page, bridge, tech_token, "#/endpoint/pc-signed")
    item = page.locator(f"li.prompt[data-pid='{signed}']")
    expect(item.locator(".state")).to_contain_text("Approved")
    expect(item.locator(".detail")).to_have_text(f"by the user · signed by the endpoint (key {short})")
    capped_item = page.locator(f"li.prompt[data-pid='{capped}']")
    expect(capped_item.locator(".detail")).to_contain_text(
        "Denied by the endpoint's own policy: nobody was present, and this endpoint does not allow "
        "unattended approval (the prompt asked to approve)"
    )
    expect(page.locator("#keys-summary")).to_have_text(
        f"Answers from this endpoint are signed; current key {key.key_id}"
    )
    expect(page.locator("#key-list li")).to_have_count(1)
    shot(page, "consent-endpoint-signed")

    item.get_by_role("link", name="Timeline of “Allow remote control?”").click()
    expect(page.locator("#prompt-proof")).to_have_text(f"Signed by the endpoint (key {short})")
    expect(page.locator("#prompt-proof")).to_have_class("proof is-signed")
    expect(page.locator("#prompt-facts")).to_contain_text(f"Ed25519 by the endpoint key {key.key_id}")
    expect(page.locator("#prompt-facts")).to_contain_text("it is the endpoint's current key")
    rows = page.locator("#timeline-rows tr")
    expect(rows.filter(has_text="User answered 'approve'")).to_contain_text(f"signed by the endpoint (key {short})")

    page.goto(f"{bridge.url}/#/endpoint/pc-signed/prompt/{forged}")
    expect(page.locator("#prompt-state")).to_contain_text("Denied")
    refusal = page.locator("#timeline-rows tr[data-type=signature_refused]")
    expect(refusal).to_have_count(1)
    expect(refusal.locator(".ev-source")).to_have_text("Bridge")
    expect(refusal).to_contain_text(
        "The bridge refused an answer: its signature did not verify (bad_signature) — 'approve' by the user"
    )
    expect(refusal).to_contain_text(f"signed with key {key.key_id}; not recorded, the prompt's state is unchanged")
    types = [r.get_attribute("data-type") for r in rows.all()]
    assert types.index("signature_refused") < types.index("decided"), types
    shot(page, "consent-timeline-refused")

    page.goto(f"{bridge.url}/#/endpoint/pc-signed/prompt/{capped}")
    expect(page.locator("#prompt-detail")).to_contain_text("Denied by the endpoint's own policy: nobody was present")
    expect(page.locator("#prompt-facts")).to_contain_text("deny, by the endpoint's own policy: nobody was present")
    expect(page.locator("#prompt-facts")).to_contain_text(
        "unless the endpoint's own policy forbids unattended approval"
    )
    expect(rows.filter(has_text="the endpoint's own policy answered 'deny'")).to_have_count(1)


def test_unsigned_answer_from_an_endpoint_without_a_key(
    page: Any, console: ConsoleLog, bridge: Bridge, tech_token: str, loop: Loop
) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of (403|503)")
    ep = Endpoint(bridge, loop, enroll(bridge, "pc-unsigned", "Old kiosk", None), None)
    pid = create(bridge, "pc-unsigned", "Allow remote control?")
    try:
        ep.connect()
        ep.receive(pid)
        assert errors(ep.answer(pid, "approve")) == []  # no key: accepted unsigned
    finally:
        ep.close()
    assert bridge.ok("GET", f"/api/endpoints/pc-unsigned/prompts/{pid}")["decision_signature"] is None

    sign_in(page, bridge, tech_token, "#/endpoint/pc-unsigned")
    item = prompt_item(page, "Allow remote control?")
    expect(item.locator(".detail")).to_have_text("by the user · unsigned")
    expect(page.locator("#keys-summary")).to_have_text(
        "No key: this endpoint was enrolled before signing; its answers are unsigned"
    )
    expect(page.locator("#key-list")).to_be_hidden()
    # The endpoint's record is polled like the other reads: unchanged, it is a 304.
    answers: list[tuple[int, str | None]] = []
    page.on(
        "response",
        lambda r: (
            answers.append((r.status, r.request.headers.get("if-none-match")))
            if r.url.endswith("/api/endpoints/pc-unsigned")
            else None
        ),
    )
    page.wait_for_timeout(4_500)
    assert len(answers) >= 2 and all(status == 304 and etag for status, etag in answers), answers

    # An export the bridge refuses, or cannot serve, saves nothing and says why.
    downloads: list[Any] = []
    page.on("download", lambda d: downloads.append(d))
    refusal = {"error": {"code": "forbidden", "message": "not for you"}}
    page.route("**/api/endpoints/pc-unsigned/audit", lambda r: r.fulfill(status=403, json=refusal))
    page.click("#export-audit")
    expect(page.locator("#export-result")).to_contain_text(
        "Export refused — the bridge answered 403 forbidden: not for you"
    )
    page.unroute("**/api/endpoints/pc-unsigned/audit")
    page.route("**/api/endpoints/pc-unsigned/audit", lambda r: r.fulfill(status=503, body="busy"))
    page.click("#export-audit")
    expect(page.locator("#export-result")).to_contain_text("Export failed: the bridge answered 503. Nothing was saved")
    page.unroute("**/api/endpoints/pc-unsigned/audit")
    assert downloads == []
    item.get_by_role("link", name="Timeline of “Allow remote control?”").click()
    expect(page.locator("#prompt-proof")).to_have_text("Unsigned (recorded before signing, or the endpoint has no key)")
    expect(page.locator("#prompt-proof")).to_have_class("proof is-unsigned")
    expect(page.locator("#prompt-facts")).to_contain_text("none — recorded unsigned")
    expect(page.locator("#timeline-rows tr[data-type=decided]")).to_contain_text("User answered 'approve'")


# --- key history and the audit export ----------------------------------------------------------


def test_key_history_after_rekey_and_audit_export(
    browser: Any, console: ConsoleLog, bridge: Bridge, tech_token: str, loop: Loop, tmp_path: Path
) -> None:
    first = EndpointKey.generate()
    ep = Endpoint(bridge, loop, enroll(bridge, "pc-rekey", "Design studio", first), first)
    pid = create(bridge, "pc-rekey", "Allow remote control?")
    try:
        ep.connect()
        ep.receive(pid)
        assert errors(ep.answer(pid, "approve")) == []
    finally:
        ep.close()
    # Re-keying an endpoint that has an agent is the admin's alone (DESIGN §10)…
    status, refused = bridge.call("POST", "/api/enrollments", {"endpoint_id": "pc-rekey"}, token=tech_token)
    assert status == 403 and refused["error"]["code"] == "forbidden", refused
    # …and the admin's re-enrollment registers a second key, retiring the first.
    second = EndpointKey.generate()
    token = bridge.ok("POST", "/api/enrollments", {"endpoint_id": "pc-rekey", "label": "Design studio"})
    bridge.ok(
        "POST",
        "/api/agent/enroll",
        {"enrollment_token": token["enrollment_token"], "public_key": second.public_key_b64},
    )
    info = bridge.ok("GET", "/api/endpoints/pc-rekey")
    assert [k["key_id"] for k in info["keys"]] == [first.key_id, second.key_id]

    tab = open_page(browser, console, accept_downloads=True)
    try:
        sign_in(tab, bridge, tech_token, "#/endpoint/pc-rekey")
        expect(tab.locator("#keys-summary")).to_have_text(
            f"Answers from this endpoint are signed; current key {second.key_id} (2 keys so far: re-keyed 1 time)"
        )
        keys = tab.locator("#key-list li")
        expect(keys).to_have_count(2)
        expect(keys.nth(0)).to_contain_text(first.key_id)
        expect(keys.nth(0)).to_contain_text("retired · first key")
        expect(keys.nth(0).locator(".key-meta")).to_contain_text(" until ")
        expect(keys.nth(0).locator(".key-meta")).not_to_contain_text("current")
        expect(keys.nth(1)).to_contain_text(second.key_id)
        expect(keys.nth(1)).to_contain_text("current key · re-key (registered by a re-enrollment)")
        registered_by = info["keys"][1]["registered_by"]
        expect(keys.nth(1).locator(".key-meta")).to_contain_text(f"until now (current) · registered by {registered_by}")
        # The decision made under the first key still shows that key.
        expect(tab.locator(f"li.prompt[data-pid='{pid}'] .detail")).to_contain_text(
            f"signed by the endpoint (key {first.key_id[:8]}…)"
        )
        # A new fact moves the audit head; the key list is not rebuilt (an open key stays open).
        current = keys.nth(1).locator("details.key-public")
        current.locator("summary").click()
        expect(current).to_have_attribute("open", "")
        before = tab.locator("#audit-head-hash").text_content()
        create(bridge, "pc-rekey", "Check the head moves")
        expect(tab.locator("#audit-head-hash")).not_to_have_text(before or "", timeout=6_000)
        expect(current).to_have_attribute("open", "")
        head_hash = bridge.ok("GET", "/api/endpoints/pc-rekey")["audit_head"]["hash"]
        expect(tab.locator("#audit-head-hash")).to_have_text(head_hash)
        expect(tab.locator("#audit-help")).to_contain_text("caisey-audit verify FILE")
        shot(tab, "consent-keys")

        # Export with the keyboard: focus the button, Enter; the browser saves the file.
        tab.focus("#export-audit")
        with tab.expect_download() as download_info:
            tab.keyboard.press("Enter")
        download = download_info.value
        name = "caisey-audit-pc-rekey.jsonl"
        assert download.suggested_filename == name
        saved = tmp_path / name
        download.save_as(saved)
        lines = saved.read_text().splitlines()
        header = json.loads(lines[0])
        assert header["type"] == "header" and header["format"] == "caisey.audit", header
        assert header["endpoint_id"] == "pc-rekey"
        head = json.loads(lines[-1])
        assert head["type"] == "head" and head["hash"] == head_hash, head
        kinds = [json.loads(line).get("kind") for line in lines[1:-1]]
        assert kinds.count("key_registered") == 2 and "decided" in kinds, kinds
        expect(tab.locator("#export-result")).to_contain_text(
            f"Exported {name} — {head['facts']} facts, ending at seq {head['seq']}"
        )
        expect(tab.locator("#export-result")).to_contain_text(f"caisey-audit verify {name}")
        # The file the tab saved is the one the command verifies: links, keys, signatures.
        verified = subprocess.run(
            [str(Path(sys.executable).parent / "caisey-audit"), "verify", "--head", head_hash, str(saved)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.strip().splitlines()[-1].startswith("OK"), verified.stdout

        # The answer signed before the re-key: still signed, by a key retired since.
        tab.locator(f"li.prompt[data-pid='{pid}']").get_by_role(
            "link", name="Timeline of “Allow remote control?”"
        ).click()
        expect(tab.locator("#prompt-proof")).to_have_text(f"Signed by the endpoint (key {first.key_id[:8]}…)")
        expect(tab.locator("#prompt-facts")).to_contain_text("a re-enrollment retired it at", timeout=6_000)
        expect(tab.locator("#prompt-facts")).to_contain_text("it was the current key when this answer was recorded")
    finally:
        tab.context.close()

    # 200% zoom (a 640 px CSS viewport): the keys card and the proof line reflow, nothing scrolls sideways.
    zoomed = open_page(browser, console, device_scale_factor=2)
    try:
        zoomed.set_viewport_size({"width": 640, "height": 450})
        sign_in(zoomed, bridge, tech_token, "#/endpoint/pc-rekey")
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        expect(zoomed.locator("#key-list li")).to_have_count(2)
        assert zoomed.evaluate(overflow) <= 0, "the endpoint page scrolls sideways at 200% zoom"
        zoomed.locator("#keys-card").scroll_into_view_if_needed()
        shot(zoomed, "zoom200-keys", full_page=False)
        zoomed.evaluate(f"location.hash = {json.dumps(f'#/endpoint/pc-rekey/prompt/{pid}')}")
        expect(zoomed.locator("#prompt-proof")).to_be_visible()
        assert zoomed.evaluate(overflow) <= 0, "the prompt page scrolls sideways at 200% zoom"
    finally:
        zoomed.context.close()
    assert console.unexpected() == []
