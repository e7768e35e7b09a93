"""Who is at this computer, and can they see a prompt now (DESIGN §13, evidence of display).

``probe_session()`` answers, per platform, best effort:

- **Linux**: ``loginctl`` (systemd-logind). The sessions of this agent's user (any user's when
  it runs as root) of class ``user``; the one to show to is the active graphical one if any.
  Its ``Name`` is the user, ``LockedHint`` whether the screen is locked, ``Remote`` /
  ``Service`` / ``Type`` the kind: ``ssh`` (sshd, or a remote tty), ``rdp`` (an xrdp service),
  ``console`` (a local seat). No such session at all: ``logged_in`` False — nobody to ask. When
  ``loginctl`` is missing or cannot reach logind (a container), the environment decides
  (``SSH_CONNECTION``, ``DISPLAY``) and ``logged_in`` / ``locked`` stay unknown / False.
- **Windows**: ``USERDOMAIN\\USERNAME`` and ``SESSIONNAME`` (``Console`` or ``RDP-Tcp#…``);
  locked when the lock screen's ``LogonUI.exe`` runs (``tasklist``; a heuristic).
- **macOS**: the user and ``SSH_CONNECTION``; locked when ``ioreg`` shows the console
  session's ``CGSSessionScreenIsLocked``.

``detect_locale()`` is the user's language as a BCP 47 tag (``de-DE``) from ``LC_ALL``,
``LC_MESSAGES``, ``LANG``, or the platform's default. Everything that touches the machine
(the command runner, the environment, the platform) is a parameter, so tests pass fakes.
"""

from __future__ import annotations

import getpass
import locale as pylocale
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from caisey.errors import ProtocolError
from caisey.wire import check_locale

log = logging.getLogger("caisey.agent.display")

# loginctl answers in milliseconds; a hung bus must not hold a prompt for long.
PROBE_TIMEOUT_S = 3.0

Runner = Callable[[list[str]], str | None]  # argv → stdout, or None when it failed


@dataclass(frozen=True, slots=True)
class SessionState:
    """What the probe saw. ``logged_in``: False when nobody is logged in to ask, None when
    the platform cannot tell."""

    user: str | None
    session: str  # console | rdp | ssh | unknown (``caisey.wire.SESSION_KINDS``)
    locked: bool
    logged_in: bool | None


def run_command(argv: list[str]) -> str | None:
    """Run a probe command; its stdout, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _env_user(env: Mapping[str, str]) -> str | None:
    for name in ("USER", "LOGNAME", "USERNAME"):
        if env.get(name):
            return env[name]
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return None


def _env_session(env: Mapping[str, str]) -> str:
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return "ssh"
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return "console"
    return "unknown"


def _properties(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _kind(props: Mapping[str, str]) -> str:
    service = props.get("Service", "").lower()
    if "rdp" in service:
        return "rdp"
    if service == "sshd" or (props.get("Remote") == "yes" and props.get("Type") == "tty"):
        return "ssh"
    if props.get("Remote") == "yes":
        return "unknown"
    return "console"


def probe_linux(run: Runner, env: Mapping[str, str], uid: int) -> SessionState:
    listing = run(["loginctl", "list-sessions", "--no-legend"])
    if listing is None:  # no logind here (a container) or no loginctl: the environment decides
        return SessionState(_env_user(env), _env_session(env), False, None)
    sessions: list[dict[str, str]] = []
    for line in listing.splitlines():
        columns = line.split()
        if len(columns) < 3 or not columns[1].isdigit():
            continue
        if uid != 0 and int(columns[1]) != uid:
            continue
        shown = run(
            [
                "loginctl",
                "show-session",
                columns[0],
                "-p",
                "Name",
                "-p",
                "Type",
                "-p",
                "Class",
                "-p",
                "Remote",
                "-p",
                "Service",
                "-p",
                "Active",
                "-p",
                "LockedHint",
            ]
        )
        if shown is None:
            continue
        props = _properties(shown)
        if props.get("Class", "user") == "user":
            sessions.append(props)
    if not sessions:
        return SessionState(_env_user(env), "unknown", False, False)

    def rank(props: Mapping[str, str]) -> tuple[bool, bool]:
        return props.get("Type") in ("x11", "wayland", "mir"), props.get("Active") == "yes"

    best = max(sessions, key=rank)
    return SessionState(best.get("Name") or _env_user(env), _kind(best), best.get("LockedHint") == "yes", True)


def probe_windows(env: Mapping[str, str], run: Runner | None = None) -> SessionState:
    name = env.get("USERNAME") or _env_user(env)
    domain = env.get("USERDOMAIN")
    user = f"{domain}\\{name}" if domain and name else name
    session_name = env.get("SESSIONNAME", "").lower()
    kind = "console" if session_name == "console" else "rdp" if session_name.startswith("rdp") else "unknown"
    locked = False
    if run is not None:
        tasks = run(["tasklist", "/FI", "IMAGENAME eq LogonUI.exe", "/NH"])
        locked = tasks is not None and "logonui.exe" in tasks.lower()
    return SessionState(user, kind, locked, None)


def probe_macos(env: Mapping[str, str], run: Runner) -> SessionState:
    registry = run(["ioreg", "-n", "Root", "-d1"])
    locked = registry is not None and '"CGSSessionScreenIsLocked"=Yes' in registry
    kind = "ssh" if env.get("SSH_CONNECTION") or env.get("SSH_TTY") else "console"
    return SessionState(_env_user(env), kind, locked, None)


def probe_session(
    *, run: Runner = run_command, env: Mapping[str, str] | None = None, platform: str | None = None
) -> SessionState:
    """The session a prompt would be shown in now (see the module docstring)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    try:
        if platform.startswith("linux"):
            return probe_linux(run, env, os.getuid() if hasattr(os, "getuid") else 0)
        if platform == "win32":
            return probe_windows(env, run)
        if platform == "darwin":
            return probe_macos(env, run)
    except Exception:  # a probe must never cost the prompt: say unknown
        log.exception("session probe failed")
    return SessionState(_env_user(env), _env_session(env), False, None)


def _as_tag(raw: str | None) -> str | None:
    if not raw:
        return None
    tag = raw.split(".", 1)[0].split("@", 1)[0].replace("_", "-")
    if tag in ("C", "POSIX"):
        return None
    try:
        check_locale(tag, "locale")
    except ProtocolError:
        return None
    return tag


def detect_locale(env: Mapping[str, str] | None = None) -> str | None:
    """The user's language as a BCP 47 tag, or None (English is then shown)."""
    env = os.environ if env is None else env
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if env.get(name):
            return _as_tag(env[name])
    try:
        return _as_tag(pylocale.getlocale()[0])
    except (ValueError, TypeError):
        return None


__all__ = [
    "SessionState",
    "detect_locale",
    "probe_linux",
    "probe_macos",
    "probe_session",
    "probe_windows",
    "run_command",
]
