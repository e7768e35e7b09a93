"""Time on the wire and the runtime's clock offset.

All times in the core are integer epoch milliseconds (``*_ms``); RFC 3339 UTC strings appear
only at the edges (HTTP API, console). The offset estimator is NTP's: a request leaves at t0
(runtime clock), arrives at t1 (bridge clock), the reply leaves at t2 (bridge) and arrives at t3
(runtime). ``offset = ((t1 - t0) + (t2 - t3)) / 2`` is what to add to the runtime clock to get
bridge time, and its error is at most ``rtt / 2``, so the estimator keeps the sample with the
smallest round trip among recent ones (NTP's clock filter).
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from dataclasses import dataclass

from caisey.errors import ProtocolError

# Recent samples considered by the clock filter: enough to ride out a few congested round trips.
OFFSET_WINDOW = 8
# The largest offset (bridge minus runtime clock) a runtime accepts. A real clock is off by
# seconds, a misconfigured one by whole hours (a BIOS set to local time: up to 14 h); a day
# covers both. Beyond it the sample is refused: a bridge claiming 1970 would otherwise make a
# runtime's prompts never expire locally and date its decisions decades back (issue 11 item 10).
MAX_OFFSET_MS = 24 * 3600 * 1000

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


# ``to_rfc3339``'s text up to the second, by second: the times of one prompt object (created,
# attempted, received, decided, final…) mostly share a few seconds, and ``strftime`` was most of
# a prompt object's cost. Bounded; cleared when full.
_SECOND_TEXT: dict[int, str] = {}
_SECOND_TEXT_MAX = 4096


def to_rfc3339(ms: int) -> str:
    """Epoch ms → ``2026-11-26T10:04:00.000Z``."""
    second = ms // 1000  # the text below depends on this alone (``ms / 1000`` floors to it)
    text = _SECOND_TEXT.get(second)
    if text is None:
        if len(_SECOND_TEXT) >= _SECOND_TEXT_MAX:
            _SECOND_TEXT.clear()
        moment = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC)
        text = _SECOND_TEXT[second] = moment.strftime("%Y-%m-%dT%H:%M:%S.")
    return text + f"{ms % 1000:03d}Z"


def from_rfc3339(text: str) -> int:
    """RFC 3339 with an explicit offset → epoch ms; raises ``ProtocolError`` otherwise."""
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ProtocolError("invalid_time", f"not an RFC 3339 time: {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise ProtocolError("invalid_time", f"time needs a UTC offset: {text[:40]!r}")
    # Integer arithmetic: ``timestamp() * 1000`` is a float and truncates 1.001 s to 1000 ms.
    return (moment - _EPOCH) // _dt.timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class OffsetSample:
    offset_ms: int
    rtt_ms: int


def offset_sample(t0: int, t1: int, t2: int, t3: int) -> OffsetSample:
    """One NTP exchange → offset (bridge minus runtime) and round-trip delay."""
    rtt = max(0, (t3 - t0) - (t2 - t1))
    return OffsetSample(offset_ms=((t1 - t0) + (t2 - t3)) // 2, rtt_ms=rtt)


def bounded_offset(offset_ms: int) -> int:
    """``offset_ms`` if within ``MAX_OFFSET_MS``, else 0 (e.g. a stored offset from before the bound)."""
    return offset_ms if abs(offset_ms) <= MAX_OFFSET_MS else 0


class OffsetEstimator:
    """Keeps the best of the last ``OFFSET_WINDOW`` samples."""

    def __init__(self, offset_ms: int = 0) -> None:
        self._samples: deque[OffsetSample] = deque(maxlen=OFFSET_WINDOW)
        self._initial = offset_ms

    def add(self, sample: OffsetSample) -> None:
        self._samples.append(sample)

    @property
    def offset_ms(self) -> int:
        if not self._samples:
            return self._initial
        return min(self._samples, key=lambda s: s.rtt_ms).offset_ms

    @property
    def error_ms(self) -> int | None:
        """Bound on the estimate's error, or None before any sample."""
        if not self._samples:
            return None
        return min(s.rtt_ms for s in self._samples) // 2
