"""``python -m sim --seeds N [--start S]`` or ``--seed S``: run seeds, print a line each.

Prints the fault parameters first; a failing seed prints the broken invariant, the trace tail
and the command that replays it, and the process exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

from sim.run import InvariantViolation, run_seed
from sim.world import SimConfig, cloudflare_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim")
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=1, help="first seed")
    parser.add_argument("--seed", type=int, help="run just this seed (replay)")
    parser.add_argument("--plant-bug", choices=["decision_resolves_cancelled"], help="break the core on purpose")
    parser.add_argument(
        "--cloudflare", action="store_true", help="the Worker's steady state: pings answered at the edge, no memory"
    )
    args = parser.parse_args(argv)
    config = cloudflare_config() if args.cloudflare else SimConfig()
    print(f"faults: {asdict(config.faults)}")
    print(
        f"world: endpoints={config.endpoints} technicians={config.technicians} safety={config.safety_ms // 1000}s "
        f"convergence bound={config.convergence_bound_ms // 1000}s"
    )
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    worst = 0
    started = time.monotonic()
    for seed in seeds:
        try:
            result = run_seed(seed, config, plant_bug=args.plant_bug)
        except InvariantViolation as exc:
            print(f"seed {seed}: FAILED\n{exc}" + (" (with --cloudflare)" if args.cloudflare else ""))
            return 1
        worst = max(worst, result.convergence_ms)
        print(
            f"seed {seed}: ok prompts={result.prompts} decided={result.decided} "
            f"converged in {result.convergence_ms / 1000:.1f}s storage_losses={result.storage_losses} "
            f"outcomes={result.outcomes}"
        )
    print(f"{len(seeds)} seeds ok in {time.monotonic() - started:.1f}s; worst convergence {worst / 1000:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
