"""Fleet scale: N connected agents on one local bridge process.

For each tier: enroll up to N endpoints through the API, restart the bridge (so its memory
is this tier's), connect N ``SimAgent`` s from ``clients`` processes (spread over N/1000 s),
let the connection burst settle — one heartbeat interval and 3 s, so that every agent's first
heartbeat, which takes the full path once per connection, is behind us — then over
``window_s`` at the real heartbeat interval read the bridge's CPU time and, at the end, its
RSS and open files. Then kill -9 the bridge,
start it again on the same data and time until every agent has had ``hello.ok`` again
(agents reconnect with the real agent's full-jitter backoff, so this includes the backoff
they built up while the bridge was down).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.clients import ClientPool, split
from bench.harness import (
    BridgeProcess,
    Profile,
    endpoint_ids,
    enroll_many,
    load_secrets,
    percentile,
    proc_cpu_s,
    save_secrets,
)


async def tier(
    data: Path,
    n: int,
    *,
    window_s: float,
    heartbeat_ms: int = 15_000,
    clients: int = 4,
    settle_s: float | None = None,  # None: one heartbeat interval + 3 s (see the docstring)
    reconnect_timeout_s: float | None = None,
    # Give up when no agent got ready for this long: longer than the agents' 60 s reconnect
    # ceiling, or an agent still waiting out its delay counts as stalled.
    stall_s: float = 75.0,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    if reconnect_timeout_s is None:
        reconnect_timeout_s = max(60.0, n / 40)
    bridge = BridgeProcess(data / "fleet", heartbeat_ms=heartbeat_ms)
    result: dict[str, Any] = {"agents": n, "heartbeat_ms": heartbeat_ms, "window_s": window_s}
    pool = ClientPool(min(clients, max(1, n // 100)))
    try:
        bridge.start()
        t0 = time.monotonic()
        secrets = await enroll_many(bridge.url, endpoint_ids(n, "fl"), known=load_secrets(bridge.data))
        save_secrets(bridge.data, secrets)
        result["enroll_s"] = round(time.monotonic() - t0, 1)
        bridge.stop()
        result["start_s"] = round(bridge.start(), 3)
        result["idle_rss_mib"] = round(bridge.rss_bytes() / 2**20, 1)
        await pool.start()
        mine = [(eid, secrets[eid]) for eid in endpoint_ids(n, "fl")]
        shares = split(mine, pool.n)
        t0 = time.monotonic()
        await pool.all(
            "agents",
            per_client=[{"endpoints": s, "seed": i} for i, s in enumerate(shares)],
            url=bridge.url,
            spread_s=n / 1000,
        )
        ready = await pool.all("wait_ready", timeout_s=reconnect_timeout_s, stall_s=stall_s)
        connected = sum(r["ready"] for r in ready)
        result["connected"] = connected
        result["connect_s"] = round(max(r["last_ready_at"] for r in ready) - t0, 2)
        if connected != n:
            # Not all made it: measure the bridge as it is (saturated) and skip the restart.
            result["error"] = (
                f"only {connected} of {n} agents connected after {time.monotonic() - t0:.0f} s "
                f"(stalled for {stall_s:.0f} s or timed out); open files {bridge.fds()}"
            )
        # Until 2026-11-30 this was 3 s: with a fast connect burst the window then held every
        # agent's first (full-path) heartbeat, and measured the connection's aftermath.
        await asyncio.sleep(heartbeat_ms / 1000 + 3.0 if settle_s is None else settle_s)
        cpu0, clients0, w0 = bridge.cpu_s(), sum(map(proc_cpu_s, pool.pids())), time.monotonic()
        steady = Profile(bridge.pid, profile_dir / f"fleet-{n}-steady.txt", window_s) if profile_dir else None
        await asyncio.sleep(window_s)
        cpu1, clients1, w1 = bridge.cpu_s(), sum(map(proc_cpu_s, pool.pids())), time.monotonic()
        cores = (cpu1 - cpu0) / (w1 - w0)
        heartbeats_per_s = n / (heartbeat_ms / 1000)
        result.update(
            steady_cpu_cores=round(cores, 4),
            cpu_us_per_heartbeat=round(cores / heartbeats_per_s * 1e6, 1),
            client_cpu_cores=round((clients1 - clients0) / (w1 - w0), 4),
            rss_mib=round(bridge.rss_bytes() / 2**20, 1),
            open_files=bridge.fds(),
            load_avg_1m=round(os.getloadavg()[0], 2),
        )
        if steady is not None:
            result["profile_steady"] = steady.summary()
        if connected != n:
            result["connected_after_window"] = sum(r["ready"] for r in await pool.all("wait_ready", timeout_s=0))
            return result
        stats = await pool.all("stats")
        result["agent_errors_received"] = sum(s["errors_in"] for s in stats)
        # kill -9 and start again: how long until every agent is back.
        clients_before_kill = pool.cpu_s()
        killed_at = time.monotonic()
        bridge.kill()
        bridge.spawn()
        restart = (
            Profile(bridge.pid, profile_dir / f"fleet-{n}-restart.txt", min(60.0, 10 + n / 200))
            if profile_dir
            else None
        )
        result["restart_listen_s"] = round(bridge.wait_listening(), 3)
        ready = await pool.all("wait_ready", after=bridge.started_at, timeout_s=reconnect_timeout_s, with_times=True)
        back = sum(r["ready"] for r in ready)
        last = max(r["last_ready_at"] for r in ready)
        # CPU the restart cost, from the new process's start until every agent is back (its own
        # CPU clock starts at the spawn): per returning agent, for the bridge and for the agents.
        result["restart_bridge_cpu_ms_per_agent"] = round(1000 * bridge.cpu_s() / n, 3)
        result["restart_clients_cpu_ms_per_agent"] = round(1000 * (pool.cpu_s() - clients_before_kill) / n, 3)
        result["reconnected"] = back
        result["reconnect_s"] = round(last - bridge.started_at, 2) if back == n else None
        result["reconnect_from_kill_s"] = round(last - killed_at, 2) if back == n else None
        # Agents reconnect with full-jitter backoff that grew while the bridge was down: the
        # spread of their return says how much of reconnect_s is the bridge and how much backoff.
        times = sorted(t - bridge.started_at for r in ready for t in r["ready_ats"])
        result["reconnect_percentiles_s"] = {f"p{q}": round(percentile(times, q), 2) for q in (50, 90, 99)}
        result["rss_after_reconnect_mib"] = round(bridge.rss_bytes() / 2**20, 1)
        if restart is not None:
            result["profile_restart"] = restart.summary()
        return result
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc)[:800]}"
        return result
    finally:
        await pool.stop()
        bridge.stop()
