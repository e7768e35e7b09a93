"""What only the local host's real process shows: kill -9, restart, alarms re-armed, SIGTERM."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from caisey import wire
from tests.bridge_hosts import ROOT, LocalBridgeProcess, ScriptedRuntime, enroll, free_port, of_type


async def test_kill_9_between_create_and_delivery_then_restart_delivers(tmp_path: Path) -> None:
    bridge = LocalBridgeProcess(tmp_path / "data")
    bridge.start()
    try:
        ep = await enroll(bridge, "laptop-kill")
        r = await bridge.request(
            "POST",
            "/api/endpoints/laptop-kill/prompts",
            token=bridge.admin_token,
            body={"title": "Allow?", "action": "remote_control", "expires_in": 120},
        )
        assert r.status == 201
        bridge.kill()  # after the 201, before any agent received it
        bridge.start()
        runtime = ScriptedRuntime(bridge, ep)
        delivers = of_type(await runtime.connect(), wire.PromptDeliver)
        assert {d.prompt.prompt_id for d in delivers} == {r.body["prompt_id"]}
        await runtime.close()
    finally:
        bridge.kill()


async def test_alarm_due_while_the_bridge_was_down_fires_at_start(tmp_path: Path) -> None:
    bridge = LocalBridgeProcess(tmp_path / "data")
    bridge.start()
    try:
        await enroll(bridge, "laptop-alarm")
        r = await bridge.request(
            "POST",
            "/api/endpoints/laptop-alarm/prompts",
            token=bridge.admin_token,
            body={"title": "Allow?", "action": "remote_control", "expires_in": 5},
        )
        assert r.status == 201
        bridge.kill()
        await asyncio.sleep(5.5)  # the prompt's expiry passes while the bridge is down
        bridge.start()
        await asyncio.sleep(1.0)
        # The fleet line is derived from the endpoint's rows only when its alarm runs; no
        # request has touched the endpoint since the restart.
        fleet = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
        [line] = fleet.body["endpoints"]
        assert line["open_prompts"] == 0 and line["last_outcome"]["state"] == "failed_to_deliver"
        assert line["online"] is False
    finally:
        bridge.kill()


async def test_sigterm_closes_agent_sockets_and_exits_cleanly(tmp_path: Path) -> None:
    bridge = LocalBridgeProcess(tmp_path / "data")
    bridge.start()
    ep = await enroll(bridge, "laptop-term")
    runtime = ScriptedRuntime(bridge, ep)
    await runtime.connect()
    assert bridge.terminate() == 0
    assert runtime.socket is not None
    try:
        await runtime.socket.recv(timeout=5)
        raise AssertionError("expected the socket to be closed")
    except ConnectionError as exc:
        assert "CLOSE 1001" in str(exc) and "bridge shutting down" in str(exc)
    await runtime.close()


def test_admin_token_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "CAISEY_ADMIN_TOKEN"}
    port = free_port()
    cmd = [sys.executable, "-m", "worker.local_host", "serve", "--data", str(data), "--port", str(port)]
    outputs = []
    for _ in range(2):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            while "caisey bridge on" not in line:
                outputs.append(line)
                line = proc.stdout.readline() if proc.stdout else ""
        finally:
            proc.terminate()
            proc.wait(10)
    token_file = data / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    printed = [line for line in outputs if "admin token" in line]
    assert len(printed) == 1 and token in printed[0]  # printed once, on first start only


async def test_a_chunked_request_body_sent_in_pieces_is_read_to_its_end(local_bridge: LocalBridgeProcess) -> None:
    """``request.content.read(n)`` returns only what has arrived; the body (here gzip-compressed
    and chunked, in pieces) must be read to its end."""
    ep = await enroll(local_bridge, "laptop-chunked")
    prompt = {"title": "Allow?", "message": "m" * 1500, "action": "remote_control", "expires_in": 60}
    body = gzip.compress(json.dumps(prompt).encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", local_bridge.port)
    writer.write(
        f"POST /api/endpoints/{ep.endpoint_id}/prompts HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {local_bridge.admin_token}\r\nContent-Type: application/json\r\n"
        "Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
    )
    for i in range(0, len(body), 20):
        piece = body[i : i + 20]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        await asyncio.sleep(0.03)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"201", status_line + await reader.read()


async def test_fleet_lines_are_synced_by_the_output_gate_and_a_fleet_read_waits_for_them(tmp_path: Path) -> None:
    """A batch of fleet lines commits at ``synchronous=NORMAL`` (no fsync on the event loop) and
    the output gate syncs the fleet's log on its threads; a fleet read flushing the batch leaves
    only once that sync is done. The fleet's own writes stay ``synchronous=FULL``."""
    import threading

    from worker.api import ApiRequest
    from worker.credentials import secret_hash
    from worker.local_host import LocalBridge

    bridge = LocalBridge(tmp_path, secret_hash("cst_admin-token-for-this-test"))
    synced: list[str] = []
    release = threading.Event()
    real_sync = bridge.gate._sync

    def held_sync(path: str) -> None:
        if path == bridge.fleet_store.wal:
            release.wait(10)
        synced.append(path)
        real_sync(path)

    bridge.gate._sync = held_sync
    line = {"endpoint_id": "laptop-1", "label": "", "online": True, "client": None, "site": None}
    bridge.push_fleet_line(line)
    read = asyncio.ensure_future(
        bridge.fleet_call(
            ApiRequest("GET", "/api/endpoints", {"x-caisey-technician": "admin", "x-caisey-role": "admin"})
        )
    )
    await asyncio.sleep(0.2)
    assert not read.done()  # its lines are not on disk yet
    assert bridge.fleet_store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    release.set()
    answer = await asyncio.wait_for(read, 10)
    assert bridge.fleet_store.wal in synced and not bridge.gate.pending
    assert answer.status == 200
    assert [e["endpoint_id"] for e in answer.body["endpoints"]] == ["laptop-1"]
    await bridge.stop()
