"""Storm throughput: sustained prompt round trips per second across many endpoints.

``endpoints`` simulated agents (answering at once, no agent-side disk: a real endpoint's
fsync happens on the endpoint, not on the bridge's machine) live in ``clients`` processes;
each process also runs ``concurrency`` technicians in a closed loop: create a prompt on a
random endpoint of its share, wait until the agent holds the ack of its decision (the
bridge committed it), repeat. Throughput is round trips completed inside the window; the
bridge's CPU over the window is read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.clients import ClientPool, split
from bench.harness import BridgeProcess, Profile, endpoint_ids, enroll_many, load_secrets, percentile, save_secrets


async def run(
    data: Path,
    *,
    endpoints: int,
    duration_s: float,
    clients: int = 2,
    concurrency: int = 64,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    bridge = BridgeProcess(data / "storm")
    bridge.start()
    pool = ClientPool(clients)
    try:
        secrets = await enroll_many(bridge.url, endpoint_ids(endpoints, "st"), known=load_secrets(bridge.data))
        save_secrets(bridge.data, secrets)
        await pool.start()
        shares = split(sorted(secrets.items()), clients)
        await pool.all("agents", per_client=[{"endpoints": s, "seed": i} for i, s in enumerate(shares)], url=bridge.url)
        ready = await pool.all("wait_ready", timeout_s=120)
        if sum(r["ready"] for r in ready) != endpoints:
            raise RuntimeError(f"only {sum(r['ready'] for r in ready)} of {endpoints} agents connected")
        # Every client starts its technicians at the same instant; the bridge's CPU is read then
        # and when they stop.
        start_at = time.monotonic() + 0.5
        storm = asyncio.ensure_future(
            pool.all("storm", duration_s=duration_s, concurrency=concurrency, start_at=start_at)
        )
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu0 = (time.monotonic(), bridge.cpu_s(), pool.cpu_s())
        profile = Profile(bridge.pid, profile_dir / "storm.txt") if profile_dir else None
        await asyncio.sleep(duration_s)
        cpu1 = (time.monotonic(), bridge.cpu_s(), pool.cpu_s())
        profiled = profile.summary() if profile else None
        results = await storm
        # A delivery retried before its receipt came back: each costs the bridge an alarm event,
        # a frame and the agent's repeated receipt.
        duplicates = sum(s["duplicates"] for s in await pool.all("stats"))
        completed = sum(r["completed"] for r in results)
        errors: dict[str, int] = {}
        for r in results:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        p50s = [r["latency"].get("p50_ms", float("nan")) for r in results]
        p99s = sorted(r["latency"].get("p99_ms", float("nan")) for r in results)
        return {
            "endpoints": endpoints,
            "client_processes": clients,
            "technicians": concurrency * clients,
            "duration_s": duration_s,
            "completed": completed,
            "round_trips_per_s": round(completed / duration_s, 1),
            "latency_p50_ms": round(max(p50s), 2),
            "latency_p99_ms": round(percentile(p99s, 100), 2),
            "bridge_cpu_cores": round((cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]), 3),
            # The load generators share the machine's cores with the bridge.
            "clients_cpu_cores": round((cpu1[2] - cpu0[2]) / (cpu1[0] - cpu0[0]), 3),
            # What the load itself costs: at 1,000 round trips/s this many cores go to the
            # technicians and agents, whatever the bridge does.
            "clients_cpu_ms_per_round_trip": round(1000 * (cpu1[2] - cpu0[2]) / max(1, completed), 3),
            "bridge_cpu_ms_per_round_trip": round(1000 * (cpu1[1] - cpu0[1]) / max(1, completed), 3),
            "bridge_rss_mib": round(bridge.rss_bytes() / 2**20, 1),
            "duplicate_delivers": duplicates,
            "errors": errors,
            **({"profile": profiled} if profiled else {}),
        }
    finally:
        await pool.stop()
        bridge.stop()
