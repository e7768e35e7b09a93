"""Presenters: exec:PROGRAM, terminal over a pty, the tk dialog under Xvfb, auto (DESIGN §6)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.core import Show
from agent.presenters import (
    AutoPresenter,
    ExecPresenter,
    TerminalPresenter,
    TkPresenter,
    make_presenter,
    prompt_json,
    stop_finishing_programs,
)
from tests.agent_harness import make_prompt
from tests.xvfb import click_approve as _click_approve
from tests.xvfb import dialog_window as _dialog_window
from tests.xvfb import xdotool as _xdotool

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
async def _reap_programs() -> AsyncIterator[None]:
    """Programs finishing after their answer are stopped before the test's loop closes."""
    yield
    await stop_finishing_programs()


def _show(expires_in_ms: int = 120_000) -> Show:
    t = int(time.time() * 1000)
    return Show(make_prompt("P1", expires_at_ms=t + expires_in_ms), t + expires_in_ms)


def _program(tmp_path: Path, body: str) -> str:
    script = tmp_path / "program.py"
    script.write_text("import json, sys, time\nprompt = json.load(sys.stdin)\n" + body)
    return f"{sys.executable} {script}"


class Shown:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


# --- exec:PROGRAM ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "outcome"),
    [
        ("print('approve')", "approve"),
        ("print('deny')", "deny"),
        ("print('dismiss')", "dismiss"),
        ("print('  Approve  because the user said so'); time.sleep(0.2)", "approve"),
        ("pass", "none"),
        ("print('perhaps')", "none"),
        ("sys.exit(3)", "none"),
    ],
)
async def test_exec_first_word_is_the_answer(tmp_path: Path, output: str, outcome: str) -> None:
    shown = Shown()
    presenter = ExecPresenter(_program(tmp_path, output))
    assert await presenter.present(_show(), shown) == outcome
    assert shown.count == 1


async def test_exec_gets_the_prompt_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    presenter = ExecPresenter(_program(tmp_path, f"open({str(out)!r}, 'w').write(json.dumps(prompt)); print('deny')"))
    show = _show()
    assert await presenter.present(show, Shown()) == "deny"
    got = json.loads(out.read_text())
    assert got == prompt_json(show)
    for key in ("prompt_id", "title", "message", "action", "expires_at", "expires_at_ms", "requested_by", "on_no_user"):
        assert key in got
    assert got["expires_at"].endswith("Z")


async def test_exec_program_that_cannot_start_leaves_the_prompt_waiting(tmp_path: Path) -> None:
    shown = Shown()
    assert await ExecPresenter(str(tmp_path / "missing-program")).present(_show(), shown) == "none"
    assert shown.count == 0


async def test_withdrawing_kills_the_program_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    body = (
        "import os, subprocess\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)\n"
    )
    task = asyncio.get_running_loop().create_task(ExecPresenter(_program(tmp_path, body)).present(_show(), Shown()))
    for _ in range(200):
        if pids.exists() and pids.read_text().strip():
            break
        await asyncio.sleep(0.02)
    parent, child = (int(p) for p in pids.read_text().split())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not _alive(parent) and not _alive(child):
            break
        await asyncio.sleep(0.02)
    assert not _alive(parent) and not _alive(child)


def test_make_presenter_specs() -> None:
    assert isinstance(make_presenter("exec:/bin/true --flag"), ExecPresenter)
    assert make_presenter("exec:'/opt/my tool/ask' -x").argv == ["/opt/my tool/ask", "-x"]  # type: ignore[attr-defined]
    assert isinstance(make_presenter("terminal"), TerminalPresenter)
    assert isinstance(make_presenter("tk"), TkPresenter)
    assert isinstance(make_presenter("auto"), AutoPresenter)
    for bad in ("exec:", "window", ""):
        with pytest.raises(ValueError):
            make_presenter(bad)


# --- terminal over a pty -------------------------------------------------------------------------


@pytest.fixture
def terminal() -> Iterator[tuple[TerminalPresenter, int]]:
    master, slave = pty.openpty()
    stdin = os.fdopen(slave, "r", buffering=1)
    stdout = os.fdopen(os.dup(slave), "w", buffering=1)
    yield TerminalPresenter(stdin=stdin, stdout=stdout), master
    stdout.close()
    os.close(master)  # the reader thread sees EOF/EIO and ends
    with contextlib.suppress(OSError):
        stdin.close()


async def _read_until(master: int, text: str, timeout: float = 5.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not printed; got {seen!r}")
        with contextlib.suppress(BlockingIOError):
            seen += await asyncio.to_thread(os.read, master, 4096)
    return seen.decode(errors="replace")


@pytest.mark.parametrize(("typed", "outcome"), [("a", "approve"), ("deny", "deny"), ("x", "dismiss")])
async def test_terminal_prints_the_prompt_and_reads_the_answer(
    terminal: tuple[TerminalPresenter, int], typed: str, outcome: str
) -> None:
    presenter, master = terminal
    shown = Shown()
    task = asyncio.get_running_loop().create_task(presenter.present(_show(), shown))
    printed = await _read_until(master, "[x] dismiss")
    assert "Allow remote control?" in printed and "Requested by: alex" in printed
    assert re.search(r"Time left: (1m 5\ds|2m 00s)", printed), printed
    assert shown.count == 1
    os.write(master, b"what?\n")
    await _read_until(master, "Please type")
    os.write(master, typed.encode() + b"\n")
    assert await asyncio.wait_for(task, 5) == outcome


async def test_terminal_withdraw_says_so(terminal: tuple[TerminalPresenter, int]) -> None:
    presenter, master = terminal
    task = asyncio.get_running_loop().create_task(presenter.present(_show(), Shown()))
    await _read_until(master, "[x] dismiss")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _read_until(master, "withdrawn")


async def test_terminal_without_a_tty_means_no_user(tmp_path: Path) -> None:
    with open(tmp_path / "in", "w+") as stdin:
        assert await TerminalPresenter(stdin=stdin, stdout=sys.stdout).present(_show(), Shown()) == "no_user"


async def test_auto_without_display_or_tty_means_no_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with open(tmp_path / "in", "w+") as stdin:
        auto = AutoPresenter(TerminalPresenter(stdin=stdin, stdout=sys.stdout))
        if sys.platform.startswith("linux"):
            assert await auto.present(_show(), Shown()) == "no_user"


# --- the tk dialog, under Xvfb --------------------------------------------------------------------


@pytest.mark.parametrize("action", ["click-approve", "key-d", "escape"])
async def test_tk_dialog_shows_and_answers(xdisplay: str, action: str) -> None:
    shown = Shown()
    task = asyncio.get_running_loop().create_task(TkPresenter().present(_show(), shown))
    window = await _dialog_window()
    for _ in range(100):
        if shown.count:
            break
        await asyncio.sleep(0.05)
    assert shown.count == 1
    if action == "click-approve":
        await _click_approve(window)
        expected = "approve"
    elif action == "key-d":
        await _xdotool("windowfocus", "--sync", window, "key", "d")
        expected = "deny"
    else:
        await _xdotool("windowfocus", "--sync", window, "key", "Escape")
        expected = "dismiss"
    assert await asyncio.wait_for(task, 10) == expected


async def test_tk_dialog_is_withdrawn_on_cancel(xdisplay: str) -> None:
    task = asyncio.get_running_loop().create_task(TkPresenter().present(_show(), Shown()))
    await _dialog_window()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not (await _xdotool("search", "--name", "Caisey")).split():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the dialog stayed up after withdraw")


async def test_tk_without_a_display_means_no_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":9999")  # nothing listens there
    assert await TkPresenter().present(_show(), Shown()) == "no_user"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    return True
