"""Real-process chaos for ``tests/test_chaos.py``: the bridge, many agents, technicians, faults.

Everything here is a real process or a real socket; only the technicians (asyncio tasks
with aiohttp, doing what the console does) and the socket proxies live in the test process.

- ``ChaosBridge`` — ``caisey-bridge serve`` (``tests.bridge_hosts.LocalBridgeProcess``) with a
  non-blocking start, so the proxies and technicians keep running while it restarts.
- ``SocketProxy`` — one small TCP proxy per agent between ``caisey-agent run --bridge`` and
  the bridge. This is how sockets are cut: ``sever()`` aborts every connection through it
  (an RST to both ends: a Wi-Fi drop that both sides notice at once), ``blackhole()`` keeps
  the connections open and silently drops every byte until it is lifted, then aborts them
  (a NAT timeout or a dead access point: each side must find out by its own liveness check).
- ``ChaosAgent`` — ``caisey-agent run --presenter exec:tests/chaos_presenter.py`` in its own
  process group, with kill -9 / restart and SIGSTOP / SIGCONT of the agent *and* its open
  presenter program (a sleeping laptop stops the dialog too).
- ``Technician`` — creates (with an ``Idempotency-Key``), cancels and re-issues prompts. A
  create or re-issue is retried with the same key on a connection error, a timeout or a 5xx
  until the bridge gives a definite answer, as the console does (``console_static/js/api.js``
  ``postIdempotent``: it retries with the same key, and pressing the button again after its
  four tries reuses the key too — here the technician keeps pressing).
- ``ChaosWorld`` — wires them up, records every API observation of every prompt (pollers plus
  the technicians' own answers, each with the times the request left and the answer came
  back), injects the faults, and checks DESIGN §9 the way ``sim/run.py`` does, against the
  bridge's API and each agent's store (opened read-only) instead of in-process objects;
  then takes every endpoint's audit export through the API and verifies it (DESIGN §10), with
  ``caisey-audit verify`` as a real process on a few of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from caisey.clock import from_rfc3339
from tests.agent_harness import _env, pid_alive
from tests.bridge_hosts import LocalBridgeProcess
from worker.shard_store import locate

ROOT = Path(__file__).resolve().parent.parent
PRESENTER = Path(__file__).resolve().parent / "chaos_presenter.py"
ARTIFACTS = ROOT / "test-artifacts"

OPEN = {"pending", "delivered", "acknowledged"}
DECIDED = {"approved", "denied"}
WITHDRAWN = {"cancelled", "superseded"}
PROVISIONAL = {"expired", "failed_to_deliver"}
FINAL = DECIDED | WITHDRAWN | PROVISIONAL
AGENT_OPEN = {"received", "acknowledged"}
DECISION_STATE = {"approve": "approved", "deny": "denied"}


class ChaosError(AssertionError):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


# --- the bridge ---------------------------------------------------------------------------------


class ChaosBridge(LocalBridgeProcess):
    """``LocalBridgeProcess`` whose (re)start does not block the event loop.

    ``plant_bug`` (a ``sim.run.planted`` name) runs the bridge with that bug planted in its
    reconcile table, to prove the checks catch it in real processes too."""

    plant_bug: str | None = None

    async def astart(self) -> None:
        env = dict(os.environ, CAISEY_ADMIN_TOKEN=self.admin_token)
        serve = ["serve", "--data", str(self.data), "--port", str(self.port), "--heartbeat-ms", str(self.heartbeat_ms)]
        if self.plant_bug is None:
            cmd = [sys.executable, "-m", "worker.local_host", *serve]
        else:
            planted = (
                "import sys\nfrom sim.run import planted\nfrom worker.local_host import main\n"
                f"with planted({self.plant_bug!r}):\n    sys.exit(main(sys.argv[1:]))"
            )
            cmd = [sys.executable, "-c", planted, *serve]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("bridge did not start listening within 20 s")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def outbox(self, endpoint_id: str) -> list[tuple[str, str]] | None:
        """The actor's undelivered frames, read from its SQLite file (read-only)."""
        where = locate(self.data / "endpoints", endpoint_id)
        if where is None:
            return None
        path, prefix = where
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
                return [(r[0], r[1]) for r in db.execute(f"SELECT prompt_id, kind FROM {prefix}outbox")]
        except sqlite3.Error:
            return None


# --- cutting sockets ------------------------------------------------------------------------------


class SocketProxy:
    """A TCP proxy the test can cut: ``sever()`` (RST both ways) or ``blackhole(on)``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.blackholed = False
        self.server: asyncio.Server | None = None
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self.connections = 0
        self.severed = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.blackholed:
            # The network is down: the agent's SYN is answered (its side looks connected) and
            # then nothing ever arrives; lifted, the connection is aborted.
            pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
            self.pairs.add(pair)
            with contextlib.suppress(ConnectionError, OSError):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()  # the bridge is down: the agent sees its connect fail
            return
        pair = (writer, up_writer)
        self.pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer, pair), self._pump(up_reader, writer, pair))
        finally:
            self.pairs.discard(pair)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None],
    ) -> None:
        try:
            while data := await src.read(65536):
                if self.blackholed:
                    continue  # dropped on the floor
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        if not self.blackholed:
            # One end went away: so does the other (as a router forwarding the FIN/RST would).
            _abort(pair)

    def sever(self) -> int:
        """Abort every connection through the proxy; returns how many."""
        pairs = list(self.pairs)
        for pair in pairs:
            _abort(pair)
        self.pairs.clear()
        self.severed += len(pairs)
        return len(pairs)

    def blackhole(self, on: bool) -> int:
        self.blackholed = on
        return 0 if on else self.sever()

    async def close(self) -> None:
        self.sever()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


def _abort(pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]) -> None:
    for w in pair:
        if w is not None:
            w.transport.abort()


# --- agents ---------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux ``/proc``)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in children.read_text().split()]
                out.extend(kids)
                todo.extend(kids)
    return out


@dataclass
class AgentSnapshot:
    """One agent's store, read-only: prompts, outbox size, connection times."""

    prompts: dict[str, dict[str, Any]]
    outbox: int
    connected: bool


class ChaosAgent:
    """``caisey-agent run`` for one endpoint, behind its own ``SocketProxy``."""

    def __init__(self, index: int, endpoint_id: str, root: Path, seed: str, proxy: SocketProxy) -> None:
        self.index = index
        self.endpoint_id = endpoint_id
        self.dir = root / endpoint_id
        self.dir.mkdir(parents=True)
        self.state = self.dir / "state"
        self.presented_log = self.dir / "presented.jsonl"
        self.log = self.dir / "agent.log"
        self.seed = seed
        self.proxy = proxy
        self.proc: asyncio.subprocess.Process | None = None
        self.incarnations: list[int] = []
        self.stopped: list[int] = []  # pids SIGSTOPped by sleep()

    @property
    def presenter_spec(self) -> str:
        argv = [sys.executable, str(PRESENTER), "--seed", self.seed, "--log", str(self.presented_log)]
        return "exec:" + shlex.join(argv)

    def enroll(self, bridge_url: str, token: str) -> None:
        """``caisey-agent enroll``'s own code (``agent.cli.cmd_enroll``), called in-process.

        Fifty enroll processes cost about 25 s of this 2-core machine's CPU in imports
        alone; the command's code is the same. Call it from a thread (it runs its own loop)."""
        from agent.cli import build_parser, cmd_enroll

        args = build_parser().parse_args(
            ["enroll", "--bridge", bridge_url, "--token", token, "--state-dir", str(self.state)]
        )
        assert cmd_enroll(args, io.StringIO()) == 0

    async def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            "--state-dir",
            str(self.state),
            "--presenter",
            self.presenter_spec,
            "--bridge",
            self.proxy.url,
            "--log-level",
            "INFO",
            cwd=ROOT,
            env=_env(),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.incarnations.append(self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    def sleep(self) -> list[int]:
        """SIGSTOP the agent and whatever presenter program it runs: the laptop lid closes."""
        assert self.proc is not None
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        self.stopped = pids
        return pids

    def wake(self) -> None:
        for pid in reversed(self.stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.stopped = []

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.wake()
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            await self.kill9()

    def force_kill(self) -> None:
        """Cleanup, even on failure: the agent's group, then any presenter program left."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGKILL)
        for line in self.presented():
            pid = int(line["pid"])
            if pid_alive(pid) and "chaos_presenter" in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)

    def presented(self) -> list[dict[str, Any]]:
        if not self.presented_log.exists():
            return []
        out = []
        for line in self.presented_log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def snapshot(self) -> AgentSnapshot | None:
        """The agent's store as it is on disk now (read-only; None if unreadable this instant)."""
        path = self.state / "agent.sqlite3"
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
                prompts = {}
                for pid, status, decision, decided_at, detail, acked, copy in db.execute(
                    "SELECT prompt_id, status, decision, decided_at_ms, detail, final_acked, copy_json FROM prompts"
                ):
                    prompts[pid] = {
                        "status": status,
                        "decision": decision,
                        "decided_at_ms": decided_at,
                        "detail": detail,
                        "final_acked": bool(acked),
                        "expires_at_ms": json.loads(copy)["expires_at_ms"],
                    }
                outbox = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error:
            return None
        connected_at = int(meta.get("connected_at_ms") or 0)
        disconnected_at = int(meta.get("disconnected_at_ms") or 0)
        return AgentSnapshot(prompts, outbox, self.alive and connected_at > disconnected_at)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --- observations of the API ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """One prompt as one API answer showed it. ``sent``/``got``: monotonic seconds."""

    sent: float
    got: float
    state: str
    provisional: bool
    source: str


def history_violations(prompt_id: str, observations: list[Observation]) -> list[str]:
    """I2 and I3 (the first violation, if any) over observations that are causally ordered (``a.got < b.sent``).

    Answers of concurrent requests may arrive in any order, so only pairs where the second
    request left after the first answer came back are compared: a final state may change
    only by R4 (provisional expired/failed_to_deliver → a decision, or withdrawn by the
    technician), a firm one never; a cancelled/superseded prompt never becomes anything else.
    """
    obs = sorted(observations, key=lambda o: o.sent)
    for b in obs:
        for a in obs:
            if a.got >= b.sent or a.state not in FINAL:
                continue
            if b.state == a.state and (a.provisional or not b.provisional):
                continue
            if a.state in PROVISIONAL and a.provisional and b.state in DECIDED | WITHDRAWN:
                continue  # R4, or the technician withdrew a provisional final
            rule = "I3 cancel safety" if a.state in WITHDRAWN and b.state in DECIDED else "I2 no resurrection"
            return [
                f"{rule}: {prompt_id} was {a.state}{' (provisional)' if a.provisional else ''} "
                f"[{a.source}, answered at {a.got:.2f}s] then {b.state} [{b.source}, asked at {b.sent:.2f}s]"
            ]
    return []


# --- technicians ----------------------------------------------------------------------------------


@dataclass
class Request:
    """One technician action and every try of it: ``tries`` are (sent, outcome) pairs."""

    kind: str  # create | reissue | cancel
    endpoint_id: str
    key: str | None
    body: dict[str, Any] | None
    of: str | None = None  # the prompt a cancel or re-issue names
    tries: list[tuple[float, str]] = field(default_factory=list)
    status: int | None = None
    prompt_id: str | None = None
    prompt_ids: set[str] = field(default_factory=set)  # every prompt id any answer named
    state: str | None = None

    @property
    def retried(self) -> bool:
        return len(self.tries) > 1


class Technician:
    """A technician's console: create, cancel, re-issue; creates retried with the same key."""

    def __init__(self, world: ChaosWorld, name: str, token: str, rng: random.Random) -> None:
        self.world = world
        self.name = name
        self.token = token
        self.rng = rng
        self.session: aiohttp.ClientSession | None = None
        self.created: list[Request] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.counter = itertools.count(1)

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def new_key(self) -> str:
        return f"{self.name}-{next(self.counter):04d}-{self.rng.getrandbits(32):08x}"

    async def post(self, req: Request, path: str, *, give_up_after: float = 120.0) -> Request:
        """POST until a definite answer (any status below 500), same key every time."""
        assert self.session is not None
        headers = {"Authorization": f"Bearer {self.token}"}
        if req.key is not None:
            headers["Idempotency-Key"] = req.key
        data = json.dumps(req.body).encode() if req.body is not None else None
        deadline = time.monotonic() + give_up_after
        for attempt in itertools.count():
            sent = self.world.t()
            try:
                async with self.session.post(self.world.bridge.url + path, data=data, headers=headers) as r:
                    text = await r.read()
                    status = r.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                req.tries.append((sent, type(exc).__name__))
            else:
                req.tries.append((sent, str(status)))
                if status < 500:
                    got = self.world.t()
                    body = json.loads(text) if text else {}
                    req.status = status
                    prompt = body.get("prompt") if status == 409 else body
                    if isinstance(prompt, dict) and "prompt_id" in prompt:
                        pid = str(prompt["prompt_id"])
                        if req.kind != "cancel" or status == 200:
                            req.prompt_ids.add(pid)
                        req.prompt_id, req.state = pid, prompt["state"]
                        self.world.observe(pid, sent, got, prompt, f"{self.name} {req.kind} {status}")
                    return req
            if time.monotonic() > deadline:
                raise ChaosError(f"{self.name}: {req.kind} on {req.endpoint_id} got no answer in {give_up_after} s")
            await asyncio.sleep(min(0.4 * 2**attempt, 3.0))
        raise AssertionError("unreachable")

    def body(self, key: str) -> dict[str, Any]:
        lo, hi = self.world.plan.expires_in_s
        return {
            "title": f"chaos {key}",
            "message": f"{self.name} asks to take control of this computer.",
            "action": "remote_control",
            "expires_in": self.rng.randint(lo, hi),
            "on_no_user": "wait",
        }

    async def create(self, endpoint_id: str) -> Request:
        key = self.new_key()
        req = Request("create", endpoint_id, key, self.body(key))
        self.created.append(req)
        self.world.requests.append(req)
        return await self.post(req, f"/api/endpoints/{endpoint_id}/prompts")

    async def cancel(self, endpoint_id: str, prompt_id: str) -> Request:
        req = Request("cancel", endpoint_id, None, None, of=prompt_id)
        self.world.requests.append(req)
        return await self.post(req, f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}/cancel")

    async def reissue(self, endpoint_id: str, prompt_id: str) -> Request:
        key = self.new_key()
        body = self.body(key)
        req = Request("reissue", endpoint_id, key, {"title": body["title"], "expires_in": body["expires_in"]})
        req.of = prompt_id
        self.created.append(req)
        self.world.requests.append(req)
        return await self.post(req, f"/api/endpoints/{endpoint_id}/prompts/{prompt_id}/retry")

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def pause(self, seconds: float) -> bool:
        """Sleep; False if the storm ended meanwhile (the technicians stop with it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.world.storm_over.wait(), seconds)
        return not self.world.storm_over.is_set()

    async def later(self, delay: float, action: Callable[[], Awaitable[Any]]) -> None:
        if await self.pause(delay):
            await action()

    async def storm(self) -> None:
        """Act until the storm ends; then finish what is in flight (answers, retries)."""
        plan = self.world.plan
        while await self.pause(self.rng.expovariate(1 / plan.think_s)):
            eid = self.world.pick_endpoint(self.rng)
            req = await self.create(eid)
            roll = self.rng.random()
            if req.prompt_id is None or req.status not in (200, 201):
                continue
            pid = req.prompt_id
            if roll < plan.p_cancel:
                self.spawn(self.later(self.rng.uniform(0.5, 10), lambda e=eid, p=pid: self.cancel(e, p)))
            elif roll < plan.p_cancel + plan.p_reissue:
                self.spawn(self.later(self.rng.uniform(1, 12), lambda e=eid, p=pid: self.reissue(e, p)))
        if self.tasks:
            await asyncio.gather(*list(self.tasks))


# --- the world ------------------------------------------------------------------------------------


@dataclass
class ChaosPlan:
    """How big the storm is and which faults it suffers (counts; times are drawn from the seed)."""

    agents: int = 50
    dark_endpoints: int = 1  # registered, never connected: I7
    technicians: int = 6
    storm_s: float = 75.0
    think_s: float = 1.2  # mean pause between one technician's creates
    expires_in_s: tuple[int, int] = (20, 40)
    p_cancel: float = 0.15
    p_reissue: float = 0.10
    heartbeat_ms: int = 2_000
    bridge_kills: int = 2
    bridge_down_s: tuple[float, float] = (1.0, 3.0)  # plus ~0.7 s for the restarted bridge to listen
    burst: int = 30  # creates sent at once just before each bridge kill
    agent_kills: int = 6
    agent_down_s: tuple[float, float] = (1.0, 6.0)
    sleeps: int = 5
    sleep_s: tuple[float, float] = (7.0, 14.0)  # past the bridge's liveness window (3 heartbeats)
    severs: int = 12
    blackholes: int = 3
    blackhole_s: tuple[float, float] = (8.0, 12.0)
    convergence_bound_s: float = 30.0
    settle_bound_s: float = 20.0


@dataclass
class Fault:
    kind: str
    target: str
    at_s: float
    until_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class ChaosWorld:
    """The bridge, the agents behind their proxies, the technicians, the observers."""

    def __init__(self, tmp: Path, plan: ChaosPlan, seed: int) -> None:
        self.tmp = tmp
        self.plan = plan
        self.seed = seed
        self.bridge = ChaosBridge(tmp / "bridge-data", heartbeat_ms=plan.heartbeat_ms)
        self.agents: list[ChaosAgent] = []
        self.dark: list[str] = []
        self.proxies: list[SocketProxy] = []
        self.technicians: list[Technician] = []
        self.burster: Technician | None = None
        self.requests: list[Request] = []
        self.observations: dict[str, list[Observation]] = {}
        self.faults: list[Fault] = []
        self.t0 = time.monotonic()
        self.storm_over = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self._stop_polling = asyncio.Event()
        self._pollers: list[asyncio.Task[None]] = []
        self.poll_count = 0

    def t(self) -> float:
        return time.monotonic() - self.t0

    def log(self, text: str) -> None:
        print(f"[chaos {self.t():7.2f}s] {text}", flush=True)

    @property
    def endpoint_ids(self) -> list[str]:
        return [a.endpoint_id for a in self.agents] + self.dark

    def pick_endpoint(self, rng: random.Random) -> str:
        if self.dark and rng.random() < 0.03:
            return rng.choice(self.dark)
        return rng.choice(self.agents).endpoint_id

    # --- API helpers ----------------------------------------------------------------------

    async def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {token or self.bridge.admin_token}"}
        data = json.dumps(body).encode() if body is not None else None
        async with self.session.request(method, self.bridge.url + path, data=data, headers=headers) as r:
            text = await r.read()
            return r.status, (json.loads(text) if text else None)

    async def prompts(self, endpoint_id: str) -> dict[str, dict[str, Any]]:
        status, body = await self.api("GET", f"/api/endpoints/{endpoint_id}/prompts?limit=200")
        if status != 200:
            raise ChaosError(f"list prompts of {endpoint_id}: {status} {body}")
        return {p["prompt_id"]: p for p in body["prompts"]}

    def observe(self, prompt_id: str, sent: float, got: float, prompt: dict[str, Any], source: str) -> None:
        self.observations.setdefault(prompt_id, []).append(
            Observation(sent, got, prompt["state"], bool(prompt["provisional"]), source)
        )

    # --- setup and teardown ---------------------------------------------------------------

    async def setup(self) -> None:
        plan = self.plan
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await self.bridge.astart()
        self.log(f"bridge on {self.bridge.url}, heartbeat {plan.heartbeat_ms} ms, seed {self.seed}")
        # The technicians, and one more who sends the burst of creates before each bridge
        # kill (its own randomness, so the others' choices do not depend on timing).
        for i in range(plan.technicians + 1):
            name = f"tech{i + 1}" if i < plan.technicians else "burst"
            status, body = await self.api("POST", "/api/tokens", {"name": name, "role": "technician"})
            assert status == 201, body
            tech = Technician(self, name, body["token"], random.Random(f"{self.seed}:tech:{i}"))
            await tech.open()
            if i < plan.technicians:
                self.technicians.append(tech)
            else:
                self.burster = tech
        started = time.monotonic()
        for i in range(plan.agents):
            eid = f"chaos-{i:03d}"
            proxy = SocketProxy(self.bridge.port)
            await proxy.start()
            self.proxies.append(proxy)
            self.agents.append(ChaosAgent(i, eid, self.tmp / "agents", f"{self.seed}-{i}", proxy))
        for i in range(plan.dark_endpoints):
            self.dark.append(f"chaos-dark-{i}")

        async def enroll(agent: ChaosAgent | None, eid: str) -> None:
            status, body = await self.api("POST", "/api/enrollments", {"endpoint_id": eid, "label": "chaos"})
            assert status == 201, body
            if agent is not None:
                await asyncio.to_thread(agent.enroll, self.bridge.url, body["enrollment_token"])

        await asyncio.gather(*(enroll(a, a.endpoint_id) for a in self.agents), *(enroll(None, e) for e in self.dark))
        self.log(f"enrolled {len(self.agents)} agents and {len(self.dark)} dark endpoints")
        for agent in self.agents:
            await agent.start()
        await self.until_online(timeout=120)
        self.log(f"{len(self.agents)} agents online after {time.monotonic() - started:.1f} s")

    async def until_online(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        want = {a.endpoint_id for a in self.agents}
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                status, body = await self.api("GET", "/api/endpoints")
                if status == 200 and want <= {e["endpoint_id"] for e in body["endpoints"] if e["online"]}:
                    return
            if time.monotonic() > deadline:
                raise ChaosError(f"agents not all online within {timeout} s")
            await asyncio.sleep(0.25)

    async def cleanup(self) -> None:
        """Stop everything started, whatever happened (kill -9 where asking fails)."""
        self._stop_polling.set()
        for task in self._pollers:
            task.cancel()
        for tech in self.technicians:
            for task in list(tech.tasks):
                task.cancel()
        for agent in self.agents:
            agent.force_kill()
        if self.bridge.proc is not None and self.bridge.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.bridge.proc.pid, signal.SIGKILL)
            self.bridge.proc.wait(10)
        for agent in self.agents:
            if agent.proc is not None and agent.proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(agent.proc.wait(), 5)
        for proxy in self.proxies:
            await proxy.close()
        for tech in [*self.technicians, *([self.burster] if self.burster else [])]:
            await tech.close()
        if self.session is not None:
            await self.session.close()

    # --- observing --------------------------------------------------------------------------

    def start_polling(self, every_s: float = 2.0) -> None:
        """One poller per endpoint, as a console tab would: its answers are the histories."""

        async def poll(eid: str, offset: float) -> None:
            await asyncio.sleep(offset)
            while not self._stop_polling.is_set():
                sent = self.t()
                try:
                    prompts = await self.prompts(eid)
                except (aiohttp.ClientError, OSError, TimeoutError, ChaosError):
                    await asyncio.sleep(0.5)
                    continue
                got = self.t()
                self.poll_count += 1
                for pid, p in prompts.items():
                    self.observe(pid, sent, got, p, "poll")
                await asyncio.sleep(every_s)

        n = len(self.endpoint_ids)
        for i, eid in enumerate(self.endpoint_ids):
            self._pollers.append(asyncio.ensure_future(poll(eid, every_s * i / n)))

    async def stop_polling(self) -> None:
        self._stop_polling.set()
        await asyncio.gather(*self._pollers, return_exceptions=True)

    # --- faults -------------------------------------------------------------------------------

    def fault(self, kind: str, target: str, **detail: Any) -> Fault:
        f = Fault(kind, target, round(self.t(), 3), detail=detail)
        self.faults.append(f)
        self.log(f"FAULT {kind} {target} {detail if detail else ''}")
        return f

    def healed(self, f: Fault, **detail: Any) -> None:
        f.until_s = round(self.t(), 3)
        f.detail.update(detail)
        self.log(f"  healed {f.kind} {f.target} after {f.until_s - f.at_s:.1f} s")

    @property
    def last_fault_s(self) -> float:
        return max((f.until_s if f.until_s is not None else f.at_s for f in self.faults), default=0.0)

    async def at(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.t()))

    async def crash_bridge(self, at: float, down_s: float, burst: int) -> None:
        """kill -9 with ``burst`` creates in flight; restart after ``down_s``."""
        await self.at(at)
        tech = self.burster
        assert tech is not None
        burst_reqs: list[asyncio.Future[Request]] = []
        rng = random.Random(f"{self.seed}:burst:{at}")

        killed = asyncio.Event()

        async def create_after(delay_s: float, endpoint_id: str, after_kill: bool) -> Request:
            await asyncio.sleep(delay_s)
            if after_kill:
                await killed.wait()
            return await tech.create(endpoint_id)

        # The burst leaves over ~0.2 s, not at once: the bridge's group commit answers every
        # create of one fsync round together, so an instant burst would be answered (or not)
        # as a whole. Kill once the first answer is back (a little after, by the seed): some of
        # the burst committed and answered, some committed and not answered, the rest not yet
        # committed (or not yet sent: their connection is refused and they are retried).
        # On a loaded machine the first answer can come back after the whole burst was sent
        # and committed, so the last quarter leaves only once the bridge is dead: whatever the
        # timing, some creates are certainly not committed before the kill (CI saw all 40
        # committed once).
        late_from = burst - max(1, burst // 4)
        for i in range(burst):
            burst_reqs.append(asyncio.ensure_future(create_after(i * 0.005, self.pick_endpoint(rng), i >= late_from)))
        await asyncio.wait(burst_reqs, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(rng.uniform(0, 0.02))
        answered = sum(1 for r in burst_reqs if r.done())
        self.bridge.kill()
        killed_at_ms = now_ms()
        killed.set()
        f = self.fault("bridge_kill9", "bridge", burst=burst, answered_before_kill=answered)
        await asyncio.sleep(down_s)
        await self.bridge.astart()
        self.healed(f)
        results = await asyncio.gather(*burst_reqs)
        # Of the creates that got no answer before the kill: 200 on a retry means the bridge
        # had committed it (persisted, answer lost); 201 means it had not (the retry made it).
        retried = [r for r in results if r.retried]
        f.detail.update(
            killed_at_ms=killed_at_ms,
            burst_keys=[r.key for r in results],
            retried=len(retried),
            retried_answered_200=sum(1 for r in retried if r.status == 200),
            retried_answered_201=sum(1 for r in retried if r.status == 201),
        )

    async def crash_agent(self, agent: ChaosAgent, at: float, down_s: float) -> None:
        await self.at(at)
        await agent.kill9()
        f = self.fault("agent_kill9", agent.endpoint_id)
        await asyncio.sleep(down_s)
        await agent.start()
        self.healed(f)

    async def sleep_agent(self, agent: ChaosAgent, at: float, sleep_s: float) -> None:
        await self.at(at)
        pids = agent.sleep()
        f = self.fault("sigstop", agent.endpoint_id, processes=len(pids))
        await asyncio.sleep(sleep_s)
        agent.wake()
        self.healed(f)

    async def sever(self, agent: ChaosAgent, at: float) -> None:
        await self.at(at)
        n = agent.proxy.sever()
        f = self.fault("sever", agent.endpoint_id, connections=n)
        f.until_s = f.at_s

    async def blackhole(self, agent: ChaosAgent, at: float, hold_s: float) -> None:
        await self.at(at)
        agent.proxy.blackhole(True)
        f = self.fault("blackhole", agent.endpoint_id)
        await asyncio.sleep(hold_s)
        aborted = agent.proxy.blackhole(False)
        self.healed(f, aborted=aborted)

    def fault_schedule(self, start: float, end: float) -> list[Awaitable[None]]:
        """The plan's faults at seeded times in [start, end] (agent faults on distinct agents)."""
        plan, rng = self.plan, random.Random(f"{self.seed}:faults")
        jobs: list[Awaitable[None]] = []
        span = end - start
        for k in range(plan.bridge_kills):
            # In the first part of the storm, so that the agents' reconnect backoff (full
            # jitter, doubling from 1 s to 60 s) has run its course before convergence is
            # measured: with 50 agents, the unluckiest one is typically back ~10 s after a
            # 3 s outage, rarely 30 s. Convergence then measures reconciliation, not backoff.
            at = start + span * (k + 1) / (plan.bridge_kills + 2) + rng.uniform(-3, 3)
            jobs.append(self.crash_bridge(at, rng.uniform(*plan.bridge_down_s), plan.burst))
        victims = iter(rng.sample(self.agents, len(self.agents)))

        def times(n: int, longest: float) -> list[float]:
            return sorted(rng.uniform(start, max(start, end - longest)) for _ in range(n))

        for at in times(plan.agent_kills, plan.agent_down_s[1]):
            jobs.append(self.crash_agent(next(victims), at, rng.uniform(*plan.agent_down_s)))
        for at in times(plan.sleeps, plan.sleep_s[1]):
            jobs.append(self.sleep_agent(next(victims), at, rng.uniform(*plan.sleep_s)))
        for at in times(plan.severs, 0):
            jobs.append(self.sever(next(victims), at))
        for at in times(plan.blackholes, plan.blackhole_s[1]):
            jobs.append(self.blackhole(next(victims), at, rng.uniform(*plan.blackhole_s)))
        return jobs

    # --- agreement (I6) -----------------------------------------------------------------------

    async def disagreements(self, *, require_final: bool = False) -> list[str]:
        """Where the bridge's API, its outboxes and the agents' stores do not agree yet
        (and, with ``require_final``, which prompts are not final yet)."""
        out: list[str] = []
        try:
            status, fleet = await self.api("GET", "/api/endpoints")
            online = {e["endpoint_id"] for e in fleet["endpoints"] if e["online"]} if status == 200 else set()
            views = await asyncio.gather(*(self.prompts(eid) for eid in self.endpoint_ids))
        except (aiohttp.ClientError, OSError, TimeoutError, ChaosError) as exc:
            return [f"bridge API: {exc!r}"]
        if require_final:
            for api in views:
                out.extend(f"{pid}: still {p['state']}" for pid, p in api.items() if p["state"] not in FINAL)
        for agent, api in zip(self.agents, views, strict=False):
            eid = agent.endpoint_id
            snap = agent.snapshot()
            if snap is None:
                out.append(f"{eid}: store unreadable")
                continue
            if eid not in online or not snap.connected:
                out.append(f"{eid}: not connected (bridge online={eid in online}, agent={snap.connected})")
            if snap.outbox:
                out.append(f"{eid}: agent outbox holds {snap.outbox}")
            owed = self.bridge.outbox(eid)
            if owed:
                out.append(f"{eid}: bridge outbox holds {owed[:3]}")
            out.extend(compare(eid, api, snap.prompts))
        return out

    async def wait_agreement(self, give_up_s: float, *, require_final: bool = False) -> tuple[float | None, list[str]]:
        """``self.t()`` when everything first agrees (None if not within ``give_up_s``), and the last diff."""
        start = time.monotonic()
        last: list[str] = []
        said = start
        while time.monotonic() - start <= give_up_s:
            last = await self.disagreements(require_final=require_final)
            if not last:
                return self.t(), []
            if time.monotonic() - said >= 2:
                said = time.monotonic()
                self.log(f"  {len(last)} disagreements, e.g. {last[:3]}")
            await asyncio.sleep(0.25)
        return None, last

    # --- the checks ----------------------------------------------------------------------------

    async def final_views(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {eid: await self.prompts(eid) for eid in self.endpoint_ids}

    async def check_invariants(self, views: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        """I1–I5, I7 and the closing agreement, once every prompt should be final."""
        problems: list[str] = []
        everything = {pid: p for api in views.values() for pid, p in api.items()}
        for pid, p in everything.items():
            self.observe(pid, self.t(), self.t(), p, "final")

        # I1: every prompt a technician created is on the API, final.
        creates = [r for r in self.requests if r.kind in ("create", "reissue")]
        for r in creates:
            if r.prompt_id is None or r.status not in (200, 201):
                problems.append(f"I1: {r.kind} {r.key} on {r.endpoint_id} ended {r.status} {r.tries[-3:]}")
            elif r.prompt_id not in views[r.endpoint_id]:
                problems.append(f"I1: {r.prompt_id} ({r.key}) is not on the API")
        for pid, p in everything.items():
            if p["state"] not in FINAL:
                problems.append(f"I1: {pid} is still {p['state']} after its expiry")

        # I5: one prompt per Idempotency-Key — every answer named one prompt, and the API holds
        # exactly one prompt titled with the key (no second prompt from a retried create).
        by_title = Counter(p["title"] for p in everything.values())
        keys = {f"chaos {r.key}": r for r in creates}
        for r in creates:
            if len(r.prompt_ids) > 1:
                problems.append(f"I5: key {r.key} answered with several prompts {sorted(r.prompt_ids)}")
            if by_title[f"chaos {r.key}"] != 1:
                problems.append(f"I5: key {r.key} has {by_title[f'chaos {r.key}']} prompts on the API")
        for pid, p in everything.items():
            r = keys.get(p["title"])
            if r is None:
                problems.append(f"I5: {pid} ({p['title']!r}) was created by no technician request")
            elif r.prompt_id != pid:
                problems.append(f"I5: {pid} carries key {r.key}, which answered {r.prompt_id}")
            if p.get("adopted"):
                problems.append(f"{pid} was adopted (R6), but no storage was lost")

        # I2, I3: the observed histories.
        for pid, obs in self.observations.items():
            problems.extend(history_violations(pid, obs))

        # I4, withdrawn closed locally, outboxes: the agents' stores against the API.
        decided_locally = late = 0
        for agent in self.agents:
            snap = agent.snapshot()
            if snap is None:
                problems.append(f"{agent.endpoint_id}: store unreadable")
                continue
            api = views[agent.endpoint_id]
            problems.extend(compare(agent.endpoint_id, api, snap.prompts))
            if snap.outbox:
                problems.append(f"{agent.endpoint_id}: agent outbox still holds {snap.outbox}")
            if self.bridge.outbox(agent.endpoint_id):
                problems.append(
                    f"{agent.endpoint_id}: bridge outbox still holds {self.bridge.outbox(agent.endpoint_id)}"
                )
            for pid, row in snap.prompts.items():
                if row["decision"] is None:
                    continue
                decided_locally += 1
                p = api.get(pid)
                if p is None:
                    problems.append(f"I4: {agent.endpoint_id} decided {pid}; the API has no such prompt")
                    continue
                late += p["late_decision"] is not None
                if p["state"] in PROVISIONAL:
                    problems.append(
                        f"I4: {pid} decided {row['decision']} at {row['decided_at_ms']} (expires "
                        f"{row['expires_at_ms']}); the API shows {p['state']}"
                    )

        # I5: one outcome per prompt; one dialog per prompt per agent run.
        for agent in self.agents:
            shows = Counter((line["agent_pid"], line["prompt_id"]) for line in agent.presented())
            for (agent_pid, pid), n in shows.items():
                if n > 1:
                    problems.append(f"I5: {pid} shown {n} times by one run ({agent_pid}) of {agent.endpoint_id}")
        detailed = [
            (eid, pid)
            for eid, api in views.items()
            for pid, p in api.items()
            if p["decision"] is not None or p["late_decision"] is not None
        ]
        for eid, pid in detailed:
            _, body = await self.api("GET", f"/api/endpoints/{eid}/prompts/{pid}")
            decided = [e for e in body["events"] if e["source"] == "runtime" and e["type"] == "decided"]
            if len({json.dumps(e["detail"], sort_keys=True) for e in decided}) != len(decided):
                problems.append(f"I5: {pid} recorded the same decision twice: {decided}")

        # I7: an endpoint never connected ends its prompts failed_to_deliver.
        for eid in self.dark:
            for pid, p in views[eid].items():
                if p["state"] not in WITHDRAWN and p["state"] != "failed_to_deliver":
                    problems.append(f"I7: {pid} on never-connected {eid} ended {p['state']}")

        # The technicians never saw a key reused with another body, nor anything unexpected.
        statuses = Counter(f"{r.kind} {r.status}" for r in self.requests)
        for label in statuses:
            if label.split()[1] not in ("200", "201", "409"):
                problems.append(f"technician answers include {label} ×{statuses[label]}")

        if problems:
            raise ChaosError(
                f"{len(problems)} invariant violations (seed {self.seed}):\n  " + "\n  ".join(problems[:40])
            )
        dark = {pid for eid in self.dark for pid in views[eid]}
        failed = Counter(
            f"{'never-connected endpoint' if pid in dark else 'agent'}: {p['reason']}"
            for pid, p in everything.items()
            if p["state"] == "failed_to_deliver"
        )
        return {
            "prompts": len(everything),
            "states": dict(Counter(p["state"] for p in everything.values())),
            "failed_to_deliver_reasons": dict(failed),
            "decided_by_agents": decided_locally,
            "late_decisions": late,
            "technician_answers": dict(statuses),
        }

    async def status_json(self, agent: ChaosAgent) -> dict[str, Any]:
        """``caisey-agent status --json`` for one agent, as a real process."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "status",
            "--json",
            "--state-dir",
            str(agent.state),
            cwd=ROOT,
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return dict(json.loads(out))

    async def check_status_cli(self, agents: list[ChaosAgent]) -> None:
        """The CLI's view of a few agents matches what the checks read from their stores."""
        for agent in agents:
            info = await self.status_json(agent)
            snap = agent.snapshot()
            assert snap is not None
            cli = {p["prompt_id"]: (p["status"], p["decision"]) for p in info["prompts"]}
            store = {pid: (row["status"], row["decision"]) for pid, row in snap.prompts.items()}
            if info["outbox"] != 0 or not info["running"] or cli != store:
                raise ChaosError(f"status --json of {agent.endpoint_id} disagrees: {info} vs {store}")

    async def check_audit_exports(self, cli_sample: int = 2) -> dict[str, Any]:
        """DESIGN §10 after the chaos: every endpoint's audit export, taken through the API,
        verifies offline — every link, every answer signed by the key valid when it was
        committed, every decision on the API signed by its endpoint (the agents enroll with
        keys). ``caisey-audit verify``, the console script as a real process, passes on the
        saved files of a few endpoints (the busiest, a seeded sample and a never-connected
        one; each run costs half a second of imports, so not all fifty)."""
        from caisey.audit import verify_export
        from worker.ed25519_local import verify

        assert self.session is not None
        started = time.monotonic()
        folder = self.tmp / "audit-exports"
        folder.mkdir(exist_ok=True)
        problems: list[str] = []
        files: dict[str, Path] = {}
        signed: dict[str, int] = {}
        for eid in self.endpoint_ids:
            headers = {"Authorization": f"Bearer {self.bridge.admin_token}"}
            async with self.session.get(f"{self.bridge.url}/api/endpoints/{eid}/audit", headers=headers) as r:
                raw = await r.read()
            if r.status != 200:
                problems.append(f"audit export of {eid}: {r.status} {raw[:200]!r}")
                continue
            files[eid] = folder / f"{eid}.jsonl"
            files[eid].write_bytes(raw)
            report = verify_export(raw.decode("utf-8").splitlines(), verify)
            if not report.ok:
                bad = [p.verdict for p in report.prompts if not p.ok]
                problems.append(f"audit export of {eid} does not verify: {report.problems[:3]} {bad[:3]}")
            unsigned = [p.prompt_id for p in report.prompts if p.decision is not None and p.signed_by is None]
            if unsigned:
                problems.append(f"{eid}: decisions not signed by the endpoint: {unsigned[:5]}")
            signed[eid] = sum(1 for p in report.prompts if p.signed_by is not None)
        busiest = max(signed, key=lambda eid: (signed[eid], eid), default=None)
        rng = random.Random(f"{self.seed}:audit")
        sample = [eid for eid in [busiest, *rng.sample(sorted(files), min(cli_sample, len(files)))] if eid is not None]
        sample = list(dict.fromkeys([*sample, *self.dark[:1]]))  # the busiest first, no repeats
        for eid in sample:
            proc = await asyncio.create_subprocess_exec(
                *audit_command(),
                "verify",
                str(files[eid]),
                cwd=ROOT,
                env=_env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            if proc.returncode != 0:
                tail = out.decode(errors="replace").splitlines()[-5:]
                problems.append(f"caisey-audit verify {files[eid]} exited {proc.returncode}: {tail} {err[-500:]!r}")
        if problems:
            raise ChaosError(f"{len(problems)} audit problems (seed {self.seed}):\n  " + "\n  ".join(problems[:20]))
        self.log(
            f"{len(files)} audit exports verify ({sum(signed.values())} signed decisions); caisey-audit verify "
            f"passes on {sample}; {time.monotonic() - started:.1f} s"
        )
        return {
            "audit_exports": len(files),
            "audit_signed_decisions": sum(signed.values()),
            "audit_cli_verified": len(sample),
        }

    async def run(self) -> dict[str, Any]:
        """Setup, storm with faults, convergence, every expiry, the checks; returns the summary."""
        plan = self.plan
        await self.setup()
        setup_s = self.t()
        self.start_polling()
        storm_start = self.t()
        planned_end = storm_start + plan.storm_s
        self.log(f"storm: {plan.technicians} technicians for {plan.storm_s:.0f} s")
        technicians = [asyncio.ensure_future(tech.storm()) for tech in self.technicians]
        await asyncio.gather(*self.fault_schedule(storm_start + 4, planned_end - 1))
        await self.at(planned_end)
        # The storm ends with one last fault: every agent's socket cut at once, as the
        # technicians stop. Convergence is measured from here (the sim's "heal" moment).
        self.storm_over.set()
        cut = sum(proxy.sever() for proxy in self.proxies)
        heal = self.fault("sever_all", "every agent", connections=cut).at_s
        await asyncio.gather(*technicians)
        self.log(f"storm over at {heal:.2f} s; measuring convergence")

        converged_at, diff = await self.wait_agreement(max(60.0, 3 * plan.convergence_bound_s))
        if converged_at is None:
            raise ChaosError(f"I6: no agreement after the faults stopped (seed {self.seed}): " + "; ".join(diff[:12]))
        convergence_s = converged_at - heal
        self.log(f"converged {convergence_s:.2f} s after the last fault")

        last_expiry = last_expiry_ms(await self.final_views())
        await asyncio.sleep(max(0.0, (last_expiry - now_ms()) / 1000))
        expired_at = self.t()
        self.log("every prompt's expires_at has passed")
        settled_at, diff = await self.wait_agreement(max(60.0, 3 * plan.settle_bound_s), require_final=True)
        if settled_at is None:
            raise ChaosError(f"I1/I6: not settled after the last expiry (seed {self.seed}): " + "; ".join(diff[:12]))
        settle_s = settled_at - expired_at
        self.log(f"all final and agreed {settle_s:.2f} s after the last expiry")
        await self.stop_polling()
        results = await self.check_invariants(await self.final_views())
        await self.check_status_cli(random.Random(self.seed).sample(self.agents, min(3, len(self.agents))))
        results |= await self.check_audit_exports()
        return self.summary(
            setup_s=round(setup_s, 2),
            storm_s=plan.storm_s,
            convergence_s=round(convergence_s, 2),
            convergence_bound_s=plan.convergence_bound_s,
            settle_after_last_expiry_s=round(settle_s, 2),
            settle_bound_s=plan.settle_bound_s,
            runtime_s=round(self.t(), 1),
            **results,
        )

    def request_stats(self) -> dict[str, Any]:
        creates = [r for r in self.requests if r.kind in ("create", "reissue")]
        retried = [r for r in creates if r.retried]
        # A create whose first try got no answer, answered 200 on a retry: the bridge had
        # committed it before it died. 201 on a retry: it had not.
        return {
            "creates": sum(1 for r in creates if r.kind == "create"),
            "reissues": sum(1 for r in creates if r.kind == "reissue"),
            "cancels": sum(1 for r in self.requests if r.kind == "cancel"),
            "creates_retried": len(retried),
            "retried_committed_before_crash": sum(1 for r in retried if r.status == 200),
            "retried_not_committed": sum(1 for r in retried if r.status == 201),
            "observations": sum(len(o) for o in self.observations.values()),
            "polls": self.poll_count,
        }

    def summary(self, **extra: Any) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "plan": asdict(self.plan),
            "agents": len(self.agents),
            "dark_endpoints": len(self.dark),
            "technicians": len(self.technicians),
            "agent_incarnations": sum(len(a.incarnations) for a in self.agents),
            "presenter_runs": sum(len(a.presented()) for a in self.agents),
            "faults": dict(Counter(f.kind for f in self.faults)),
            "fault_log": [asdict(f) for f in self.faults],
            **self.request_stats(),
            **extra,
        }


def compare(endpoint_id: str, api: dict[str, dict[str, Any]], held: dict[str, dict[str, Any]]) -> list[str]:
    """Where one endpoint's API prompts and its agent's store disagree (empty: they agree)."""
    out = []
    for pid, p in api.items():
        local = held.get(pid)
        status = local["status"] if local else "absent"
        state = p["state"]
        if state in OPEN and status not in AGENT_OPEN:
            out.append(f"{pid}@{endpoint_id}: bridge {state}, agent {status}")
        elif state in WITHDRAWN | PROVISIONAL and status in AGENT_OPEN:
            out.append(f"{pid}@{endpoint_id}: bridge {state}, agent still {status}")
        elif state in DECIDED and (local is None or DECISION_STATE.get(local["decision"] or "") != state):
            out.append(f"{pid}@{endpoint_id}: bridge {state}, agent {status}/{local and local['decision']}")
    for pid, local in held.items():
        if local["decision"] is None:
            continue
        p = api.get(pid)
        late = (p or {}).get("late_decision") or {}
        if p is None or (p["decision"] != local["decision"] and late.get("decision") != local["decision"]):
            out.append(
                f"{pid}@{endpoint_id}: agent decided {local['decision']}, bridge shows {p['state'] if p else 'nothing'}"
            )
    return out


def last_expiry_ms(views: dict[str, dict[str, dict[str, Any]]]) -> int:
    return max((from_rfc3339(p["expires_at"]) for api in views.values() for p in api.values()), default=0)


def write_summary(name: str, summary: dict[str, Any]) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path


def audit_command() -> list[str]:
    """``caisey-audit`` as installed next to this interpreter (``pip install -e .``), else the module."""
    script = Path(sys.executable).parent / "caisey-audit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker.audit_cli"]


def chaos_seed() -> int:
    """``CAISEY_CHAOS_SEED`` replays a run's choices; otherwise a fresh seed (printed)."""
    env = os.environ.get("CAISEY_CHAOS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 1_000_000)
