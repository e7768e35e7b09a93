"""CPU per bridge event in the actor alone: ``EndpointBridge`` in-process, no sockets, no HTTP.

A proxy for Workers CPU billing: the Durable Object runs this same class per event. Each
event is timed with ``time.process_time()`` (user + system CPU of this process) around the
one actor call a host makes for it:

- ``create``: ``handle(POST /api/endpoints/{eid}/prompts)`` as the gateway forwards it, with the
  agent connected (so the deliver frame is built and its attempt recorded);
- ``receipt`` / ``update``: ``agent_frame`` with the runtime's receipt / ``decided`` update;
- ``heartbeat``: ``agent_frame`` with a heartbeat whose digest matches (the steady case).

Two stores: a SQLite file with the local host's settings (WAL, synchronous=FULL — the fsync's
kernel time is CPU this process pays), and ``:memory:`` (the actor's own logic and SQL, which
is closer to what a Durable Object bills: its storage writes are not the isolate's CPU).
The endpoint carries a history of ``history`` decided prompts before timing starts, as a
live endpoint would.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import PROMPT_BODY
from caisey import wire
from caisey.digest import held_digest
from caisey.ids import IdSource
from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
from worker.endpoint import EndpointBridge
from worker.host import Entropy
from worker.sqlite_store import SqliteStore

ENDPOINT = "bench-endpoint"


def now_ms() -> int:
    return int(time.time() * 1000)


class ActorRig:
    """One registered endpoint's actor with its agent 'connected' (frames fed by hand)."""

    def __init__(self, path: str | Path) -> None:
        self.store = SqliteStore(path)
        self.entropy = Entropy()
        self.actor = EndpointBridge(self.store, self.entropy)
        self.ids = IdSource(self.entropy.bits)
        self.headers = {TECHNICIAN_HEADER: "bench", ROLE_HEADER: "technician"}
        body = json.dumps({"endpoint_id": ENDPOINT, "label": "bench"}).encode()
        req = ApiRequest("POST", "/api/enrollments", {**self.headers, "x-caisey-endpoint": ENDPOINT}, body)
        response, _ = self.actor.handle(req, now_ms(), False)
        assert response.status == 201, response.body
        self.actor.agent_opened(now_ms())
        hello = wire.Hello(self.ids.new(now_ms()), ENDPOINT, "bench", now_ms())
        self.actor.agent_frame(wire.encode(hello), now_ms())
        self.create_body = json.dumps(PROMPT_BODY).encode()

    def create(self) -> tuple[Any, wire.PromptDeliver]:
        req = ApiRequest("POST", f"/api/endpoints/{ENDPOINT}/prompts", dict(self.headers), self.create_body)
        response, effects = self.actor.handle(req, now_ms(), True)
        assert response.status == 201, response.body
        delivers = [m for m in map(wire.decode, effects.send) if isinstance(m, wire.PromptDeliver)]
        assert len(delivers) == 1, effects.send
        return response, delivers[0]

    def receipt_frame(self, deliver: wire.PromptDeliver) -> str:
        return wire.encode(wire.PromptReceipt(self.ids.new(now_ms()), deliver.prompt.prompt_id, deliver.id, now_ms()))

    def update_frame(self, prompt_id: str) -> str:
        update = wire.PromptUpdate(
            self.ids.new(now_ms()), prompt_id, "decided", how="user", decision="approve", decided_at_ms=now_ms()
        )
        return wire.encode(update)

    def heartbeat_frame(self) -> str:
        return wire.encode(wire.Heartbeat(self.ids.new(now_ms()), now_ms(), held_digest([])))

    def feed(self, frame: str) -> list[str]:
        effects = self.actor.agent_frame(frame, now_ms())
        return effects.send

    def sizes(self) -> dict[str, int]:
        """Byte sizes of one prompt's real frames and bodies (for the floor's echo)."""
        response, deliver = self.create()
        receipt = self.receipt_frame(deliver)
        self.feed(receipt)
        update = self.update_frame(deliver.prompt.prompt_id)
        self.feed(update)
        return {
            "create_body_bytes": len(self.create_body),
            "prompt_object_bytes": len(response.encoded()),
            "deliver_bytes": len(wire.encode(deliver).encode()),
            "receipt_bytes": len(receipt.encode()),
            "update_bytes": len(update.encode()),
            "heartbeat_bytes": len(self.heartbeat_frame().encode()),
        }

    def close(self) -> None:
        self.store.close()


def _one_prompt(rig: ActorRig, cpu: dict[str, list[float]] | None) -> None:
    t0 = time.process_time()
    _, deliver = rig.create()
    t1 = time.process_time()
    sent = rig.feed(rig.receipt_frame(deliver))
    t2 = time.process_time()
    assert any('"type":"ack"' in s for s in sent), sent
    rig.feed(rig.update_frame(deliver.prompt.prompt_id))
    t3 = time.process_time()
    if cpu is not None:
        cpu["create"].append(t1 - t0)
        cpu["receipt"].append(t2 - t1)
        cpu["update"].append(t3 - t2)


def measure_store(path: str | Path, prompts: int, heartbeats: int, history: int) -> dict[str, Any]:
    rig = ActorRig(path)
    try:
        for _ in range(history):
            _one_prompt(rig, None)
        cpu: dict[str, list[float]] = {"create": [], "receipt": [], "update": [], "heartbeat": []}
        wall0 = time.perf_counter()
        for _ in range(prompts):
            _one_prompt(rig, cpu)
        frame = rig.heartbeat_frame
        for _ in range(heartbeats):
            text = frame()
            t0 = time.process_time()
            sent = rig.feed(text)
            cpu["heartbeat"].append(time.process_time() - t0)
            assert len(sent) == 1, sent  # the ack only: digests agree
        wall = time.perf_counter() - wall0
        result: dict[str, Any] = {}
        for event, samples in cpu.items():
            samples.sort()
            result[event] = {
                "cpu_us_mean": round(sum(samples) / len(samples) * 1e6, 1),
                "cpu_us_p50": round(samples[len(samples) // 2] * 1e6, 1),
                "n": len(samples),
            }
        result["wall_s"] = round(wall, 3)
        return result
    finally:
        rig.close()


def measure(prompts: int, heartbeats: int, history: int = 50) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="caisey-bench-actor-") as tmp:
        disk = measure_store(Path(tmp) / "endpoint.sqlite3", prompts, heartbeats, history)
    memory = measure_store(":memory:", prompts, heartbeats, history)
    return {"history_prompts": history, "disk_wal_full": disk, "memory": memory}
