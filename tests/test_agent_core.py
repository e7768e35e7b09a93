"""AgentCore without sockets, event loop or real time (DESIGN §5, §6, §9)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import AgentConfig, Show, Withdraw
from agent.store import DB_FILE, Store
from caisey.digest import held_digest
from caisey.errors import UsageError
from caisey.signing import SignatureClaim, answer_message, b64decode
from caisey.wire import (
    MAX_FRAME_BYTES,
    PING_FRAME,
    PONG_FRAME,
    Ack,
    Error,
    Heartbeat,
    HeldPrompt,
    Hello,
    HelloOk,
    PromptDeliver,
    PromptReceipt,
    PromptUpdate,
    StateReport,
    decode,
    encode,
)
from tests.agent_harness import MINUTE, T0, CoreHarness, make_prompt, of_type
from worker.ed25519_local import verify


@pytest.fixture
def h(tmp_path: Path) -> CoreHarness:
    harness = CoreHarness.on_disk(tmp_path)
    harness.start()
    harness.connect()
    return harness


def _other_connection(tmp_path: Path) -> sqlite3.Connection:
    """A second reader: sees only what the agent has committed."""
    return sqlite3.connect(tmp_path / DB_FILE)


# --- hello, report, offset -------------------------------------------------------------------


def test_hello_then_report_then_outbox_on_every_connection(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    (hello,) = h.take(h.core.on_connected(h.now))
    assert isinstance(hello, Hello) and hello.endpoint_id == "ep-1" and hello.sent_at_ms == h.now
    h.disconnect()
    after_hello = h.connect()
    assert [m.TYPE for m in after_hello] == ["state.report"]
    report = after_hello[0]
    assert isinstance(report, StateReport) and report.prompts == () and report.digest == held_digest([])

    (receipt,) = h.deliver(make_prompt("P1"))
    h.disconnect()
    after_hello = h.connect()
    assert [m.TYPE for m in after_hello] == ["state.report", "prompt.receipt"]
    assert after_hello[1].id == receipt.id  # resent with the SAME id


def test_offset_from_hello_ok_is_measured_and_persisted(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path, offset_ms=90_000)
    h.start()
    h.connect(rtt_ms=40)
    assert abs(h.core.offset_ms - 90_000) <= 20
    reopened = Store.open(tmp_path)
    assert reopened.meta_int("offset_ms") == h.core.offset_ms


def test_nothing_is_sent_before_hello_ok(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    (hello,) = h.take(h.core.on_connected(h.now))
    assert h.deliver(make_prompt("P1")) == []  # the receipt waits in the outbox for the report
    assert h.core.store.get_prompt("P1") is not None
    after = h.feed(HelloOk("B9", hello.id, h.now, h.now, 15_000))
    assert [m.TYPE for m in after] == ["state.report", "prompt.receipt"]


def test_stale_hello_ok_is_ignored(h: CoreHarness) -> None:
    assert h.feed(HelloOk("B77", "not-our-hello", T0, T0, 15_000)) == []


# --- deliver: persist before send, dedup ---------------------------------------------------------


def test_prompt_is_committed_before_the_receipt_and_before_display(h: CoreHarness, tmp_path: Path) -> None:
    effects = h.core.on_frame(encode(PromptDeliver("D1", make_prompt("P1"))), h.now)
    # Another connection sees the prompt and the receipt in the outbox: both committed.
    other = _other_connection(tmp_path)
    assert other.execute("SELECT status FROM prompts WHERE prompt_id='P1'").fetchone() == ("received",)
    assert other.execute("SELECT kind FROM outbox WHERE prompt_id='P1'").fetchall() == [("prompt.receipt",)]
    (receipt_text,) = effects.send
    receipt = json.loads(receipt_text)
    assert receipt["type"] == "prompt.receipt" and receipt["deliver_id"] == "D1" and receipt["prompt_id"] == "P1"
    assert [type(d) for d in effects.display] == [Show]


def test_a_failed_commit_sends_no_receipt_and_shows_nothing(h: CoreHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(h.core.store, "insert_prompt", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        h.core.on_frame(encode(PromptDeliver("D1", make_prompt("P1"))), h.now)
    monkeypatch.undo()
    assert h.core.store.get_prompt("P1") is None
    assert not h.core.store.seen("D1")  # rolled back: the bridge's replay will be processed
    h.deliver(make_prompt("P1"), "D1")
    assert len(h.shows("P1")) == 1


def test_replayed_deliver_same_id_gets_a_fresh_receipt_and_no_second_show(h: CoreHarness) -> None:
    (first,) = h.deliver(make_prompt("P1"), "D1")
    (second,) = h.deliver(make_prompt("P1"), "D1")
    assert isinstance(first, PromptReceipt) and isinstance(second, PromptReceipt)
    assert second.prompt_id == "P1" and second.deliver_id == "D1" and second.id != first.id
    assert second.received_at_ms == first.received_at_ms
    assert len(h.shows("P1")) == 1
    # Only the fresh receipt is owed: acking it clears the outbox.
    h.ack(second.id)
    assert h.core.store.outbox_all() == []


def test_same_prompt_under_another_frame_id_is_deduplicated_by_prompt_id(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"), "D1")
    (receipt,) = h.deliver(make_prompt("P1", title="changed"), "D2")
    assert isinstance(receipt, PromptReceipt) and receipt.deliver_id == "D2"
    assert len(h.shows()) == 1
    held = h.core.store.get_prompt("P1")
    assert held is not None and held.prompt.title == "Allow remote control?"  # first copy kept


def test_duplicate_deliver_of_a_decided_prompt_resends_what_is_owed(h: CoreHarness) -> None:
    (_receipt,) = h.deliver(make_prompt("P1"), "D1")
    h.shown("P1")
    h.answer("P1", "approve")
    sent = h.deliver(make_prompt("P1"), "D1")
    assert [m.TYPE for m in sent] == ["prompt.receipt", "prompt.update", "prompt.update"]
    assert [m.status for m in sent[1:]] == ["acknowledged", "decided"]  # type: ignore[union-attr]
    assert len(h.shows()) == 1


def test_redelivery_of_an_answered_and_acked_prompt_answers_again(h: CoreHarness) -> None:
    # Found by the simulation (seed 6 of 200): the bridge's storage was restored from a backup
    # and the history report that would have told it our answer was lost. It re-delivers the
    # prompt; a receipt alone would leave it "acknowledged" until expiry, the answer never known.
    h.ack_all(h.deliver(make_prompt("P1"), "D1"))
    h.ack_all(h.shown("P1"))
    (decided,) = h.answer("P1", "approve")
    h.ack(decided.id)
    sent = h.deliver(make_prompt("P1"), "D1")
    assert [m.TYPE for m in sent] == ["prompt.receipt", "prompt.update"]
    again = sent[1]
    assert isinstance(again, PromptUpdate) and again.status == "decided" and again.id != decided.id
    assert (again.decision, again.decided_at_ms, again.how) == (decided.decision, decided.decided_at_ms, decided.how)
    (report,) = h.request_state()  # in the report again until the bridge acks the answer anew
    assert isinstance(report, StateReport) and [p.status for p in report.prompts] == ["decided"]
    h.ack_all(sent)
    (report,) = h.request_state()
    assert isinstance(report, StateReport) and report.prompts == ()
    assert len(h.shows()) == 1


def test_dedup_survives_a_restart(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"), "D1")
    h.shown("P1")
    h.answer("P1", "deny")
    h2 = h.restart()
    h2.start()
    h2.connect()
    h2.deliver(make_prompt("P1"), "D1")
    h2.deliver(make_prompt("P1"), "D7")
    assert h2.shows() == []
    decided = [m for m in h2.sent if isinstance(m, PromptUpdate) and m.status == "decided"]
    assert {m.id for m in decided} == {m.id for m in h.sent if isinstance(m, PromptUpdate) and m.status == "decided"}


def test_prompt_already_expired_on_arrival_is_stored_and_closed_without_display(tmp_path: Path) -> None:
    # The bridge clock is 20 min ahead: a prompt expiring in 10 min local time is already over.
    h = CoreHarness.on_disk(tmp_path, offset_ms=20 * MINUTE)
    h.start()
    h.connect()
    sent = h.deliver(make_prompt("P1", expires_at_ms=T0 + 10 * MINUTE))
    assert [m.TYPE for m in sent] == ["prompt.receipt", "prompt.update"]
    assert sent[1].status == "closed" and sent[1].detail == "expired"  # type: ignore[union-attr]
    assert h.shows() == []
    held = h.core.store.get_prompt("P1")
    assert held is not None and held.status == "closed"


def test_more_open_prompts_than_the_limit_are_rejected(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path, config=AgentConfig(max_open_prompts=2))
    h.start()
    h.connect()
    h.deliver(make_prompt("P1"))
    h.deliver(make_prompt("P2"))
    (rejected,) = h.deliver(make_prompt("P3"), "D3")
    assert isinstance(rejected, PromptUpdate) and rejected.status == "rejected" and rejected.detail
    (again,) = h.deliver(make_prompt("P3"), "D3")
    assert isinstance(again, PromptUpdate) and again.status == "rejected"
    assert [s.prompt.prompt_id for s in h.shows()] == ["P1"]


def test_a_full_store_forgets_expired_final_prompts_first_then_the_oldest_then_refuses(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path, config=AgentConfig(max_stored_prompts=3))
    h.start()
    h.connect()
    for pid, expires in (("P1", T0 + 60 * MINUTE), ("P2", T0 + MINUTE), ("P3", T0 + 60 * MINUTE)):
        h.ack_all(h.deliver(make_prompt(pid, expires_at_ms=expires)))
        h.ack_all(h.answer(pid, "deny"))  # decided and acked: final-and-acked
    h.now = T0 + 2 * MINUTE  # P2 has expired, P1 and P3 have not
    h.ack_all(h.deliver(make_prompt("P4", expires_at_ms=T0 + 60 * MINUTE)))
    assert [r.prompt_id for r in h.store.all_prompts()] == ["P1", "P3", "P4"]  # the expired one went
    h.ack_all(h.deliver(make_prompt("P5", expires_at_ms=T0 + 60 * MINUTE)))
    assert [r.prompt_id for r in h.store.all_prompts()] == ["P3", "P4", "P5"]  # then the oldest
    # P4 and P5 are open (their receipts acked, nothing final): P3 goes, then nothing may.
    h.ack_all(h.deliver(make_prompt("P6", expires_at_ms=T0 + 60 * MINUTE)))
    (refused,) = h.deliver(make_prompt("P7", expires_at_ms=T0 + 60 * MINUTE))
    assert (
        isinstance(refused, PromptUpdate)
        and refused.status == "rejected"
        and "holds 3 prompts" in (refused.detail or "")
    )
    assert [r.prompt_id for r in h.store.all_prompts()] == ["P4", "P5", "P6"]  # P7 not stored


# --- outbox: resend until ack ----------------------------------------------------------------


def test_receipt_is_resent_with_the_same_id_until_acked(h: CoreHarness) -> None:
    (receipt,) = h.deliver(make_prompt("P1"))
    resent = h.run_until(h.now + 5 * MINUTE)
    again = [m for m in resent if m.TYPE == "prompt.receipt"]
    assert len(again) >= 3 and all(m.id == receipt.id for m in again)
    h.ack(receipt.id)
    later = h.run_until(h.now + 5 * MINUTE)
    assert of_type(later, "prompt.receipt") == []


def test_resend_backs_off_up_to_the_cap(h: CoreHarness) -> None:
    (receipt,) = h.deliver(make_prompt("P1", expires_at_ms=T0 + 600 * MINUTE))
    sent_at = [h.now]
    while h.now < T0 + 30 * MINUTE:
        deadline = h.core.next_deadline_ms()
        assert deadline is not None and deadline >= h.now
        h.now = deadline
        for m in h.take(h.core.tick(h.now)):
            if m.id == receipt.id:
                sent_at.append(h.now)
            elif isinstance(m, Heartbeat):
                h.ack(m.id)  # keeps the connection alive; the receipt stays unacked
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert len(gaps) >= 20
    assert min(gaps) >= h.core.config.resend.floor_ms and max(gaps) <= 60_000
    assert not h.closes


def test_nothing_is_resent_while_disconnected(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.disconnect()
    assert h.run_until(h.now + 5 * MINUTE) == []


def test_decision_waits_in_outbox_while_offline_and_goes_after_the_report(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.shown("P1")
    h.disconnect()
    assert h.answer("P1", "approve") == []
    after = h.connect()
    assert [m.TYPE for m in after] == ["state.report", "prompt.receipt", "prompt.update", "prompt.update"]
    report = after[0]
    assert isinstance(report, StateReport)
    (line,) = report.prompts
    assert line.status == "decided" and line.decision == "approve" and line.how == "user"


# --- decisions ----------------------------------------------------------------------------------


def test_decision_is_committed_fsynced_and_stamped_in_bridge_time(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path, offset_ms=7_000)
    h.start()
    h.connect()
    h.deliver(make_prompt("P1"))
    h.shown("P1")
    h.now += 12_345
    effects = h.core.on_user_answer("P1", "approve", h.now)
    assert h.core.store.pragma("synchronous") == 2  # FULL
    other = _other_connection(tmp_path)
    assert other.execute("SELECT status, decision FROM prompts").fetchone() == ("decided", "approve")
    (update,) = h.take(effects)
    assert isinstance(update, PromptUpdate) and update.status == "decided" and update.how == "user"
    assert update.decided_at_ms == h.now + h.core.offset_ms
    assert abs(h.core.offset_ms - 7_000) <= 1


def test_decided_prompt_leaves_the_report_once_acked(h: CoreHarness) -> None:
    h.ack_all(h.deliver(make_prompt("P1")))
    h.ack_all(h.shown("P1"))
    (decided,) = h.answer("P1", "deny")
    (report,) = h.request_state()
    assert isinstance(report, StateReport) and [p.status for p in report.prompts] == ["decided"]
    h.ack(decided.id)
    (report,) = h.request_state()
    assert isinstance(report, StateReport) and report.prompts == ()


def test_answer_after_local_expiry_is_not_a_decision(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1", expires_at_ms=T0 + MINUTE))
    h.shown("P1")
    h.now += MINUTE  # the timer has not fired yet
    sent = h.answer("P1", "approve")
    assert [(m.TYPE, getattr(m, "status", None)) for m in sent] == [("prompt.update", "closed")]
    held = h.core.store.get_prompt("P1")
    assert held is not None and held.status == "closed" and held.decision is None


def test_one_dialog_at_a_time_oldest_first(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.deliver(make_prompt("P2"))
    h.deliver(make_prompt("P3"))
    assert [s.prompt.prompt_id for s in h.shows()] == ["P1"]
    h.shown("P1")
    h.answer("P1", "approve")
    assert [s.prompt.prompt_id for s in h.shows()] == ["P1", "P2"]
    h.shown("P2")
    h.answer("P2", "dismiss")
    assert [s.prompt.prompt_id for s in h.shows()] == ["P1", "P2", "P3"]


def test_dismiss_acknowledges_and_is_not_shown_again(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    (shown,) = h.shown("P1")
    (dismissed,) = h.answer("P1", "dismiss")
    assert isinstance(shown, PromptUpdate) and shown.how == "shown"
    assert isinstance(dismissed, PromptUpdate) and dismissed.status == "acknowledged" and dismissed.how == "dismissed"
    h2 = h.restart()
    h2.start()
    assert h2.shows() == []
    assert h2.core.store.get_prompt("P1").status == "acknowledged"  # type: ignore[union-attr]


def test_bad_answers_are_a_usage_error(h: CoreHarness) -> None:
    with pytest.raises(UsageError):
        h.core.on_user_answer("P1", "maybe", h.now)


# --- local expiry (bridge time via the offset) -----------------------------------------------------


@pytest.mark.parametrize("offset_ms", [0, 5 * MINUTE, -5 * MINUTE])
def test_local_expiry_uses_the_measured_offset(tmp_path: Path, offset_ms: int) -> None:
    h = CoreHarness.on_disk(tmp_path, offset_ms=offset_ms)
    h.start()
    h.connect()
    expires_at = T0 + 10 * MINUTE + offset_ms  # bridge time
    # Created (bridge time) when it was delivered: a prompt never outlives its lifetime locally.
    h.ack_all(h.deliver(make_prompt("P1", expires_at_ms=expires_at, created_at_ms=T0 + offset_ms)))
    local_expiry = expires_at - h.core.offset_ms
    assert h.core.next_deadline_ms() is not None
    h.run_until(local_expiry - 1)
    assert h.core.store.get_prompt("P1").status == "received"  # type: ignore[union-attr]
    sent = h.run_until(local_expiry)
    closed = [m for m in sent if isinstance(m, PromptUpdate)]
    assert [(m.status, m.detail) for m in closed] == [("closed", "expired")]
    assert h.withdraws() == [Withdraw("P1", "expired")]


def test_expiry_while_the_agent_was_down_closes_at_start(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    h.connect()
    h.deliver(make_prompt("P1", expires_at_ms=T0 + MINUTE))
    h2 = h.restart()
    h2.now += 2 * MINUTE
    h2.start()
    assert h2.shows() == []
    after = h2.connect()
    assert [m.TYPE for m in after] == ["state.report", "prompt.receipt", "prompt.update"]
    assert after[2].status == "closed"  # type: ignore[union-attr]


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_withdraws_the_dialog_and_is_acked_without_an_update(h: CoreHarness) -> None:
    h.ack_all(h.deliver(make_prompt("P1")))
    h.ack_all(h.shown("P1"))
    sent = h.cancel("P1", "C1")
    assert [(m.TYPE, getattr(m, "of", None)) for m in sent] == [("ack", "C1")]
    assert h.withdraws() == [Withdraw("P1", "cancelled")]
    held = h.core.store.get_prompt("P1")
    assert held is not None and held.status == "closed" and held.detail == "cancelled"
    # A replayed cancel is acked again and changes nothing.
    assert [(m.TYPE, getattr(m, "of", None)) for m in h.cancel("P1", "C1")] == [("ack", "C1")]
    assert len(h.withdraws()) == 1
    (report,) = h.request_state()
    assert isinstance(report, StateReport) and report.prompts == ()


def test_cancel_moves_the_queue_on(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.deliver(make_prompt("P2"))
    h.cancel("P1", reason="superseded")
    assert h.withdraws() == [Withdraw("P1", "superseded")]
    assert [s.prompt.prompt_id for s in h.shows()] == ["P1", "P2"]


def test_answer_racing_a_cancel_is_still_recorded_and_reported(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.shown("P1")
    h.cancel("P1")
    (late,) = h.answer("P1", "approve")  # the click was already on its way
    assert isinstance(late, PromptUpdate) and late.status == "decided" and late.decision == "approve"
    (report,) = h.request_state()
    assert isinstance(report, StateReport) and report.prompts[0].status == "decided"


def test_cancel_before_deliver_means_the_prompt_is_never_shown(h: CoreHarness) -> None:
    assert [m.TYPE for m in h.cancel("P1", "C1")] == ["ack"]
    sent = h.deliver(make_prompt("P1"))
    assert [m.TYPE for m in sent] == ["prompt.receipt"]
    assert h.shows() == []


def test_cancel_of_a_decided_prompt_keeps_the_decision(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.answer("P1", "deny")
    h.cancel("P1")
    held = h.core.store.get_prompt("P1")
    assert held is not None and held.status == "decided" and held.decision == "deny"


# --- restart -----------------------------------------------------------------------------------


def test_live_prompts_are_shown_again_after_a_restart(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.deliver(make_prompt("P2"))
    h.shown("P1")
    h2 = h.restart()  # crash with the dialog up
    h2.start()
    assert [s.prompt.prompt_id for s in h2.shows()] == ["P1"]
    h2.connect()
    assert h2.shown("P1") == []  # acknowledged once already: no second display record
    assert h2.core.store.get_prompt("P1").shown_count == 2  # type: ignore[union-attr]
    (decided,) = h2.answer("P1", "approve")
    assert isinstance(decided, PromptUpdate) and decided.decision == "approve"
    assert [s.prompt.prompt_id for s in h2.shows()] == ["P1", "P2"]


def test_memory_store_can_be_shared_across_restarts() -> None:
    h = CoreHarness(Store.memory())
    h.start()
    h.connect()
    h.deliver(make_prompt("P1"))
    h2 = h.restart()
    h2.start()
    assert len(h2.shows("P1")) == 1


def test_start_twice_is_a_usage_error(h: CoreHarness) -> None:
    with pytest.raises(UsageError):
        h.core.start(h.now)


# --- no-user policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "policy", "decision", "how"),
    [
        ("deny", "approve", "deny", "endpoint_policy"),  # the default cap: no unattended approve
        ("deny", "deny", "deny", "no_user_policy"),
        ("approve", "approve", "approve", "no_user_policy"),
        ("approve", "deny", "deny", "no_user_policy"),
        ("wait", "deny", "deny", "no_user_policy"),
    ],
)
def test_no_user_policy_decides_within_the_endpoints_cap(
    tmp_path: Path, cap: str, policy: str, decision: str, how: str
) -> None:
    h = CoreHarness.on_disk(tmp_path, config=AgentConfig(unattended=cap))
    h.start()
    h.connect()
    h.deliver(make_prompt("P1", on_no_user=policy))
    (update,) = h.no_user("P1")
    assert isinstance(update, PromptUpdate) and update.status == "decided"
    assert update.decision == decision and update.how == how
    assert update.sig is not None and _signature_holds(h, update, decision)


def test_the_default_cap_denies_an_unattended_approve() -> None:
    assert AgentConfig().unattended == "deny"


def test_a_wait_cap_never_answers_an_unattended_approve(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path, config=AgentConfig(unattended="wait"))
    h.start()
    h.connect()
    h.deliver(make_prompt("P1", on_no_user="approve"))
    assert h.no_user("P1") == []
    assert h.core.store.get_prompt("P1").status == "received"  # type: ignore[union-attr]


def _signature_holds(h: CoreHarness, update: PromptUpdate | HeldPrompt, answer: str) -> bool:
    """Verify an answer's signature the way the bridge does (caisey.signing + cryptography)."""
    prompt = h.core.store.get_prompt(update.prompt_id if isinstance(update, PromptUpdate) else update.prompt.prompt_id)
    assert prompt is not None and h.signer is not None and update.sig is not None
    assert update.key_id == h.signer.key_id
    copy = prompt.prompt
    message = answer_message(h.endpoint_id, copy, answer, update.how or "", update.decided_at_ms or 0)
    return verify(SignatureClaim(h.signer.public_key, message, b64decode(update.sig, 64, "sig")))


def test_decisions_and_dismissals_are_signed_and_reports_carry_the_signature(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.deliver(make_prompt("P2"))
    (decided,) = [m for m in h.answer("P1", "approve") if isinstance(m, PromptUpdate)]
    assert decided.status == "decided" and _signature_holds(h, decided, "approve")
    (dismissed,) = [m for m in h.answer("P2", "dismiss") if isinstance(m, PromptUpdate)]
    assert dismissed.how == "dismissed" and _signature_holds(h, dismissed, "dismiss")
    tampered = dataclasses.replace(decided, decision="deny")
    assert not _signature_holds(h, tampered, "deny")
    h.disconnect()
    report = next(m for m in h.connect() if isinstance(m, StateReport))
    lines = {line.prompt.prompt_id: line for line in report.prompts}
    assert lines["P1"].sig == decided.sig and _signature_holds(h, lines["P1"], "approve")
    assert lines["P2"].sig == dismissed.sig and _signature_holds(h, lines["P2"], "dismiss")


def test_an_agent_without_a_key_answers_unsigned(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.core.signer = None  # a state dir enrolled before signing existed
    h.start()
    h.connect()
    h.deliver(make_prompt("P1"))
    (decided,) = [m for m in h.answer("P1", "deny") if isinstance(m, PromptUpdate)]
    assert decided.key_id is None and decided.sig is None


def test_no_user_wait_policy_keeps_the_prompt_and_asks_again_later(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1", on_no_user="wait"))
    h.deliver(make_prompt("P2", on_no_user="deny"))
    assert h.no_user("P1") == []
    assert [s.prompt.prompt_id for s in h.shows()] == ["P1", "P2"]
    h.no_user("P2")
    h.run_until(h.now + h.core.config.no_user_retry_ms)
    assert [s.prompt.prompt_id for s in h.shows()] == ["P1", "P2", "P1"]
    assert h.core.store.get_prompt("P1").status == "received"  # type: ignore[union-attr]


def test_presenter_without_an_answer_leaves_the_prompt_waiting(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.shown("P1")
    assert h.no_answer("P1") == []
    h.run_until(h.now + 5 * MINUTE)
    assert len(h.shows("P1")) == 1
    assert h.core.store.get_prompt("P1").status == "acknowledged"  # type: ignore[union-attr]


# --- heartbeat, digest, state.request, liveness ------------------------------------------------------


def test_heartbeat_carries_the_digest_and_its_ack_is_an_offset_sample(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    h.connect(heartbeat_ms=5_000, rtt_ms=400)  # a slow first sample: offset 0 ± 200 ms
    h.ack_all(h.deliver(make_prompt("P1")))
    h.ack_all(h.shown("P1"))
    (beat,) = of_type(h.advance(5_000), "heartbeat")
    assert isinstance(beat, Heartbeat) and beat.sent_at_ms == h.now
    assert beat.digest == held_digest([("P1", "acknowledged")])
    # A faster exchange says the bridge is 30 s ahead: the better sample wins and is persisted.
    h.now += 100
    h.feed(Ack("B-hb", beat.id, received_at_ms=beat.sent_at_ms + 30_050, sent_at_ms=beat.sent_at_ms + 30_050))
    assert h.core.offset_ms == 30_000
    assert Store.open(tmp_path).meta_int("offset_ms") == 30_000
    # The next heartbeat follows one interval later.
    assert len(of_type(h.advance(4_900), "heartbeat")) == 1


def test_state_request_gets_a_full_report(h: CoreHarness) -> None:
    h.deliver(make_prompt("P1"))
    h.deliver(make_prompt("P2", on_no_user="deny"))
    h.shown("P1")
    h.no_user("P2")
    (report,) = h.request_state()
    assert isinstance(report, StateReport)
    assert {(p.prompt.prompt_id, p.status) for p in report.prompts} == {("P1", "acknowledged"), ("P2", "decided")}
    assert report.digest == held_digest([("P1", "acknowledged")])


def test_a_silent_bridge_is_dropped(h: CoreHarness) -> None:
    h.run_until(h.now + 3 * 15_000)
    assert h.closes and "no frame" in h.closes[0]


# --- pings between full heartbeats (issue 12) -------------------------------------------------------


def ping_session(h: CoreHarness, digest_ms: int | None) -> Hello:
    """Connect and answer hello with (or, as an older bridge does, without) ``digest_ms``."""
    (hello,) = h.take(h.core.on_connected(h.now))
    assert isinstance(hello, Hello)
    h.take(h.core.on_frame(encode(HelloOk("B-ok", hello.id, h.now, h.now, 15_000, digest_ms=digest_ms)), h.now))
    return hello


def run_raw(h: CoreHarness, until_ms: int, *, pong: bool) -> list[str]:
    """Tick to ``until_ms``; the bridge acks heartbeats and (when ``pong``) answers pings."""
    frames: list[str] = []
    while (deadline := h.core.next_deadline_ms()) is not None and deadline <= until_ms:
        h.now = max(h.now, deadline)
        effects = h.core.tick(h.now)
        if effects.close:
            h.closes.append(effects.close)
            h.core.on_disconnected(h.now)  # what the host does
        for frame in effects.send:
            frames.append(frame)
            if frame == PING_FRAME and pong:
                h.core.on_frame(PONG_FRAME, h.now)
            elif frame != PING_FRAME and decode(frame).TYPE == "heartbeat":
                h.core.on_frame(encode(Ack(h.bridge_id(), decode(frame).id, h.now, h.now)), h.now)
    h.now = until_ms
    return frames


def test_the_agent_says_it_pings_and_pings_between_full_heartbeats_when_asked(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    assert ping_session(h, digest_ms=6 * MINUTE).pings is True
    frames = run_raw(h, h.now + 12 * MINUTE, pong=True)
    beats = [f for f in frames if f != PING_FRAME]
    assert [decode(f).TYPE for f in beats] == ["heartbeat", "heartbeat"]  # at 6 and 12 min
    assert frames.count(PING_FRAME) == 48 - 2  # every 15 s in between, byte for byte the constant
    assert not h.closes  # pongs are proof of life: no "no frame from the bridge"


def test_unanswered_pings_drop_the_connection_as_silence_did(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    ping_session(h, digest_ms=6 * MINUTE)
    run_raw(h, h.now + 3 * 15_000, pong=False)
    assert h.closes and "no frame" in h.closes[0]


def test_without_digest_ms_every_heartbeat_is_a_full_one_as_before(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    ping_session(h, digest_ms=None)  # a bridge from before issue 12, or the local host
    frames = run_raw(h, h.now + 2 * MINUTE, pong=True)
    assert PING_FRAME not in frames and len(frames) == 8


def test_a_pong_is_never_answered_with_an_error(h: CoreHarness) -> None:
    assert h.core.on_frame(PONG_FRAME, h.now).send == []


def test_no_hello_ok_in_time_drops_the_connection(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    h.take(h.core.on_connected(h.now))
    h.run_until(h.now + 30_000)
    assert h.closes and "hello.ok" in h.closes[0]


# --- bad frames ----------------------------------------------------------------------------------

BAD_FRAMES = [
    ("x" * (MAX_FRAME_BYTES + 1), "frame_too_large"),
    ("{not json", "malformed_json"),
    ("[1, 2]", "not_an_object"),
    ('{"v": 1, "type": "prompt.explode", "id": "X1"}', "unknown_type"),
    ('{"v": 2, "type": "ack", "id": "X2", "of": "Y"}', "unsupported_version"),
    ('{"v": 1, "type": "prompt.cancel", "id": "X3", "prompt_id": "P1", "reason": "bored"}', "invalid_field"),
    ('{"v": 1, "type": "prompt.deliver", "id": "X4", "prompt": {"prompt_id": "P9"}}', "missing_field"),
    ('{"v": 1, "type": "heartbeat", "id": "X5", "sent_at_ms": 1, "digest": "d"}', "unexpected_type"),
    (b"\xff\xfe binary", "malformed_json"),
]


@pytest.mark.parametrize(("raw", "code"), BAD_FRAMES)
def test_bad_frames_get_an_error_frame_back(h: CoreHarness, raw: str | bytes, code: str) -> None:
    sent = h.take(h.core.on_frame(raw, h.now))
    assert [m.TYPE for m in sent] == ["error"]
    error = sent[0]
    assert isinstance(error, Error) and error.code == code
    if isinstance(raw, str) and '"id": "X' in raw:
        assert error.of == raw.split('"id": "')[1].split('"')[0]
    assert not h.closes and h.core.connected


def test_error_frames_from_the_bridge_are_kept_not_answered(h: CoreHarness) -> None:
    assert h.feed(Error("E1", "unknown_prompt", "no such prompt", of="U1")) == []
    assert [e.code for e in h.core.errors_received] == ["unknown_prompt"]


def test_an_ack_for_an_unknown_id_is_harmless(h: CoreHarness) -> None:
    assert h.ack("never-sent") == []


# --- property: replays never show twice ----------------------------------------------------------

_actions = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.sampled_from(["P1", "P2", "P3"]), st.sampled_from(["D1", "D2", "D3"])),
        st.tuples(st.just("cancel"), st.sampled_from(["P1", "P2", "P3"]), st.sampled_from(["C1", "C2"])),
        st.tuples(st.just("answer"), st.sampled_from(["P1", "P2", "P3"]), st.sampled_from(["approve", "dismiss"])),
        st.tuples(st.just("reconnect"), st.just(""), st.just("")),
        st.tuples(st.just("restart"), st.just(""), st.just("")),
        st.tuples(st.just("time"), st.just(""), st.sampled_from(["1000", "60000"])),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_actions)
def test_replays_and_restarts_never_show_a_prompt_twice_per_run(actions: list[tuple[str, str, str]]) -> None:
    h = CoreHarness(Store.memory())
    h.start()
    h.connect(heartbeat_ms=3_600_000)
    decisions: dict[str, set[str]] = {}
    for kind, a, b in actions:
        if kind == "deliver":
            h.deliver(make_prompt(a), f"{b}-{a}")
        elif kind == "cancel":
            h.cancel(a, f"{b}-{a}")
        elif kind == "answer" and h.core.showing == a:
            h.shown(a)
            h.answer(a, b)
        elif kind == "reconnect":
            h.disconnect()
            h.connect(heartbeat_ms=3_600_000)
        elif kind == "restart":
            sent, h = h.sent, h.restart()
            h.sent = sent
            h.start()
            h.connect(heartbeat_ms=3_600_000)
            assert len(h.shows()) <= 1  # one dialog at a time, even right after a restart
        elif kind == "time":
            h.advance(int(b))
        # I5: within one run a prompt is shown at most once (no presenter returned "none" here)
        per_prompt: dict[str, int] = {}
        for show in h.shows():
            per_prompt[show.prompt.prompt_id] = per_prompt.get(show.prompt.prompt_id, 0) + 1
        assert all(n == 1 for n in per_prompt.values()), per_prompt
        for m in h.sent:
            if isinstance(m, PromptUpdate) and m.status == "decided":
                decisions.setdefault(m.prompt_id, set()).add(m.id)
    # I5: one decision per prompt, however often it was resent
    assert all(len(ids) == 1 for ids in decisions.values()), decisions
    assert all(isinstance(m, (Hello, PromptReceipt, PromptUpdate, StateReport, Ack)) for m in h.sent), {
        m.TYPE for m in h.sent
    }


def test_a_new_connection_measures_the_offset_afresh(tmp_path: Path) -> None:
    """After a sleep the local clock may have stepped: the old window must not outvote it."""
    h = CoreHarness.on_disk(tmp_path)
    h.start()
    h.connect(rtt_ms=10)  # precise sample: offset 0
    h.disconnect()
    h.offset_ms = 45_000  # the local clock fell 45 s behind while asleep
    h.connect(rtt_ms=800)  # a slower, but current, sample
    assert abs(h.core.offset_ms - 45_000) <= 400
