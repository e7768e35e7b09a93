"""``caisey-agent``: enroll this endpoint, run the agent, show its state (DESIGN §6).

    caisey-agent enroll --bridge URL --token-file FILE|- [--state-dir DIR]
    caisey-agent run [--presenter auto|tk|terminal|exec:PROGRAM] [--unattended deny|approve|wait] [--state-dir DIR]
    caisey-agent status [--json] [--state-dir DIR]
    caisey-agent revoke [PROMPT_ID] [--wait S] [--state-dir DIR]

State lives in ``--state-dir``, else ``$CAISEY_AGENT_HOME``, else the platform's per-user
data directory (``platformdirs.user_data_dir("caisey-agent")``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp

from agent.connection import AgentRunner, agent_url, plaintext_warning
from agent.core import UNATTENDED_CAPS, AgentConfig, AgentCore
from agent.display import detect_locale
from agent.evidence import DisplayContext
from agent.identity import EndpointKey, key_path, load_key
from agent.localzone import local_zone_name
from agent.presenters import make_presenter
from agent.revoke_cli import add_parser as add_revoke_parser
from agent.revoke_cli import revoke
from agent.store import DB_FILE, LOCK_FILE, MAX_SECRET_BYTES, Store, StoreError, default_state_dir
from agent.windows import windows
from caisey.clock import to_rfc3339
from caisey.errors import ProtocolError
from caisey.text import neutralise
from caisey.wire import LOCKED_RULES, check_id

log = logging.getLogger("caisey.agent.cli")

# An enrollment token is well under this (``cse_<endpoint id>~<32 chars>``); a longer file is not one.
MAX_TOKEN_FILE_CHARS = 4096
# An enroll answer is two short strings; a larger body is not our bridge.
MAX_ENROLL_RESPONSE_BYTES = 64 * 1024
ENROLL_TIMEOUT_S = 30.0
# ``status`` calls the agent online when it heard from the bridge this recently.
ONLINE_WITHIN_MS = 60_000


class CliError(Exception):
    """A failure to report in one line, without a traceback."""


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_dir()


# --- enroll ----------------------------------------------------------------------------------


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body to its end, or its first ``limit + 1`` bytes when it is longer. ``read(n)`` alone
    returns only what has arrived: a gzip-compressed, chunked answer written in several pieces
    (workerd, Cloudflare's edge) would be cut short and look like bad JSON."""
    raw = bytearray()
    while len(raw) <= limit:
        chunk = await stream.read(limit + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


async def _exchange_token(bridge: str, token: str, public_key: str) -> tuple[str, str]:
    url = bridge.rstrip("/") + "/api/agent/enroll"
    timeout = aiohttp.ClientTimeout(total=ENROLL_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json={"enrollment_token": token, "public_key": public_key}) as response,
        ):
            raw = await _read_bounded(response.content, MAX_ENROLL_RESPONSE_BYTES)
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CliError(f"cannot reach the bridge at {url}: {exc or type(exc).__name__}") from None
    try:
        body = json.loads(raw) if len(raw) <= MAX_ENROLL_RESPONSE_BYTES else None
    except ValueError:
        body = None
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        detail = (
            f"{error.get('code')}: {error.get('message')}"
            if isinstance(error, dict)
            else raw[:200].decode(errors="replace")
        )
        raise CliError(f"enrollment refused ({status}) — {detail}")
    if not isinstance(body, dict):
        raise CliError(f"the bridge's answer is not a JSON object (status {status})")
    endpoint_id, secret = body.get("endpoint_id"), body.get("agent_secret")
    if not isinstance(endpoint_id, str) or not isinstance(secret, str) or not secret:
        raise CliError("the bridge's answer lacks endpoint_id or agent_secret")
    try:
        check_id(endpoint_id, "endpoint_id")
    except ProtocolError as exc:
        raise CliError(f"the bridge sent an unusable endpoint id: {exc.message}") from None
    if len(secret.encode()) > MAX_SECRET_BYTES or any(c.isspace() for c in secret):
        raise CliError("the bridge sent an unusable agent secret")
    return endpoint_id, secret


def _enrollment_token(args: argparse.Namespace, stdin: IO[str]) -> str:
    """The token from ``--token-file`` (``-``: stdin), or from ``--token`` with a warning: a
    command line is visible to every user of the machine (``ps``) while the command runs."""
    if args.token is not None:
        log.warning("--token puts the enrollment token in the process list; prefer --token-file FILE or -")
        return str(args.token).strip()
    try:
        if args.token_file == "-":
            text = stdin.read(MAX_TOKEN_FILE_CHARS + 1)
        else:
            with open(args.token_file, encoding="utf-8") as f:
                text = f.read(MAX_TOKEN_FILE_CHARS + 1)
    except OSError as exc:
        raise CliError(f"cannot read the enrollment token from {args.token_file}: {exc.strerror or exc}") from None
    token = text.strip()
    if len(text) > MAX_TOKEN_FILE_CHARS or not token or any(c.isspace() for c in token):
        raise CliError(f"{args.token_file} does not hold one enrollment token")
    return token


def cmd_enroll(args: argparse.Namespace, out: IO[str]) -> int:
    try:
        agent_url(args.bridge, "probe")  # validates the scheme before we spend the token
    except ValueError as exc:
        raise CliError(str(exc)) from None
    warning = plaintext_warning(args.bridge)
    if warning:
        log.warning(warning)
    token = _enrollment_token(args, sys.stdin)
    # A new endpoint key for every enrollment (DESIGN §10): its public half is registered in
    # the exchange; the private half never leaves this machine.
    key = EndpointKey.generate()
    endpoint_id, secret = asyncio.run(_exchange_token(args.bridge, token, key.public_key_b64))
    store = Store.open(_state_dir(args))
    try:
        previous = store.meta_get("endpoint_id")
        if previous is not None and previous != endpoint_id:
            # The held prompts belong to the other endpoint's bridge actor.
            log.warning("re-enrolling as %s (was %s): dropping the old endpoint's prompts", endpoint_id, previous)
            store.reset_prompts()
            store.meta_set("offset_ms", None)
        with store.transaction():
            store.meta_set("endpoint_id", endpoint_id)
            store.meta_set("bridge_url", args.bridge.rstrip("/"))
            store.meta_set("enrolled_at_ms", int(time.time() * 1000))
        path = store.write_secret(secret)
        key.write(key_path(_state_dir(args)))
    finally:
        store.close()
    out.write(
        f"enrolled as endpoint {endpoint_id}; secret stored in {path} (mode 0600); "
        f"endpoint key {key.key_id} signs this endpoint's answers\n"
    )
    return 0


# --- run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(state_dir: Path) -> Iterator[None]:
    """One ``run`` per state dir: two agents on one store would show every prompt twice."""
    handle = open(state_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the agent's life
    try:
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CliError(f"another caisey-agent run is using {state_dir}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _lock_held(state_dir: Path) -> bool:
    """Whether a ``run`` holds the state dir now (for ``status``)."""
    path = state_dir / LOCK_FILE
    if not path.exists():
        return False
    try:
        with _run_lock(state_dir):
            return False
    except CliError:
        return True


async def _serve(runner: AgentRunner) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
            loop.add_signal_handler(sig, stop.set)
    await runner.run(stop)


def cmd_run(args: argparse.Namespace, out: IO[str]) -> int:
    state_dir = _state_dir(args)
    try:
        presenter = make_presenter(args.presenter)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not (state_dir / DB_FILE).exists():
        raise CliError(f"no agent state in {state_dir}: run `caisey-agent enroll` first")
    store = Store.open(state_dir)
    try:
        with _run_lock(state_dir):
            endpoint_id = store.meta_get("endpoint_id")
            bridge = args.bridge or store.meta_get("bridge_url")
            if endpoint_id is None or bridge is None:
                raise CliError(f"{state_dir} is not enrolled: run `caisey-agent enroll` first")
            try:
                url = agent_url(bridge, endpoint_id)
            except ValueError as exc:
                raise CliError(str(exc)) from None
            warning = plaintext_warning(bridge)
            if warning:
                log.warning(warning)
            secret = store.read_secret()
            if args.unattended is not None:
                store.meta_set("unattended", args.unattended)  # kept for later runs (DESIGN §10)
            unattended = store.meta_get("unattended") or "deny"
            if args.locked is not None:
                store.meta_set("locked", args.locked)  # kept for later runs, like --unattended
            locked = store.meta_get("locked") or "wait"
            key = load_key(state_dir)
            if key is None:
                log.warning("no endpoint key in %s (enrolled before signing): answers are sent unsigned", state_dir)
            core = AgentCore(
                store,
                endpoint_id,
                config=AgentConfig(unattended=unattended),
                signer=key,
                time_zone=local_zone_name,
                locale=detect_locale,
            )
            # Templates dropped into <state dir>/templates add languages (DESIGN §13).
            display = DisplayContext(template_dirs=[state_dir / "templates"], locked_rule=locked)
            runner = AgentRunner(core, url=url, secret=secret, presenter=presenter, display=display)
            log.info(
                "caisey-agent for endpoint %s, bridge %s, presenter %s, unattended answers capped at %s, key %s",
                endpoint_id,
                bridge,
                presenter.name,
                unattended,
                key.key_id if key is not None else "none",
            )
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(runner))
            log.info("caisey-agent stopped")
    finally:
        store.close()
    return 0


# --- status ----------------------------------------------------------------------------------


def _time(ms: int | None) -> str | None:
    return None if ms is None else to_rfc3339(ms)


def status_info(state_dir: Path) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-ready data."""
    if not (state_dir / DB_FILE).exists():
        return {"state_dir": str(state_dir), "enrolled": False, "running": False, "prompts": []}
    store = Store.open(state_dir)
    try:
        connected = store.meta_int("connected_at_ms")
        disconnected = store.meta_int("disconnected_at_ms")
        last_seen = store.meta_int("last_seen_ms")
        running = _lock_held(state_dir)
        now_ms = int(time.time() * 1000)
        online = (
            running
            and connected is not None
            and (disconnected is None or connected > disconnected)
            and last_seen is not None
            and now_ms - last_seen < ONLINE_WITHIN_MS
        )
        try:
            key = load_key(state_dir)
            key_id: str | None = key.key_id if key is not None else None
        except StoreError as exc:
            key_id = f"unreadable: {exc}"
        prompts = []
        for row in reversed(store.all_prompts()):
            prompts.append(
                {
                    "prompt_id": row.prompt_id,
                    "title": row.prompt.title,
                    "status": row.status,
                    "decision": row.decision,
                    "how": row.how,
                    "detail": row.detail,
                    "decided_at": _time(row.decided_at_ms),
                    "expires_at": _time(row.prompt.expires_at_ms),
                    "received_at": _time(row.received_at_ms),
                    "shown_count": row.shown_count,
                    "reported": row.final_acked,
                    # Issue 16: how the answered prompt was shown (None from before it).
                    "display": row.display.to_json() if row.display is not None else None,
                }
            )
        return {
            "state_dir": str(state_dir),
            "enrolled": store.meta_get("endpoint_id") is not None,
            "endpoint_id": store.meta_get("endpoint_id"),
            "bridge": store.meta_get("bridge_url"),
            "key_id": key_id,
            "unattended": store.meta_get("unattended") or "deny",
            "locked": store.meta_get("locked") or "wait",
            "locale": detect_locale(),
            "running": running,
            "online": bool(online),
            "connected_at": _time(connected),
            "disconnected_at": _time(disconnected),
            "last_seen": _time(last_seen),
            "offset_ms": store.meta_int("offset_ms") or 0,
            "outbox": len(store.outbox_all()),
            "open_prompts": sum(1 for p in prompts if p["status"] in ("received", "acknowledged")),
            "prompts": prompts,
            # Approval windows (issue 16): newest first; `caisey-agent revoke` ends the active ones.
            "windows": [
                {
                    "prompt_id": w.prompt_id,
                    "title": w.title,
                    "minutes": w.minutes,
                    "state": "ended"
                    if w.state == "active" and w.ends_at_ms <= now_ms + (store.meta_int("offset_ms") or 0)
                    else w.state,
                    "until": _time(w.ends_at_ms),
                    "closed_by": w.closed_by,
                }
                for w in windows(store.db)[:20]
            ],
        }
    finally:
        store.close()


def _printable(value: object) -> str:
    """``value`` as text safe for a terminal (``caisey.text.neutralise``)."""
    return neutralise(str(value))


def cmd_status(args: argparse.Namespace, out: IO[str]) -> int:
    info = status_info(_state_dir(args))
    if args.json:
        out.write(json.dumps(info, indent=2) + "\n")
        return 0
    if not info["enrolled"]:
        out.write(f"not enrolled (state dir {info['state_dir']}): run `caisey-agent enroll`\n")
        return 1
    state = "online" if info["online"] else ("running, offline" if info["running"] else "not running")
    safe = _printable  # texts come from the bridge: no escape sequence reaches the terminal
    out.write(
        f"endpoint   {safe(info['endpoint_id'])}\nbridge     {safe(info['bridge'])}\nagent      {state}\n"
        f"key        {info['key_id'] or 'none (enrolled before signing: answers unsigned)'}\n"
        f"unattended {info['unattended']} (the most a prompt may do when nobody is present)\n"
        f"locked     {info['locked']} (when the screen is locked and the prompt names no rule)\n"
        f"language   {safe(info['locale'] or 'en (default)')}\n"
        f"connected  {info['connected_at'] or '-'}\nlast seen  {info['last_seen'] or '-'}\n"
        f"offset     {info['offset_ms']} ms\nunacked    {info['outbox']} update(s)\n"
        f"state dir  {info['state_dir']}\n"
    )
    prompts = info["prompts"]
    out.write(f"prompts    {info['open_prompts']} open, {len(prompts)} held\n")
    for p in prompts[:50]:
        outcome = safe(p["decision"] or p["detail"] or p["how"] or "")
        title = safe(p["title"][:40])
        out.write(f"  {safe(p['prompt_id'])}  {p['status']:<12} {outcome:<10} expires {p['expires_at']}  {title}\n")
    for w in info["windows"]:
        by = f" by {safe(w['closed_by'])}" if w["closed_by"] else ""
        out.write(
            f"window     {safe(w['prompt_id'])}  {w['state']}{by}  {w['minutes']} min until {w['until']}  {safe(w['title'][:40])}\n"
        )
    return 0


# --- main ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="agent state directory (default: $CAISEY_AGENT_HOME or the user data dir)")
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser = argparse.ArgumentParser(prog="caisey-agent", description="Caisey endpoint agent")
    sub = parser.add_subparsers(dest="command", required=True)
    enroll = sub.add_parser("enroll", parents=[common], help="exchange an enrollment token for this endpoint's secret")
    enroll.add_argument("--bridge", required=True, help="bridge base URL, e.g. https://caisey.example.com")
    source = enroll.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--token-file",
        metavar="FILE",
        help="read the one-time enrollment token from FILE, or from stdin with '-' (keeps it out of `ps`)",
    )
    source.add_argument("--token", help="the token on the command line (visible to other users in `ps`; avoid)")
    run = sub.add_parser("run", parents=[common], help="connect to the bridge and show prompts")
    run.add_argument("--presenter", default="auto", help="auto | tk | terminal | exec:PROGRAM (default: auto)")
    run.add_argument("--bridge", help="override the bridge URL stored at enrollment")
    run.add_argument(
        "--unattended",
        choices=UNATTENDED_CAPS,
        help="cap on what a prompt may do when nobody is present: deny (default) answers a requested "
        "approve with deny; approve lets the prompt's on_no_user stand; wait never answers an approve. Kept.",
    )
    run.add_argument(
        "--locked",
        choices=LOCKED_RULES,
        help="when the screen is locked and the prompt names no rule: wait (default) shows it once unlocked; "
        "no_user applies the prompt's no-user rule, recorded as the locked outcome. Kept.",
    )
    status = sub.add_parser("status", parents=[common], help="show enrollment, connection and held prompts")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_revoke_parser(sub, common)  # issue 16: approval windows (``agent.revoke_cli``)
    return parser


def cmd_revoke(args: argparse.Namespace, out: IO[str]) -> int:
    state_dir = _state_dir(args)
    return revoke(state_dir, args.prompt_id, args.wait, _lock_held(state_dir), out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    commands = {"enroll": cmd_enroll, "run": cmd_run, "status": cmd_status, "revoke": cmd_revoke}
    try:
        return commands[args.command](args, sys.stdout)
    except (CliError, StoreError) as exc:
        sys.stderr.write(f"caisey-agent: {exc}\n")
        return 1
