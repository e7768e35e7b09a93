"""``python -m bench`` (also ``./scripts/bench``): every benchmark, its baseline, one table.

Runs, in one process tree and one sitting so each figure has its baseline from the same run:
floor → actor CPU per event → signing → stats read at two history lengths → prompt round trip (signed, then unsigned) → storm →
recovery → fleet tiers → the Cloudflare cost model (``bench/do_cost.py``, on the Workers
stand-in). Prints a
table and the JSON; writes the JSON to ``bench/results/latest.json`` and, with
``--write-results``, ``bench/RESULTS.md`` (the committed copy). ``--quick`` is a short smoke
run (about two minutes); ``--only NAME,…`` runs a subset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import actor_cpu, do_cost, fleet, floor, recovery, roundtrip, signing, stats_read, storm
from bench.harness import ROOT, machine
from bench.report import evaluate, render_markdown, render_table

RESULTS_DIR = ROOT / "bench" / "results"

FULL: dict[str, Any] = {
    "floor": {"n": 2000},
    "actor_cpu": {"prompts": 500, "heartbeats": 2000, "history": 50},
    "signing": {"n": 2000},
    "stats_read": {"histories": [100, 10_000], "reads": 500},
    # Per group (signed, keyless): the p99 of 1,000 moved ±15% between runs even on the receipt
    # path, which signing does not touch; 3,000 holds it within a few percent.
    "roundtrip": {"prompts": 3000},
    "storm": {"endpoints": 1000, "duration_s": 20.0, "clients": 2, "concurrency": 64},
    "recovery": {"endpoints": 1000, "clients": 2},
    # 3,000 is the largest tier whose endpoint files all stay open under a 20,000 fd limit.
    "fleet": {"tiers": [1000, 3000, 5000, 10000], "window_s": 30.0, "heartbeat_ms": 15_000, "clients": 4},
    "docost": {},
}
QUICK: dict[str, Any] = {
    "floor": {"n": 300},
    "actor_cpu": {"prompts": 100, "heartbeats": 300, "history": 20},
    "signing": {"n": 200},
    "stats_read": {"histories": [100, 1_000], "reads": 50},
    "roundtrip": {"prompts": 150},
    "storm": {"endpoints": 200, "duration_s": 5.0, "clients": 2, "concurrency": 32},
    "recovery": {"endpoints": 200, "clients": 2},
    "fleet": {"tiers": [500], "window_s": 15.0, "heartbeat_ms": 15_000, "clients": 2},
    "docost": {},
}
ORDER = ("floor", "actor_cpu", "signing", "stats_read", "roundtrip", "storm", "recovery", "fleet", "docost")


def run_all(
    config: dict[str, Any], data: Path, only: set[str], log: Any = print, profile_dir: Path | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in ORDER:
        if name not in only:
            continue
        c = config[name]
        log(f"[bench] {name} {json.dumps(c)}")
        t0 = time.monotonic()
        if name == "floor":
            results[name] = floor.measure(data, c["n"])
        elif name == "actor_cpu":
            results[name] = actor_cpu.measure(c["prompts"], c["heartbeats"], c["history"])
        elif name == "signing":
            results[name] = signing.measure(c["n"])
        elif name == "stats_read":
            results[name] = stats_read.measure(tuple(c["histories"]), c["reads"])
        elif name == "roundtrip":
            results[name] = asyncio.run(roundtrip.run(data, c["prompts"], profile_dir=profile_dir))
        elif name == "storm":
            results[name] = asyncio.run(
                storm.run(
                    data,
                    endpoints=c["endpoints"],
                    duration_s=c["duration_s"],
                    clients=c["clients"],
                    concurrency=c["concurrency"],
                    profile_dir=profile_dir,
                )
            )
        elif name == "recovery":
            results[name] = asyncio.run(
                recovery.run(data, endpoints=c["endpoints"], clients=c["clients"], profile_dir=profile_dir)
            )
        elif name == "fleet":
            tiers = []
            for n in c["tiers"]:
                log(f"[bench] fleet tier {n}")
                tiers.append(
                    asyncio.run(
                        fleet.tier(
                            data,
                            n,
                            window_s=c["window_s"],
                            heartbeat_ms=c["heartbeat_ms"],
                            clients=c["clients"],
                            profile_dir=profile_dir,
                        )
                    )
                )
                log(f"[bench]   {json.dumps(tiers[-1])}")
            results[name] = {"tiers": tiers}
        elif name == "docost":
            results[name] = asyncio.run(do_cost.measure())
        timings[name] = round(time.monotonic() - t0, 1)
        log(f"[bench] {name} done in {timings[name]} s")
    results["_timings_s"] = timings
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (small sizes, short windows)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(ORDER)}")
    parser.add_argument("--data", type=Path, default=None, help="data directory (default: a fresh temporary one)")
    parser.add_argument("--keep-data", action="store_true", help="keep the data directory afterwards")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json", help="where to write the JSON")
    parser.add_argument("--write-results", action="store_true", help="also write bench/RESULTS.md from this run")
    parser.add_argument("--fleet-tiers", default="", help="comma-separated agent counts for the fleet benchmark")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the bridge in the timed windows (raw files in bench/results/)"
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(ORDER)
    unknown = only - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    config = QUICK if args.quick else FULL
    if args.fleet_tiers:
        config = {**config, "fleet": {**config["fleet"], "tiers": [int(n) for n in args.fleet_tiers.split(",")]}}
    data = args.data or Path(tempfile.mkdtemp(prefix="caisey-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    try:
        results = run_all(
            config,
            data,
            only,
            log=lambda s: print(s, file=sys.stderr, flush=True),
            profile_dir=RESULTS_DIR / "profiles" if args.profile else None,
        )
    finally:
        if args.data is None and not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    doc = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "mode": "quick" if args.quick else "full",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": {**machine(), "load_avg_at_start": load_at_start},
        "config": {k: config[k] for k in ORDER if k in only},
        "results": results,
        "targets": evaluate(results),
    }
    print(render_table(doc))
    text = json.dumps(doc, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    if args.write_results:
        (ROOT / "bench" / "RESULTS.md").write_text(render_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
