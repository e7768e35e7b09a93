"""A virtual screen for the tk dialog tests: Xvfb on a free display, driven with xdotool."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest


@pytest.fixture
async def xdisplay(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    # Missing tools are a broken setup, not a reason to pass quietly.
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.fail("needs Xvfb and xdotool: run scripts/setup (it installs Debian's xvfb and xdotool)")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.fail("needs tkinter: run scripts/setup (it installs python3-tk)")
    for number in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    display = f":{number}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        await asyncio.sleep(0.05)
    monkeypatch.setenv("DISPLAY", display)
    yield display
    proc.terminate()
    proc.wait(5)


async def xdotool(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "xdotool", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode()


async def dialog_window() -> str:
    for _ in range(100):
        found = (await xdotool("search", "--name", "Caisey")).split()
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError("no Caisey window appeared")


async def click_approve(window: str) -> None:
    geometry = dict(
        line.split("=", 1) for line in (await xdotool("getwindowgeometry", "--shell", window)).split() if "=" in line
    )
    width, height = int(geometry["WIDTH"]), int(geometry["HEIGHT"])
    # Approve is the right-hand button in the bottom row (see agent/tk_dialog.py layout).
    await xdotool("mousemove", "--window", window, str(width - 77), str(height - 39), "click", "1")
