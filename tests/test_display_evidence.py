"""Evidence of display (DESIGN §13, issue 16): the session probe, the templates in five
languages, the evidence on the wire and in the fact, the ``caisey/decision/v2`` signature
over it — which fails when the text shown is altered — and the agent core's locked and
no-user outcomes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agent.core import AgentConfig
from agent.display import SessionState, detect_locale, probe_linux, probe_session, probe_windows
from agent.evidence import DisplayContext, shown, unshown
from agent.store import Store
from agent.templates import KEYS, load, render, shipped
from caisey import wire
from caisey.errors import ProtocolError
from caisey.facts import Decided, Decision, fact_from_record, fact_to_record
from caisey.prompt import decision_outcome, display_api
from caisey.signing import SignatureClaim, answer_message, b64decode, copy_sha256, decision_message
from tests.agent_harness import T0, CoreHarness, make_prompt, of_type, seeded_key
from worker.ed25519_local import verify

# --- the session probe, with a fake loginctl -----------------------------------------------------


def fake_loginctl(sessions: dict[str, dict[str, str]], uid: int = 1000) -> object:
    """A stand-in for ``loginctl``: ``sessions`` by id → the properties it shows."""

    def run(argv: list[str]) -> str | None:
        if argv[1] == "list-sessions":
            return "".join(f"{sid} {uid} {p.get('Name', 'alice')} seat0 tty2\n" for sid, p in sessions.items())
        if argv[1] == "show-session":
            props = sessions[argv[2]]
            return "".join(f"{k}={v}\n" for k, v in props.items())
        return None

    return run


GRAPHICAL = {"Name": "alice", "Type": "wayland", "Class": "user", "Remote": "no", "Service": "gdm-password"}


def test_probe_linux_reads_the_graphical_session_and_its_lock() -> None:
    locked = probe_linux(fake_loginctl({"3": GRAPHICAL | {"Active": "yes", "LockedHint": "yes"}}), {}, 1000)  # type: ignore[arg-type]
    assert locked == SessionState("alice", "console", True, True)
    unlocked = probe_linux(fake_loginctl({"3": GRAPHICAL | {"Active": "yes", "LockedHint": "no"}}), {}, 1000)  # type: ignore[arg-type]
    assert unlocked == SessionState("alice", "console", False, True)


def test_probe_linux_kinds_and_nobody() -> None:
    ssh = {"Name": "bob", "Type": "tty", "Class": "user", "Remote": "yes", "Service": "sshd", "LockedHint": "no"}
    rdp = {"Name": "carol", "Type": "x11", "Class": "user", "Remote": "yes", "Service": "xrdp-sesman"}
    assert probe_linux(fake_loginctl({"7": ssh}), {}, 1000).session == "ssh"  # type: ignore[arg-type]
    assert probe_linux(fake_loginctl({"8": rdp}), {}, 1000).session == "rdp"  # type: ignore[arg-type]
    # The graphical session wins over an ssh one of the same user.
    both = probe_linux(fake_loginctl({"7": ssh, "3": GRAPHICAL | {"Active": "yes"}}), {}, 1000)  # type: ignore[arg-type]
    assert (both.user, both.session) == ("alice", "console")
    # Sessions of another user do not count for a non-root agent; a greeter is nobody.
    assert probe_linux(fake_loginctl({"3": GRAPHICAL}, uid=1001), {}, 1000).logged_in is False  # type: ignore[arg-type]
    greeter = {"3": GRAPHICAL | {"Class": "greeter"}}
    assert probe_linux(fake_loginctl(greeter), {"USER": "svc"}, 1000) == SessionState("svc", "unknown", False, False)  # type: ignore[arg-type]


def test_without_logind_the_environment_decides() -> None:
    gone = probe_session(run=lambda argv: None, env={"USER": "dave", "SSH_CONNECTION": "1 2 3 4"}, platform="linux")
    assert gone == SessionState("dave", "ssh", False, None)
    console = probe_session(run=lambda argv: None, env={"USER": "dave", "DISPLAY": ":0"}, platform="linux")
    assert console == SessionState("dave", "console", False, None)
    windows = probe_windows({"USERDOMAIN": "ACME", "USERNAME": "alice", "SESSIONNAME": "RDP-Tcp#3"})
    assert windows == SessionState("ACME\\alice", "rdp", False, None)
    assert probe_windows({"USERNAME": "alice", "SESSIONNAME": "Console"}).session == "console"
    logon_ui = "LogonUI.exe                   1234 Console                    1     52,000 K\n"
    windows_locked = probe_session(run=lambda argv: logon_ui, env={"USERNAME": "alice"}, platform="win32")
    assert windows_locked.locked is True
    unlocked = probe_session(run=lambda argv: "INFO: No tasks are running\n", env={"USERNAME": "a"}, platform="win32")
    assert unlocked.locked is False
    ioreg = '    | "IOConsoleUsers" = ({"kCGSSessionOnConsoleKey"=Yes,"CGSSessionScreenIsLocked"=Yes})\n'
    mac = probe_session(run=lambda argv: ioreg if argv[0] == "ioreg" else None, env={"USER": "bo"}, platform="darwin")
    assert mac == SessionState("bo", "console", True, None)
    mac_open = probe_session(run=lambda argv: "no lock key\n", env={"USER": "bo"}, platform="darwin")
    assert mac_open.locked is False


def test_locale_from_the_environment() -> None:
    assert detect_locale({"LANG": "de_DE.UTF-8"}) == "de-DE"
    assert detect_locale({"LC_ALL": "fr_FR@euro", "LANG": "de_DE"}) == "fr-FR"
    assert detect_locale({"LANG": "C.UTF-8"}) is None
    assert detect_locale({"LANG": "$(rm -rf)"}) is None


# --- templates ----------------------------------------------------------------------------------


def test_five_languages_ship_for_every_template() -> None:
    templates = shipped()
    for template_id in ("default", "remote_control", "reboot"):
        assert templates.locales(template_id) == ["de", "en", "es", "fr", "nl"]
    prompt = dataclasses.replace(make_prompt(), reason="printer queue stuck", ticket_id="T-42")
    texts = {loc: render(prompt, loc, templates) for loc in ("en", "de", "fr", "es", "nl")}
    assert texts["de"].approve == "Zulassen" and "Grund: printer queue stuck" in texts["de"].lines
    assert "Motif : printer queue stuck" in texts["fr"].lines
    assert len({r.text("tk") for r in texts.values()}) == 5
    # The technician's title and message are shown as written, in every language.
    assert all(prompt.title in r.lines and prompt.message in r.lines for r in texts.values())
    # de-AT falls back to de, pt-BR to English; an unknown action uses the default template.
    assert render(prompt, "de-AT", templates).locale == "de"
    assert render(prompt, "pt-BR", templates).locale == "en"
    other = render(dataclasses.replace(prompt, action="file_transfer"), "nl", templates)
    assert (other.template_id, other.locale) == ("default", "nl")


def test_a_language_is_added_by_dropping_a_file(tmp_path: Path) -> None:
    strings = {key: f"IT {key}" for key in KEYS} | {
        "heading": "{requested_by} chiede\x1b[8m",
        "why": "Motivo: {reason}",
    }
    (tmp_path / "it.json").write_text(json.dumps({"id": "remote_control", "version": 7, "strings": {"it": strings}}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "partial.json").write_text(
        json.dumps({"id": "default", "version": 1, "strings": {"pt": {"approve": "Sim"}}})
    )
    templates = load([tmp_path])
    rendered = render(dataclasses.replace(make_prompt(), reason="x"), "it-IT", templates)
    assert (rendered.template_id, rendered.template_version, rendered.locale) == ("remote_control", 7, "it")
    assert rendered.lines[0] == "alex chiede\\x1b[8m"  # the template's own text is neutralised too
    assert "Motivo: x" in rendered.lines
    assert render(make_prompt(), "pt", templates).locale == "en"  # an incomplete locale is ignored


def test_control_characters_never_reach_the_screen() -> None:
    prompt = dataclasses.replace(
        make_prompt(), reason="see \x1b]52;c;AAAA\x07", ticket_id="T\x9b1", brand_name="ACME\x1b[2J"
    )
    rendered = render(prompt, "en")
    text = rendered.text("tk") + rendered.text("terminal")
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
    assert rendered.lines[0] == "ACME\\x1b[2J" and rendered.roles[0] == "brand"


# --- the evidence on the wire, in the fact, and its signature -------------------------------------


def evidence(text: str = "Approval requested\nAllow?") -> wire.DisplayEvidence:
    return wire.DisplayEvidence(
        outcome="shown",
        session="rdp",
        presenter="tk",
        user="ACME\\alice",
        shown_at_ms=T0 + 1_000,
        locale="de",
        template_id="remote_control",
        template_version=1,
        shown_text=text,
        shown_sha256=wire.shown_text_sha256("de", "remote_control", 1, text),
    )


def test_display_travels_on_updates_and_reports_and_old_frames_still_decode() -> None:
    update = wire.PromptUpdate(
        "U1", "P1", "decided", how="user", decision="approve", decided_at_ms=T0, display=evidence()
    )
    assert wire.decode(wire.encode(update)) == update
    line = wire.HeldPrompt(make_prompt(), "decided", "approve", T0, "user", display=evidence())
    report = wire.StateReport("R1", (line,), "d" * 64)
    assert wire.decode(wire.encode(report)) == report
    old = '{"v":1,"type":"prompt.update","id":"U2","prompt_id":"P1","status":"decided","decision":"deny","decided_at_ms":5}'
    assert wire.decode(old).display is None  # type: ignore[union-attr]
    hello = wire.Hello("H1", "ep-1", "a/1", T0, locale="de-DE")
    assert wire.decode(wire.encode(hello)) == hello


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("outcome", "expired", "invalid_field"),
        ("session", "telnet", "invalid_field"),
        ("presenter", "html", "invalid_field"),
        ("locked", "yes", "invalid_field"),
        ("locale", "de_DE; drop", "invalid_field"),
        ("shown_sha256", "0" * 64, "invalid_field"),
        ("shown_text", "x" * (wire.MAX_SHOWN_TEXT_CHARS + 1), "field_too_long"),
        ("user", "u" * 200, "field_too_long"),
    ],
)
def test_bad_evidence_is_refused(field: str, value: object, code: str) -> None:
    body = {k: v for k, v in evidence().to_json().items()}
    body[field] = value
    if field == "shown_text":
        body["shown_sha256"] = wire.shown_text_sha256("de", "remote_control", 1, str(value))
    frame = {"v": 1, "type": "prompt.update", "id": "U1", "prompt_id": "P1", "status": "decided"}
    frame |= {"decision": "approve", "decided_at_ms": T0, "display": body}
    with pytest.raises(ProtocolError) as caught:
        wire.decode(json.dumps(frame))
    assert caught.value.code == code


def test_the_fact_records_the_evidence_and_a_decision_without_it_records_as_before() -> None:
    fact = Decided(Decision.APPROVE, T0, "user", display=evidence())
    kind, fields = fact_to_record(fact)
    assert fact_from_record(kind, json.loads(json.dumps(fields))) == fact
    assert "display" not in fact_to_record(Decided(Decision.DENY, T0))[1]


def test_v2_signature_covers_the_text_shown() -> None:
    key = seeded_key(3)
    prompt = make_prompt()
    shown_ev = evidence()
    message = answer_message("ep-1", prompt, "approve", "user", T0, shown_ev)
    assert message.startswith(len(b"caisey/decision/v2").to_bytes(4, "big") + b"caisey/decision/v2")
    assert message != answer_message("ep-1", prompt, "approve", "user", T0)  # v1 without evidence
    sig = key.sign(message)
    public = key.public_key

    def holds(display: wire.DisplayEvidence) -> bool:
        rebuilt = decision_message(
            endpoint_id="ep-1",
            prompt_id=prompt.prompt_id,
            decision="approve",
            how="user",
            decided_at_ms=T0,
            prompt_hash=copy_sha256(prompt),
            display=display,
        )
        return verify(SignatureClaim(public, rebuilt, sig))

    assert holds(shown_ev)
    # The text shown altered (its hash recomputed to match): the signature fails.
    altered_text = "Approval requested\nAllow? (it was harmless)"
    altered = dataclasses.replace(
        shown_ev,
        shown_text=altered_text,
        shown_sha256=wire.shown_text_sha256("de", "remote_control", 1, altered_text),
    )
    assert not holds(altered)
    # So does any other evidence: another user, a locked screen, another language or version.
    assert not holds(dataclasses.replace(shown_ev, user="ACME\\mallory"))
    assert not holds(dataclasses.replace(shown_ev, shown_at_ms=T0))
    relabelled = dataclasses.replace(
        shown_ev,
        template_version=2,
        shown_sha256=wire.shown_text_sha256("de", "remote_control", 2, shown_ev.shown_text or ""),
    )
    assert not holds(relabelled)


def test_outcome_in_the_api() -> None:
    assert decision_outcome(True, "user", evidence()) == "user"
    locked = wire.DisplayEvidence(outcome="locked", locked=True, session="console", user="alice")
    assert decision_outcome(True, "no_user_policy", locked) == "locked"
    assert decision_outcome(True, "endpoint_policy", wire.DisplayEvidence(outcome="no_user")) == "no_user"
    assert decision_outcome(True, "no_user_policy", None) == "no_user"  # an older agent
    assert decision_outcome(False, None, None) is None
    api = display_api(True, "user", evidence())
    assert api["display"]["user"] == "ACME\\alice" and api["display"]["shown_at"].endswith("Z")


# --- the agent core: shown, locked, nobody -------------------------------------------------------


@pytest.fixture
def harness() -> CoreHarness:
    h = CoreHarness(Store.memory(), offset_ms=7_000, config=AgentConfig(locked_retry_ms=5_000))
    h.start()
    h.connect()
    return h


def test_a_shown_answer_carries_signed_evidence_in_bridge_time(harness: CoreHarness) -> None:
    prompt = make_prompt()
    harness.deliver(prompt)
    harness.shown("P1")
    state = SessionState("ACME\\alice", "console", False, True)
    rendered = DisplayContext(probe=lambda: state, locale=lambda: "fr").render(prompt)
    local_shown = harness.now
    harness.now += 30_000
    ev = shown(state, "tk", local_shown, rendered)
    (update,) = of_type(
        harness.take(harness.core.on_user_answer("P1", "approve", harness.now, display=ev)), "prompt.update"
    )
    assert isinstance(update, wire.PromptUpdate) and update.display is not None
    assert update.display.shown_at_ms == local_shown + 7_000  # bridge time, like decided_at_ms
    assert update.display.locale == "fr" and "Autoriser" in (update.display.shown_text or "")
    assert harness.signer is not None
    public = harness.signer.public_key
    message = answer_message("ep-1", prompt, "approve", "user", update.decided_at_ms or 0, update.display)
    assert verify(SignatureClaim(public, message, b64decode(update.sig or "", 64, "sig")))
    # It survives in the store and in the next report.
    (report,) = of_type(harness.request_state(), "state.report")
    assert isinstance(report, wire.StateReport) and report.prompts[0].display == update.display


def test_locked_and_no_user_are_distinct_outcomes(harness: CoreHarness) -> None:
    harness.deliver(make_prompt("P1", on_no_user="deny"))
    locked = unshown(SessionState("alice", "console", True, True), "locked")
    out = harness.take(harness.core.on_no_user("P1", harness.now, display=locked))
    (update,) = of_type(out, "prompt.update")
    assert isinstance(update, wire.PromptUpdate)
    assert (update.decision, update.how, update.display) == ("deny", "no_user_policy", locked)
    assert update.display is not None and update.display.presenter == "none" and update.display.shown_at_ms is None
    harness.deliver(make_prompt("P2", on_no_user="deny"))
    nobody = unshown(SessionState(None, "unknown", False, False), "no_user")
    (update2,) = of_type(harness.take(harness.core.on_no_user("P2", harness.now, display=nobody)), "prompt.update")
    assert isinstance(update2, wire.PromptUpdate) and update2.display is not None
    assert update2.display.outcome == "no_user" and update2.display.user is None


def test_a_locked_screen_under_wait_shows_the_prompt_again_later(harness: CoreHarness) -> None:
    harness.deliver(make_prompt())
    assert len(harness.shows("P1")) == 1
    harness.take(harness.core.on_locked("P1", harness.now))
    harness.advance(4_000)
    assert len(harness.shows("P1")) == 1
    harness.run_until(harness.now + 1_000)
    assert len(harness.shows("P1")) == 2  # looked at again after locked_retry_ms


def test_the_gate_follows_the_prompt_rule_then_the_endpoint_rule() -> None:
    locked = SessionState("alice", "console", True, True)
    nobody = SessionState(None, "unknown", False, False)
    context = DisplayContext(probe=lambda: locked)
    assert context.gate(make_prompt()).gate == "wait_unlock"
    assert context.gate(dataclasses.replace(make_prompt(), on_locked="no_user")).gate == "locked"
    assert DisplayContext(probe=lambda: locked, locked_rule="no_user").gate(make_prompt()).gate == "locked"
    strict = DisplayContext(probe=lambda: locked, locked_rule="no_user")
    assert strict.gate(dataclasses.replace(make_prompt(), on_locked="wait")).gate == "wait_unlock"
    assert DisplayContext(probe=lambda: nobody).gate(make_prompt()).gate == "no_user"
    assert DisplayContext(probe=lambda: dataclasses.replace(locked, locked=False)).gate(make_prompt()).gate == "show"


def test_the_store_keeps_the_prompt_s_optional_fields(tmp_path: Path) -> None:
    """Signatures cover the copy's hash: a restart must not lose reason, rule or branding."""
    store = Store.open(tmp_path)
    prompt = dataclasses.replace(make_prompt(), reason="why", ticket_id="T-1", on_locked="no_user", brand_name="ACME")
    store.insert_prompt(prompt, "D1", T0, "received")
    store.close()
    again = Store.open(tmp_path)
    row = again.get_prompt("P1")
    assert row is not None and row.prompt == prompt
    again.close()


def test_the_hash_alone_stands_for_the_text_and_still_verifies() -> None:
    key = seeded_key(4)
    prompt = make_prompt()
    full = evidence()
    message = answer_message("ep-1", prompt, "approve", "user", T0, full)
    hash_only = dataclasses.replace(full, shown_text=None)
    assert answer_message("ep-1", prompt, "approve", "user", T0, hash_only) == message
    assert verify(SignatureClaim(key.public_key, message, key.sign(message)))
    with pytest.raises(ProtocolError, match="needs its shown_sha256"):
        dataclasses.replace(full, shown_sha256=None)


def test_a_history_page_too_large_for_a_frame_keeps_its_lines_and_drops_the_texts(harness: CoreHarness) -> None:
    """A short history page means "the last" to the bridge: the page keeps every line, and the
    shown texts (up to 8,000 characters each) give way, their signed hashes staying."""
    big = "€" * wire.MAX_SHOWN_TEXT_CHARS  # 24 KB of UTF-8
    state = SessionState("alice", "console", False, True)
    for n in range(25):
        pid = f"P{n:02d}"
        harness.deliver(make_prompt(pid))
        ev = wire.DisplayEvidence(
            outcome="shown",
            session="console",
            presenter="tk",
            user=state.user,
            shown_at_ms=harness.now,
            shown_text=big,
            shown_sha256=wire.shown_text_sha256(None, None, None, big),
        )
        out = harness.take(harness.core.on_user_answer(pid, "approve", harness.now, display=ev))
        harness.ack_all(out)
    frames = harness.feed(wire.StateRequest(harness.bridge_id(), include_final_since_ms=0))
    (history,) = [
        f for f in of_type(frames, "state.report") if isinstance(f, wire.StateReport) and f.scope == "history"
    ]
    assert len(history.prompts) == 25
    assert all(line.display is not None and line.display.shown_text is None for line in history.prompts)
    assert all(line.display.shown_sha256 == wire.shown_text_sha256(None, None, None, big) for line in history.prompts)  # type: ignore[union-attr]
