"""The approval window's indicator the agent runs as a child process (``agent.indicator``).

Reads ``{prompt_id, title, requested_by, minutes, ends_at_local_ms}`` on stdin and shows a
small always-on-top window: "Access granted: <title> — until 10:35" and a Revoke button,
which prints ``revoke`` on stdout. It closes itself when the time is up or the agent is gone.
Exit code 3: no display.
"""

from __future__ import annotations

import json
import os
import sys
import time

EXIT_NO_DISPLAY = 3


def main() -> int:
    window = json.loads(sys.stdin.read())
    try:
        import tkinter as tk
    except ImportError:
        return EXIT_NO_DISPLAY
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        sys.stderr.write(f"caisey indicator: cannot open a window: {exc}\n")
        return EXIT_NO_DISPLAY
    ends_at_local_ms = int(window["ends_at_local_ms"])
    until = time.strftime("%H:%M", time.localtime(ends_at_local_ms / 1000))
    root.title("Caisey — access granted")
    root.attributes("-topmost", True)
    root.resizable(False, False)
    frame = tk.Frame(root, padx=12, pady=8)
    frame.pack(fill="both", expand=True)
    who = f" to {window['requested_by']}" if window.get("requested_by") else ""
    tk.Label(frame, text=f"Access granted{who}: {window['title']}", wraplength=360, justify="left").pack(anchor="w")
    left = tk.Label(frame, text=f"until {until}", fg="#444")
    left.pack(anchor="w", pady=(4, 0))

    def revoke() -> None:
        sys.stdout.write("revoke\n")
        sys.stdout.flush()
        root.destroy()

    tk.Button(frame, text="Revoke", width=10, command=revoke).pack(anchor="e", pady=(6, 0))
    root.protocol("WM_DELETE_WINDOW", lambda: root.iconify())  # closing it is not revoking
    agent_pid = os.getppid()

    def tick() -> None:
        remaining_s = (ends_at_local_ms - int(time.time() * 1000)) // 1000
        if remaining_s <= 0 or os.getppid() != agent_pid:
            root.destroy()
            return
        left.configure(text=f"until {until} ({remaining_s // 60}:{remaining_s % 60:02d} left)")
        root.after(1000, tick)

    tick()
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
