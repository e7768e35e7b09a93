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

    def __post_init__(self) -> None:
        # ``not factor >= 1`` also refuses NaN, which every comparison would let through.
        if self.base_ms <= 0 or self.cap_ms < self.base_ms or not self.factor >= 1 or self.max_attempts < 1:
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
        """A jittered delay; ``uniform()`` returns a float in [0, 1)."""
        return int(self.ceiling_ms(attempt) * uniform())


# The agent's policy toward the bridge (DESIGN §5): first retry within a second, never more
# than a minute apart.
RECONNECT = Backoff(base_ms=1_000, factor=2.0, cap_ms=60_000)


class Reconnect:
    """When to try the bridge again: full jitter under a ceiling that grows with how long the
    bridge has been unreachable, not with how many attempts failed.

    Counting attempts punishes fast failures. A refused connection fails within a
    millisecond, so three refusals during a 0.7 s bridge restart would lift the ceiling to
    8 s and keep an agent away for seconds after the bridge is back (measured: the slowest
    of 1,000 agents returned 9 s after a restart). Measuring the outage instead retries an
    outage of T within about T — at least ``base_ms``, at most ``cap_ms`` — so a fleet comes
    back spread over a window as long as the outage was, and never much after it. A long
    outage still ends at one attempt per agent per ``cap_ms`` at most.
    """

    def __init__(self, policy: Backoff = RECONNECT) -> None:
        self.policy = policy
        self._since_ms: int | None = None  # first failure since the last served session

    def failed(self, now_ms: int, uniform: Callable[[], float]) -> int:
        """A connection failed or ended: the delay before the next attempt, in ms."""
        if self._since_ms is None:
            self._since_ms = now_ms
        away_ms = max(0, now_ms - self._since_ms)
        ceiling = min(self.policy.cap_ms, max(self.policy.base_ms, away_ms))
        return int(ceiling * uniform())

    def served(self) -> None:
        """A session got as far as the bridge's ``hello.ok``: the next failure starts afresh."""
        self._since_ms = None
