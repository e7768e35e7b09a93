"""Issue 11 item 2: control characters. The API refuses C0/C1 controls (so ANSI/OSC escape
sequences) in title, message, action and label — newline and tab only in ``message`` — and
every presenter and ``caisey-agent status`` neutralise them anyway (a malicious or older
bridge can still send them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main as agent_main
from agent.core import Show
from agent.presenters import ExecPresenter, TerminalPresenter, prompt_json, stop_finishing_programs
from agent.store import Store
from caisey import text
from caisey.wire import PromptCopy
from tests.agent_harness import T0
from tests.bridge_hosts import BridgeUnderTest, enroll
from tests.security.conftest import PROMPT, eid

HIDE = "\x1b[8m"  # conceal: would hide the "requested by" line that follows
RETITLE = "\x1b]0;Windows Update\x07"  # OSC 0: set the terminal's title
CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"  # OSC 52: write the user's clipboard
CSI_C1 = "\u009b2J"  # C1 CSI: clear the screen, in one code point
ATTACKS = [HIDE, RETITLE, CLIPBOARD, CSI_C1, "\r", "\x00", "\x7f", "\x08"]


def _evil(prefix: str = "") -> PromptCopy:
    return PromptCopy(
        prompt_id="P1",
        title=f"Allow remote control?{RETITLE}",
        message=f"Routine check.{HIDE}\nline two\twith a tab{CLIPBOARD}",
        action=f"remote_control{CSI_C1}",
        created_at_ms=T0,
        expires_at_ms=int(time.time() * 1000) + 120_000,
        on_no_user="wait",
        requested_by=f"alex{HIDE}",
    )


def _no_controls(output: str, *, multiline: bool) -> None:
    assert "\x1b" not in output and "\u009b" not in output and "\x07" not in output, repr(output)
    assert text.refused_char(output, multiline=multiline) is None, repr(output)


# --- the API refuses -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["title", "message", "action"])
@pytest.mark.parametrize("attack", ATTACKS)
async def test_the_api_refuses_controls_in_prompt_texts(bridge: BridgeUnderTest, field: str, attack: str) -> None:
    ep = await enroll(bridge, eid())
    body = dict(PROMPT, expires_in=60)
    body[field] = f"Allow{attack}this"
    r = await bridge.request("POST", f"/api/endpoints/{ep.endpoint_id}/prompts", token=bridge.admin_token, body=body)
    assert r.status == 400 and r.body["error"]["code"] == "invalid_field", (r.status, r.body)
    assert field in r.body["error"]["message"] and "U+" in r.body["error"]["message"]
    listed = await bridge.request("GET", f"/api/endpoints/{ep.endpoint_id}/prompts", token=bridge.admin_token)
    assert listed.body["prompts"] == []


async def test_newline_and_tab_are_allowed_in_the_message_only(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid())
    path = f"/api/endpoints/{ep.endpoint_id}/prompts"
    ok = await bridge.request(
        "POST", path, token=bridge.admin_token, body=dict(PROMPT, message="line one\n\tline two", expires_in=60)
    )
    assert ok.status == 201 and ok.body["message"] == "line one\n\tline two"
    for field in ("title", "action"):
        for char in ("\n", "\t"):
            r = await bridge.request(
                "POST", path, token=bridge.admin_token, body=dict(PROMPT, expires_in=60, **{field: f"a{char}b"})
            )
            assert r.status == 400 and r.body["error"]["code"] == "invalid_field", (field, char, r.body)


@pytest.mark.parametrize("attack", [HIDE, CLIPBOARD, CSI_C1, "\n", "\t"])
async def test_the_api_refuses_controls_in_a_label(bridge: BridgeUnderTest, attack: str) -> None:
    endpoint_id = eid()
    r = await bridge.request(
        "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": endpoint_id, "label": f"PC{attack}"}
    )
    assert r.status == 400 and r.body["error"]["code"] == "invalid_field", r.body
    fleet = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
    assert endpoint_id not in {e["endpoint_id"] for e in fleet.body["endpoints"]}


async def test_unicode_text_is_still_accepted(bridge: BridgeUnderTest) -> None:
    ep = await enroll(bridge, eid(), label="Empfang – Café ☕")
    r = await bridge.request(
        "POST",
        f"/api/endpoints/{ep.endpoint_id}/prompts",
        token=bridge.admin_token,
        body=dict(PROMPT, title="Fernsteuerung erlauben? 🖥️", message="مرحبا\nこんにちは", expires_in=60),
    )
    assert r.status == 201, r.body


# --- the agent neutralises what a bridge sends anyway ------------------------------------------------


def test_neutralise_makes_every_refused_character_visible() -> None:
    for attack in ATTACKS:
        shown = text.neutralise(f"a{attack}b")
        _no_controls(shown, multiline=False)
        assert shown.startswith("a") and shown.endswith("b") and "\\x" in shown
    assert text.neutralise("one\ntwo\tthree", multiline=True) == "one\ntwo    three"
    assert text.neutralise("one\ntwo") == "one\\x0atwo"
    assert text.neutralise("lone \ud800") == "lone \ufffd"
    assert text.neutralise("Café ☕ 🖥️") == "Café ☕ 🖥️"


async def test_the_terminal_presenter_prints_no_escape_sequence() -> None:
    master, slave = pty.openpty()
    stdin = os.fdopen(slave, "r", buffering=1)
    stdout = os.fdopen(os.dup(slave), "w", buffering=1)
    presenter = TerminalPresenter(stdin=stdin, stdout=stdout)
    show = Show(_evil(), int(time.time() * 1000) + 120_000)
    task = asyncio.get_running_loop().create_task(presenter.present(show, lambda: None))
    seen = b""
    try:
        deadline = time.monotonic() + 5
        while b"[a] approve" not in seen:  # the keys line, as the English template words it
            assert time.monotonic() < deadline, seen
            with contextlib.suppress(BlockingIOError):
                # Bounded: a presenter that printed everything and waits must fail this, not hang it.
                seen += await asyncio.wait_for(asyncio.to_thread(os.read, master, 4096), timeout=5)
        printed = seen.decode()
        _no_controls(printed.replace("\r\n", "\n"), multiline=True)  # the pty's own CRLF aside
        assert "Requested by: alex\\x1b[8m" in printed  # the attack is shown, not obeyed
        assert "line two    with a tab" in printed
        os.write(master, b"d\n")
        assert await asyncio.wait_for(task, 5) == "deny"
    finally:
        task.cancel()
        stdout.close()
        os.close(master)
        with contextlib.suppress(OSError):
            stdin.close()


async def test_the_exec_presenter_and_the_tk_dialog_get_neutralised_texts(tmp_path: Path) -> None:
    show = Show(_evil(), int(time.time() * 1000) + 120_000)
    payload = prompt_json(show)
    for name in ("title", "action", "requested_by"):
        _no_controls(str(payload[name]), multiline=False)
    _no_controls(str(payload["message"]), multiline=True)
    # What the program reads on its stdin, byte for byte: no C1 control survives JSON either
    # (json.dumps escapes C0 but writes U+009B as it is).
    seen = tmp_path / "stdin.json"
    script = tmp_path / "program.py"
    script.write_text(f"import sys\nopen({str(seen)!r}, 'wb').write(sys.stdin.buffer.read())\nprint('approve')\n")
    try:
        assert await ExecPresenter(f"{sys.executable} {script}").present(show, lambda: None) == "approve"
        for _ in range(50):  # let it exit on its own, so its transport closes in this loop
            await asyncio.sleep(0.05)
            if seen.exists() and not asyncio.all_tasks() - {asyncio.current_task()}:
                break
    finally:
        await stop_finishing_programs()
    raw = seen.read_bytes().decode()
    assert "\u009b" not in raw and "\\u001b" not in raw and "\x1b" not in raw, raw
    assert json.loads(raw)["requested_by"] == "alex\\x1b[8m"


def test_caisey_agent_status_prints_no_escape_sequence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(tmp_path)
    store.meta_set("endpoint_id", "ep-7")
    store.meta_set("bridge_url", "https://bridge.example")
    store.write_secret("cas_x")
    with store.transaction():
        store.insert_prompt(_evil(), "D1", T0, "received")
        store.update_prompt("P1", T0, status="closed", how="closed", detail=f"withdrawn{CLIPBOARD}")
    store.close()
    assert agent_main(["status", "--state-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    _no_controls(printed, multiline=True)
    assert "Allow remote control?\\x1b]0;" in printed
    assert agent_main(["status", "--json", "--state-dir", str(tmp_path)]) == 0
    _no_controls(capsys.readouterr().out, multiline=True)  # JSON escapes them (ensure_ascii)
