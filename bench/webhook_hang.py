"""A webhook receiver that hangs 30 s does not move the prompt round trip (issue 13, DESIGN §11).

One bridge process (``--allow-private-webhooks``: the receiver is on 127.0.0.1), one agent
(``SimAgent``, answering at once), in the same run: ``baseline`` round trips with no
subscription, then ``hanging`` ones while a subscription to every event points at a receiver
that holds each request 30 s (the bridge's 10 s attempt timeout ends them; retries follow).
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

    app = web.Application()
    app.router.add_post("/hook", hang)
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
        secrets = await enroll_many(bridge.url, ["hang-0"])
        tracker = Tracker()
        async with aiohttp.ClientSession() as agent_session, aiohttp.ClientSession() as http:
            agent = SimAgent(
                bridge.url,
                "hang-0",
                secrets["hang-0"],
                agent_session,
                listener=tracker,
                disk=disk,
                rng=random.Random(1),
            )
            task = asyncio.ensure_future(agent.run(stop))
            while not agent.ready:
                await asyncio.sleep(0.01)

            async def round_trips(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t0 = time.monotonic()
                    async with http.post(
                        f"{bridge.url}/api/endpoints/hang-0/prompts", json=PROMPT_BODY, headers=headers
                    ) as r:
                        pid = (await r.json())["prompt_id"]
                    await tracker.decided(pid, 10)
                    async with http.get(f"{bridge.url}/api/endpoints/hang-0/prompts/{pid}", headers=headers) as r:
                        assert (await r.json())["state"] == "approved"
                    out.append(time.monotonic() - t0)
                return out

            await round_trips(10)  # warm-up
            baseline = await round_trips(prompts)
            hook = {
                "url": f"http://127.0.0.1:{port}/hook",
                "events": ["prompt.created", "prompt.delivered", "prompt.final"],
            }
            async with http.post(f"{bridge.url}/api/webhooks", json=hook, headers=headers) as r:
                assert r.status == 201, await r.text()
            started = time.monotonic()
            hanging = await round_trips(prompts)
            in_flight = sum(1 for t in hits if t >= started)
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
        return {
            "prompts": prompts,
            "baseline": summary_ms(baseline),
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
