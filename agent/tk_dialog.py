"""The approval dialog the ``tk`` presenter runs as a child process.

Reads the prompt JSON (``agent.presenters.prompt_json``) on stdin and speaks a line protocol
on stdout: ``shown`` once the window is mapped, then one of ``approve``, ``deny`` or
``dismiss`` (window closed). The text is the one the agent rendered in the user's language
(``rendered``: ``agent.templates``), line for line, with the brand's logo when the prompt has
one (``tk.PhotoImage(data=…)``). It exits silently when the time is up, and with code 3 when no
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


def _english(prompt: dict[str, Any]) -> dict[str, Any]:
    """The dialog's text when the agent sent none rendered (an older agent's JSON)."""
    lines = [{"role": "title", "text": prompt["title"]}]
    if prompt.get("message"):
        lines.append({"role": "message", "text": prompt["message"]})
    lines.append({"role": "action", "text": f"Action: {prompt['action']}"})
    if prompt.get("requested_by"):
        lines.append({"role": "requested_by", "text": f"Requested by: {prompt['requested_by']}"})
    return {
        "window_title": "Caisey — approval requested",
        "lines": lines,
        "approve": "Approve",
        "deny": "Deny",
        "time_left": "Time left: {time}",
    }


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

    rendered = prompt.get("rendered") or _english(prompt)
    root.title(f"Caisey — {rendered['window_title']}: {prompt['title']}"[:120])
    root.attributes("-topmost", True)
    root.resizable(False, False)
    frame = tk.Frame(root, padx=18, pady=14)
    frame.pack(fill="both", expand=True)
    heading = tkfont.nametofont("TkDefaultFont").copy()
    heading.configure(size=heading.cget("size") + 3, weight="bold")
    brand_font = tkfont.nametofont("TkDefaultFont").copy()
    brand_font.configure(weight="bold")
    logo = None
    if prompt.get("brand_logo_png"):
        try:
            logo = tk.PhotoImage(data=prompt["brand_logo_png"])
        except tk.TclError as exc:  # not an image Tk can read: the name alone
            sys.stderr.write(f"caisey tk dialog: brand logo not shown: {exc}\n")
    # Exactly the lines the agent rendered (and hashes as the text shown), in their order.
    detail_lines: list[str] = []
    for line in rendered["lines"]:
        role, text = line["role"], line["text"]
        if role == "brand":
            row = tk.Frame(frame)
            row.pack(anchor="w", pady=(0, 8))
            if logo is not None:
                tk.Label(row, image=logo).pack(side="left", padx=(0, 8))
            tk.Label(row, text=text, font=brand_font).pack(side="left")
        elif role == "heading":
            tk.Label(frame, text=text, wraplength=460, justify="left").pack(anchor="w")
        elif role == "title":
            tk.Label(frame, text=text, font=heading, wraplength=460, justify="left").pack(anchor="w", pady=(4, 0))
        elif role in ("message", "why", "ticket"):
            colour = "#000" if role == "message" else "#124"
            tk.Label(frame, text=text, wraplength=460, justify="left", fg=colour).pack(anchor="w", pady=(8, 0))
        else:
            detail_lines.append(text)
    if detail_lines:
        tk.Label(frame, text="\n".join(detail_lines), justify="left", fg="#444").pack(anchor="w", pady=(8, 0))
    if logo is not None and not any(line["role"] == "brand" for line in rendered["lines"]):
        tk.Label(frame, image=logo).pack(anchor="w", pady=(8, 0))
    left = tk.Label(frame, text="", fg="#a33")
    left.pack(anchor="w", pady=(8, 0))
    grant = _window_choice(tk, frame, prompt.get("grant_minutes"))
    buttons = tk.Frame(frame, pady=10)
    buttons.pack(anchor="e")
    deny = tk.Button(buttons, text=rendered["deny"], width=10, command=lambda: _answer(root, "deny"))
    approve = tk.Button(buttons, text=rendered["approve"], width=10, command=lambda: _answer(root, grant()))
    deny.pack(side="left", padx=(0, 8))
    approve.pack(side="left")
    root.protocol("WM_DELETE_WINDOW", lambda: _answer(root, "dismiss"))
    root.bind("<Escape>", lambda _e: _answer(root, "dismiss"))
    root.bind("a", lambda _e: _answer(root, grant()))
    root.bind("d", lambda _e: _answer(root, "deny"))

    expires_at_local_ms = int(prompt.get("expires_at_local_ms") or prompt["expires_at_ms"])
    agent_pid = os.getppid()
    time_left = str(rendered["time_left"])

    def countdown() -> None:
        remaining_s = (expires_at_local_ms - int(time.time() * 1000)) // 1000
        if remaining_s <= 0 or os.getppid() != agent_pid:
            # Expired (the agent closes it) or the agent died (its successor shows the prompt
            # again): either way this window must not stay up with nobody to hear the answer.
            root.destroy()
            return
        left.configure(text=time_left.replace("{time}", f"{remaining_s // 60}:{remaining_s % 60:02d}"))
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
