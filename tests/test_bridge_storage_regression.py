"""The bridge after its storage went back in time (restored from a backup): two fixes the
simulation found (200 seeds; seed 6), checked here on the actor directly.

1. A lost history report must be asked for again, or absence inference resumes too early and
   firms ``expired`` a prompt the user approved (the runtime leaves decided-and-acked prompts
   out of its open report by design).
2. A withdrawal lost with the storage is relearned from the runtime's copy (it closed the
   prompt only on our cancel), instead of "delivered" until expiry.
"""

from __future__ import annotations

from bench.actor_cpu import ENDPOINT, ActorRig, now_ms
from caisey import wire
from caisey.digest import held_digest
from caisey.prompt import State


def _requests(frames: list[str]) -> list[wire.StateRequest]:
    return [m for m in map(wire.decode, frames) if isinstance(m, wire.StateRequest)]


def _hello(rig: ActorRig, last_acked_id: str | None) -> list[str]:
    hello = wire.Hello(rig.ids.new(now_ms()), ENDPOINT, "test", now_ms(), last_acked_id)
    return rig.feed(wire.encode(hello))


def _heartbeat(rig: ActorRig, digest: str) -> list[str]:
    return rig.feed(wire.encode(wire.Heartbeat(rig.ids.new(now_ms()), now_ms(), digest)))


def test_the_history_is_asked_for_again_until_it_lands() -> None:
    rig = ActorRig(":memory:")
    # The runtime names an ack this bridge has no record of: its storage regressed.
    (first,) = _requests(_hello(rig, rig.ids.new(now_ms())))
    assert first.include_final_since_ms is not None
    # That history report is lost. The next heartbeat asks for it again, even when its digest
    # agrees (digests cover open prompts only; the history is about final ones).
    (again,) = _requests(_heartbeat(rig, held_digest([])))
    assert again.include_final_since_ms is not None and again.id != first.id
    # A reconnect asks again too, even when its hello names no unknown ack.
    (on_hello,) = _requests(_hello(rig, None))
    assert on_hello.include_final_since_ms is not None
    # The history's last page lands: from now on a disagreement asks for the open report only.
    report = wire.StateReport(rig.ids.new(now_ms()), (), held_digest([]), scope="history")
    rig.feed(wire.encode(report))
    (plain,) = _requests(_heartbeat(rig, "still another digest"))
    assert plain.include_final_since_ms is None
    rig.close()


def test_a_withdrawal_lost_with_the_storage_is_relearned_from_the_runtime() -> None:
    rig = ActorRig(":memory:")
    _, deliver = rig.create()
    rig.feed(rig.receipt_frame(deliver))
    pid = deliver.prompt.prompt_id
    # Our rows say delivered; the runtime closed it on a cancel we no longer remember.
    line = wire.HeldPrompt(deliver.prompt, "closed", how="superseded")
    report = wire.StateReport(rig.ids.new(now_ms()), (line,), held_digest([]))
    rig.feed(wire.encode(report))
    view = rig.actor._view(pid, now_ms())
    assert view.state == State.CANCELLED
    (cancel,) = [e for e in view.events if e.type == "cancelled"]
    assert cancel.detail["by"] == "the runtime's copy (superseded; the bridge's record was lost)"
    # A decided prompt is never withdrawn by a report line (I3 holds the other way round too).
    _, other = rig.create()
    rig.feed(rig.receipt_frame(other))
    rig.feed(rig.update_frame(other.prompt.prompt_id))
    closed = wire.HeldPrompt(other.prompt, "closed", how="cancelled")
    rig.feed(wire.encode(wire.StateReport(rig.ids.new(now_ms()), (closed,), held_digest([]))))
    assert rig.actor._view(other.prompt.prompt_id, now_ms()).state == State.APPROVED
    rig.close()
