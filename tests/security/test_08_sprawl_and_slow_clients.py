"""Issue 11 item 8: sprawl and slow clients.

- A technician could register endpoints without limit (200 in 4 s): an endpoint quota (429
  ``endpoint_quota_exceeded``), which an admin reads and changes with ``/api/limits``.
- On the local host, idle and slow-header connections were held ~80 s with no per-client
  cap (671 idle sockets made the API time out under a 600-fd limit): now at most
  ``MAX_CONNECTIONS_PER_ADDRESS`` connections per remote address (authenticated agent sockets
  aside; 429 ``too_many_connections`` beyond), and a request's headers must arrive within the
  header timeout (408 ``header_timeout``). Real ``caisey-bridge serve`` processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.bridge_hosts import ROOT, BridgeUnderTest, LocalBridgeProcess, ScriptedRuntime, enroll
from tests.security.conftest import eid
from worker.local_host import HEADER_TIMEOUT_S, MAX_CONNECTIONS_PER_ADDRESS

ATTACKER = "127.0.0.2"  # another loopback address: the cap is per address, the tests' client is 127.0.0.1


# --- the endpoint quota (both hosts) ---------------------------------------------------------------


async def test_the_endpoint_quota_refuses_sprawl_until_an_admin_raises_it(bridge: BridgeUnderTest) -> None:
    admin = bridge.admin_token
    tech = await bridge.request("POST", "/api/tokens", token=admin, body={"name": "t-" + eid()})
    token = tech.body["token"]
    limits = await bridge.request("GET", "/api/limits", token=token)
    assert limits.status == 200 and limits.body["max_endpoints"] == 10_000, limits.body
    used = limits.body["endpoints"]
    forbidden = await bridge.request("PUT", "/api/limits", token=token, body={"max_endpoints": 10**6})
    assert forbidden.status == 403 and forbidden.body["error"]["code"] == "forbidden"
    set_to = await bridge.request("PUT", "/api/limits", token=admin, body={"max_endpoints": used + 2})
    assert set_to.status == 200 and set_to.body == {"max_endpoints": used + 2, "endpoints": used}
    try:
        for _ in range(2):
            r = await bridge.request("POST", "/api/enrollments", token=token, body={"endpoint_id": eid()})
            assert r.status == 201, r.body
        refused_id = eid()
        r = await bridge.request("POST", "/api/enrollments", token=token, body={"endpoint_id": refused_id})
        assert r.status == 429 and r.body["error"]["code"] == "endpoint_quota_exceeded", r.body
        assert "PUT /api/limits" in r.body["error"]["message"]
        gone = await bridge.request("GET", f"/api/endpoints/{refused_id}/prompts", token=token)
        assert gone.status == 404  # nothing was registered
        raised = await bridge.request("PUT", "/api/limits", token=admin, body={"max_endpoints": used + 3})
        assert raised.status == 200
        r = await bridge.request("POST", "/api/enrollments", token=token, body={"endpoint_id": refused_id})
        assert r.status == 201, r.body
    finally:
        await bridge.request("PUT", "/api/limits", token=admin, body={"max_endpoints": 10_000})


async def test_the_quota_refuses_invalid_values(bridge: BridgeUnderTest) -> None:
    for value in (0, -1, True, 1.5, "10", None, 10**7):
        r = await bridge.request("PUT", "/api/limits", token=bridge.admin_token, body={"max_endpoints": value})
        assert r.status == 400 and r.body["error"]["code"] == "invalid_field", (value, r.body)


# --- slow and idle clients (the local host, real processes) -------------------------------------------


class GuardedBridge(LocalBridgeProcess):
    """``caisey-bridge serve`` with extra arguments and, optionally, a hard open-files limit."""

    def __init__(self, data: Path, extra: list[str] | None = None, nofile: int | None = None) -> None:
        super().__init__(data)
        self.extra = extra or []
        self.nofile = nofile

    def start(self) -> None:
        env = dict(os.environ, CAISEY_ADMIN_TOKEN=self.admin_token)
        cmd = [sys.executable, "-m", "worker.local_host", "serve", "--data", str(self.data), "--port", str(self.port)]
        nofile = self.nofile

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd + self.extra, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bridge did not start listening within 15 s")


def _open_idle(port: int, count: int, source: str = ATTACKER) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def _answer(s: socket.socket, timeout: float) -> bytes:
    """What the server sends before it closes (b"" when it sends nothing within ``timeout``)."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _pending(s: socket.socket) -> bytes:
    """What the server has sent so far, without waiting."""
    s.setblocking(False)
    try:
        return s.recv(65536)
    except (BlockingIOError, ConnectionResetError):
        return b""


def _error_code(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["code"]


async def test_idle_sockets_from_one_address_cannot_starve_the_api_under_a_600_fd_limit(tmp_path: Path) -> None:
    """The issue's measurement, with the default settings: 700 idle sockets from one address
    against a bridge limited to 600 descriptors. At most the cap are held; the rest are
    answered 429 at once; the API keeps answering other clients."""
    bridge = GuardedBridge(tmp_path / "data", nofile=600)
    bridge.start()
    socks: list[socket.socket] = []
    try:
        await enroll(bridge, "laptop-1")
        started = time.monotonic()
        socks = await asyncio.to_thread(_open_idle, bridge.port, 700)
        r = await asyncio.wait_for(bridge.request("GET", "/api/endpoints", token=bridge.admin_token), 5)
        api_s = time.monotonic() - started
        assert r.status == 200 and [e["endpoint_id"] for e in r.body["endpoints"]] == ["laptop-1"]
        await asyncio.sleep(0.5)
        answers = [_pending(s) for s in socks]
        refused = [a for a in answers if a]
        assert len(refused) >= 700 - MAX_CONNECTIONS_PER_ADDRESS
        assert {_error_code(a) for a in refused} == {(429, "too_many_connections")}
        print(f"700 idle sockets: {len(refused)} refused with 429, API answered {api_s:.2f} s after the first")
    finally:
        for s in socks:
            s.close()
        bridge.kill()


async def test_idle_and_slow_header_connections_are_answered_408_within_the_header_timeout(tmp_path: Path) -> None:
    """Default settings: aiohttp alone held both ~80 s."""
    bridge = GuardedBridge(tmp_path / "data")
    bridge.start()
    try:
        idle = _open_idle(bridge.port, 1)[0]
        slow = _open_idle(bridge.port, 1)[0]
        started = time.monotonic()

        def slowloris() -> bytes:
            for byte in b"GET /api/endpoints HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100:
                try:
                    slow.send(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.5)
                if time.monotonic() - started > HEADER_TIMEOUT_S + 5:
                    break
            return _answer(slow, 1)

        idle_raw, slow_raw = await asyncio.gather(
            asyncio.to_thread(_answer, idle, HEADER_TIMEOUT_S + 5), asyncio.to_thread(slowloris)
        )
        held_s = time.monotonic() - started
        assert _error_code(idle_raw) == (408, "header_timeout")
        assert slow_raw.startswith(b"HTTP/1.1 408"), slow_raw[:200]
        assert held_s < HEADER_TIMEOUT_S + 3, held_s
        print(f"idle and slow-header connections closed after {held_s:.1f} s (header timeout {HEADER_TIMEOUT_S:g} s)")
        r = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)  # others unaffected
        assert r.status == 200
    finally:
        bridge.kill()


async def test_the_cap_counts_anonymous_connections_not_agent_sockets(tmp_path: Path) -> None:
    """A site of endpoints behind one NAT is never refused by the cap: an authenticated agent
    socket stops counting. Over the cap a connection gets a clear 429."""
    bridge = GuardedBridge(tmp_path / "data", extra=["--max-connections-per-address", "4", "--header-timeout-s", "30"])
    bridge.start()
    runtimes: list[ScriptedRuntime] = []
    idle: list[socket.socket] = []
    try:
        for i in range(8):  # twice the cap, all from 127.0.0.1
            runtime = ScriptedRuntime(bridge, await enroll(bridge, f"site-pc-{i}"))
            await runtime.connect()
            runtimes.append(runtime)
        r = await bridge.request("GET", "/api/endpoints", token=bridge.admin_token)
        assert r.status == 200 and all(e["online"] for e in r.body["endpoints"]), r.body
        idle = _open_idle(bridge.port, 4)
        over = _open_idle(bridge.port, 1)[0]
        raw = _answer(over, 2)
        assert _error_code(raw) == (429, "too_many_connections"), raw
        assert b"at most 4 connections per address" in raw
        for s in idle:
            s.close()
        await asyncio.sleep(0.3)
        again = _open_idle(bridge.port, 1)[0]  # a closed connection frees its place
        assert _answer(again, 0.5) == b""
        again.close()
    finally:
        for s in idle:
            s.close()
        for runtime in runtimes:
            await runtime.close()
        bridge.kill()


async def test_open_prompts_per_endpoint_are_bounded(bridge: BridgeUnderTest) -> None:
    """Sprawl within one endpoint was already bounded (README, design change 4); pinned here."""
    from caisey.wire import MAX_OPEN_PROMPTS

    ep = await enroll(bridge, eid())
    body = {"title": "Allow?", "action": "remote_control", "expires_in": 600}
    path = f"/api/endpoints/{ep.endpoint_id}/prompts"
    for _ in range(MAX_OPEN_PROMPTS):
        assert (await bridge.request("POST", path, token=bridge.admin_token, body=body)).status == 201
    r = await bridge.request("POST", path, token=bridge.admin_token, body=body)
    assert r.status == 429 and r.body["error"]["code"] == "too_many_open_prompts", r.body
