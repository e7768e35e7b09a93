"""The approval window's indicator (DESIGN §13): while a window is active and a display is
there, a small always-on-top window says who has access until when, with a Revoke button.

Like the dialog, it is a child process (``agent.tk_indicator``): it reads the window as JSON
on stdin and prints ``revoke`` when the button is pressed; the agent takes it down (kills
it) when the window ends or is revoked. Without tk or a display there is no indicator, and
``caisey-agent revoke`` is the way to revoke.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable

from agent.presenters import _Child, has_display, tk_available
from agent.windows import WindowGone, WindowShown

log = logging.getLogger("caisey.agent.indicator")


class Indicators:
    """One indicator child per active window; ``revoke(prompt_id)`` when its button is pressed."""

    def __init__(self, revoke: Callable[[str], None], *, enabled: bool) -> None:
        self._revoke = revoke
        self.enabled = enabled
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def apply(self, command: WindowShown | WindowGone) -> None:
        if isinstance(command, WindowGone):
            task = self._tasks.pop(command.prompt_id, None)
            if task is not None:
                task.cancel()
            return
        pid = command.window.prompt_id
        if not self.enabled or pid in self._tasks or not (has_display() and tk_available()):
            return
        self._tasks[pid] = asyncio.get_running_loop().create_task(self._show(command), name=f"indicator-{pid}")

    async def _show(self, command: WindowShown) -> None:
        window = command.window
        payload = json.dumps(
            {
                "prompt_id": window.prompt_id,
                "title": window.title,
                "requested_by": window.requested_by,
                "minutes": window.minutes,
                "ends_at_local_ms": command.ends_at_local_ms,
            },
            ensure_ascii=False,
        ).encode("utf-8")
        try:
            child = await _Child.start([sys.executable, "-m", "agent.tk_indicator"], payload)
        except OSError as exc:
            log.warning("cannot start the window indicator: %s", exc)
            return
        assert child.proc.stdout is not None
        try:
            while True:
                line = await child.proc.stdout.readline()
                if not line:
                    break
                if line.strip() == b"revoke":
                    log.info("prompt %s: the user pressed Revoke", window.prompt_id)
                    self._revoke(window.prompt_id)
                    break
        except asyncio.CancelledError:
            await asyncio.shield(child.stop())
            raise
        await child.stop()
        if self._tasks.get(window.prompt_id) is asyncio.current_task():
            del self._tasks[window.prompt_id]

    async def close_all(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["Indicators"]
