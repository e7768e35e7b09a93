"""How a prompt reaches a person (DESIGN §6 presenters).

A presenter is one coroutine, ``present(show, shown) -> outcome``. It calls ``shown()`` once
the prompt is in front of the user and returns:

- ``approve`` / ``deny`` — the user's decision;
- ``dismiss`` — seen, closed without a choice;
- ``none``    — finished without an answer (the prompt keeps waiting);
- ``no_user`` — nobody interactive can be asked: the prompt's ``on_no_user`` policy applies.

The host cancels the coroutine to withdraw the dialog (cancel, supersede, expiry); every
presenter takes its dialog down on cancellation. Presenters never block the event loop: the
tk dialog and ``exec:`` programs run as child processes, the terminal is read by a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, TextIO

from agent.core import Show
from agent.templates import Rendered, render
from agent.windows import Grant, grant_of
from caisey.clock import to_rfc3339
from caisey.text import neutralise

log = logging.getLogger("caisey.agent.presenter")

Outcome = Literal["approve", "deny", "dismiss", "none", "no_user"]
WORDS: dict[str, Outcome] = {"approve": "approve", "deny": "deny", "dismiss": "dismiss"}
# The first word is all we read of an exec program's output; more is its own business.
MAX_PROGRAM_OUTPUT_BYTES = 4096
# After its answer a program may finish its own work; then it is stopped.
PROGRAM_GRACE_S = 5.0
# Typed-ahead terminal lines kept; more are dropped (someone leaning on the keyboard).
MAX_TERMINAL_LINES = 64
# tk_dialog exit code: no display could be opened.
EXIT_NO_DISPLAY = 3


class Presenter(Protocol):
    name: str

    # ``Grant``: approve, shortening the approval window asked for (DESIGN §13).
    async def present(self, show: Show, shown: Callable[[], None]) -> Outcome | Grant: ...


def answer_of(word: str) -> Outcome | Grant | None:
    """A presenter program's answer word: approve, deny, dismiss or ``approve:MINUTES``."""
    return WORDS.get(word) or grant_of(word)


@dataclass(frozen=True, slots=True)
class Showing(Show):
    """A ``Show`` with the text to show, rendered in the user's language (``agent.templates``)
    by the runner, which reports that exact text as the evidence of display."""

    rendered: Rendered | None = None


def rendering(show: Show) -> Rendered:
    """The text ``show`` is to be shown with (English when the runner rendered none)."""
    rendered = show.rendered if isinstance(show, Showing) else None
    return rendered if rendered is not None else render(show.prompt, None)


def kind_of(presenter: object) -> str:
    """Which presenter kind (``caisey.wire.PRESENTER_KINDS``) showed the last prompt."""
    kind = getattr(presenter, "kind", None) or getattr(presenter, "name", None)
    return kind if kind in ("tk", "terminal", "exec") else "none"


def prompt_json(show: Show) -> dict[str, object]:
    """The prompt as an ``exec:`` program (and the tk dialog) receive it on stdin.

    Texts are neutralised (``caisey.text``): the bridge refuses control characters, but a
    malicious or older bridge can still send them, and a program may print what it gets."""
    p = show.prompt
    return {
        "prompt_id": p.prompt_id,
        "title": neutralise(p.title),
        "message": neutralise(p.message, multiline=True),
        "action": neutralise(p.action),
        "requested_by": neutralise(p.requested_by),
        "on_no_user": p.on_no_user,
        "created_at": to_rfc3339(p.created_at_ms),
        "expires_at": to_rfc3339(p.expires_at_ms),
        "expires_at_ms": p.expires_at_ms,
        # The same moment on this machine's clock (bridge time corrected by the offset).
        "expires_at_local_ms": show.expires_at_local_ms,
        # Issue 16: the optional fields the prompt has, and the text to show in the user's
        # language (the tk dialog shows exactly ``rendered``).
        **{
            name: neutralise(value, multiline=name == "reason")
            for name, value in (
                ("reason", p.reason),
                ("ticket_id", p.ticket_id),
                ("ticket_url", p.ticket_url),
                ("brand_name", p.brand_name),
            )
            if value is not None
        },
        **({"brand_logo_png": p.brand_logo_png} if p.brand_logo_png is not None else {}),  # base64 PNG (wire-checked)
        "rendered": rendering(show).to_json(),
        # The approval window asked for, in minutes (DESIGN §13); the user may grant less.
        "grant_minutes": p.grant_minutes,
    }


def has_display() -> bool:
    """Whether a graphical session is there to show a dialog in."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def tk_available() -> bool:
    return importlib.util.find_spec("tkinter") is not None


# --- child processes ---------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` asking the kernel to SIGKILL the child when the agent dies.

    Without it a kill -9 of the agent would leave its dialog on screen; the restarted agent
    shows the prompt again and the user would see two. libc is resolved here, in the
    parent, so the forked child only makes one system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


_PREEXEC = _die_with_parent()


class _Child:
    """A presenter's child process: started in its own process group, stopped as a group,
    and (on Linux) killed by the kernel if the agent dies first."""

    _background: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, argv: list[str], payload: bytes) -> _Child:
        kwargs: dict[str, object] = {}
        if sys.platform != "win32":
            kwargs["start_new_session"] = True
        if _PREEXEC is not None:
            kwargs["preexec_fn"] = _PREEXEC
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            **kwargs,  # type: ignore[arg-type]
        )
        child = cls(proc)
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload)
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            log.info("presenter program %s did not read its stdin", argv[0])
        return child

    def kill(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sys.platform != "win32":
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Ask it to end (SIGTERM), then SIGKILL the group after ``grace_s``."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if sys.platform != "win32":
                    os.killpg(self.proc.pid, signal.SIGTERM)
                else:
                    self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                self.kill()
        # Reap the group leader even after SIGKILL so no zombie stays behind.
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()

    def finish_in_background(self, grace_s: float) -> None:
        """The answer is in; let the program end on its own for a while, then stop it."""

        async def finish() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace_s)
            except TimeoutError:
                await self.stop()
            except asyncio.CancelledError:
                await self.stop(grace_s=0.2)  # the agent is shutting down
                raise

        task = asyncio.get_running_loop().create_task(finish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def stop_finishing_programs() -> None:
    """At shutdown: stop programs still finishing after their answer, and reap them."""
    tasks = list(_Child._background)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _first_word(stream: asyncio.StreamReader) -> str | None:
    """The first whitespace-delimited word a program prints, once it is complete."""
    buffer = b""
    while len(buffer) < MAX_PROGRAM_OUTPUT_BYTES:
        chunk = await stream.read(1024)
        if not chunk:
            break
        buffer += chunk
        stripped = buffer.lstrip()
        if stripped and (len(stripped.split(maxsplit=1)) == 2 or stripped[-1:].isspace()):
            break
    words = buffer[:MAX_PROGRAM_OUTPUT_BYTES].split()
    return words[0].decode("utf-8", "replace").lower() if words else None


class ExecPresenter:
    """``exec:PROGRAM`` — PROGRAM runs once per display with the prompt JSON on stdin; the
    first word it prints (approve, deny, dismiss) is the answer; no output leaves the prompt
    waiting. PROGRAM is split like a shell command line (no shell runs it)."""

    name = "exec"
    kind = "exec"

    def __init__(self, program: str) -> None:
        self.argv = shlex.split(program, posix=sys.platform != "win32")
        if not self.argv:
            raise ValueError("exec: needs a program, e.g. exec:/usr/local/bin/ask-user")

    async def present(self, show: Show, shown: Callable[[], None]) -> Outcome | Grant:
        payload = json.dumps(prompt_json(show), ensure_ascii=False).encode("utf-8")
        try:
            child = await _Child.start(self.argv, payload)
        except OSError as exc:
            log.error("cannot start presenter program %s: %s", self.argv[0], exc)
            return "none"
        shown()
        try:
            assert child.proc.stdout is not None
            word = await _first_word(child.proc.stdout)
        except asyncio.CancelledError:
            await asyncio.shield(child.stop())
            raise
        if word is None:
            await child.proc.wait()
            log.info("presenter program gave no answer for %s (exit %s)", show.prompt.prompt_id, child.proc.returncode)
            return "none"
        child.finish_in_background(PROGRAM_GRACE_S)
        outcome = answer_of(word)
        if outcome is None:
            log.warning("presenter program printed %r, not approve/deny/dismiss; the prompt waits", word[:40])
            return "none"
        return outcome


class TkPresenter:
    """A real dialog (``agent.tk_dialog``) in a child process, so a stuck GUI cannot stall
    the agent and a withdraw is a kill. ``no_user`` when there is no display to open."""

    name = "tk"
    kind = "tk"

    async def present(self, show: Show, shown: Callable[[], None]) -> Outcome | Grant:
        if not has_display() or not tk_available():
            return "no_user"
        payload = json.dumps(prompt_json(show), ensure_ascii=False).encode("utf-8")
        argv = [sys.executable, "-m", "agent.tk_dialog"]
        try:
            child = await _Child.start(argv, payload)
        except OSError as exc:
            log.error("cannot start the tk dialog: %s", exc)
            return "no_user"
        assert child.proc.stdout is not None
        try:
            while True:
                line = await child.proc.stdout.readline()
                if not line:
                    break
                word = line.decode("utf-8", "replace").strip().lower()
                if word == "shown":
                    shown()
                elif (answer := answer_of(word)) is not None:
                    child.finish_in_background(PROGRAM_GRACE_S)
                    return answer
        except asyncio.CancelledError:
            await asyncio.shield(child.stop())
            raise
        code = await child.proc.wait()
        if code == EXIT_NO_DISPLAY:
            return "no_user"
        return "none"


class TerminalPresenter:
    """Prints the prompt and reads ``a`` (approve), ``d`` (deny) or ``x`` (dismiss).

    Works over a pty (ssh, a console session). Not a TTY → ``no_user``. stdin is read by one
    daemon thread for the agent's life, so the event loop never blocks on it."""

    name = "terminal"
    kind = "terminal"

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._lines: asyncio.Queue[str | None] | None = None

    def _reader(self) -> asyncio.Queue[str | None]:
        if self._lines is None:
            queue: asyncio.Queue[str | None] = asyncio.Queue(MAX_TERMINAL_LINES)
            loop = asyncio.get_running_loop()

            def put(line: str | None) -> None:
                if not queue.full():
                    queue.put_nowait(line)

            def read() -> None:
                try:
                    for line in self._stdin:
                        loop.call_soon_threadsafe(put, line)
                except (OSError, ValueError) as exc:  # closed or unreadable terminal
                    log.info("terminal input ended: %s", exc)
                with contextlib.suppress(RuntimeError):  # the loop may be closed at exit
                    loop.call_soon_threadsafe(put, None)

            threading.Thread(target=read, name="caisey-terminal", daemon=True).start()
            self._lines = queue
        return self._lines

    def _write(self, text: str) -> None:
        self._stdout.write(text)
        self._stdout.flush()

    async def present(self, show: Show, shown: Callable[[], None]) -> Outcome:
        if not self._stdin.isatty():
            return "no_user"
        lines = self._reader()
        while not lines.empty():  # typed before this prompt: not an answer to it
            if lines.get_nowait() is None:
                return "none"
        left_s = max(0, (show.expires_at_local_ms - int(time.time() * 1000)) // 1000)
        # Rendered in the user's language (``agent.templates``), every text neutralised: an
        # escape sequence must not act on the user's terminal (hide the "requested by" line,
        # retitle the window, write the clipboard).
        rendered = rendering(show)
        left = rendered.time_left.replace("{time}", f"{left_s // 60}m {left_s % 60:02d}s")
        body = "\n".join(rendered.lines)
        self._write(f"\n=== {rendered.window_title} ===\n{body}\n  {left}\n{rendered.keys}: ")
        shown()
        try:
            while True:
                line = await lines.get()
                if line is None:
                    return "none"
                answer = line.strip().lower()
                if answer in ("a", "approve", "y", "yes"):
                    return "approve"
                if answer in ("d", "deny", "n", "no"):
                    return "deny"
                if answer in ("x", "dismiss"):
                    return "dismiss"
                self._write("Please type a (approve), d (deny) or x (dismiss): ")
        except asyncio.CancelledError:
            self._write("\n[prompt withdrawn]\n")
            raise


class AutoPresenter:
    """tk when a display is there, else the terminal when stdin is a TTY, else ``no_user``."""

    name = "auto"

    def __init__(self, terminal: TerminalPresenter | None = None) -> None:
        self._tk = TkPresenter()
        self._terminal = terminal or TerminalPresenter()
        self.kind = "none"  # the one that showed the last prompt (``kind_of``)

    async def present(self, show: Show, shown: Callable[[], None]) -> Outcome | Grant:
        if has_display() and tk_available():
            self.kind = "tk"
            outcome = await self._tk.present(show, shown)
            if outcome != "no_user":
                return outcome
        self.kind = "terminal"
        outcome = await self._terminal.present(show, shown)
        if outcome == "no_user":
            self.kind = "none"
        return outcome


def make_presenter(spec: str) -> Presenter:
    """``auto`` | ``tk`` | ``terminal`` | ``exec:PROGRAM`` → a presenter."""
    if spec == "auto":
        return AutoPresenter()
    if spec == "tk":
        return TkPresenter()
    if spec == "terminal":
        return TerminalPresenter()
    if spec.startswith("exec:"):
        return ExecPresenter(spec[len("exec:") :])
    raise ValueError(f"unknown presenter {spec!r}: use auto, tk, terminal or exec:PROGRAM")
