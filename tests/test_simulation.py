"""The deterministic simulation in CI: a fixed seed budget, a planted bug it must catch, and
the seed's two scenarios scripted on the same world (DESIGN §9).

Replay any failure with the command it prints (``python -m sim --seed N``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.run import InvariantViolation, run_seed
from sim.world import MINUTE, NO_FAULTS, Faults, SimConfig, World, cloudflare_config

# Seeds CI runs on every change; `python -m sim --seeds 500` is the nightly budget.
CI_SEEDS = range(1, 25)


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_seed_keeps_every_invariant(seed: int) -> None:
    result = run_seed(seed)
    assert result.prompts > 0
    assert result.convergence_ms <= SimConfig().convergence_bound_ms


# Issue 12: the Worker's steady state — pings answered at the edge between full heartbeats every
# 6 min, liveness read lazily, a new actor for every event — keeps I1–I7 under the same faults.
CLOUDFLARE_SEEDS = range(1, 9)


@pytest.mark.parametrize("seed", CLOUDFLARE_SEEDS)
def test_seed_keeps_every_invariant_in_the_workers_steady_state(seed: int) -> None:
    config = cloudflare_config()
    result = run_seed(seed, config)
    assert result.prompts > 0
    assert result.convergence_ms <= config.convergence_bound_ms


def test_a_seed_replays_exactly() -> None:
    """Same seed, same run: the whole trace is identical (what makes a failure replayable)."""
    traces = []

    def keep(world: World) -> None:
        traces.append(world.trace)

    first, second = run_seed(5, script=keep), run_seed(5, script=keep)
    assert first == second
    assert list(traces[0].lines) == list(traces[1].lines) and len(traces[0].lines) > 100


def test_planted_bug_is_caught_within_the_ci_budget() -> None:
    """Let a decision resolve a cancelled prompt (breaking R3): some CI seed must fail on I3."""
    for seed in CI_SEEDS:
        try:
            run_seed(seed, plant_bug="decision_resolves_cancelled")
        except InvariantViolation as exc:
            assert "I3 cancel safety" in str(exc) or "I2 no resurrection" in str(exc)
            assert f"python -m sim --seed {seed} --plant-bug decision_resolves_cancelled" in str(exc)
            return
    pytest.fail("the planted R3 bug survived every CI seed")


def _quiet(**changes: object) -> SimConfig:
    return replace(SimConfig(endpoints=1, technicians=0, safety_ms=30 * MINUTE, faults=NO_FAULTS), **changes)


def test_laptop_sleeps_between_delivery_and_answer_then_the_user_approves() -> None:
    """Shown, then the lid closes for 8 min (past the console's "no answer" time and the
    bridge's liveness window). On wake the prompt is live again and the answer lands once."""
    seen: dict[str, object] = {}

    def script(world: World) -> None:
        start = world.now
        # The dialog stays up through the sleep; the user clicks Approve 20 s after waking.
        world.user = lambda eid, pid: ("approve", start + 10_000 + 8 * MINUTE + 20_000 - world.now)

        def create() -> None:
            world.key_bodies["k"] = {
                "eid": "ep0",
                "body": {"title": "Allow?", "action": "remote_control", "expires_in": 15 * 60},
            }
            world.keys["k"] = None
            world.technician_create("k")

        def sleep() -> None:
            world.observe()
            seen["before_sleep"] = world.history[world.keys["k"].prompt_id][-1][1]  # type: ignore[union-attr]
            world.sleep("ep0", 8 * MINUTE)

        def while_asleep() -> None:
            world.observe()
            seen["asleep"] = world.history[world.keys["k"].prompt_id][-1][1]  # type: ignore[union-attr]

        world.at(world.now + 2_000, create)
        world.at(world.now + 10_000, sleep)
        world.at(world.now + 5 * MINUTE, while_asleep)

    result = run_seed(7, _quiet(), script=script)
    assert seen["before_sleep"] == "acknowledged"
    assert seen["asleep"] == "acknowledged"  # R7: silence is not a fact
    assert result.outcomes == {"approved": 1}


def test_decision_made_before_sleep_is_honoured_after_expiry() -> None:
    """The user approves, the socket dies with the update unsent, the laptop sleeps past
    expires_at; on wake the decision arrives late and is honoured (R4)."""
    seen: dict[str, object] = {}

    def script(world: World) -> None:
        world.user = lambda eid, pid: ("approve", 5_000)

        def create() -> None:
            world.key_bodies["k"] = {
                "eid": "ep0",
                "body": {"title": "Allow?", "action": "remote_control", "expires_in": 120},
            }
            world.keys["k"] = None
            world.technician_create("k")

        def cut_before_answer() -> None:
            world.partitioned.add("ep0")
            rt = world.runtimes["ep0"]
            if rt.conn is not None:
                rt.conn.bridge_open = False  # frames from the agent are lost from now on
                world.bridge_conns["ep0"].clear()

        def sleep() -> None:
            world.sleep("ep0", 10 * MINUTE)

        def heal() -> None:
            world.partitioned.discard("ep0")

        def after_expiry() -> None:
            world.observe()
            seen["expired"] = world.history[world.keys["k"].prompt_id][-1][1]  # type: ignore[union-attr]

        world.at(world.now + 2_000, create)
        world.at(world.now + 6_000, cut_before_answer)  # shown at ~2 s, answered at ~7 s
        world.at(world.now + 8_000, sleep)
        world.at(world.now + 5 * MINUTE, after_expiry)
        world.at(world.now + 9 * MINUTE, heal)

    result = run_seed(11, _quiet(), script=script)
    assert seen["expired"] == "expired"
    assert result.outcomes == {"approved": 1}


def test_bridge_restart_during_a_prompt_storm() -> None:
    """Many technicians, many endpoints; the bridge dies mid-storm with some creates committed
    and unanswered and some never received. The console's idempotent retries make each
    create exactly one prompt, and every prompt ends final (I1-I7 are checked by the run)."""
    storm = SimConfig(
        endpoints=10,
        technicians=6,
        safety_ms=4 * MINUTE,
        creates_per_min=20,
        faults=replace(NO_FAULTS, p_http_lost=0.2),
    )
    seen: dict[str, int] = {}

    def script(world: World) -> None:
        def crash() -> None:
            seen["keys_before"] = len(world.keys)
            world.bridge_crash()

        world.at(world.now + 90_000, crash)
        world.at(world.now + 110_000, world.bridge_restart)

    result = run_seed(3, storm, script=script)
    assert seen["keys_before"] > 50
    assert result.prompts >= seen["keys_before"]


def test_storage_restored_from_backup_relearns_acked_decisions() -> None:
    """R6 beyond open prompts: after a restore from an old backup the bridge asks the runtime
    for final-and-acked prompts too, so decisions it had acknowledged are shown again."""
    config = replace(SimConfig(), faults=replace(Faults(), storage_loss_per_run=1.0))
    result = run_seed(8, config)  # seed 8 restores one endpoint's storage mid-run
    assert result.storage_losses == 1
