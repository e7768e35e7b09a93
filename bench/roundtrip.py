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
    """``endpoints`` signed endpoints (what the product does) and as many keyless ones whose
    answers go unsigned, on one bridge, prompts alternating between them: the cost of signing
    measured against a baseline under the same load at the same moments (DESIGN §10)."""
    bridge = BridgeProcess(data / "roundtrip")
    bridge.start()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    disk = Disk(data / "roundtrip-agents.sqlite3")
    try:
        signed_ids, unsigned_ids = endpoint_ids(endpoints, "rt"), endpoint_ids(endpoints, "ru")
        keys = {eid: EndpointKey.generate() for eid in signed_ids}
        secrets = await enroll_many(bridge.url, signed_ids + unsigned_ids, keys=keys)
        tracker = Tracker()
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession() as agent_session, aiohttp.ClientSession() as http:
            order = [eid for pair in zip(signed_ids, unsigned_ids, strict=True) for eid in pair]
            agents = [
                SimAgent(
                    bridge.url,
                    eid,
                    secrets[eid],
                    agent_session,
                    listener=tracker,
                    disk=disk,
                    key=keys.get(eid),
                    rng=random.Random(i),
                )
                for i, eid in enumerate(order)
            ]
            tasks = [asyncio.ensure_future(a.run(stop)) for a in agents]
            deadline = time.monotonic() + 30
            while not all(a.ready for a in agents):
                if time.monotonic() > deadline:
                    raise RuntimeError("agents did not connect")
                await asyncio.sleep(0.01)
            samples: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
            profile = None
            for i in range(2 * (prompts + warmup)):
                if i == 2 * warmup and profile_dir is not None:
                    profile = Profile(bridge.pid, profile_dir / "roundtrip.txt")
                agent = agents[i % len(agents)]
                eid, signed = agent.endpoint_id, agent.key is not None
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
                if i >= 2 * warmup:
                    samples[signed][0].append(tracker.receipt_at[pid] - t0)
                    samples[signed][1].append(t_visible - t0)
            profiled = profile.summary() if profile is not None else None
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        receipt, decision = samples[True]
        result = {"receipt": summary_ms(receipt), "decision": summary_ms(decision), "endpoints": endpoints}
        result["unsigned"] = {"receipt": summary_ms(samples[False][0]), "decision": summary_ms(samples[False][1])}
        if profiled is not None:
            result["profile"] = profiled
        return result
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        disk.close()
        bridge.stop()
