"""The benchmarks' smallest pieces still run and still produce what the report reads.

Shape only, never speed: tiny sizes, short windows, a 1 s heartbeat for the fleet piece. The
real run is ``python -m bench`` (``bench/RESULTS.md``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import actor_cpu, fleet, floor, recovery, roundtrip, signing, stats_read, storm
from bench.__main__ import main as bench_main
from bench.report import budgets, evaluate, render_markdown, render_table

SUMMARY_KEYS = {"n", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}


def test_floor_and_actor_cpu_and_report_shapes(tmp_path: Path) -> None:
    fl = floor.measure(tmp_path, 20)
    for name in ("ws_rtt", "http_post_rtt", "http_get_rtt", "commit"):
        assert set(fl[name]) == SUMMARY_KEYS and fl[name]["n"] == 20
    assert set(fl["paths"]) == {"receipt", "decision"}
    assert all(fl["paths"][p]["floor_ms"] > 0 for p in fl["paths"])
    assert fl["sizes"]["deliver_bytes"] > fl["sizes"]["receipt_bytes"] > 0

    ac = actor_cpu.measure(prompts=5, heartbeats=10, history=2)
    for store in ("disk_wal_full", "memory"):
        for event in ("create", "receipt", "update", "heartbeat"):
            assert ac[store][event]["cpu_us_mean"] > 0

    # The table, the verdicts and the markdown read these shapes (fleet/recovery from below).
    doc = {
        "command": "python -m bench --quick",
        "started_at": "2026-01-01T00:00:00Z",
        "duration_s": 1.0,
        "machine": {
            "cpu": "x",
            "cores": 2,
            "memory_gib": 1.0,
            "kernel": "k",
            "python": "3",
            "sqlite": "3",
            "aiohttp": "3",
            "fd_limit": {"soft": 1, "hard": 1},
            "filesystem": "ext4",
            "load_avg": [0.0, 0.0, 0.0],
        },
        "results": {"floor": fl, "actor_cpu": ac},
        "targets": [],
    }
    doc["targets"] = evaluate(doc["results"])
    assert render_table(doc) and render_markdown(doc).startswith("# Caisey benchmark results")


@pytest.mark.slow
def test_bridge_benchmarks_run_end_to_end_at_tiny_sizes(tmp_path: Path) -> None:
    rt = asyncio.run(roundtrip.run(tmp_path, prompts=5, endpoints=2, warmup=2))
    assert rt["receipt"]["n"] == 5 and rt["decision"]["n"] == 5
    assert rt["decision"]["p50_ms"] >= rt["receipt"]["p50_ms"] > 0
    assert rt["unsigned"]["decision"]["n"] == 5  # the baseline of signing, same run

    sg = signing.measure(5)
    assert sg["update_signed"]["p50_us"] > 0 and sg["update_unsigned"]["p50_us"] > 0 and sg["verify"]["p50_us"] > 0

    st = asyncio.run(storm.run(tmp_path, endpoints=6, duration_s=1.0, clients=1, concurrency=4))
    assert st["completed"] > 0 and st["errors"] == {} and st["bridge_cpu_cores"] > 0

    rc = asyncio.run(recovery.run(tmp_path, endpoints=6, clients=1, think_s=(0.1, 0.2), kill_at_answered=0.5))
    assert rc["ok"], rc
    assert rc["api_states"] == {"approved": 6} and rc["prompts_per_endpoint"] == {"1": 6}

    tier = asyncio.run(fleet.tier(tmp_path, 4, window_s=1.0, heartbeat_ms=1_000, clients=1, settle_s=0.5))
    assert "error" not in tier, tier
    assert tier["reconnected"] == 4 and tier["steady_cpu_cores"] >= 0 and tier["rss_mib"] > 0

    assert st["clients_cpu_ms_per_round_trip"] > 0 and st["duplicate_delivers"] >= 0
    assert tier["restart_bridge_cpu_ms_per_agent"] > 0 and tier["restart_clients_cpu_ms_per_agent"] > 0
    results = {"roundtrip": rt, "signing": sg, "storm": st, "recovery": rc, "fleet": {"tiers": [tier]}}
    verdicts = evaluate({**results, "floor": floor.measure(tmp_path, 10)})
    # Tiny sizes are never judged against the full-size targets, only shaped like them.
    assert [v["met"] for v in verdicts if "round trips/s" in v["target"] or "10,000" in v["target"]] == [None, None]


def test_cli_writes_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "latest.json"
    assert bench_main(["--quick", "--only", "actor_cpu", "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    import json

    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick" and "actor_cpu" in doc["results"] and doc["machine"]["cores"]
    assert "targets:" in capsys.readouterr().out


def test_stats_read_runs_at_two_history_lengths() -> None:
    result = stats_read.measure((20, 200), reads=3)
    small, large = result["sizes"]
    assert (small["prompts"], large["prompts"], small["reads"]) == (20, 200, 3)
    assert 0 < small["rows"] < large["rows"] and small["us_mean"] > 0 and large["us_p99"] > 0


def test_cli_prints_the_stats_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "latest.json"
    assert bench_main(["--quick", "--only", "stats_read", "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "GET .../stats, 100 prompts of history" in printed and "1,000 prompts of history" in printed


def _budget_inputs(actor_us: float, clients_ms: float, bridge_ms_per_agent: float) -> dict[str, object]:
    events = {e: {"cpu_us_mean": actor_us} for e in ("create", "receipt", "update")}
    return {
        "actor_cpu": {"memory": events},
        "storm": {"clients_cpu_ms_per_round_trip": clients_ms, "bridge_cpu_ms_per_round_trip": 1.0},
        "floor": {"paths": {"receipt": {"floor_ms": 1.5}}, "commit": {"p50_ms": 0.3, "p99_ms": 0.6}},
        "recovery": {"endpoints": 1000},
        "fleet": {
            "tiers": [
                {
                    "agents": n,
                    "restart_bridge_cpu_ms_per_agent": bridge_ms_per_agent,
                    "restart_clients_cpu_ms_per_agent": 0.2,
                }
                for n in (1000, 5000, 10_000)
            ]
        },
    }


def test_budgets_say_which_targets_the_measured_costs_leave_room_for() -> None:
    """Each target turned into CPU: the verdict follows the arithmetic, both ways."""
    cheap = {target: fits for target, _, fits in budgets(_budget_inputs(200, 0.3, 0.5), cores=2)}
    assert len(cheap) == 5 and all(cheap.values()), cheap
    dear = {target.split(":")[0]: fits for target, _, fits in budgets(_budget_inputs(600, 1.4, 2.6), cores=2)}
    assert dear == {
        "storm": False,  # 1.8 ms of actor + 1.4 ms of clients per round trip: 3.2 cores at 1,000/s
        "round trip p99 ≤ 3× the floor (create → receipt)": True,  # 1.2 ms + 0.3 ms tail within 3 ms
        "10,000 agents back ≤ 15 s after kill -9": False,  # 26 CPU s on one event loop
        "5,000 agents back ≤ 8 s after kill -9": False,  # 13 CPU s
        "converged ≤ 3 s after kill -9 with 1,000 in flight": False,  # 3.6 CPU s
    }
