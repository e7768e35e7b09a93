"""A deterministic world: the real bridge actor and real agent cores on a virtual clock.

One seed feeds one ``random.Random`` that picks every latency, fault and human action, so a
run replays exactly (FoundationDB / TigerBeetle style). Nothing sleeps: events sit in a heap
ordered by virtual time and run one at a time.

What is real: ``worker.endpoint.EndpointBridge`` on SQLite (``:memory:``, kept across bridge
crashes — a crash loses the actor's memory and every socket, not its storage), and
``agent.core.AgentCore`` on the agent's real ``Store`` (kept across agent crashes), each agent
signing its answers with a real Ed25519 key that the bridge verifies (DESIGN §10). What is
simulated: sockets (``Conn``), the technicians' HTTP calls (straight into the actor, with
requests and responses that can be lost), users, sleep, partitions and clocks.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import AgentConfig, AgentCore, Show, Withdraw
from agent.identity import EndpointKey
from agent.store import Store
from caisey import wire
from caisey.backoff import RECONNECT, Backoff, Reconnect
from worker.api import ROLE_HEADER, TECHNICIAN_HEADER, ApiRequest
from worker.ed25519_local import verified
from worker.endpoint import BridgeConfig, EndpointBridge
from worker.host import Effects, Entropy
from worker.sqlite_store import SqliteStore

EPOCH_MS = 1_800_000_000_000  # virtual time starts here (2027-01-15)
MINUTE = 60_000


@dataclass(frozen=True)
class Faults:
    """Fault rates of the safety phase; every one is 0 in the liveness phase."""

    p_drop: float = 0.03  # a frame vanishes
    p_dup: float = 0.03  # a frame arrives twice
    p_reorder: float = 0.05  # a frame is held back so later ones overtake it
    p_http_lost: float = 0.05  # a technician's request, or its response, is lost
    bridge_crash_per_min: float = 0.08
    agent_crash_per_min: float = 0.05
    sleep_per_min: float = 0.05
    cut_per_min: float = 0.15  # a socket is cut (half-open on one side, sometimes)
    partition_per_min: float = 0.05
    storage_loss_per_run: float = 0.3  # chance that one bridge restart restores an old backup (R6)
    max_skew_ms: int = 10 * MINUTE


NO_FAULTS = Faults(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10 * MINUTE)


@dataclass(frozen=True)
class SimConfig:
    endpoints: int = 4
    technicians: int = 3
    safety_ms: int = 20 * MINUTE
    creates_per_min: float = 1.5  # per technician
    faults: Faults = field(default_factory=Faults)
    # After the faults stop, views must agree within this long (I6). It is the agent's
    # reconnect backoff cap (60 s) plus a heartbeat, the digest round trip and slack.
    convergence_bound_ms: int = 90_000
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    reconnect: Backoff = RECONNECT  # the real agent's policy (caisey.backoff.Reconnect)
    # The Cloudflare host's steady state (issue 12): every event gets a new actor (hibernation:
    # nothing kept in memory), and the agent's exact ping frame is answered at the edge — no
    # actor event — with the time passed to every later event as ``heard_ms``, as
    # ``getWebSocketAutoResponseTimestamp`` is. Set ``bridge.digest_every_ms`` with it.
    cloudflare: bool = False


def cloudflare_config(**changes: Any) -> SimConfig:
    """The Worker's configuration: agents ping every 15 s and send a full heartbeat every 6 min
    (``worker/entry.py``'s ``DIGEST_EVERY_MS``), actors hold nothing between events."""
    return replace(SimConfig(), cloudflare=True, bridge=BridgeConfig(digest_every_ms=6 * MINUTE), **changes)


class Trace:
    """The last lines of what happened, printed when a checker fails."""

    def __init__(self, keep: int = 4000) -> None:
        self.lines: deque[str] = deque(maxlen=keep)

    def add(self, now: int, who: str, what: str) -> None:
        self.lines.append(f"{(now - EPOCH_MS) / 1000:10.3f}s {who:<14} {what}")


class Conn:
    """One simulated WebSocket between an endpoint's bridge actor and its agent."""

    def __init__(self, eid: str, n: int) -> None:
        self.n = n  # numbered per world, so a replay prints the same trace
        self.eid = eid
        self.bridge_open = True
        self.agent_open = True
        self.pinged_ms: int | None = None  # the runtime's auto-response timestamp (Cloudflare)
        # A WebSocket is ordered: a frame never arrives before one sent earlier in the same
        # direction, except when the reorder fault holds one back on purpose.
        self.last_arrival = {True: 0, False: 0}  # to_agent → time the last frame arrives


@dataclass
class Runtime:
    """One endpoint's agent process: its store survives crashes, its core does not."""

    eid: str
    store: Store
    skew_ms: int
    core: AgentCore | None = None
    up: bool = True
    awake: bool = True
    conn: Conn | None = None
    connecting: bool = False
    reconnect: Reconnect = field(default_factory=Reconnect)
    incarnation: int = 0
    timer_gen: int = 0
    held_frames: list[tuple[Conn, str]] = field(default_factory=list)  # arrived while asleep
    shown: dict[tuple[int, str], int] = field(default_factory=dict)  # (incarnation, prompt) → shows
    user_gen: dict[str, int] = field(default_factory=dict)


@dataclass
class Known:
    """What the technicians know about a prompt they created."""

    prompt_id: str
    eid: str
    key: str


class World:
    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.config = config or SimConfig()
        self.rng = random.Random(seed)
        self.now = EPOCH_MS
        self.trace = Trace()
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self._conn_seq = 0
        self.faults = self.config.faults
        self.eids = [f"ep{i}" for i in range(self.config.endpoints)]
        # bridge
        self.bridge_up = True
        self.stores: dict[str, SqliteStore] = {eid: SqliteStore(":memory:") for eid in self.eids}
        self.backups: dict[str, sqlite3.Connection] = {}
        self.actors: dict[str, EndpointBridge] = {}
        self.bridge_conns: dict[str, list[Conn]] = {eid: [] for eid in self.eids}
        self.alarm_gen: dict[str, int] = dict.fromkeys(self.eids, 0)
        self.partitioned: set[str] = set()
        self.bridge_entropy = Entropy(random.Random(self.rng.getrandbits(64)))
        self.storage_losses = 0
        self.lost_prompt_ids: set[str] = set()
        # observations
        self.history: dict[str, list[tuple[int, str]]] = {}
        self.earlier_histories: list[list[tuple[int, str]]] = []  # epochs ended by a storage restore
        self.connected_intervals: dict[str, list[list[int | None]]] = {eid: [] for eid in self.eids}
        self.keys: dict[str, Known | None] = {}  # idempotency key → prompt (None: not known yet)
        self.key_bodies: dict[str, dict[str, Any]] = {}
        self.known: dict[str, Known] = {}
        self.last_fault_ms = EPOCH_MS
        self.faults_on = True
        self.humans_on = True  # technicians and users act (off in the liveness phase)
        # A scripted user for named scenarios: (endpoint, prompt_id) → (answer, delay_ms).
        self.user: Callable[[str, str], tuple[str | None, int]] | None = None
        # Each endpoint's key (DESIGN §10), from the seed without drawing on ``rng``: signing
        # does not move any fault the same seed picked before it existed.
        self.endpoint_keys = {
            eid: EndpointKey(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{seed}/{eid}".encode()).digest()))
            for eid in self.eids
        }
        for eid in self.eids:
            self._register(eid)
        self.runtimes = {
            eid: Runtime(eid, Store.memory(), self.rng.randint(-self.faults.max_skew_ms, self.faults.max_skew_ms))
            for eid in self.eids
        }
        for eid in self.eids:
            self._snapshot(eid)
            self._agent_start(self.runtimes[eid])

    # --- scheduling --------------------------------------------------------------------------

    def at(self, when: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn))

    def run_until(self, until: int, each: Callable[[], None] | None = None) -> None:
        while self._heap and self._heap[0][0] <= until:
            when, _, fn = heapq.heappop(self._heap)
            self.now = when
            fn()
            if each is not None:
                each()
        self.now = max(self.now, until)

    def log(self, who: str, what: str) -> None:
        self.trace.add(self.now, who, what)

    # --- the bridge ----------------------------------------------------------------------------

    def actor(self, eid: str) -> EndpointBridge:
        if eid not in self.actors or self.config.cloudflare:
            # A new instance after every crash: nothing kept only in memory survives.
            self.actors[eid] = EndpointBridge(self.stores[eid], self.bridge_entropy, self.config.bridge)
        return self.actors[eid]

    def _register(self, eid: str) -> None:
        """Register the endpoint and enroll its agent with its key: every answer is signed."""
        req = ApiRequest(
            "POST",
            "/api/enrollments",
            {TECHNICIAN_HEADER: "admin", ROLE_HEADER: "admin", "x-caisey-endpoint": eid},
            json.dumps({"endpoint_id": eid}).encode(),
        )
        response, _ = self.actor(eid).handle(req, self.now, False)
        exchange = {
            "enrollment_token": response.body["enrollment_token"],
            "public_key": self.endpoint_keys[eid].public_key_b64,
        }
        req = ApiRequest("POST", "/api/agent/enroll", {"x-caisey-endpoint": eid}, json.dumps(exchange).encode())
        response, _ = self.actor(eid).handle(req, self.now, False)
        assert response.status == 200, response.body

    def _snapshot(self, eid: str) -> None:
        backup = sqlite3.connect(":memory:")
        self.stores[eid].db.backup(backup)
        self.backups[eid] = backup

    def bridge_connected(self, eid: str) -> bool:
        return any(c.bridge_open for c in self.bridge_conns[eid])

    def heard_ms(self, eid: str) -> int | None:
        """When the edge last answered this endpoint's ping (None: never, or not Cloudflare)."""
        stamps = [c.pinged_ms for c in self.bridge_conns[eid] if c.bridge_open and c.pinged_ms is not None]
        return max(stamps) if stamps else None

    def perform(self, eid: str, effects: Effects) -> None:
        """The local host's four steps, on simulated sockets and timers."""
        for conn in self.bridge_conns[eid]:
            if conn.bridge_open:
                for frame in effects.send:
                    self.transmit(conn, frame, to_agent=True)
        if effects.close_agent:
            for conn in list(self.bridge_conns[eid]):
                self.log(eid, f"bridge closes conn {conn.n}: {effects.close_agent[1]}")
                self._close_bridge_side(conn, notify_agent=True)
        self._arm(eid, effects.alarm_at_ms)

    def _arm(self, eid: str, at_ms: int | None) -> None:
        self.alarm_gen[eid] += 1
        gen = self.alarm_gen[eid]
        if at_ms is None:
            return

        def fire() -> None:
            if self.bridge_up and self.alarm_gen[eid] == gen:
                self.perform(eid, self.actor(eid).alarm(self.now, self.bridge_connected(eid), self.heard_ms(eid)))

        self.at(at_ms, fire)

    def _close_bridge_side(self, conn: Conn, *, notify_agent: bool) -> None:
        if not conn.bridge_open:
            return
        conn.bridge_open = False
        if conn in self.bridge_conns[conn.eid]:
            self.bridge_conns[conn.eid].remove(conn)
        self._interval_end(conn.eid)
        if self.bridge_up:
            self.perform(conn.eid, self.actor(conn.eid).agent_closed(self.now, self.bridge_connected(conn.eid)))
        if notify_agent:
            self.at(self.now + self._latency(), lambda: self._agent_sees_close(conn))

    def _interval_end(self, eid: str) -> None:
        if not self.bridge_connected(eid):
            intervals = self.connected_intervals[eid]
            if intervals and intervals[-1][1] is None:
                intervals[-1][1] = self.now

    def bridge_crash(self, *, restore_backup: bool = False) -> None:
        if not self.bridge_up:
            return
        self.log("bridge", "CRASH" + (" (storage restored from an old backup)" if restore_backup else ""))
        self.bridge_up = False
        self.actors.clear()
        for eid in self.eids:
            for conn in list(self.bridge_conns[eid]):
                conn.bridge_open = False
                self.at(self.now + self._latency(), lambda c=conn: self._agent_sees_close(c))
            self.bridge_conns[eid] = []
            self._interval_end(eid)
            self.alarm_gen[eid] += 1
        if restore_backup:
            eid = self.rng.choice(self.eids)
            before = {r["prompt_id"] for r in self.stores[eid].execute("SELECT prompt_id FROM prompts")}
            restored = SqliteStore(":memory:")
            self.backups[eid].backup(restored.db)
            self.stores[eid] = restored
            after = {r["prompt_id"] for r in restored.execute("SELECT prompt_id FROM prompts")}
            self.lost_prompt_ids |= before - after
            # What the console saw before the restore is not what the restored bridge knows:
            # histories start a new epoch (I2/I3 are judged within each epoch).
            for pid in before:
                if self.history.get(pid):
                    self.earlier_histories.append(self.history.pop(pid))
            self.storage_losses += 1
            self.log(eid, f"bridge storage restored: {len(before - after)} prompts lost from it")

    def bridge_restart(self) -> None:
        if self.bridge_up:
            return
        self.bridge_up = True
        self.log("bridge", "restart")
        for eid in self.eids:
            actor = self.actor(eid)
            self._arm(eid, actor.next_alarm_ms(self.now, False))

    # --- the network -------------------------------------------------------------------------

    def _latency(self) -> int:
        return self.rng.randint(1, 40)

    def transmit(self, conn: Conn, frame: str, *, to_agent: bool) -> None:
        f = self.faults if self.faults_on else NO_FAULTS
        if self.rng.random() < f.p_drop:
            self.log(conn.eid, f"DROP {'→agent' if to_agent else '→bridge'} {frame[:70]}")
            return
        copies = 2 if self.rng.random() < f.p_dup else 1
        for _ in range(copies):
            if self.rng.random() < f.p_reorder:
                arrival = self.now + self._latency() + self.rng.randint(50, 3_000)  # overtaken by later frames
            else:
                arrival = max(self.now + self._latency(), conn.last_arrival[to_agent])
                conn.last_arrival[to_agent] = arrival
            if to_agent:
                self.at(arrival, lambda: self._agent_receives(conn, frame))
            else:
                self.at(arrival, lambda: self._bridge_receives(conn, frame))

    def _bridge_receives(self, conn: Conn, frame: str) -> None:
        if not (self.bridge_up and conn.bridge_open):
            return
        if frame == wire.PING_FRAME:
            # Cloudflare: the runtime's auto-response; the local host: its socket loop. Either
            # way a pong goes back, and the actor hears of it only as proof of life.
            conn.pinged_ms = self.now
            self.transmit(conn, wire.PONG_FRAME, to_agent=True)
            if not self.config.cloudflare:
                self.actor(conn.eid).agent_pinged(self.now)
            return
        actor = self.actor(conn.eid)
        self.perform(conn.eid, actor.agent_frame(frame, self.now, verified(actor.signature_claims(frame))))

    def _agent_receives(self, conn: Conn, frame: str) -> None:
        rt = self.runtimes[conn.eid]
        if not (rt.up and conn.agent_open and rt.conn is conn):
            return
        if not rt.awake:
            rt.held_frames.append((conn, frame))  # TCP keeps it until the laptop wakes
            return
        assert rt.core is not None
        self._agent_effects(rt, rt.core.on_frame(frame, self._local(rt)))

    def _agent_sees_close(self, conn: Conn) -> None:
        """The agent's side of ``conn`` is closed; the core hears of it now, or at wake."""
        conn.agent_open = False
        rt = self.runtimes[conn.eid]
        if rt.conn is conn and rt.up and rt.awake:
            self._agent_disconnect(rt)

    def _agent_disconnect(self, rt: Runtime) -> None:
        rt.conn = None
        assert rt.core is not None
        if rt.core.connected:
            self._agent_effects(rt, rt.core.on_disconnected(self._local(rt)))
        self._schedule_reconnect(rt)

    def cut(self, eid: str) -> None:
        """Cut the socket. Sometimes only one side notices (half-open)."""
        rt = self.runtimes[eid]
        conn = rt.conn
        if conn is None:
            return
        mode = self.rng.choice(["both", "both", "bridge_only", "agent_only"])
        self.log(eid, f"CUT conn {conn.n} ({mode})")
        if mode in ("both", "agent_only"):
            self._agent_sees_close(conn)
        if mode in ("both", "bridge_only"):
            self._close_bridge_side(conn, notify_agent=False)
        # The side that did not notice finds out by silence (bridge liveness, agent dead-after);
        # frames still in flight on a cut side are lost: the receive paths check the flags.

    # --- runtimes ------------------------------------------------------------------------------

    def _local(self, rt: Runtime) -> int:
        return self.now + rt.skew_ms

    def _agent_start(self, rt: Runtime) -> None:
        rt.incarnation += 1
        rt.up, rt.awake, rt.conn, rt.connecting = True, True, None, False
        rt.reconnect = Reconnect(self.config.reconnect)
        agent_rng = random.Random(self.rng.getrandbits(64))
        rt.core = AgentCore(
            rt.store, rt.eid, rng=agent_rng, config=self.config.agent, signer=self.endpoint_keys[rt.eid]
        )
        self._agent_effects(rt, rt.core.start(self._local(rt)))
        self.at(self.now + self.rng.randint(0, 500), lambda: self._connect(rt))

    def _schedule_reconnect(self, rt: Runtime) -> None:
        if rt.connecting or rt.conn is not None or not rt.up:
            return
        rt.connecting = True
        delay = rt.reconnect.failed(self.rng.random)
        incarnation = rt.incarnation
        self.at(self.now + max(10, delay), lambda: self._connect(rt) if rt.incarnation == incarnation else None)

    def _connect(self, rt: Runtime) -> None:
        rt.connecting = False
        if not (rt.up and rt.awake) or rt.conn is not None:
            return
        if not self.bridge_up or rt.eid in self.partitioned:
            self._schedule_reconnect(rt)
            return
        self._conn_seq += 1
        conn = Conn(rt.eid, self._conn_seq)
        for older in list(self.bridge_conns[rt.eid]):
            self._close_bridge_side(older, notify_agent=True)
        self.bridge_conns[rt.eid].append(conn)
        self.connected_intervals[rt.eid].append([self.now, None])
        self.log(rt.eid, f"connected conn {conn.n}")
        self.perform(rt.eid, self.actor(rt.eid).agent_opened(self.now))
        rt.conn = conn
        assert rt.core is not None
        self._agent_effects(rt, rt.core.on_connected(self._local(rt)))

    def _agent_effects(self, rt: Runtime, effects: Any) -> None:
        assert rt.core is not None
        if rt.core.ready:
            rt.reconnect.served()
        for frame in effects.send:
            if rt.conn is not None and rt.conn.agent_open:
                self.transmit(rt.conn, frame, to_agent=False)
        for command in effects.display:
            if isinstance(command, Show):
                self._show(rt, command.prompt.prompt_id)
            elif isinstance(command, Withdraw):
                rt.user_gen[command.prompt_id] = rt.user_gen.get(command.prompt_id, 0) + 1
                self.log(rt.eid, f"withdraw {command.prompt_id[-6:]} ({command.reason})")
        if effects.close:
            if rt.conn is not None:
                conn = rt.conn
                self.log(rt.eid, f"agent drops conn {conn.n}: {effects.close}")
                conn.agent_open = False
                # The bridge sees the close after a round trip.
                self.at(self.now + self._latency(), lambda: self._close_bridge_side(conn, notify_agent=False))
            self._agent_disconnect(rt)
        self._arm_agent(rt)

    def _arm_agent(self, rt: Runtime) -> None:
        rt.timer_gen += 1
        gen, incarnation = rt.timer_gen, rt.incarnation
        assert rt.core is not None
        deadline = rt.core.next_deadline_ms()
        if deadline is None:
            return

        def tick() -> None:
            if rt.up and rt.awake and rt.timer_gen == gen and rt.incarnation == incarnation and rt.core is not None:
                self._agent_effects(rt, rt.core.tick(self._local(rt)))

        self.at(deadline - rt.skew_ms, tick)

    def _show(self, rt: Runtime, prompt_id: str) -> None:
        key = (rt.incarnation, prompt_id)
        rt.shown[key] = rt.shown.get(key, 0) + 1
        self.log(rt.eid, f"show {prompt_id[-6:]}")
        assert rt.core is not None
        self._agent_effects(rt, rt.core.on_shown(prompt_id, self._local(rt)))
        gen = rt.user_gen[prompt_id] = rt.user_gen.get(prompt_id, 0) + 1
        incarnation = rt.incarnation
        if self.user is not None:
            answer, delay = self.user(rt.eid, prompt_id)
        else:
            answer = self.rng.choices(["approve", "deny", "dismiss", None], weights=[40, 25, 10, 25])[0]
            delay = self.rng.randint(500, 150_000)
        # A click racing a withdraw still lands sometimes (the dialog was closing).
        races = self.rng.random() < 0.05

        def act() -> None:
            if not self.humans_on:
                return
            if not (rt.up and rt.awake and rt.incarnation == incarnation and rt.core is not None):
                return
            if rt.user_gen.get(prompt_id) != gen and not races:
                return
            self.log(rt.eid, f"user {answer or 'no answer'} {prompt_id[-6:]}")
            if answer is None:
                self._agent_effects(rt, rt.core.on_no_answer(prompt_id, self._local(rt)))
            else:
                self._agent_effects(rt, rt.core.on_user_answer(prompt_id, answer, self._local(rt)))

        self.at(self.now + delay, act)

    def agent_crash(self, eid: str, down_ms: int) -> None:
        rt = self.runtimes[eid]
        if not rt.up:
            return
        self.log(eid, f"AGENT CRASH for {down_ms / 1000:.0f}s")
        rt.up = False
        if rt.conn is not None:
            conn, rt.conn = rt.conn, None
            conn.agent_open = False
            # The OS closes the socket: the bridge notices after a round trip.
            self.at(self.now + self._latency(), lambda: self._close_bridge_side(conn, notify_agent=False))
        rt.held_frames.clear()
        self.at(self.now + down_ms, lambda: self._agent_start(rt))

    def sleep(self, eid: str, ms: int) -> None:
        rt = self.runtimes[eid]
        if not (rt.up and rt.awake):
            return
        self.log(eid, f"SLEEP for {ms / 1000:.0f}s")
        rt.awake = False
        incarnation = rt.incarnation
        self.at(self.now + ms, lambda: self.wake(eid) if rt.incarnation == incarnation else None)

    def wake(self, eid: str) -> None:
        rt = self.runtimes[eid]
        if rt.awake or not rt.up:
            return
        self.log(eid, "wake")
        rt.awake = True
        held, rt.held_frames = rt.held_frames, []
        for conn, frame in held:
            self._agent_receives(conn, frame)
        if rt.conn is not None and not rt.conn.agent_open:
            self._agent_disconnect(rt)  # closed while we slept
        assert rt.core is not None
        self._agent_effects(rt, rt.core.tick(self._local(rt)))
        if rt.conn is None:
            self._schedule_reconnect(rt)

    # --- technicians -----------------------------------------------------------------------------

    def http(
        self, eid: str, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> tuple[int, Any] | None:
        """A technician's call. None: the request or its response was lost (or the bridge is down)."""
        f = self.faults if self.faults_on else NO_FAULTS
        if not self.bridge_up or self.rng.random() < f.p_http_lost:
            return None
        req = ApiRequest(method, path, {**headers, TECHNICIAN_HEADER: "tech"}, json.dumps(body or {}).encode())
        response, effects = self.actor(eid).handle(req, self.now, self.bridge_connected(eid), self.heard_ms(eid))
        self.perform(eid, effects)
        if self.rng.random() < f.p_http_lost:
            return None  # committed, but the answer never reached the console
        return response.status, response.body

    def technician_create(self, key: str | None = None) -> None:
        if key is None:
            key = f"key-{self.rng.getrandbits(48):012x}"
            eid = self.rng.choice(self.eids)
            self.key_bodies[key] = {
                "eid": eid,
                "body": {
                    "title": f"Allow remote control ({key[-4:]})?",
                    "action": "remote_control",
                    "expires_in": self.rng.randint(30, 15 * 60),
                    "on_no_user": self.rng.choice(["deny", "approve", "wait"]),
                },
            }
            # Issue 13: half the prompts escalate if unanswered. Derived from the key, not drawn
            # from the PRNG, so every seed's fault schedule stays what it was.
            if int(key[-2:], 16) % 2:
                self.key_bodies[key]["body"]["escalate_after"] = 10 + int(key[-5:-2], 16) % 600
            # Issue 16: a third ask for an approval window (1-20 min), derived from the key too.
            if int(key[-6], 16) % 3 == 0:
                self.key_bodies[key]["body"]["grant_minutes"] = 1 + int(key[-8:-6], 16) % 20
            self.keys[key] = None
        spec = self.key_bodies[key]
        eid = spec["eid"]
        answer = self.http(eid, "POST", f"/api/endpoints/{eid}/prompts", spec["body"], {"idempotency-key": key})
        if answer is None:
            # The console retries with the same key (DESIGN §5); the bridge answers the same prompt.
            self.at(self.now + self.rng.randint(1_000, 20_000), lambda: self.technician_create(key))
            return
        status, body = answer
        if status in (200, 201):
            known = self.keys[key]
            if known is not None and known.prompt_id != body["prompt_id"]:
                raise AssertionError(f"I5: key {key} answered {known.prompt_id} and then {body['prompt_id']}")
            if known is None:
                known = Known(body["prompt_id"], eid, key)
                self.keys[key] = known
                self.known[known.prompt_id] = known
                self.log("tech", f"created {known.prompt_id[-6:]} on {eid} (key {key[-4:]}, {status})")
        elif status == 429:
            self.log("tech", f"create refused: {body['error']['code']}")
        else:
            raise AssertionError(f"create answered {status}: {body}")

    def technician_withdraw(self) -> None:
        if not self.known:
            return
        known = self.known[self.rng.choice(sorted(self.known))]
        op = self.rng.choice(["cancel", "retry"])
        answer = self.http(known.eid, "POST", f"/api/endpoints/{known.eid}/prompts/{known.prompt_id}/{op}", {}, {})
        if answer is None:
            return
        status, body = answer
        self.log("tech", f"{op} {known.prompt_id[-6:]} → {status}")
        if op == "retry" and status == 201:
            self.known[body["prompt_id"]] = Known(body["prompt_id"], known.eid, "retry")

    # --- observation -----------------------------------------------------------------------------

    def observe(self) -> None:
        """What the console would show now, appended to each prompt's history."""
        if not self.bridge_up:
            return
        for eid in self.eids:
            actor = self.actor(eid)
            for row in actor.store.execute("SELECT prompt_id FROM prompts"):
                pid = row["prompt_id"]
                state = actor._view(pid, self.now).state.value
                history = self.history.setdefault(pid, [])
                if not history or history[-1][1] != state:
                    history.append((self.now, state))

    def views(self) -> dict[str, Any]:
        return {
            row["prompt_id"]: self.actor(eid)._view(row["prompt_id"], self.now)
            for eid in self.eids
            for row in self.actor(eid).store.execute("SELECT prompt_id FROM prompts")
        }
