"""An endpoint's local time: its IANA time zone, checked and resolved (DESIGN §12, issue 14).

The agent reports the name of its zone (``hello.time_zone``, ``heartbeat.time_zone``); the
bridge stores the name as given and reads hours and weekdays in it. Two kinds of wrong name:

- a name that cannot be an IANA zone name (``zone_problem``: characters, length) is refused
  by the wire schema, like any malformed field;
- a well-formed name this interpreter's zone database does not know (a newer zone, a typo,
  a runtime without ``tzdata``) is kept, and ``resolve`` answers UTC with a note saying so —
  never an exception, so no read of an endpoint's statistics can fail on it.

Standard library only (``zoneinfo``); zones are cached, so resolving costs one dict lookup.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

# The longest names in the IANA database are about 32 characters
# ("America/Argentina/ComodRivadavia"); 64 leaves room and bounds what is stored per endpoint.
MAX_ZONE_CHARS = 64
# IANA names: ASCII letters, digits, '_', '-', '+', separated by '/' ("Europe/Berlin",
# "America/Port-au-Prince", "Etc/GMT+5", "UTC"). No '.', so no "..", no leading '/'.
ZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,3}")

DAY_MS = 86_400_000
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def zone_problem(name: object) -> str | None:
    """Why ``name`` cannot be an IANA zone name, or None when it can."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_ZONE_CHARS:
        return f"time_zone must be a string of 1-{MAX_ZONE_CHARS} characters"
    if not ZONE_RE.fullmatch(name):
        return "time_zone must be an IANA zone name such as 'Europe/Berlin'"
    return None


@dataclass(frozen=True, slots=True)
class Zone:
    """A stored zone name and what hours are read in."""

    name: str | None  # as the agent reported it (None: never reported)
    tz: tzinfo
    note: str | None  # why hours are read in UTC instead, if they are

    @property
    def effective(self) -> str:
        return self.name if self.note is None and self.name else "UTC"

    def to_api(self) -> dict[str, str | None]:
        return {"name": self.name, "effective": self.effective, "note": self.note}


@functools.lru_cache(maxsize=512)
def resolve(name: str | None) -> Zone:
    """The zone to read local hours in: ``name``'s, or UTC with a note (never raises)."""
    if name is None:
        return Zone(None, UTC, "the agent has not reported a time zone; hours are UTC")
    if zone_problem(name) is not None:
        return Zone(name, UTC, "the reported time zone is not a zone name; hours are UTC")
    try:
        return Zone(name, ZoneInfo(name), None)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        return Zone(name, UTC, f"time zone {name!r} is unknown to this bridge; hours are UTC")


@dataclass(frozen=True, slots=True)
class LocalMoment:
    day: int  # local calendar day, counted from 1970-01-01
    hour: int  # 0-23
    weekday: int  # 0 Monday … 6 Sunday


def local_moment(at_ms: int, zone: Zone) -> LocalMoment:
    """The local day, hour and weekday of the instant ``at_ms`` (epoch ms) in ``zone``."""
    moment = datetime.fromtimestamp(max(0, at_ms) / 1000, UTC).astimezone(zone.tz)
    day = moment.date().toordinal() - _EPOCH_ORDINAL
    return LocalMoment(day, moment.hour, moment.weekday())


def weekday_of_day(day: int) -> int:
    """0 Monday … 6 Sunday of a local day number (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def day_label(day: int) -> str:
    """``YYYY-MM-DD`` of a local day number."""
    return datetime.fromordinal(day + _EPOCH_ORDINAL).date().isoformat()


_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
