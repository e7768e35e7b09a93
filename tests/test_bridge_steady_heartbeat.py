"""Steady heartbeats are answered from memory: the fleet-scale fix (a bridge with 10,000
agents must not open and commit 10,000 endpoint files every 15 s). Same answers, same
liveness; only the stored ``last_seen_ms`` may lag, by at most ``last_seen_store_ms``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bench.actor_cpu import ActorRig, now_ms
from caisey import wire
from caisey.digest import held_digest
from worker.host import Row, SqlValue

T = TypeVar("T")
EMPTY = held_digest([])


class CountingStore:
    """Wraps the actor's store and counts what reaches it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> list[Row]:
        self.calls += 1
        return self.inner.execute(sql, params)  # type: ignore[no-any-return]

    def transaction(self, fn: Callable[[], T]) -> T:
        self.calls += 1
        return self.inner.transaction(fn)  # type: ignore[no-any-return]


def counted_rig() -> tuple[ActorRig, CountingStore]:
    rig = ActorRig(":memory:")
    counting = CountingStore(rig.actor.store)
    rig.actor.store = counting
    return rig, counting


def beat(rig: ActorRig, at_ms: int, digest: str = EMPTY) -> tuple[list[Any], int | None]:
    effects = rig.actor.agent_frame(wire.encode(wire.Heartbeat(rig.ids.new(at_ms), at_ms, digest)), at_ms)
    return [wire.decode(f) for f in effects.send], effects.alarm_at_ms


def stored_last_seen(rig: ActorRig) -> int:
    return int(rig.actor.store.execute("SELECT value FROM meta WHERE key = 'last_seen_ms'")[0]["value"])


def test_a_heartbeat_that_changes_nothing_is_answered_without_the_store() -> None:
    t = now_ms()
    rig, store = counted_rig()
    config = rig.actor.config
    beat(rig, t)  # the first one takes the full path and finds nothing changed
    before = store.calls
    sent, alarm = beat(rig, t + 15_000)
    assert store.calls == before, "a steady heartbeat must not touch the store"
    assert [m.TYPE for m in sent] == ["ack"] and sent[0].received_at_ms == t + 15_000
    assert alarm == t + 15_000 + config.liveness_ms  # liveness counts from this heartbeat
    assert stored_last_seen(rig) == t  # stored lags; memory is exact
    # Once the stored value is last_seen_store_ms old, a heartbeat stores it again.
    later = t + config.last_seen_store_ms
    beat(rig, later)
    assert stored_last_seen(rig) == later


def test_liveness_counts_heartbeats_answered_from_memory() -> None:
    t = now_ms()
    rig, _ = counted_rig()
    liveness = rig.actor.config.liveness_ms
    for i in range(5):
        beat(rig, t + i * 15_000)
    last = t + 4 * 15_000
    # The alarm due before the stored last_seen + liveness must not close a live socket...
    effects = rig.actor.alarm(t + liveness + 1, True)
    assert effects.close_agent is None
    assert stored_last_seen(rig) == last  # the event stored what memory heard
    # ...and silence past the window still closes it.
    assert rig.actor.alarm(last + liveness, True).close_agent is not None


def test_another_digest_or_any_other_event_takes_the_full_path() -> None:
    t = now_ms()
    rig, store = counted_rig()
    beat(rig, t)
    sent, _ = beat(rig, t + 15_000, "a digest we do not hold")
    assert [m.TYPE for m in sent] == ["ack", "state.request"]
    beat(rig, t + 30_000)  # steady again
    _, deliver = rig.create()  # a create drops what the steady path relied on
    before = store.calls
    sent, _ = beat(rig, t + 45_000)  # not received yet: both digests still hold nothing
    assert store.calls > before and [m.TYPE for m in sent] == ["ack"]
    rig.feed(rig.receipt_frame(deliver))
    held = held_digest([(deliver.prompt.prompt_id, "received")])
    beat(rig, t + 60_000, held)
    before = store.calls
    sent, _ = beat(rig, t + 75_000, held)
    assert store.calls == before and [m.TYPE for m in sent] == ["ack"]


def test_a_prompt_moment_due_takes_the_full_path() -> None:
    t = now_ms()
    rig, store = counted_rig()
    _, deliver = rig.create()
    rig.feed(rig.receipt_frame(deliver))
    held = held_digest([(deliver.prompt.prompt_id, "received")])
    beat(rig, t, held)
    expires = deliver.prompt.expires_at_ms
    before = store.calls
    sent, _ = beat(rig, expires + 1, held)  # past expiry: the prompt expired, digests differ now
    assert store.calls > before
    assert [m.TYPE for m in sent] == ["ack", "state.request"]


def report(rig: ActorRig, at_ms: int, prompts: tuple[Any, ...] = (), digest: str = EMPTY) -> list[Any]:
    frame = wire.StateReport(rig.ids.new(at_ms), prompts, digest)
    return [wire.decode(f) for f in rig.actor.agent_frame(wire.encode(frame), at_ms).send]


def test_after_a_report_in_sync_the_first_heartbeat_is_already_steady() -> None:
    """A returning agent's hello and open report leave the actor knowing what the runtime
    holds: its first heartbeat after them needs no transaction (at 10,000 agents after a
    restart, one event less each). One that disagrees still takes the full path."""
    t = now_ms()
    rig, store = counted_rig()
    assert [m.TYPE for m in report(rig, t)] == ["ack"]  # in sync: only the ack
    before = store.calls
    sent, _ = beat(rig, t + 15_000)
    assert store.calls == before, "the first heartbeat after a report in sync must not touch the store"
    assert [m.TYPE for m in sent] == ["ack"]
    # The runtime holds something else by its first heartbeat: the full path asks for a report.
    report(rig, t + 20_000)
    sent, _ = beat(rig, t + 30_000, "a digest we do not hold")
    assert [m.TYPE for m in sent] == ["ack", "state.request"]


def test_a_report_that_owes_the_runtime_a_delivery_leaves_no_steady_state() -> None:
    t = now_ms()
    rig, store = counted_rig()
    _, deliver = rig.create()
    # The runtime says it holds nothing, past the deliver's first retry (full jitter under 1 s):
    # the prompt is owed again and goes with the ack.
    sent = report(rig, now_ms() + 5_000)
    assert sent[0].TYPE == "ack" and len(sent) > 1
    before = store.calls
    beat(rig, t + 15_000, held_digest([(deliver.prompt.prompt_id, "received")]))
    assert store.calls > before  # not answered from memory
