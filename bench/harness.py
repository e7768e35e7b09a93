"""Bench plumbing: the bridge as a real process, its CPU and memory, enrollment, statistics.

``BridgeProcess`` runs ``python -m worker.local_host serve`` exactly as an operator would
(``caisey-bridge serve``), on 127.0.0.1 with its data directory on disk. Its CPU time and
RSS are read from ``/proc/<pid>`` (utime + stime, VmRSS), so the figures are the bridge
process's own, not the benchmark's.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "cst_bench-admin-token"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# One create body for every benchmark: a typical prompt (the sizes the floor echoes).
PROMPT_BODY: dict[str, Any] = {
    "title": "Allow remote control?",
    "message": "Technician Dana from the service desk asks to take remote control of this computer "
    "to finish the printer driver update you reported this morning.",
    "action": "remote_control",
    "expires_in": 600,
    "on_no_user": "wait",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"nothing listening on port {port} after {timeout_s} s")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class BridgeProcess:
    """``caisey-bridge serve`` in a subprocess. ``kill()`` is kill -9; ``start()`` reuses the data."""

    def __init__(
        self, data: Path, *, heartbeat_ms: int = 15_000, port: int | None = None, extra_args: list[str] | None = None
    ) -> None:
        self.data = data
        self.extra_args = list(extra_args or [])
        self.heartbeat_ms = heartbeat_ms
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"{data.name}-bridge.log"
        self.started_at = 0.0  # monotonic, when the process was spawned
        self.listening_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        env = dict(os.environ, CAISEY_ADMIN_TOKEN=ADMIN_TOKEN, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "worker.local_host", "serve", "--data", str(self.data)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--heartbeat-ms", str(self.heartbeat_ms)]
        # Every load generator connects from 127.0.0.1, and up to 10,000 agents reconnect at once
        # after a kill -9 on a loaded event loop: the per-address cap, the header timeout and the
        # endpoint quota (issue 11) are for hostile clients, not for the benchmark's own load.
        cmd += ["--max-connections-per-address", "1000000", "--header-timeout-s", "300", "--max-endpoints", "1000000"]
        cmd += self.extra_args
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout_s: float = 300.0) -> float:
        """Seconds from spawn until it listens (it opens every endpoint's file first)."""
        wait_listening(self.port, self.proc, timeout_s, self.log)
        self.listening_at = time.monotonic()
        return self.listening_at - self.started_at

    def start(self, timeout_s: float = 300.0) -> float:
        """Spawn and wait until it listens; seconds from spawn to listening."""
        self.spawn()
        return self.wait_listening(timeout_s)

    def kill(self) -> None:
        """kill -9: no shutdown handler runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)

    def fds(self) -> int:
        return proc_fds(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def enroll_many(
    url: str,
    endpoint_ids: Sequence[str],
    *,
    concurrency: int = 8,
    known: dict[str, str] | None = None,
    keys: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Register and enroll each endpoint through the API; ``{endpoint_id: agent_secret}``.
    ``keys``: endpoint id → ``agent.identity.EndpointKey`` registered in the exchange (an
    endpoint not in it enrolls without a key: its answers are unsigned)."""
    secrets = dict(known or {})
    todo = [eid for eid in endpoint_ids if eid not in secrets]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for eid in todo:
        queue.put_nowait(eid)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            eid = queue.get_nowait()
            async with session.post(
                url + "/api/enrollments", json={"endpoint_id": eid, "label": "bench"}, headers=auth()
            ) as r:
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"enrollment of {eid}: {r.status} {body}")
            exchange = {"enrollment_token": body["enrollment_token"]}
            if keys is not None and eid in keys:
                exchange["public_key"] = keys[eid].public_key_b64
            async with session.post(url + "/api/agent/enroll", json=exchange) as r:
                answer = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"agent enroll of {eid}: {r.status} {answer}")
            secrets[eid] = answer["agent_secret"]

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return secrets


def load_secrets(data: Path) -> dict[str, str]:
    path = data / "bench-secrets.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_secrets(data: Path, secrets: dict[str, str]) -> None:
    (data / "bench-secrets.json").write_text(json.dumps(secrets))


def endpoint_ids(n: int, prefix: str = "ep") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(n)]


# --- statistics ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def summary_ms(values_s: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds of durations given in seconds."""
    values = sorted(v * 1000 for v in values_s)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p95_ms": round(percentile(values, 95), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(values[-1], 3),
        "mean_ms": round(sum(values) / len(values), 3),
    }


# --- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu_model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    import aiohttp as _aiohttp

    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": _aiohttp.__version__,
        "fd_limit": {"soft": soft, "hard": hard},
        "filesystem": _filesystem(ROOT),
        # Other work on the machine skews every figure: the 1/5/15-minute load when recorded.
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def _filesystem(path: Path) -> str:
    best = ("", "")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mount, fstype = line.split()[:3]
                if str(path).startswith(mount) and len(mount) > len(best[0]):
                    best = (mount, f"{fstype} on {dev}")
    except OSError:
        pass
    return best[1]


# --- profiles of the bridge ------------------------------------------------------------------


class Profile:
    """``py-spy record`` on the bridge for one timed window (``--profile``), summarised.

    ``--nonblocking`` samples without pausing the bridge, so the figures it is attached to
    barely move. The summary keeps the frames that hold the most samples, both where the
    time is spent (self) and which calls it is spent under (inclusive).
    """

    def __init__(self, pid: int, out: Path, seconds: float = 3600.0, rate_hz: int = 100) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["py-spy", "record", "--nonblocking", "--format", "raw", "--idle", "-r", str(rate_hz)]
        cmd += ["-d", str(max(1, int(seconds))), "-p", str(pid), "-o", str(out)]
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except FileNotFoundError:
            self.proc = None  # py-spy is in the dev extra; without it there is no profile

    def summary(self, top: int = 15) -> dict[str, Any]:
        if self.proc is None:
            return {"error": "py-spy not installed (pip install -e '.[dev]')"}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        self.proc.wait(120)
        if not self.out.exists():
            return {"error": f"py-spy exited with {self.proc.returncode}"}
        return summarise_raw_profile(self.out.read_text(), top)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; keep function, file and line.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    short = "/".join(path.split("/")[-2:]) if path else where
    return f"{name} ({short}:{line})" if line else name


def summarise_raw_profile(text: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of the event loop thread's samples, by frame (function and
    line), and how busy the output gate's fsync threads were, as a share of the same time
    (``--idle`` samples every thread; an idle fsync thread would otherwise dominate)."""
    total = 0
    fsync = 0
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if "fsync_path" in stack:
            fsync += count
        if "run_forever" not in stack:
            continue  # not the event loop thread
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count

    def share(counts: dict[str, int]) -> list[list[Any]]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        return [[round(100 * n / max(1, total), 1), name] for name, n in ranked[:top]]

    skip = ("_run_module_as_main", "_run_code", "<module>", "main (", "serve (", "run_app", "run_forever")
    inclusive = {k: v for k, v in inclusive.items() if not k.startswith(skip) and "_run_once" not in k}
    return {
        "samples": total,
        "self_pct": share(self_counts),
        "inclusive_pct": share(inclusive),
        "fsync_threads_pct": round(100 * fsync / max(1, total), 1),
    }
