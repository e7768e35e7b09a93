"""The floor: what a prompt round trip's unavoidable work costs on this machine, measured bare.

- a WebSocket round trip on loopback with plain aiohttp (``bench.echo`` in its own process):
  a ``prompt.deliver``-sized message out, a ``prompt.receipt``-sized reply back;
- an HTTP round trip with plain aiohttp: a create-sized POST answered with a prompt-object-
  sized body (keep-alive, as the console's browser and the bench's technicians use);
- a SQLite commit with the bridge's and the agent's durability settings (WAL,
  ``synchronous=FULL``), one fact-sized row per transaction, on the bench's data disk.

``floors`` turns these into the floor of each timed path by counting the minimum hops and
durable commits on its critical path (see ``PATHS``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import ROOT, free_port, summary_ms, wait_listening

# Critical paths, counted in one-way hops (half a round trip) and durable commits:
#  create → receipt committed (seen as the receipt's ack at the agent):
#    POST → [bridge commits prompt+outbox] → deliver → [agent commits] → receipt →
#    [bridge commits receipt] → ack.   = ½ HTTP + 1½ WS + 3 commits
#  create → decision visible on the API (agent answers at once; GET after the decision's ack):
#    POST → [bridge commit] → deliver → [agent commits prompt] → [agent commits decision]
#    → update → [bridge commits decision] → ack → GET.   = ½ HTTP + 1½ WS + 4 commits + 1 HTTP GET
#    (the bridge's receipt commit overlaps the agent's decision commit, so it is not counted)
PATHS: dict[str, dict[str, float]] = {
    "receipt": {"http_post_rtt": 0.5, "ws_rtt": 1.5, "commit": 3},
    "decision": {"http_post_rtt": 0.5, "ws_rtt": 1.5, "commit": 4, "http_get_rtt": 1},
}


def frame_sizes() -> dict[str, int]:
    """Byte sizes of the real frames and bodies of one bench prompt (made by the real actor)."""
    from bench.actor_cpu import ActorRig

    rig = ActorRig(":memory:")
    sizes = rig.sizes()
    rig.close()
    return sizes


def sqlite_commits(directory: Path, n: int) -> dict[str, Any]:
    path = directory / "floor-commit.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE facts (seq INTEGER PRIMARY KEY, prompt_id TEXT, kind TEXT, fields TEXT)")
    fields = json.dumps({"title": "x" * 40, "message": "y" * 150, "action": "remote_control"})
    samples = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO facts (prompt_id, kind, fields) VALUES (?, 'created', ?)", (f"p{i}", fields))
        db.execute("COMMIT")
        if i >= 20:
            samples.append(time.perf_counter() - t0)
    db.close()
    return summary_ms(samples)


async def _network(port: int, n: int, sizes: dict[str, int]) -> dict[str, Any]:
    deliver = "d" * sizes["deliver_bytes"]
    create = json.dumps({"pad": "c" * max(0, sizes["create_body_bytes"] - 12)})
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/ws", heartbeat=None) as ws:
            samples = []
            for i in range(n + 50):
                t0 = time.perf_counter()
                await ws.send_str(deliver)
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT
                if i >= 50:
                    samples.append(time.perf_counter() - t0)
            out["ws_rtt"] = summary_ms(samples)
        for name, method, body in (("http_post_rtt", "POST", create), ("http_get_rtt", "GET", None)):
            samples = []
            for i in range(n + 50):
                t0 = time.perf_counter()
                path = "/post" if method == "POST" else "/get"
                async with session.request(method, f"http://127.0.0.1:{port}{path}", data=body) as r:
                    await r.read()
                if i >= 50:
                    samples.append(time.perf_counter() - t0)
            out[name] = summary_ms(samples)
    return out


def measure(data_dir: Path, n: int) -> dict[str, Any]:
    sizes = frame_sizes()
    port = free_port()
    cmd = [sys.executable, "-m", "bench.echo", "--port", str(port)]
    cmd += ["--reply-bytes", str(sizes["receipt_bytes"]), "--response-bytes", str(sizes["prompt_object_bytes"])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, 20)
        result = asyncio.run(_network(port, n, sizes))
    finally:
        proc.terminate()
        proc.wait(10)
    result["commit"] = sqlite_commits(data_dir, n)
    result["sizes"] = sizes
    result["paths"] = {name: floor_of(result, name) for name in PATHS}
    return result


def floor_of(components: dict[str, Any], path: str, stat: str = "p50_ms") -> dict[str, Any]:
    """The floor of ``path`` from the components' ``stat`` (p50 by default)."""
    terms = PATHS[path]
    total = sum(weight * components[name][stat] for name, weight in terms.items())
    return {
        "floor_ms": round(total, 3),
        "floor_p99_components_ms": round(sum(w * components[k]["p99_ms"] for k, w in terms.items()), 3),
        "counted": terms,
    }
