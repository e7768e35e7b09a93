"""A webhook receiver that hangs 30 s does not move the prompt round trip (issue 13, DESIGN §11).

One bridge process (``--allow-private-webhooks``: the receiver is on 127.0.0.1), three agents
(``SimAgent``, answering at once), in the same run: ``baseline`` round trips with no
subscription (the first endpoint), ``answering`` ones while every prompt event goes to a
receiver that answers at once (the second), then ``hanging`` ones (the third) while they go
to a receiver that holds each request 30 s (the bridge's 10 s attempt timeout ends them;
retries follow). The hang is measured against the answering receiver: what webhooks cost
at all (events, signing, the answers' bookkeeping) is the answering phase against the
baseline.
A round trip: from just before the create POST until a ``GET`` answers ``approved``.

    python -m bench.webhook_hang [--prompts 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.clients import Tracker
from bench.harness import ADMIN_TOKEN, PROMPT_BODY, BridgeProcess, enroll_many, summary_ms
from bench.simagent import Disk, SimAgent

HANG_S = 30.0


async def run(data: Path, prompts: int = 40) -> dict[str, Any]:
    hits: list[float] = []

    async def hang(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        await request.read()
        await asyncio.sleep(HANG_S)
        return web.Response(status=204)

    async def fast(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hang)
    app.router.add_post("/fast", fast)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    bridge = BridgeProcess(data / "hang", extra_args=["--allow-private-webhooks"])
    bridge.start()
    disk = Disk(data / "hang-agent.sqlite3")
    stop = asyncio.Event()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        # One endpoint per phase: an endpoint that found no subscription keeps no events for a
        # minute (worker.hooks.NO_TARGETS_TTL_MS), so the second phase needs a fresh one.
        ids = ["hang-0", "hang-1", "hang-2"]
        secrets = await enroll_many(bridge.url, ids)
        tracker = Tracker()
        async with aiohttp.ClientSession() as agent_session, aiohttp.ClientSession() as http:
            agents = [
                SimAgent(bridge.url, e, secrets[e], agent_session, listener=tracker, disk=disk, rng=random.Random(i))
                for i, e in enumerate(ids)
            ]
            tasks = [asyncio.ensure_future(agents[0].run(stop))]  # the second connects after subscribing
            while not agents[0].ready:
                await asyncio.sleep(0.01)

            async def round_trips(n: int, eid: str) -> list[float]:
                out = []
                for _ in range(n):
                    t0 = time.monotonic()
                    async with http.post(
                        f"{bridge.url}/api/endpoints/{eid}/prompts", json=PROMPT_BODY, headers=headers
                    ) as r:
                        pid = (await r.json())["prompt_id"]
                    await tracker.decided(pid, 10)
                    async with http.get(f"{bridge.url}/api/endpoints/{eid}/prompts/{pid}", headers=headers) as r:
                        assert (await r.json())["state"] == "approved"
                    out.append(time.monotonic() - t0)
                return out

            await round_trips(10, "hang-0")  # warm-up
            baseline = await round_trips(prompts, "hang-0")
            events = ["prompt.created", "prompt.delivered", "prompt.final"]

            async def phase(path: str, agent: int) -> list[float]:
                """Subscribe ``path`` alone, connect a fresh endpoint's agent, measure it."""
                async with http.get(f"{bridge.url}/api/webhooks", headers=headers) as r:
                    for old in (await r.json())["webhooks"]:
                        async with http.delete(f"{bridge.url}/api/webhooks/{old['id']}", headers=headers):
                            pass
                hook = {"url": f"http://127.0.0.1:{port}{path}", "events": events}
                async with http.post(f"{bridge.url}/api/webhooks", json=hook, headers=headers) as r:
                    assert r.status == 201, await r.text()
                tasks.append(asyncio.ensure_future(agents[agent].run(stop)))
                while not agents[agent].ready:
                    await asyncio.sleep(0.01)
                await round_trips(3, ids[agent])  # warm-up
                return await round_trips(prompts, ids[agent])

            answering = await phase("/fast", 1)
            started = time.monotonic()
            hanging = await phase("/hook", 2)
            in_flight = sum(1 for t in hits if t >= started)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "prompts": prompts,
            "baseline": summary_ms(baseline),
            "answering_receiver": summary_ms(answering),
            "hanging_receiver": summary_ms(hanging),
            "receiver_requests_during_hanging_phase": in_flight,
            "hang_s": HANG_S,
        }
    finally:
        stop.set()
        disk.close()
        bridge.stop()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_hang", description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(run(Path(tmp), args.prompts)), indent=2))


if __name__ == "__main__":
    main()
