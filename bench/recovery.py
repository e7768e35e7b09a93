"""Recovery: kill -9 the bridge with a prompt storm in flight, start it, time until all views agree.

``endpoints`` agents answer approve after a think time of ``think_s`` (uniform), so a prompt
stays open a while after delivery. Technicians create one prompt per endpoint, all at once,
each with an Idempotency-Key, retrying on network failure with the same key as the console
does (400 ms × 2^n). When ``kill_at_answered`` creates have been answered — the rest still
unanswered on the wire or queued, and almost none decided — the bridge is killed (kill -9)
and started again on the same data.

Converged means every view agrees on every prompt: the technician holds its prompt id (the
create was answered, possibly by an idempotent repeat), the agent holds the bridge's ack of
its decision (the bridge committed it), and the API shows ``approved`` — checked by GETting
every endpoint's list afterwards, which must hold exactly one prompt per endpoint.
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
    clients: int = 2,
    think_s: tuple[float, float] = (1.0, 2.0),
    kill_at_answered: float = 0.5,
    timeout_s: float = 120.0,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    bridge = BridgeProcess(data / "recovery")
    bridge.start()
    pool = ClientPool(clients)
    result: dict[str, Any] = {"endpoints": endpoints, "think_s": list(think_s)}
    try:
        secrets = await enroll_many(bridge.url, endpoint_ids(endpoints, "rc"), known=load_secrets(bridge.data))
        save_secrets(bridge.data, secrets)
        await pool.start()
        shares = split(sorted(secrets.items()), clients)
        await pool.all(
            "agents",
            per_client=[{"endpoints": s, "seed": i} for i, s in enumerate(shares)],
            url=bridge.url,
            answer_delay_s=list(think_s),
        )
        ready = await pool.all("wait_ready", timeout_s=120)
        if sum(r["ready"] for r in ready) != endpoints:
            raise RuntimeError("agents did not all connect")
        batch_at = time.monotonic()
        await pool.all("batch", tag=f"k{int(batch_at)}")
        while True:
            status = await pool.all("batch_status")
            if sum(s["answered"] for s in status) >= kill_at_answered * endpoints:
                break
            if time.monotonic() - batch_at > timeout_s:
                raise RuntimeError("the batch never got going")
            await asyncio.sleep(0.005)
        killed_at = time.monotonic()
        bridge.kill()
        at_kill = await pool.all("batch_status")
        result["at_kill"] = {
            "since_batch_s": round(killed_at - batch_at, 3),
            "creates_answered": sum(s["answered"] for s in at_kill),
            "decisions_acked": sum(s["decided_any"] for s in at_kill),
            "in_flight": endpoints - sum(s["decided_any"] for s in at_kill),
        }
        bridge.spawn()
        profile = Profile(bridge.pid, profile_dir / "recovery.txt") if profile_dir else None
        result["restart_listen_s"] = round(bridge.wait_listening(), 3)
        restarted_at = bridge.started_at
        while True:
            status = await pool.all("batch_status")
            if all(s["decided"] == s["keys"] for s in status):
                break
            if time.monotonic() - restarted_at > timeout_s:
                result["stuck"] = status
                raise RuntimeError(f"not converged after {timeout_s} s")
            await asyncio.sleep(0.01)
        if profile is not None:
            result["profile"] = profile.summary()
        status = await pool.all("batch_status", with_times=True)
        last = max(s["last_decided_at"] for s in status)
        # The spread says what the tail is: agents coming back late (their reconnect backoff grew
        # while the bridge was down) or the bridge working through the backlog.
        for name, key in (
            ("converged_after_restart_s_percentiles", "converged_ats"),
            ("agents_back_after_restart_s", "ready_ats"),
            ("creates_answered_after_restart_s", "answered_ats"),
        ):
            times = sorted(t - restarted_at for st in status for t in st[key])
            result[name] = {f"p{q}": round(percentile(times, q), 2) for q in (50, 90, 99, 100)}
        result["converged_after_restart_s"] = round(max(0.0, last - restarted_at), 3)
        # The same without the simulated users' think time: for each prompt, the time from the
        # restart to its decision's ack minus the part of it the user spent thinking (delivery
        # to answer, counted from the restart). What is left is the bridge's and the agents'
        # reconnecting, delivering and committing.
        bridge_only, thinking = [], []
        for st in status:
            for delivered, answered, acked in st["think"]:
                if delivered is None or answered is None or acked < restarted_at:
                    continue
                think = max(0.0, answered - max(delivered, restarted_at))
                thinking.append(think)
                bridge_only.append(max(0.0, acked - restarted_at - think))
        if bridge_only:
            ordered = sorted(bridge_only)
            result["converged_bridge_only_s"] = round(ordered[-1], 3)
            result["converged_bridge_only_percentiles_s"] = {
                f"p{q}": round(percentile(ordered, q), 2) for q in (50, 90, 99, 100)
            }
            result["think_after_restart_s"] = {
                f"p{q}": round(percentile(sorted(thinking), q), 2) for q in (50, 90, 100)
            }
        result["converged_after_kill_s"] = round(last - killed_at, 3)
        result["creates_retried"] = sum(s["retried_creates"] for s in status)
        result["idempotent_repeats"] = sum(s["idempotent_repeats"] for s in status)
        verified = await pool.all("verify")
        states: dict[str, int] = {}
        per_endpoint: dict[str, int] = {}
        for v in verified:
            for k, c in v["states"].items():
                states[k] = states.get(k, 0) + c
            for k, c in v["prompts_per_endpoint"].items():
                per_endpoint[k] = per_endpoint.get(k, 0) + c
        result["api_states"] = states
        result["prompts_per_endpoint"] = per_endpoint
        stats = await pool.all("stats")
        result["duplicate_delivers"] = sum(s["duplicates"] for s in stats)
        result["ok"] = states == {"approved": endpoints} and per_endpoint == {"1": endpoints}
        return result
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc)[:800]}"
        result["ok"] = False
        return result
    finally:
        await pool.stop()
        bridge.stop()
