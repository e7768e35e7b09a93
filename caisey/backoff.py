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
