"""The endpoint's IANA time zone name, as well as the standard library can tell (issue 14).

The bridge reads an endpoint's statistics in its user's local hours, so the agent reports the
zone's *name* (``hello.time_zone``; ``heartbeat.time_zone`` after a change). Python has no
portable call for it; in order:

1. ``CAISEY_TIME_ZONE`` (set it where the others guess wrong, e.g. on Windows),
2. ``TZ`` when it names a zone (``Europe/Berlin`` or ``:Europe/Berlin``),
3. ``/etc/timezone`` (Debian, Ubuntu),
4. the target of the ``/etc/localtime`` link (``…/zoneinfo/Europe/Berlin``: most Linux, macOS).

None when none of them gives a well-formed name (``caisey.localtime.zone_problem``): the bridge
then reads hours in UTC and says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from caisey.localtime import zone_problem

ETC_TIMEZONE = Path("/etc/timezone")
ETC_LOCALTIME = Path("/etc/localtime")


def _well_formed(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip().removeprefix(":")
    return name if zone_problem(name) is None else None


def local_zone_name(
    environ: dict[str, str] | None = None, etc_timezone: Path = ETC_TIMEZONE, etc_localtime: Path = ETC_LOCALTIME
) -> str | None:
    env = os.environ if environ is None else environ
    for candidate in (env.get("CAISEY_TIME_ZONE"), env.get("TZ")):
        name = _well_formed(candidate)
        if name is not None:
            return name
    try:
        name = _well_formed(etc_timezone.read_text(encoding="utf-8", errors="replace")[:200])
        if name is not None:
            return name
    except OSError:
        pass
    try:
        target = os.readlink(etc_localtime)
    except OSError:
        return None
    _, found, tail = target.partition("zoneinfo/")
    return _well_formed(tail) if found else None
