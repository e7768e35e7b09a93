"""Full-jitter exponential backoff (DESIGN §5), random source injected.

``delay = uniform(0, min(cap, base * factor**attempt))`` — AWS's "full jitter", which spreads
a reconnecting fleet best. The core never sleeps: callers add the delay to ``now_ms`` and
arm their own timer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from caisey.errors import UsageError


@dataclass(frozen=True, slots=True)
class Backoff:
    base_ms: int = 1_000
    factor: float = 2.0
    cap_ms: int = 60_000
    max_attempts: int = 8  # attempts while connected before ``failed_to_deliver`` (no_receipt)
    # No delay shorter than this. For a resend to a connected peer (a deliver, a receipt): its
    # ack needs a round trip, and full jitter alone retries within milliseconds now and then —
    # under load, before the answer could come back, which only duplicates traffic.
    floor_ms: int = 0

    def __post_init__(self) -> None:
        # ``not factor >= 1`` also refuses NaN, which every comparison would let through.
        if (
            self.base_ms <= 0
            or self.cap_ms < self.base_ms
            or not self.factor >= 1
            or self.max_attempts < 1
            or not 0 <= self.floor_ms <= self.cap_ms
        ):
            raise UsageError(f"invalid backoff {self!r}")

    def ceiling_ms(self, attempt: int) -> int:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise UsageError("attempt must be >= 0")
        # Cap the exponent first so huge attempt counts cannot overflow a float.
        exponent = min(attempt, 64)
        try:
            return int(min(self.cap_ms, self.base_ms * self.factor**exponent))
        except OverflowError:  # a large factor overflows even so (1e6**64); that is past any cap
            return self.cap_ms

    def delay_ms(self, attempt: int, uniform: Callable[[], float]) -> int:
        """A jittered delay, at least ``floor_ms``; ``uniform()`` returns a float in [0, 1)."""
        return max(self.floor_ms, int(self.ceiling_ms(attempt) * uniform()))


# The agent's policy toward the bridge (DESIGN §5): first retry within a second, never more
# than a minute apart.
RECONNECT = Backoff(base_ms=1_000, factor=2.0, cap_ms=60_000)


class Reconnect:
    """When to try the bridge again: full jitter under a ceiling that grows with how long the
    agent has been trying — the delays it has waited since its last served session — not
    with how many attempts failed.

    Counting attempts punishes fast failures. A refused connection fails within a
    millisecond, so three refusals during a 0.7 s bridge restart would lift the ceiling to
    8 s and keep an agent away for seconds after the bridge is back (measured: the slowest
    of 1,000 agents returned 9 s after a restart). Here an outage of T is retried within
    about T — at least ``base_ms``, at most ``cap_ms`` — so a fleet comes back spread over a
    window as long as the outage was, and never much after it. Only waiting counts, not the
    wall clock: a laptop that slept through an outage retries promptly when it wakes.
    """

    def __init__(self, policy: Backoff = RECONNECT) -> None:
        self.policy = policy
        self.waited_ms = 0  # delays handed out since the last served session

    def failed(self, uniform: Callable[[], float]) -> int:
        """A connection failed or ended: the delay before the next attempt, in ms."""
        ceiling = min(self.policy.cap_ms, max(self.policy.base_ms, self.waited_ms))
        delay = int(ceiling * uniform())
        self.waited_ms += delay
        return delay

    def served(self) -> None:
        """A session got as far as the bridge's ``hello.ok``: the next failure starts afresh."""
        self.waited_ms = 0
