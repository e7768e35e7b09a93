"""The agent's side of approval windows (DESIGN §13), without sockets or real time: the
approval starts the window it asked for (shortened if the user chose so, never longer), the
start and the user's revocation are signed frames that wait in the outbox until acked, the
bridge's notice is acked and closes the window, and ``caisey-agent revoke`` only ever ends
an active window.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from agent.presenters import answer_of
from agent.revoke_cli import revoke
from agent.store import Store
from agent.windows import Grant, WindowGone, WindowShown, granted_minutes, request_revoke, windows
from caisey.signing import SignatureClaim, b64decode, copy_sha256, window_message
from caisey.wire import Ack, Error, StateRequest, WindowNotice, WindowUpdate
from tests.agent_harness import MINUTE, CoreHarness, make_prompt, of_type
from worker.ed25519_local import verify


def window_prompt(pid: str = "P1", minutes: int = 30) -> object:
    return dataclasses.replace(make_prompt(pid), grant_minutes=minutes)


def harness(tmp_path: Path) -> CoreHarness:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    h.connect()
    return h


def signed_by(h: CoreHarness, update: WindowUpdate, prompt: object) -> bool:
    assert h.signer is not None and update.sig is not None and update.key_id == h.signer.key_id
    message = window_message(
        endpoint_id=h.endpoint_id,
        prompt_id=update.prompt_id,
        event=update.event,
        minutes=update.minutes,
        at_ms=update.at_ms,
        prompt_hash=copy_sha256(prompt),  # type: ignore[arg-type]
    )
    return verify(SignatureClaim(h.signer.public_key, message, b64decode(update.sig, 64, "sig")))


def test_an_approval_starts_the_window_shortened_but_never_longer(tmp_path: Path) -> None:
    assert granted_minutes(30, 10) == 10 and granted_minutes(30, 31) == 30 and granted_minutes(30, 0) == 30
    assert granted_minutes(None, 10) is None
    assert answer_of("approve:10") == Grant(10) and answer_of("approve:x") is None and answer_of("deny") == "deny"
    h = harness(tmp_path)
    prompt = window_prompt()
    h.deliver(prompt)
    sent = h.take(h.core.on_user_approve("P1", 10, h.now))
    decided = of_type(sent, "prompt.update")[0]
    (start,) = of_type(sent, "window.update")
    assert isinstance(start, WindowUpdate) and start.event == "start" and start.minutes == 10
    assert start.at_ms == decided.decided_at_ms  # type: ignore[attr-defined]
    assert signed_by(h, start, prompt)
    (window,) = windows(h.core.store._db)
    assert window.state == "active" and window.ends_at_ms == start.at_ms + 10 * MINUTE
    assert [type(d) for d in h.display if isinstance(d, WindowShown)] == [WindowShown]
    # Unacked, the start is resent after a reconnect — and survives the decision's ack.
    h.ack(decided.id)
    h.disconnect()
    assert start.id in [m.id for m in h.connect()]
    h.ack(start.id)
    h.disconnect()
    assert start.id not in [m.id for m in h.connect()]
    # The window ends at its time here too.
    h.run_until(h.now + 11 * MINUTE)
    assert windows(h.core.store._db)[0].state == "ended"
    assert any(isinstance(d, WindowGone) and d.why == "ended" for d in h.display)


def test_a_plain_approval_grants_what_was_asked_and_a_deny_grants_nothing(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.deliver(window_prompt("P1", 15))
    h.deliver(window_prompt("P2", 15))
    (start,) = of_type(h.answer("P1", "approve"), "window.update")
    assert start.minutes == 15  # type: ignore[attr-defined]
    assert of_type(h.answer("P2", "deny"), "window.update") == []
    h.deliver(make_prompt("P3"))  # no window asked
    assert of_type(h.answer("P3", "approve"), "window.update") == []


def test_a_revoke_request_ends_only_active_windows_with_a_signed_frame(tmp_path: Path) -> None:
    h = harness(tmp_path)
    prompt = window_prompt()
    h.deliver(prompt)
    h.answer("P1", "approve")
    request_revoke(h.core.store._db, "P-other", h.now)  # names no active window: nothing happens
    assert of_type(h.take(h.core.take_revoke_requests(h.now)), "window.update") == []
    request_revoke(h.core.store._db, None, h.now)
    (update,) = of_type(h.take(h.core.take_revoke_requests(h.now)), "window.update")
    assert isinstance(update, WindowUpdate) and update.event == "revoke" and update.minutes == 30
    assert signed_by(h, update, prompt)
    assert windows(h.core.store._db)[0].state == "revoked"
    assert h.core.store._db.execute("SELECT COUNT(*) FROM revoke_requests").fetchone()[0] == 0
    # A second request finds nothing active: no frame, nothing reopened.
    request_revoke(h.core.store._db, None, h.now)
    assert of_type(h.take(h.core.take_revoke_requests(h.now)), "window.update") == []


def test_the_bridges_notice_closes_the_window_and_is_acked(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.deliver(window_prompt())
    h.answer("P1", "approve")
    notice = WindowNotice("B-N1", "P1", "revoked", h.now, by="alice")
    (ack,) = h.feed(notice)
    assert isinstance(ack, Ack) and ack.of == "B-N1"
    window = windows(h.core.store._db)[0]
    assert (window.state, window.closed_by) == ("revoked", "alice")
    (again,) = h.feed(notice)  # resent: acked again, nothing else
    assert isinstance(again, Ack)


def test_caisey_agent_revoke_says_what_it_did_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.core.store.meta_set("endpoint_id", h.endpoint_id)
    out = io.StringIO()
    assert revoke(tmp_path, None, 0.5, True, out) == 1 and "no active approval window" in out.getvalue()
    out = io.StringIO()
    assert revoke(tmp_path, "bad id!", 0.5, True, out) == 1 and "PROMPT_ID" in out.getvalue()
    h.deliver(window_prompt())
    h.answer("P1", "approve")
    out = io.StringIO()
    assert revoke(tmp_path, None, 0.0, False, out) == 2 and "not running" in out.getvalue()
    h.take(h.core.take_revoke_requests(h.now))  # the agent starts and takes it
    out = io.StringIO()
    assert revoke(tmp_path, "P1", 0.5, True, out) == 1 and "already revoked" in out.getvalue()
    assert revoke(tmp_path / "nowhere", None, 0.5, True, io.StringIO()) == 1
    Store.open(tmp_path).close()


def test_after_a_bridge_storage_loss_the_windows_are_sent_again_after_the_history(tmp_path: Path) -> None:
    h = harness(tmp_path)
    prompt = window_prompt()
    h.deliver(prompt)
    sent = h.answer("P1", "approve")
    h.ack_all(sent)
    (start,) = of_type(sent, "window.update")
    h.ack(start.id)
    request_revoke(h.core.store._db, None, h.now)
    (revoke,) = of_type(h.take(h.core.take_revoke_requests(h.now)), "window.update")
    h.ack(revoke.id)
    assert h.core.store.outbox_all() == []
    got = h.feed(StateRequest("B-R1", "bridge storage regressed", include_final_since_ms=0))
    types = [m.TYPE for m in got]
    assert types.index("state.report") < types.index("window.update")  # the approval is relearned first
    again = [m for m in got if isinstance(m, WindowUpdate)]
    assert [(m.event, m.sig) for m in again] == [("start", start.sig), ("revoke", revoke.sig)]  # type: ignore[attr-defined]
    assert all(m.id not in (start.id, revoke.id) for m in again)
    # Asked again before those are acked: nothing more is queued.
    assert of_type(h.feed(StateRequest("B-R2", "again", include_final_since_ms=0)), "window.update") == []


def test_a_restarted_agent_shows_the_indicator_of_a_window_still_active(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.deliver(window_prompt())
    h.answer("P1", "approve")
    h.display.clear()
    restarted = h.restart()
    restarted.start()
    (shown,) = [d for d in restarted.display if isinstance(d, WindowShown)]
    assert shown.window.prompt_id == "P1" and shown.window.state == "active"


def test_an_approval_after_a_cancel_starts_no_window(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.deliver(window_prompt())
    h.cancel("P1")
    sent = h.answer("P1", "approve")  # the dialog's answer raced the cancel: recorded, judged late
    assert [m.decision for m in of_type(sent, "prompt.update")] == ["approve"]  # type: ignore[attr-defined]
    assert of_type(sent, "window.update") == [] and windows(h.core.store.db) == []


def test_a_window_that_ran_out_before_the_bridge_refused_it_is_recorded_refused(tmp_path: Path) -> None:
    """The approval crossed a partition while the technician withdrew the prompt: the window
    ran its time on the endpoint, then the bridge refused its start for good (found by the
    simulation, ``--cloudflare`` seed 88). The agent's record says so, not "ended"."""
    h = harness(tmp_path)
    h.deliver(window_prompt())
    (start,) = of_type(h.answer("P1", "approve"), "window.update")
    (window,) = windows(h.core.store.db)
    h.core._windows_due(window.ends_at_ms + 1)
    assert windows(h.core.store.db)[0].state == "ended"
    h.feed(Error("B-E1", "not_approved", "prompt P1 is superseded; no window starts", of=start.id))
    (refused,) = windows(h.core.store.db)
    assert refused.state == "refused" and refused.closed_at_ms == window.ends_at_ms
    # Its indicator went when it ended; the refusal takes nothing down a second time.
    assert [d.why for d in h.display if isinstance(d, WindowGone)] == ["ended"]


def test_a_start_the_bridge_refuses_for_good_takes_the_indicator_down(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.deliver(window_prompt())
    (start,) = of_type(h.answer("P1", "approve"), "window.update")
    h.feed(Error("B-E1", "not_approved", "prompt P1 is cancelled; no window starts", of=start.id))
    assert windows(h.core.store.db)[0].state == "refused"
    assert any(isinstance(d, WindowGone) and d.why == "refused" for d in h.display)
    h.deliver(window_prompt("P2"))
    (other,) = of_type(h.answer("P2", "approve"), "window.update")
    h.feed(Error("B-E2", "not_decided", "no approval recorded yet", of=other.id))  # may still apply
    assert next(w for w in windows(h.core.store.db) if w.prompt_id == "P2").state == "active"


def test_a_branded_shown_approval_signs_v2_with_its_evidence_and_the_window_over_the_same_hash(
    tmp_path: Path,
) -> None:
    # Lanes B and C together (issue 16): the dialog's shortened grant carries the evidence of
    # display (decision v2), and the window's start is signed over the v2 prompt hash, which
    # covers the logo by its hash — the same with the logo or with its hash alone (report lines).
    from caisey import wire
    from caisey.facts import Created, NoUserPolicy
    from caisey.signing import created_sha256
    from tests.test_policies import LOGO

    h = harness(tmp_path)
    prompt = dataclasses.replace(
        window_prompt("P1", 60), reason="printer", ticket_id="T-1", brand_name="ACME", brand_logo_png=LOGO
    )
    h.deliver(prompt)
    text = "Approval requested\nAllow?"
    shown = wire.DisplayEvidence(
        outcome="shown",
        session="console",
        presenter="tk",
        user="alice",
        shown_at_ms=h.now,
        locale="en",
        template_id="remote_control",
        template_version=1,
        shown_text=text,
        shown_sha256=wire.shown_text_sha256("en", "remote_control", 1, text),
    )
    sent = h.take(h.core.on_user_approve("P1", 15, h.now, display=shown))
    (decided,) = of_type(sent, "prompt.update")
    assert isinstance(decided, wire.PromptUpdate) and decided.display is not None
    assert decided.display.user == "alice" and decided.decision == "approve"
    (start,) = of_type(sent, "window.update")
    assert isinstance(start, WindowUpdate) and start.minutes == 15
    assert signed_by(h, start, prompt) and signed_by(h, start, prompt.without_logo())
    created = Created(
        title=prompt.title,
        message=prompt.message,
        action=prompt.action,
        expires_at_ms=prompt.expires_at_ms,
        on_no_user=NoUserPolicy(prompt.on_no_user),
        by=prompt.requested_by,
        **{k: v for k, v in prompt.extras().items() if v is not None},
    )
    assert created_sha256(created) == copy_sha256(prompt)
    # After a restart the stored copy still hashes the same (the store keeps every extra).
    row = h.core.store.get_prompt("P1")
    assert row is not None and copy_sha256(row.prompt) == copy_sha256(prompt)
