"""``caisey-agent revoke [PROMPT_ID]``: end the approval window(s) this endpoint granted
(DESIGN §13), from the command line.

The running agent does the revocation (it holds the key and the connection): this command
leaves a request in the agent's own store (``agent.windows.request_revoke``) — readable and
writable only by the agent's user, as the state directory is private — and waits for the
agent to take it (it looks every second), then says what was revoked. A request can only end
an active window; it cannot grant or extend anything.

Exit codes: 0 revoked; 1 nothing to revoke (or not enrolled); 2 queued but not applied yet
(the agent is not running, or did not take it within ``--wait`` seconds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import IO

from agent.store import DB_FILE, Store
from agent.windows import ALL, WindowRow, request_revoke, windows
from caisey.errors import ProtocolError
from caisey.text import neutralise
from caisey.wire import check_id

POLL_S = 0.2


def _until(row: WindowRow, offset_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime((row.ends_at_ms - offset_ms) / 1000))


def revoke(state_dir: Path, prompt_id: str | None, wait_s: float, running: bool, out: IO[str]) -> int:
    if not (state_dir / DB_FILE).exists():
        out.write(f"not enrolled (state dir {state_dir})\n")
        return 1
    if prompt_id is not None:
        try:
            check_id(prompt_id, "PROMPT_ID")
        except ProtocolError as exc:
            out.write(f"{exc.message}\n")
            return 1
    store = Store.open(state_dir)
    try:
        if store.meta_get("endpoint_id") is None:
            out.write(f"not enrolled (state dir {state_dir})\n")
            return 1
        offset = store.meta_int("offset_ms") or 0
        now = int(time.time() * 1000) + offset
        active = [w for w in windows(store.db, active_at_ms=now) if prompt_id in (None, w.prompt_id)]
        if not active:
            known = [w for w in windows(store.db) if w.prompt_id == prompt_id]
            if known:
                out.write(f"the approval window of {prompt_id} is already {known[0].state}\n")
            else:
                out.write("no active approval window" + (f" for prompt {prompt_id}" if prompt_id else "") + "\n")
            return 1
        with store.transaction():
            request_revoke(store.db, prompt_id or ALL, int(time.time() * 1000))
        if not running:
            out.write("the agent is not running: the revocation is queued, and is signed and sent when it starts\n")
            return 2
        deadline = time.monotonic() + wait_s
        wanted = {w.prompt_id for w in active}
        while time.monotonic() < deadline:
            states = {w.prompt_id: w for w in windows(store.db) if w.prompt_id in wanted}
            if all(w.state != "active" for w in states.values()):
                for w in states.values():
                    title = neutralise(w.title[:60])
                    by = "revoked" if w.state == "revoked" else w.state
                    out.write(f"{by}: {w.prompt_id}  {title}  (granted until {_until(w, offset)})\n")
                return 0
            time.sleep(POLL_S)
        out.write(f"the agent has not taken the request within {wait_s:g} s; it stays queued\n")
        return 2
    finally:
        store.close()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "revoke", parents=[common], help="end the approval window(s) this endpoint granted (all, or PROMPT_ID's)"
    )
    parser.add_argument("prompt_id", nargs="?", metavar="PROMPT_ID", help="only this prompt's window")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the agent (default 10)")


__all__ = ["add_parser", "revoke"]
