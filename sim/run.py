"""One simulated run: a safety phase with faults, a liveness phase that heals, and the checks.

``run_seed(seed)`` returns a ``Result`` or raises ``InvariantViolation`` naming the broken
invariant (DESIGN §9), with the trace tail and the exact command that replays it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from caisey import prompt as prompt_module
from caisey.audit import verify_export
from caisey.prompt import DECIDED, FINAL, PROVISIONAL_FINALS, WITHDRAWN, PromptView, State
from sim.world import EPOCH_MS, MINUTE, SimConfig, World
from worker.ed25519_local import verify

FINAL_NAMES = {s.value for s in FINAL}
DECIDED_NAMES = {s.value for s in DECIDED}
WITHDRAWN_NAMES = {s.value for s in WITHDRAWN}
PROVISIONAL_NAMES = {s.value for s in PROVISIONAL_FINALS}


class InvariantViolation(AssertionError):
    pass


@dataclass
class Result:
    seed: int
    prompts: int
    decided: int
    convergence_ms: int
    storage_losses: int
    lost_with_storage: int
    outcomes: dict[str, int] = field(default_factory=dict)


# --- bugs planted on purpose, to prove the checkers catch them ---------------------------------


@contextlib.contextmanager
def planted(bug: str | None) -> Iterator[None]:
    """Temporarily break the core. ``decision_resolves_cancelled`` lets a late decision win (R3)."""
    if bug is None:
        yield
        return
    if bug != "decision_resolves_cancelled":
        raise ValueError(f"unknown planted bug {bug!r}")
    table = prompt_module.TRANSITIONS
    saved = {k: table[k] for k in [(State.CANCELLED, "decided"), (State.SUPERSEDED, "decided")]}

    def resolve(view: PromptView, entry: Any, config: Any) -> None:
        view.state = State.APPROVED if entry.fact.decision.value == "approve" else State.DENIED
        view.decision = entry.fact.decision

    for key in saved:
        table[key] = resolve
    try:
        yield
    finally:
        table.update(saved)


# --- checkers ------------------------------------------------------------------------------------


def _histories(world: World) -> list[tuple[str, list[tuple[int, str]]]]:
    """Every observed history, split at storage restores (a restore rewinds the bridge)."""
    return [*world.history.items(), *(("(before a storage restore)", h) for h in world.earlier_histories)]


def check_no_resurrection(world: World) -> None:
    """I2: a final state changes only by R4 (or a technician withdrawing a provisional final)."""
    for pid, history in _histories(world):
        for (_, before), (_, after) in itertools.pairwise(history):
            if before in FINAL_NAMES:
                allowed = before in PROVISIONAL_NAMES and after in DECIDED_NAMES | WITHDRAWN_NAMES
                if not allowed:
                    raise InvariantViolation(f"I2 no resurrection: {pid} went {before} → {after}")


def check_cancel_safety(world: World) -> None:
    """I3: cancelled or superseded never becomes approved or denied."""
    for pid, history in _histories(world):
        withdrawn = False
        for _, state in history:
            withdrawn = withdrawn or state in WITHDRAWN_NAMES
            if withdrawn and state in DECIDED_NAMES:
                raise InvariantViolation(f"I3 cancel safety: {pid} history {history}")


def check_no_prompt_lost(world: World, views: dict[str, PromptView]) -> None:
    """I1: every prompt a technician created is final and visible (storage restores excepted)."""
    for pid in world.known:
        if pid in world.lost_prompt_ids and pid not in views:
            continue  # lost with the bridge's storage before any runtime held it: counted, reported
        view = views.get(pid)
        if view is None:
            raise InvariantViolation(f"I1 nothing lost: {pid} is not on the console")
        if not view.final:
            raise InvariantViolation(f"I1 nothing lost: {pid} is still {view.state.value} after every expiry")


def check_decisions_honoured(world: World, views: dict[str, PromptView]) -> None:
    """I4: a decision the runtime recorded is shown — as the outcome, unless withdrawn first."""
    for rt in world.runtimes.values():
        for row in rt.store.all_prompts():
            if row.decision is None or row.decided_at_ms is None:
                continue
            view = views.get(row.prompt_id)
            if view is None:
                raise InvariantViolation(
                    f"I4 decisions honoured: runtime decided {row.prompt_id}, console has no such prompt"
                )
            shown = view.decision is not None and view.decision.value == row.decision
            shown_late = view.late_decision is not None and view.late_decision.decision.value == row.decision
            if not (shown or shown_late):
                raise InvariantViolation(
                    f"I4 decisions honoured: runtime {row.decision} {row.prompt_id} at {row.decided_at_ms}; "
                    f"console shows {view.state.value} (late {view.late_decision})"
                )
            withdrawn_first = any(
                e.type in ("cancelled", "superseded") for e in view.events[: _first_decided_index(view)]
            )
            in_time = row.decided_at_ms <= view.expires_at_ms + world.config.bridge.reconcile.skew_ms
            if in_time and not withdrawn_first and not shown and view.state not in DECIDED:
                raise InvariantViolation(
                    f"I4 decisions honoured: {row.prompt_id} decided {row.decision} in time, console shows {view.state.value}"
                )


def _first_decided_index(view: PromptView) -> int:
    for i, event in enumerate(view.events):
        if event.type == "decided":
            return i
    return len(view.events)


def check_once_only(world: World, views: dict[str, PromptView]) -> None:
    """I5: one prompt per key (checked as answers arrive), one dialog per prompt per run, one outcome."""
    for rt in world.runtimes.values():
        for (incarnation, pid), shows in rt.shown.items():
            if shows > 1:
                raise InvariantViolation(f"I5 once only: {pid} shown {shows} times in run {incarnation} of {rt.eid}")
    for pid, view in views.items():
        decided = [e for e in view.events if e.type == "decided"]
        if len({(e.detail["decision"]) for e in decided}) != len(decided):
            raise InvariantViolation(f"I5 once only: {pid} recorded the same decision twice")


def check_explicit_failure(world: World, views: dict[str, PromptView]) -> None:
    """I7: a prompt whose endpoint was never connected during its life ends failed_to_deliver."""
    for pid, view in views.items():
        if view.adopted or not view.final:
            continue
        eid = world.known[pid].eid if pid in world.known else None
        if eid is None:
            continue
        life = (view.created_at_ms, view.expires_at_ms)
        overlaps = any(
            start < life[1] and (end is None or end > life[0]) for start, end in world.connected_intervals[eid]
        )
        if not overlaps and view.state not in WITHDRAWN and view.state != State.FAILED_TO_DELIVER:
            raise InvariantViolation(
                f"I7 explicit failure: {pid} never had a connected endpoint, ended {view.state.value}"
            )


def check_escalated_once(world: World, views: dict[str, PromptView]) -> None:
    """DESIGN §11: the bridge escalates a prompt at most once, only one that has an
    ``escalate_after``, never before it (unless it failed to deliver), and a prompt with one
    that failed to deliver was escalated."""
    for pid, view in views.items():
        known = world.known.get(pid)
        spec = world.key_bodies.get(known.key) if known is not None else None
        auto = [e for e in view.escalations if e[4]]
        if len(auto) > 1:
            raise InvariantViolation(f"escalation: {pid} escalated by the bridge {len(auto)} times")
        if spec is None or view.adopted:
            continue  # a retry, or rebuilt from the runtime's copy (R6): no escalate_after known
        after_s = spec["body"].get("escalate_after")
        if auto and after_s is None:
            raise InvariantViolation(f"escalation: {pid} has no escalate_after, yet was escalated")
        if auto and not auto[0][2].startswith("could not reach") and auto[0][0] < view.created_at_ms + after_s * 1000:
            raise InvariantViolation(f"escalation: {pid} escalated before its escalate_after")
        if after_s is not None and view.state == State.FAILED_TO_DELIVER and not auto:
            raise InvariantViolation(f"escalation: {pid} failed to deliver and was not escalated")


def check_windows(world: World, views: dict[str, PromptView]) -> None:
    """DESIGN §13: a window starts only for an approved prompt that asked for one, never
    longer than asked, from the approval; and every window an agent started is started, with
    the same end, on the bridge (after convergence; a storage restore included)."""
    for pid, view in views.items():
        window = view.window
        if window is None or window.started_at_ms is None:
            continue
        if view.state != State.APPROVED:
            raise InvariantViolation(f"window: {pid} has a window started, yet is {view.state.value}")
        if window.minutes is None or window.minutes > window.asked:
            raise InvariantViolation(f"window: {pid} granted {window.minutes} minutes of {window.asked} asked")
        if window.ends_at_ms != window.started_at_ms + window.minutes * 60_000:
            raise InvariantViolation(f"window: {pid} ends at {window.ends_at_ms}, not its start plus its minutes")
    for eid in world.eids:
        rt = world.runtimes[eid]
        for row in rt.store._db.execute("SELECT prompt_id, ends_at_ms, state FROM windows"):
            view = views.get(row["prompt_id"])
            window = view.window if view is not None else None
            if row["state"] == "refused":
                # The user approved as the prompt was withdrawn: the agent started the window and
                # the bridge refused it for good (``not_approved``), so the agent closed it.
                if window is not None and window.started_at_ms is not None:
                    raise InvariantViolation(f"window: {row['prompt_id']} refused on the agent, started on the bridge")
                continue
            if window is None or window.started_at_ms is None:
                # Also after a storage restore: the agent sends its windows again (R6).
                raise InvariantViolation(f"window: the agent holds {row['prompt_id']}'s window, the bridge none")
            if window.ends_at_ms != row["ends_at_ms"]:
                raise InvariantViolation(
                    f"window: {row['prompt_id']} ends at {window.ends_at_ms} on the bridge, "
                    f"{row['ends_at_ms']} on the agent"
                )


def check_consent_proof(world: World) -> None:
    """DESIGN §10: every endpoint's audit chain verifies offline (links, and every answer
    signed by the endpoint's key), and no honest agent's answer was refused."""
    for eid in world.eids:
        actor = world.actor(eid)
        report = verify_export(actor.chain.export_lines(eid, world.now), verify)
        if not report.ok:
            raise InvariantViolation(f"consent proof: {eid}'s audit chain does not verify: {report.problems[:3]}")
        unsigned = [p.prompt_id for p in report.prompts if p.decision is not None and p.signed_by is None]
        if unsigned:
            raise InvariantViolation(f"consent proof: {eid} holds unsigned decisions {unsigned[:3]}")
        refused = actor.store.execute("SELECT prompt_id FROM facts WHERE kind = 'signature_refused' LIMIT 3")
        if refused:
            raise InvariantViolation(f"consent proof: {eid} refused an honest agent's answer: {refused}")


def disagreements(world: World) -> list[str]:
    """I6: where the console/bridge and the runtimes do not yet agree (empty: converged)."""
    out: list[str] = []
    views = world.views()
    for eid in world.eids:
        rt = world.runtimes[eid]
        if rt.core is None or not rt.core.ready:
            out.append(f"{eid}: agent not connected")
            continue
        if rt.store.outbox_all():
            out.append(f"{eid}: agent outbox holds {len(rt.store.outbox_all())}")
        owed = world.actor(eid).store.execute("SELECT prompt_id, kind FROM outbox")
        if owed:
            out.append(f"{eid}: bridge outbox holds {owed}")
        held = {row.prompt_id: row for row in rt.store.all_prompts()}
        for row in world.actor(eid).store.execute("SELECT prompt_id FROM prompts"):
            view = views[row["prompt_id"]]
            local = held.get(view.prompt_id)
            if view.state in (State.PENDING, State.DELIVERED, State.ACKNOWLEDGED) and (
                local is None or not local.is_open
            ):
                out.append(
                    f"{view.prompt_id}: bridge {view.state.value}, runtime {local.status if local else 'absent'}"
                )
            if view.state in WITHDRAWN and local is not None and local.is_open:
                out.append(f"{view.prompt_id}: bridge {view.state.value}, runtime still {local.status}")
        for local in held.values():
            if local.decision is None:
                continue
            view = views.get(local.prompt_id)
            late = view.late_decision if view else None
            if view is None or not (
                (view.decision is not None and view.decision.value == local.decision)
                or (late is not None and late.decision.value == local.decision)
            ):
                out.append(
                    f"{local.prompt_id}: runtime decided {local.decision}, bridge shows {view.state.value if view else 'nothing'}"
                )
    return out


# --- the run ---------------------------------------------------------------------------------------


def _poisson(world: World, per_min: float, until: int, action: Any) -> None:
    if per_min <= 0:
        return

    def fire() -> None:
        if world.now < until and world.faults_on:
            action()
            world.at(world.now + int(world.rng.expovariate(per_min / MINUTE)), fire)

    world.at(world.now + int(world.rng.expovariate(per_min / MINUTE)), fire)


def run_seed(
    seed: int,
    config: SimConfig | None = None,
    plant_bug: str | None = None,
    script: Callable[[World], None] | None = None,
) -> Result:
    """One run. ``script`` may schedule scripted events on the world before it starts."""
    config = config or SimConfig()
    with planted(bug=plant_bug):
        world = World(seed, config)
        if script is not None:
            script(world)
        try:
            return _run(world, plant_bug)
        except InvariantViolation as exc:
            tail = "\n".join(list(world.trace.lines)[-80:])
            replay = f"python -m sim --seed {seed}" + (f" --plant-bug {plant_bug}" if plant_bug else "")
            raise InvariantViolation(f"{exc}\n--- trace (last 80 lines) ---\n{tail}\n--- replay: {replay}") from None


def _run(world: World, plant_bug: str | None) -> Result:
    config, f = world.config, world.config.faults
    safety_end = EPOCH_MS + config.safety_ms
    rng = world.rng
    for _ in range(config.technicians):
        _poisson(world, config.creates_per_min, safety_end, world.technician_create)
        _poisson(world, config.creates_per_min / 3, safety_end, world.technician_withdraw)

    def crash_bridge() -> None:
        restore = world.storage_losses == 0 and rng.random() < f.storage_loss_per_run
        world.bridge_crash(restore_backup=restore)
        world.at(world.now + rng.randint(1_000, 60_000), world.bridge_restart)

    def snapshot() -> None:
        if world.bridge_up:
            world._snapshot(rng.choice(world.eids))

    def partition() -> None:
        eid = rng.choice(world.eids)
        world.partitioned.add(eid)
        world.log(eid, "PARTITION")
        world.cut(eid)
        world.at(world.now + rng.randint(5_000, 5 * MINUTE), lambda: world.partitioned.discard(eid))

    _poisson(world, f.bridge_crash_per_min, safety_end, crash_bridge)
    _poisson(world, 0.3, safety_end, snapshot)
    _poisson(
        world,
        f.agent_crash_per_min * len(world.eids),
        safety_end,
        lambda: world.agent_crash(rng.choice(world.eids), rng.randint(1_000, 5 * MINUTE)),
    )
    _poisson(
        world,
        f.sleep_per_min * len(world.eids),
        safety_end,
        lambda: world.sleep(rng.choice(world.eids), rng.randint(10_000, 20 * MINUTE)),
    )
    _poisson(world, f.cut_per_min * len(world.eids), safety_end, lambda: world.cut(rng.choice(world.eids)))
    _poisson(world, f.partition_per_min, safety_end, partition)

    def observe_every() -> None:
        world.observe()
        world.at(world.now + 5_000, observe_every)

    world.at(world.now + 5_000, observe_every)

    # Safety phase: faults on; the safety checkers run as the histories grow.
    world.run_until(safety_end)
    check_no_resurrection(world)
    check_cancel_safety(world)

    # Liveness phase: heal everything, freeze the humans, measure convergence.
    world.faults_on = False
    world.humans_on = False
    world.partitioned.clear()
    world.bridge_restart()
    for eid, rt in world.runtimes.items():
        if not rt.up:
            world._agent_start(rt)
        elif not rt.awake:
            world.wake(eid)
    heal = world.now
    world.log("sim", "HEAL: faults off")
    converged_at = None
    step = 1_000
    while world.now - heal <= config.convergence_bound_ms:
        world.run_until(world.now + step)
        if not disagreements(world):
            converged_at = world.now
            break
    if converged_at is None:
        raise InvariantViolation(
            f"I6 convergence: not converged {config.convergence_bound_ms} ms after the faults stopped: "
            + "; ".join(disagreements(world)[:8])
        )
    # Run past every expiry so every prompt must be final (I1), then check everything. A
    # console's retry of a create lost before the bridge saw it may still land after the heal
    # (1-20 s later, the same key) and make its prompt then: look again until no expiry is ahead.
    while True:
        views = world.views()
        horizon = max((v.expires_at_ms for v in views.values()), default=world.now) + 2 * MINUTE
        if world.now >= horizon:
            break
        world.run_until(horizon)
    world.observe()
    views = world.views()
    check_no_resurrection(world)
    check_cancel_safety(world)
    check_no_prompt_lost(world, views)
    check_decisions_honoured(world, views)
    check_once_only(world, views)
    check_explicit_failure(world, views)
    check_escalated_once(world, views)
    check_windows(world, views)
    check_consent_proof(world)
    late = disagreements(world)
    if late:
        raise InvariantViolation("I6 convergence: agreement did not hold after convergence: " + "; ".join(late[:8]))
    outcomes: dict[str, int] = {}
    for view in views.values():
        outcomes[view.state.value] = outcomes.get(view.state.value, 0) + 1
    return Result(
        seed=world.seed,
        prompts=len(views),
        decided=sum(1 for v in views.values() if v.state in DECIDED),
        convergence_ms=converged_at - heal,
        storage_losses=world.storage_losses,
        lost_with_storage=len(world.lost_prompt_ids - set(views)),
        outcomes=outcomes,
    )


def quick_config(**changes: Any) -> SimConfig:
    return replace(SimConfig(), **changes)
