"""Helpers shared by the agent tests: a sans-I/O stand-in for the bridge's side of the wire.

``CoreHarness`` drives one ``AgentCore`` with a fake clock and seeded randomness and turns
its encoded frames back into messages, so tests read like the protocol: deliver, ack,
cancel, and look at what the agent sent and showed.

``Agent`` runs the real ``python -m agent`` as a process with an ``exec:`` presenter program
whose answer a test sets through a file (``approve``, ``deny``, ``dismiss``, ``none``,
``hang``, or ``after-go:WORD`` — wait for a ``go`` file, then answer WORD).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import AgentConfig, AgentCore, Effects, Show, Withdraw
from agent.identity import EndpointKey
from agent.store import Store
from caisey.wire import (
    Ack,
    HelloOk,
    Message,
    PromptCancel,
    PromptCopy,
    PromptDeliver,
    StateRequest,
    decode,
    encode,
)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 20.0
T0 = 1_800_000_000_000  # a fixed local epoch for the fake clock
MINUTE = 60_000


def make_prompt(
    prompt_id: str = "P1",
    *,
    expires_at_ms: int = T0 + 10 * MINUTE,
    on_no_user: str = "wait",
    title: str = "Allow remote control?",
    created_at_ms: int = T0,
) -> PromptCopy:
    return PromptCopy(
        prompt_id=prompt_id,
        title=title,
        message="Alex from support wants to take control of this computer.",
        action="remote_control",
        created_at_ms=created_at_ms,
        expires_at_ms=expires_at_ms,
        on_no_user=on_no_user,
        requested_by="alex",
    )


def seeded_key(seed: int) -> EndpointKey:
    """A real Ed25519 endpoint key, the same for the same seed (replayable tests)."""
    return EndpointKey(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"endpoint-key-{seed}".encode()).digest()))


@dataclass
class CoreHarness:
    store: Store
    endpoint_id: str = "ep-1"
    seed: int = 1
    now: int = T0
    offset_ms: int = 0  # bridge clock − local clock, as the fake bridge stamps times
    config: AgentConfig = field(default_factory=AgentConfig)
    signer: EndpointKey | None = None  # None: the key seeded_key(seed) gives
    core: AgentCore = field(init=False)
    sent: list[Message] = field(default_factory=list)  # everything the agent sent, in order
    display: list[Show | Withdraw] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    _bridge_ids: int = 0

    def __post_init__(self) -> None:
        if self.signer is None:
            self.signer = seeded_key(self.seed)
        self.core = AgentCore(
            self.store, self.endpoint_id, rng=random.Random(self.seed), config=self.config, signer=self.signer
        )

    @classmethod
    def on_disk(cls, path: Path, **kwargs: object) -> CoreHarness:
        return cls(Store.open(path), **kwargs)  # type: ignore[arg-type]

    def restart(self) -> CoreHarness:
        """A new core over the same store: what a crash and restart leaves."""
        return CoreHarness(
            self.store, self.endpoint_id, self.seed + 1, self.now, self.offset_ms, self.config, self.signer
        )

    # --- running the core --------------------------------------------------------------------

    def take(self, effects: Effects) -> list[Message]:
        messages = [decode(text) for text in effects.send]
        self.sent.extend(messages)
        self.display.extend(effects.display)
        if effects.close:
            self.closes.append(effects.close)
        return messages

    def start(self) -> list[Message]:
        return self.take(self.core.start(self.now))

    def bridge_id(self) -> str:
        self._bridge_ids += 1
        return f"B{self._bridge_ids:04d}"

    def feed(self, message: Message | str) -> list[Message]:
        text = message if isinstance(message, str) else encode(message)
        return self.take(self.core.on_frame(text, self.now))

    def connect(self, *, heartbeat_ms: int = 15_000, rtt_ms: int = 0) -> list[Message]:
        """Open a connection and answer hello: returns what the agent sent after hello.ok."""
        (hello,) = self.take(self.core.on_connected(self.now))
        assert hello.TYPE == "hello"
        bridge_t = self.now + self.offset_ms + rtt_ms // 2
        self.now += rtt_ms
        return self.feed(HelloOk(self.bridge_id(), hello.id, bridge_t, bridge_t, heartbeat_ms))

    def disconnect(self) -> None:
        self.take(self.core.on_disconnected(self.now))

    def deliver(self, prompt: PromptCopy, frame_id: str | None = None) -> list[Message]:
        return self.feed(PromptDeliver(frame_id or self.bridge_id(), prompt))

    def cancel(self, prompt_id: str, frame_id: str | None = None, reason: str = "cancelled") -> list[Message]:
        return self.feed(PromptCancel(frame_id or self.bridge_id(), prompt_id, reason))

    def ack(self, of: str) -> list[Message]:
        return self.feed(Ack(self.bridge_id(), of))

    def request_state(self) -> list[Message]:
        return self.feed(StateRequest(self.bridge_id()))

    def advance(self, ms: int) -> list[Message]:
        self.now += ms
        return self.take(self.core.tick(self.now))

    def run_until(self, until_ms: int) -> list[Message]:
        """Tick at every deadline up to ``until_ms`` (what the host's timer does)."""
        out: list[Message] = []
        for _ in range(10_000):
            deadline = self.core.next_deadline_ms()
            if deadline is None or deadline > until_ms:
                break
            self.now = max(self.now, deadline)
            out.extend(self.take(self.core.tick(self.now)))
        self.now = max(self.now, until_ms)
        out.extend(self.take(self.core.tick(self.now)))
        return out

    def shown(self, prompt_id: str) -> list[Message]:
        return self.take(self.core.on_shown(prompt_id, self.now))

    def answer(self, prompt_id: str, answer: str) -> list[Message]:
        return self.take(self.core.on_user_answer(prompt_id, answer, self.now))

    def no_user(self, prompt_id: str) -> list[Message]:
        return self.take(self.core.on_no_user(prompt_id, self.now))

    def no_answer(self, prompt_id: str) -> list[Message]:
        return self.take(self.core.on_no_answer(prompt_id, self.now))

    # --- reading what happened -----------------------------------------------------------------

    def shows(self, prompt_id: str | None = None) -> list[Show]:
        return [d for d in self.display if isinstance(d, Show) and prompt_id in (None, d.prompt.prompt_id)]

    def withdraws(self) -> list[Withdraw]:
        return [d for d in self.display if isinstance(d, Withdraw)]

    def ack_all(self, messages: list[Message]) -> None:
        for m in messages:
            if m.TYPE in ("prompt.receipt", "prompt.update", "state.report"):
                self.ack(m.id)


def of_type(messages: list[Message], frame_type: str) -> list[Message]:
    return [m for m in messages if frame_type == m.TYPE]


# --- the real agent as a process ----------------------------------------------------------------

PRESENTER = """\
import json, os, pathlib, sys, time
prompt = json.load(sys.stdin)
here = pathlib.Path(__file__).parent
with open(here / "presented.jsonl", "a") as f:
    f.write(json.dumps({"prompt": prompt, "pid": os.getpid()}) + "\\n")
answer = (here / "answer").read_text().strip()
if answer.startswith("after-go:"):
    while not (here / "go").exists():
        time.sleep(0.02)
    answer = answer.split(":", 1)[1]
if answer == "hang":
    time.sleep(600)
elif answer != "none":
    print(answer, flush=True)
"""


class Agent:
    """``python -m agent`` in a subprocess with its own state dir and presenter program."""

    def __init__(
        self,
        tmp: Path,
        *,
        presenter: str | None = None,
        display: str | None = None,
        run_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = env or {}  # more environment for ``run`` (a PATH with a fake loginctl, LANG)
        self.presenter = presenter  # None: the exec program below, answering from a file
        self.display = display  # the X display for the tk presenter
        self.run_args = run_args  # more ``caisey-agent run`` options (e.g. --unattended)
        self.state = tmp / "state"
        self.presenter_dir = tmp / "presenter"
        self.presenter_dir.mkdir()
        (self.presenter_dir / "ask.py").write_text(PRESENTER)
        self.answer("approve")
        self.log = tmp / "agent.log"
        self.proc: asyncio.subprocess.Process | None = None

    def answer(self, word: str) -> None:
        (self.presenter_dir / "answer").write_text(word)

    def presented(self) -> list[dict[str, Any]]:
        path = self.presenter_dir / "presented.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def presenter_spec(self) -> str:
        if self.presenter is not None:
            return self.presenter
        return "exec:" + shlex.join([sys.executable, str(self.presenter_dir / "ask.py")])

    async def cli(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            *args,
            "--state-dir",
            str(self.state),
            cwd=ROOT,
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        assert proc.returncode is not None
        return proc.returncode, out.decode() + err.decode()

    async def enroll(self, bridge_url: str, token: str) -> None:
        code, output = await self.cli("enroll", "--bridge", bridge_url, "--token", token)
        assert code == 0, output

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
            "--log-level",
            "DEBUG",
            *self.run_args,
            stdin=asyncio.subprocess.DEVNULL,  # a service: no TTY (the terminal presenter finds no user)
            cwd=ROOT,
            env=_env() | ({"DISPLAY": self.display} if self.display else {}) | self.env,
            stdout=log,
            stderr=log,
        )
        log.close()

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError("agent did not stop on SIGTERM") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DISPLAY", None)
    env.pop("CAISEY_AGENT_HOME", None)
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state where /proc exists.
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        return "zombie" not in status.read_text()
    return True
