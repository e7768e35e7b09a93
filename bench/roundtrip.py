"""Prompt round trip on an idle bridge: one prompt in flight at a time, agents answer at once.

Agents are ``SimAgent`` s with a ``Disk`` (they commit, WAL + FULL, before the receipt and
before the decision, as the real agent does), in this process; the bridge is its own
process. For each prompt, from just before the create POST is sent:

- ``receipt``: until the agent holds the bridge's ack of its receipt — the bridge acks only
  after the receipt's transaction committed;
- ``decision``: until a ``GET`` of the prompt, sent when the agent holds the ack of its
  decision, answers ``approved`` — the decision is visible on the API.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.identity import EndpointKey
from bench.clients import Tracker
from bench.harness import ADMIN_TOKEN, PROMPT_BODY, BridgeProcess, Profile, endpoint_ids, enroll_many, summary_ms
from bench.simagent import Disk, SimAgent


async def run(
    data: Path, prompts: int, endpoints: int = 4, warmup: int = 20, profile_dir: Path | None = None
) -> dict[str, Any]:
    """Signed answers (what the product does), then the same with unsigned answers from keyless
    endpoints on a fresh bridge: the cost of signing, measured in the same run (DESIGN §10)."""
    result = await _run(data / "signed", prompts, endpoints, warmup, profile_dir, signed=True)
    unsigned = await _run(data / "unsigned", prompts, endpoints, warmup, None, signed=False)
    result["unsigned"] = {"receipt": unsigned["receipt"], "decision": unsigned["decision"]}
    return result


async def _run(
    data: Path, prompts: int, endpoints: int, warmup: int, profile_dir: Path | None, *, signed: bool
) -> dict[str, Any]:
    data.mkdir(parents=True, exist_ok=True)
    bridge = BridgeProcess(data / "roundtrip")
    bridge.start()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    disk = Disk(data / "roundtrip-agents.sqlite3")
    try:
        ids = endpoint_ids(endpoints, "rt")
        keys = {eid: EndpointKey.generate() for eid in ids} if signed else None
        secrets = await enroll_many(bridge.url, ids, keys=keys)
        tracker = Tracker()
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession() as agent_session, aiohttp.ClientSession() as http:
            agents = [
                SimAgent(
                    bridge.url,
                    eid,
                    secret,
                    agent_session,
                    listener=tracker,
                    disk=disk,
                    key=keys[eid] if keys else None,
                    rng=random.Random(i),
                )
                for i, (eid, secret) in enumerate(sorted(secrets.items()))
            ]
            tasks = [asyncio.ensure_future(a.run(stop)) for a in agents]
            deadline = time.monotonic() + 30
            while not all(a.ready for a in agents):
                if time.monotonic() > deadline:
                    raise RuntimeError("agents did not connect")
                await asyncio.sleep(0.01)
            receipt, decision = [], []
            profile = None
            for i in range(prompts + warmup):
                if i == warmup and profile_dir is not None:
                    profile = Profile(bridge.pid, profile_dir / "roundtrip.txt")
                eid = agents[i % len(agents)].endpoint_id
                t0 = time.monotonic()
                async with http.post(
                    f"{bridge.url}/api/endpoints/{eid}/prompts", json=PROMPT_BODY, headers=headers
                ) as r:
                    body = await r.json()
                    assert r.status == 201, body
                pid = body["prompt_id"]
                await tracker.decided(pid, 10)
                async with http.get(f"{bridge.url}/api/endpoints/{eid}/prompts/{pid}", headers=headers) as r:
                    shown = await r.json()
                t_visible = time.monotonic()
                assert shown["state"] == "approved", shown["state"]
                assert (shown["decision_signature"] is not None) == signed, shown["decision_signature"]
                receipt_deadline = time.monotonic() + 10
                while pid not in tracker.receipt_at:
                    # A delivery retried (full jitter may retry within milliseconds) gets a fresh
                    # receipt, whose ack can come after the decision's.
                    if time.monotonic() > receipt_deadline:
                        raise RuntimeError(f"no receipt ack for {pid}")
                    await asyncio.sleep(0.001)
                if i >= warmup:
                    receipt.append(tracker.receipt_at[pid] - t0)
                    decision.append(t_visible - t0)
            profiled = profile.summary() if profile is not None else None
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        result = {"receipt": summary_ms(receipt), "decision": summary_ms(decision), "endpoints": endpoints}
        if profiled is not None:
            result["profile"] = profiled
        return result
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        disk.close()
        bridge.stop()
