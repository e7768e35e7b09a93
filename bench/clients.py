"""Client processes: many ``SimAgent`` s and a technician load generator, outside the bridge.

The benchmark parent starts several of these (``python -m bench.clients``) so the simulated
fleet does not share the bridge's process, and drives each over stdin/stdout with one JSON
object per line: ``{"id": n, "op": …}`` in, ``{"id": n, …result}`` out. Ops:

- ``agents``: start agents for ``endpoints`` ([[endpoint_id, secret], …]) against ``url``;
- ``wait_ready``: answer when every agent has had ``hello.ok`` at or after ``after``
  (``time.monotonic()``, comparable across processes) or ``timeout_s`` passed;
- ``storm``: technicians create prompts on this process's endpoints for ``duration_s`` with
  ``concurrency`` in flight; a round trip ends when our agent's decision is acked;
- ``batch`` / ``batch_status``: one prompt per endpoint with an Idempotency-Key, retried on
  network failure with the same key (as the console does), until answered;
- ``verify``: GET each batch prompt and count states (what the console shows);
- ``stats`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import ADMIN_TOKEN, PROMPT_BODY, ROOT, proc_cpu_s, summary_ms
from bench.simagent import Disk, Listener, SimAgent, Stats
from caisey import wire


class Tracker(Listener):
    """Round-trip bookkeeping by prompt id; either side (HTTP answer, agent event) may come first."""

    def __init__(self) -> None:
        self.receipt_at: dict[str, float] = {}
        self.decision_at: dict[str, float] = {}
        # The simulated user's think time, per prompt: from delivery to the answer.
        self.delivered_at: dict[str, float] = {}
        self.answered_at: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.ready_count = 0

    def ready(self, agent: SimAgent, at: float) -> None:
        self.ready_count += 1

    def receipt_acked(self, agent: SimAgent, prompt_id: str, at: float) -> None:
        self.receipt_at.setdefault(prompt_id, at)

    def delivered(self, agent: SimAgent, prompt: wire.PromptCopy, at: float) -> None:
        self.delivered_at.setdefault(prompt.prompt_id, at)

    def answered(self, agent: SimAgent, prompt_id: str, at: float) -> None:
        self.answered_at.setdefault(prompt_id, at)

    def decision_acked(self, agent: SimAgent, prompt_id: str, at: float) -> None:
        self.decision_at.setdefault(prompt_id, at)
        waiter = self.waiters.pop(prompt_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    async def decided(self, prompt_id: str, timeout_s: float) -> float:
        if prompt_id in self.decision_at:
            return self.decision_at[prompt_id]
        waiter = self.waiters.setdefault(prompt_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(waiter, timeout_s)


class ClientProcess:
    def __init__(self) -> None:
        self.agents: list[SimAgent] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.stop_event = asyncio.Event()
        self.tracker = Tracker()
        self.session: aiohttp.ClientSession | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = ""
        self.disk: Disk | None = None
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.batch: dict[str, dict[str, Any]] = {}  # idempotency key → record
        self.batch_task: asyncio.Task[Any] | None = None

    async def op_agents(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.url = msg["url"]
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=30))
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=msg.get("http_connections", 64)),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        if msg.get("durable"):
            self.tmp = tempfile.TemporaryDirectory(prefix="caisey-bench-agent-", dir=msg.get("disk_dir"))
            self.disk = Disk(Path(self.tmp.name) / "agents.sqlite3")
        rng = random.Random(msg.get("seed", 0))
        spread_s = float(msg.get("spread_s", 0.0))
        delay = msg.get("answer_delay_s", [0.0, 0.0])
        for endpoint_id, secret in msg["endpoints"]:
            agent = SimAgent(
                self.url,
                endpoint_id,
                secret,
                self.session,
                listener=self.tracker,
                answer=msg.get("answer", "approve"),
                answer_delay_s=(float(delay[0]), float(delay[1])),
                disk=self.disk,
                rng=random.Random(rng.getrandbits(64)),
            )
            self.agents.append(agent)
            first = rng.uniform(0, spread_s) if spread_s else 0.0
            self.tasks.append(asyncio.ensure_future(agent.run(self.stop_event, first_delay_s=first)))
        return {"agents": len(self.agents)}

    async def op_wait_ready(self, msg: dict[str, Any]) -> dict[str, Any]:
        after = float(msg.get("after", 0.0))
        deadline = time.monotonic() + float(msg.get("timeout_s", 60))
        stall_s = float(msg.get("stall_s", 1e9))  # give up early when no agent got ready for this long
        best, progress_at = -1, time.monotonic()
        while True:
            ready = [a for a in self.agents if a.ready and a.ready_at >= after]
            now = time.monotonic()
            if len(ready) > best:
                best, progress_at = len(ready), now
            if len(ready) == len(self.agents) or now >= deadline or now - progress_at >= stall_s:
                break
            await asyncio.sleep(0.05)
        return {
            "ready": len(ready),
            "total": len(self.agents),
            "last_ready_at": max((a.ready_at for a in ready), default=0.0),
            "first_ready_at": min((a.ready_at for a in ready), default=0.0),
            "ready_ats": [a.ready_at for a in ready] if msg.get("with_times") else None,
        }

    def _stats(self) -> Stats:
        total = Stats()
        for agent in self.agents:
            for name in total.__dataclass_fields__:
                setattr(total, name, getattr(total, name) + getattr(agent.stats, name))
        return total

    async def op_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        return dict(self._stats().__dict__, ready=sum(1 for a in self.agents if a.ready))

    async def _create(self, endpoint_id: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.http.post(
            f"{self.url}/api/endpoints/{endpoint_id}/prompts", json=PROMPT_BODY, headers=headers
        ) as r:
            return r.status, await r.json()

    async def op_storm(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Closed loop: ``concurrency`` technicians, each create → wait for the decision → next."""
        duration_s = float(msg["duration_s"])
        start = float(msg.get("start_at", time.monotonic()))
        while time.monotonic() < start:
            await asyncio.sleep(min(0.05, start - time.monotonic()))
        end = start + duration_s
        latencies: list[float] = []
        errors: dict[str, int] = {}
        rng = random.Random(msg.get("seed", 1))
        endpoints = [a.endpoint_id for a in self.agents]
        # Each endpoint holds at most a few open prompts at a time (bounded: MAX_OPEN_PROMPTS).
        per_endpoint: dict[str, int] = dict.fromkeys(endpoints, 0)

        async def technician() -> None:
            while time.monotonic() < end:
                eid = rng.choice(endpoints)
                if per_endpoint[eid] >= 4:
                    await asyncio.sleep(0)
                    continue
                per_endpoint[eid] += 1
                t0 = time.monotonic()
                try:
                    status, body = await self._create(eid)
                    if status != 201:
                        errors[f"http_{status}"] = errors.get(f"http_{status}", 0) + 1
                        continue
                    done = await self.tracker.decided(body["prompt_id"], 30)
                    if done <= end:
                        latencies.append(done - t0)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                finally:
                    per_endpoint[eid] -= 1

        await asyncio.gather(*(technician() for _ in range(int(msg["concurrency"]))))
        return {"completed": len(latencies), "latency": summary_ms(latencies), "errors": errors}

    async def op_batch(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One prompt per endpoint, all at once; network failures retried with the same key."""
        tag = msg.get("tag", "b")
        self.batch = {
            f"{tag}-{a.endpoint_id}": {"endpoint_id": a.endpoint_id, "prompt_id": None, "tries": 0, "answered_at": 0.0}
            for a in self.agents
        }

        async def one(key: str, record: dict[str, Any]) -> None:
            attempt = 0
            while not self.stop_event.is_set():
                record["tries"] += 1
                try:
                    status, body = await self._create(record["endpoint_id"], key)
                    if status in (200, 201):
                        record["prompt_id"] = body["prompt_id"]
                        record["answered_at"] = time.monotonic()
                        record["status"] = status
                        return
                    record["last_error"] = f"http_{status}"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    record["last_error"] = type(exc).__name__
                # The console's retry: 400 ms × 2^n (capped here at 3.2 s), same Idempotency-Key.
                await asyncio.sleep(min(3.2, 0.4 * 2**attempt))
                attempt += 1

        async def run() -> None:
            await asyncio.gather(*(one(k, r) for k, r in self.batch.items()))

        self.batch_task = asyncio.ensure_future(run())
        return {"keys": len(self.batch)}

    async def op_batch_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        """How far the batch got: answered creates, receipts and decisions acked at our agents."""
        answered = [r for r in self.batch.values() if r["prompt_id"] is not None]
        decided = [
            self.tracker.decision_at[r["prompt_id"]] for r in answered if r["prompt_id"] in self.tracker.decision_at
        ]
        # Decisions the bridge acked for prompts whose create answer we have not seen yet.
        decided_any = len(self.tracker.decision_at)
        return {
            "keys": len(self.batch),
            "answered": len(answered),
            "decided": len(decided),
            "decided_any": decided_any,
            "last_decided_at": max(decided, default=0.0),
            "tries": sum(r["tries"] for r in self.batch.values()),
            "retried_creates": sum(1 for r in self.batch.values() if r["tries"] > 1),
            "idempotent_repeats": sum(1 for r in answered if r.get("status") == 200),
            "converged_ats": decided if msg.get("with_times") else None,
            "ready_ats": [a.ready_at for a in self.agents] if msg.get("with_times") else None,
            "answered_ats": [r["answered_at"] for r in answered] if msg.get("with_times") else None,
            # Per decided prompt: (delivered, the user answered, the bridge acked the decision).
            "think": [
                (self.tracker.delivered_at.get(pid), self.tracker.answered_at.get(pid), at)
                for pid, at in self.tracker.decision_at.items()
            ]
            if msg.get("with_times")
            else None,
        }

    async def op_verify(self, msg: dict[str, Any]) -> dict[str, Any]:
        """What the API shows for every batch prompt, and how many prompts each endpoint holds."""
        assert self.http is not None
        states: dict[str, int] = {}
        prompts_per_endpoint: dict[int, int] = {}
        sem = asyncio.Semaphore(16)

        async def check(record: dict[str, Any]) -> None:
            async with sem:
                headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                url = f"{self.url}/api/endpoints/{record['endpoint_id']}/prompts?limit=200"
                assert self.http is not None
                async with self.http.get(url, headers=headers) as r:
                    listed = (await r.json())["prompts"]
            batch_ids = [p for p in listed if p["prompt_id"] == record["prompt_id"]]
            state = batch_ids[0]["state"] if batch_ids else "missing"
            states[state] = states.get(state, 0) + 1
            prompts_per_endpoint[len(listed)] = prompts_per_endpoint.get(len(listed), 0) + 1

        await asyncio.gather(*(check(r) for r in self.batch.values()))
        return {"states": states, "prompts_per_endpoint": {str(k): v for k, v in prompts_per_endpoint.items()}}

    async def op_stop(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.stop_event.set()
        if self.batch_task is not None:
            self.batch_task.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for session in (self.session, self.http):
            if session is not None:
                await session.close()
        if self.disk is not None:
            self.disk.close()
        if self.tmp is not None:
            self.tmp.cleanup()
        return {"stopped": True}


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    client = ClientProcess()

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    async def handle(msg: dict[str, Any]) -> None:
        try:
            result = await getattr(client, "op_" + msg["op"])(msg)
        except Exception as exc:  # the boundary: report to the parent, which fails the bench
            import traceback

            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        reply({"id": msg["id"], **result})

    pending: set[asyncio.Task[Any]] = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        task = asyncio.ensure_future(handle(msg))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if msg["op"] == "stop":
            await task
            break


class ClientPool:
    """The parent's side: ``n`` client processes and a request/answer channel to each."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task[Any]] = []
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 0

    async def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for _ in range(self.n):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.clients",
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=256 * 1024 * 1024,
            )
            self.procs.append(proc)
            self.readers.append(asyncio.ensure_future(self._read(proc)))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            msg = json.loads(line)
            waiter = self.waiting.pop(msg["id"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the client processes have used so far."""
        return sum(proc_cpu_s(p.pid) for p in self.procs)

    async def call(self, index: int, op: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = waiter
        proc = self.procs[index]
        assert proc.stdin is not None
        proc.stdin.write((json.dumps({"id": msg_id, "op": op, **fields}) + "\n").encode())
        await proc.stdin.drain()
        answer = await waiter
        if "error" in answer:
            raise RuntimeError(f"client {index} {op}: {answer['error']}\n{answer.get('traceback', '')}")
        return answer

    async def all(self, op: str, per_client: list[dict[str, Any]] | None = None, **fields: Any) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(self.call(i, op, **fields, **(per_client[i] if per_client else {})) for i in range(self.n))
            )
        )

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.all("stop"), 30)
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
        for task in self.readers:
            task.cancel()


def split(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i::n] for i in range(n)]


if __name__ == "__main__":
    asyncio.run(serve())
