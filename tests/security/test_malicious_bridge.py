"""Issue 11 item 10: the agent against a malicious bridge.

It used to store every flooded prompt (3,000 → 14 MB); reconnect in a silent loop once its
outbox held over 1,024 frames (37 times in 25 s, nothing logged); accept any clock offset from
``hello.ok`` (a bridge claiming 1970 made prompts never expire locally); accept plain
``http://`` to a non-loopback bridge without a word; and take the enrollment token only on the
command line (visible in ``ps``). Real ``caisey-agent`` processes against a hostile bridge
(``hostile_bridge.py``) where the item is about processes; the core where it is about time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

import agent.connection
import agent.core
from agent.store import SECRET_FILE, Store
from caisey import wire
from caisey.ids import IdSource
from tests.agent_harness import T0, CoreHarness, make_prompt
from tests.bridge_hosts import LocalBridgeProcess, enroll
from tests.security.hostile_bridge import HostileBridge, enrolled_state, wall_ms

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
AGENT = [sys.executable, "-m", "agent"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


class AgentProcess:
    def __init__(self, state: Path, log: Path) -> None:
        self.state, self.log = state, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--presenter", "exec:/bin/true", "--state-dir", str(self.state)],
                cwd=ROOT,
                env=_env(),
                stdout=log,
                stderr=log,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[..., HostileBridge]]:
    bridges: list[HostileBridge] = []

    def make(*args: object, **kwargs: object) -> HostileBridge:
        bridge = HostileBridge(*args, **kwargs)  # type: ignore[arg-type]
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        await bridge.stop()


async def _until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


def _store_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.iterdir() if p.name.startswith("agent.sqlite3"))


# --- bounded storage ---------------------------------------------------------------------------------

FLOOD = 3_000


async def _flood_prompts_once(bridge: HostileBridge, ws: web.WebSocketResponse) -> None:
    if bridge.connections > 1:
        return  # one flood; reconnects find a quiet bridge
    now = bridge.now_ms()
    for i in range(FLOOD):
        copy = wire.PromptCopy(
            bridge.ids.new(now), f"Flood {i}", "m" * 1_000, "remote_control", now, now + HOUR_MS, "wait", "mallory"
        )
        await bridge.send(ws, wire.PromptDeliver(bridge.ids.new(now), copy))
        if i % 100 == 99:
            await asyncio.sleep(0.02)  # let the agent keep up: this is about storage, not speed


async def test_a_flooding_bridge_cannot_grow_the_agents_store(
    tmp_path: Path, hostile: Callable[..., HostileBridge]
) -> None:
    bridge = hostile(_flood_prompts_once)
    await bridge.start()
    state = tmp_path / "state"
    enrolled_state(state, bridge.url).close()
    runtime = AgentProcess(state, tmp_path / "agent.log")
    runtime.start()
    try:
        answered = await _until(
            lambda: bridge.received["prompt.receipt"] + bridge.received["prompt.update"] >= FLOOD, 90
        )
    finally:
        runtime.stop()
    assert answered, (bridge.received, runtime.output()[-2_000:])
    store = Store.open(state)
    try:
        held = store.count_prompts()
    finally:
        store.close()
    assert held <= agent.core.MAX_STORED_PROMPTS, held  # was all 3,000
    size = _store_bytes(state)
    assert size < 8 * 1024 * 1024, size  # was 14 MB; what remains is mostly the WAL
    assert "refused" in runtime.output() and "without storing them" in runtime.output()


# --- the send queue: log and back off on overflow; our own backlog never overflows it -----------------


async def _flood_junk(bridge: HostileBridge, ws: web.WebSocketResponse) -> None:
    # Every junk frame gets an ``error`` back: thousands of answers queued at once.
    junk = '{"v":1,"type":"prompt.nope","id":"J%d"}'
    for i in range(5_000):
        await ws.send_str(junk % i)


async def test_a_bridge_flooding_frames_to_answer_gets_a_logged_backoff(
    tmp_path: Path, hostile: Callable[..., HostileBridge]
) -> None:
    bridge = hostile(_flood_junk)
    await bridge.start()
    state = tmp_path / "state"
    enrolled_state(state, bridge.url).close()
    runtime = AgentProcess(state, tmp_path / "agent.log")
    runtime.start()
    try:
        await asyncio.sleep(12)
    finally:
        runtime.stop()
    output = runtime.output()
    assert "send queue full" in output, output[-2_000:]  # said once per session, not silent
    # At least 5 s between sessions after an overflow: at most 3 in 12 s (a loop made ~20).
    assert 1 <= bridge.connections <= 3, bridge.connections


async def _flood_state_requests(bridge: HostileBridge, ws: web.WebSocketResponse) -> None:
    if bridge.connections > 1:
        return
    now = bridge.now_ms()
    for i in range(wire.MAX_OPEN_PROMPTS):  # a full report is then ~230,000 characters
        copy = wire.PromptCopy(
            bridge.ids.new(now), f"Big {i}", "m" * wire.MAX_MESSAGE_CHARS, "x", now, now + HOUR_MS, "wait", "mallory"
        )
        await bridge.send(ws, wire.PromptDeliver(bridge.ids.new(now), copy))
    await asyncio.sleep(2)  # stored
    for _ in range(80):  # 80 full reports at once: ~18 M characters, far under 1,024 frames
        await bridge.send(ws, wire.StateRequest(bridge.ids.new(now), "again"))


async def test_a_bridge_asking_for_reports_without_end_cannot_fill_the_agents_memory(
    tmp_path: Path, hostile: Callable[..., HostileBridge]
) -> None:
    bridge = hostile(_flood_state_requests)
    await bridge.start()
    state = tmp_path / "state"
    enrolled_state(state, bridge.url).close()
    runtime = AgentProcess(state, tmp_path / "agent.log")
    runtime.start()
    try:
        overflowed = await _until(lambda: "send queue full" in runtime.output(), 20)
    finally:
        runtime.stop()
    assert overflowed, runtime.output()[-2_000:]  # bounded in characters too, not only in frames


async def test_an_outbox_larger_than_the_send_queue_goes_out_without_a_reconnect_loop(
    tmp_path: Path, hostile: Callable[..., HostileBridge]
) -> None:
    bridge = hostile(None)  # answers hello and heartbeats, acknowledges nothing else
    await bridge.start()
    state = tmp_path / "state"
    store = enrolled_state(state, bridge.url)
    ids = IdSource(random.Random(5).getrandbits)
    now = wall_ms()
    owed = 0
    with store.transaction():  # 600 prompts, each owing its receipt and its expiry: 1,200 frames
        for _ in range(600):
            pid = ids.new(now)
            store.insert_prompt(make_prompt(pid, expires_at_ms=now - 1), "D" + pid, now, "closed")
            store.update_prompt(pid, now, detail="expired")
            for frame in (
                wire.PromptReceipt(ids.new(now), pid, "D" + pid, now),
                wire.PromptUpdate(ids.new(now), pid, "closed", detail="expired"),
            ):
                store.outbox_add(frame.id, pid, frame.TYPE, frame.TYPE == "prompt.update", wire.encode(frame), now)
                owed += 1
    store.close()
    assert owed > 1_024  # more than the agent's send queue holds
    runtime = AgentProcess(state, tmp_path / "agent.log")
    runtime.start()
    try:
        delivered = await _until(
            lambda: bridge.received["prompt.receipt"] + bridge.received["prompt.update"] >= owed, 20
        )
        await asyncio.sleep(3)  # a loop would have reconnected by now
    finally:
        runtime.stop()
    assert delivered, (bridge.received, runtime.output()[-2_000:])
    assert bridge.connections == 1, (bridge.connections, runtime.output()[-2_000:])  # was a silent loop
    assert "send queue full" not in runtime.output()


# --- time: the offset is bounded, and prompts also expire on the local clock ---------------------------


def test_a_bridge_claiming_1970_neither_moves_the_clock_nor_keeps_prompts_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = CoreHarness.on_disk(tmp_path, offset_ms=-T0)  # the bridge says it is 1970-01-01
    h.start()
    with caplog.at_level(logging.ERROR, logger="caisey.agent"):
        h.connect()
    assert h.core.offset_ms == 0  # refused (was -T0), and said so
    assert any("offset refused" in r.getMessage() for r in caplog.records)
    # Its prompt claims to run until 9999-12-31 (created "in 1970"): it still ends locally
    # within the longest lifetime a create may ask, counted from its receipt.
    received = h.now
    h.deliver(wire.PromptCopy("P-forever", "Stay open", "", "x", 0, wire.MAX_TIME_MS, "wait", "mallory"))
    deadline = h.core.next_deadline_ms()
    assert deadline is not None and deadline <= received + agent.core.MAX_PROMPT_LIFETIME_MS
    h.run_until(received + agent.core.MAX_PROMPT_LIFETIME_MS)
    row = h.store.get_prompt("P-forever")
    assert row is not None and (row.status, row.detail) == ("closed", "expired")


def test_a_sane_offset_is_still_measured(tmp_path: Path) -> None:
    h = CoreHarness.on_disk(tmp_path, offset_ms=3 * HOUR_MS)  # a clock set to another time zone
    h.start()
    h.connect()
    assert h.core.offset_ms == 3 * HOUR_MS
    h.deliver(make_prompt("P1", created_at_ms=T0 + 3 * HOUR_MS, expires_at_ms=T0 + 3 * HOUR_MS + 60_000))
    (show,) = h.shows("P1")
    assert show.expires_at_local_ms == T0 + 60_000  # the offset still decides an honest expiry


# --- enrollment: the token from a file or stdin; plain http to another host is warned about -----------


async def test_enroll_reads_the_token_from_stdin_or_a_file(tmp_path: Path) -> None:
    bridge = LocalBridgeProcess(tmp_path / "bridge")
    bridge.start()
    try:
        for n, source in enumerate(["-", "file"]):
            r = await bridge.request(
                "POST", "/api/enrollments", token=bridge.admin_token, body={"endpoint_id": f"lap-{n}", "label": ""}
            )
            token = r.body["enrollment_token"]
            state = tmp_path / f"state-{n}"
            stdin = token + "\n"
            if source == "file":
                (tmp_path / "token").write_text(token + "\n")
                source, stdin = str(tmp_path / "token"), ""
            proc = subprocess.run(
                [*AGENT, "enroll", "--bridge", bridge.url, "--token-file", source, "--state-dir", str(state)],
                cwd=ROOT,
                env=_env(),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert proc.returncode == 0, proc.stderr
            assert f"enrolled as endpoint lap-{n}" in proc.stdout
            assert (state / SECRET_FILE).exists()
            assert "INSECURE" not in proc.stderr  # loopback http is fine
        # The enrolled agent works: it connects with the secret it stored.
        await enroll(bridge, "lap-check")  # the bridge is still serving
    finally:
        bridge.kill()


def test_plain_http_to_another_host_is_warned_about_loudly(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-token")
    proc = subprocess.run(
        [*AGENT, "enroll", "--bridge", "http://192.0.2.10:8787", "--token-file", missing, "--state-dir", str(tmp_path)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1  # no token file: nothing was sent
    assert "INSECURE" in proc.stderr and "http://192.0.2.10:8787" in proc.stderr, proc.stderr
    assert agent.connection.plaintext_warning("https://caisey.example.com") is None
    assert agent.connection.plaintext_warning("http://127.0.0.1:8787") is None
    assert agent.connection.plaintext_warning("http://localhost:8787") is None
    assert agent.connection.plaintext_warning("http://[::1]:8787") is None
    assert agent.connection.plaintext_warning("http://caisey.example.com") is not None
    assert agent.connection.plaintext_warning("ws://10.0.0.5") is not None
