"""The approval dialog the ``tk`` presenter runs as a child process.

Reads the prompt JSON (``agent.presenters.prompt_json``) on stdin and speaks a line protocol
on stdout: ``shown`` once the window is mapped, then one of ``approve``, ``deny`` or
``dismiss`` (window closed). It exits silently when the time is up, and with code 3 when no
display can be opened. Keys: ``a`` approve, ``d`` deny, Escape dismiss.

A child process rather than a thread: Tk wants the main thread, a hung window manager
cannot stall the agent's event loop, and withdrawing the dialog is simply killing it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

EXIT_NO_DISPLAY = 3


def _answer(root: Any, word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()
    root.destroy()


# Shorter approval windows the user may choose (DESIGN §13), in minutes; never more than asked.
WINDOW_CHOICES = (5, 15, 30, 60, 120, 240, 480)


def window_choices(asked: int) -> list[int]:
    """The asked minutes first, then every shorter standard choice, longest first."""
    return [asked, *sorted((m for m in WINDOW_CHOICES if m < asked), reverse=True)]


def minutes_words(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h" + (f" {rest} min" if rest else "")


def _window_choice(tk: Any, frame: Any, asked: object) -> Any:
    """The "Access for" choice when the prompt asks for a window: what Approve answers."""
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        return lambda: "approve"
    choices = window_choices(asked)
    labels = {minutes_words(m): m for m in choices}
    chosen = tk.StringVar(value=minutes_words(asked))
    row = tk.Frame(frame)
    row.pack(anchor="w", pady=(8, 0))
    tk.Label(row, text="Access for:").pack(side="left")
    tk.OptionMenu(row, chosen, *labels).pack(side="left", padx=(6, 0))
    tk.Label(row, text=f"(asked: {minutes_words(asked)}; you can revoke it earlier)", fg="#444").pack(side="left")

    def answer() -> str:
        minutes = labels.get(chosen.get(), asked)
        return "approve" if minutes >= asked else f"approve:{minutes}"

    return answer


def main() -> int:
    prompt = json.loads(sys.stdin.read())
    try:
        import tkinter as tk
        from tkinter import font as tkfont
    except ImportError as exc:
        sys.stderr.write(f"caisey tk dialog: no Tk in this Python: {exc}\n")
        return EXIT_NO_DISPLAY
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        sys.stderr.write(f"caisey tk dialog: cannot open a window: {exc}\n")
        return EXIT_NO_DISPLAY

    root.title(f"Caisey — approval requested: {prompt['title']}"[:120])
    root.attributes("-topmost", True)
    root.resizable(False, False)
    frame = tk.Frame(root, padx=18, pady=14)
    frame.pack(fill="both", expand=True)
    heading = tkfont.nametofont("TkDefaultFont").copy()
    heading.configure(size=heading.cget("size") + 3, weight="bold")
    tk.Label(frame, text=prompt["title"], font=heading, wraplength=460, justify="left").pack(anchor="w")
    if prompt.get("message"):
        tk.Label(frame, text=prompt["message"], wraplength=460, justify="left").pack(anchor="w", pady=(8, 0))
    details = f"Action: {prompt['action']}"
    if prompt.get("requested_by"):
        details += f"\nRequested by: {prompt['requested_by']}"
    tk.Label(frame, text=details, justify="left", fg="#444").pack(anchor="w", pady=(8, 0))
    left = tk.Label(frame, text="", fg="#a33")
    left.pack(anchor="w", pady=(8, 0))
    grant = _window_choice(tk, frame, prompt.get("grant_minutes"))
    buttons = tk.Frame(frame, pady=10)
    buttons.pack(anchor="e")
    deny = tk.Button(buttons, text="Deny", width=10, command=lambda: _answer(root, "deny"))
    approve = tk.Button(buttons, text="Approve", width=10, command=lambda: _answer(root, grant()))
    deny.pack(side="left", padx=(0, 8))
    approve.pack(side="left")
    root.protocol("WM_DELETE_WINDOW", lambda: _answer(root, "dismiss"))
    root.bind("<Escape>", lambda _e: _answer(root, "dismiss"))
    root.bind("a", lambda _e: _answer(root, grant()))
    root.bind("d", lambda _e: _answer(root, "deny"))

    expires_at_local_ms = int(prompt.get("expires_at_local_ms") or prompt["expires_at_ms"])
    agent_pid = os.getppid()

    def countdown() -> None:
        remaining_s = (expires_at_local_ms - int(time.time() * 1000)) // 1000
        if remaining_s <= 0 or os.getppid() != agent_pid:
            # Expired (the agent closes it) or the agent died (its successor shows the prompt
            # again): either way this window must not stay up with nobody to hear the answer.
            root.destroy()
            return
        left.configure(text=f"Time left: {remaining_s // 60}:{remaining_s % 60:02d}")
        root.after(1000, countdown)

    shown = False

    def on_map(_event: object) -> None:
        nonlocal shown
        if not shown:
            shown = True
            sys.stdout.write("shown\n")
            sys.stdout.flush()
            root.lift()
            root.focus_force()

    root.bind("<Map>", on_map)
    countdown()
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
