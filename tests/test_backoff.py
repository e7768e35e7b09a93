"""Tests for ``caisey.backoff``: full jitter in [0, min(cap, base * factor**attempt)] (DESIGN §5)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caisey.backoff import RECONNECT, Backoff, Reconnect
from caisey.errors import UsageError


def test_defaults_are_the_designed_policy() -> None:
    policy = Backoff()
    assert (policy.base_ms, policy.factor, policy.cap_ms) == (1_000, 2.0, 60_000)
    assert [policy.ceiling_ms(n) for n in range(8)] == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]


def test_the_cap_holds_for_any_attempt_count() -> None:
    policy = Backoff()
    for attempt in (6, 7, 64, 65, 1_000, 10**9):
        assert policy.ceiling_ms(attempt) == 60_000
        assert policy.delay_ms(attempt, lambda: 0.999_999) <= 60_000


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    policy = Backoff()
    assert policy.delay_ms(3, lambda: 0.0) == 0
    assert policy.delay_ms(3, lambda: 0.5) == 4_000
    assert 7_990 < policy.delay_ms(3, lambda: 0.999_999) < 8_000


def test_a_floor_lifts_only_the_delays_below_it() -> None:
    policy = Backoff(floor_ms=500)
    assert policy.delay_ms(0, lambda: 0.0) == 500
    assert policy.delay_ms(0, lambda: 0.4) == 500
    assert policy.delay_ms(0, lambda: 0.75) == 750
    assert policy.delay_ms(3, lambda: 0.5) == 4_000


def test_the_bridge_never_retries_a_deliver_sooner_than_its_floor() -> None:
    """Full jitter alone retried a deliver within milliseconds now and then: on a loaded bridge
    (the storm benchmark) one delivery in six went out twice before its receipt came back."""
    from worker.endpoint import BridgeConfig

    backoff = BridgeConfig().backoff
    assert backoff.floor_ms == 500
    assert min(backoff.delay_ms(attempt, lambda: 0.0) for attempt in range(8)) == 500
    assert (backoff.base_ms, backoff.factor, backoff.cap_ms) == (1_000, 2.0, 60_000)


@given(
    base_ms=st.integers(1, 120_000),
    factor=st.floats(1.0, 1e9) | st.just(math.inf),
    extra_cap_ms=st.integers(0, 10**7),
    attempt=st.integers(0, 10**6),
    u=st.floats(0.0, 1.0, exclude_max=True),
)
def test_delay_is_within_bounds_for_any_valid_policy(
    base_ms: int, factor: float, extra_cap_ms: int, attempt: int, u: float
) -> None:
    policy = Backoff(base_ms=base_ms, factor=factor, cap_ms=base_ms + extra_cap_ms)
    ceiling = policy.ceiling_ms(attempt)
    assert base_ms <= ceiling <= policy.cap_ms
    assert policy.ceiling_ms(attempt + 1) >= ceiling
    assert 0 <= policy.delay_ms(attempt, lambda: u) <= ceiling
    floored = Backoff(base_ms=base_ms, factor=factor, cap_ms=base_ms + extra_cap_ms, floor_ms=base_ms // 2)
    assert base_ms // 2 <= floored.delay_ms(attempt, lambda: u) <= ceiling


@pytest.mark.parametrize(
    "fields",
    [
        {"base_ms": 0},
        {"base_ms": -1},
        {"cap_ms": 999},
        {"factor": 0.5},
        {"factor": 0.0},
        {"factor": -2.0},
        {"factor": math.nan},
        {"max_attempts": 0},
        {"floor_ms": -1},
        {"floor_ms": 60_001},
    ],
)
def test_invalid_policy_is_a_usage_error(fields: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        Backoff(**fields)  # type: ignore[arg-type]


def test_negative_attempt_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Backoff().ceiling_ms(-1)


# --- reconnecting to the bridge ---------------------------------------------------------------

ALMOST_ONE = 0.999_999


def test_reconnect_ceiling_follows_the_time_spent_trying_not_the_attempt_count() -> None:
    # A bridge restarting in 0.7 s refuses a few quick attempts. Counting attempts would lift
    # the ceiling to 8 s; under a second spent waiting keeps it at base.
    reconnect = Reconnect(RECONNECT)
    delays = [reconnect.failed(lambda: 0.2) for _ in range(4)]
    assert delays == [200, 200, 200, 200] and reconnect.waited_ms == 800
    # After 30 s of trying, the next try comes within 30 s: the ceiling is the time spent.
    reconnect.waited_ms = 30_000
    assert reconnect.failed(lambda: ALMOST_ONE) == 29_999
    reconnect.waited_ms = 3_600_000
    assert reconnect.failed(lambda: ALMOST_ONE) == RECONNECT.cap_ms - 1  # never above the cap


def test_reconnect_starts_afresh_after_a_served_session() -> None:
    reconnect = Reconnect(RECONNECT)
    reconnect.waited_ms = 40_000
    assert reconnect.failed(lambda: ALMOST_ONE) == 39_999
    reconnect.served()
    assert reconnect.failed(lambda: ALMOST_ONE) == RECONNECT.base_ms - 1
    assert reconnect.failed(lambda: 0.0) == 0  # full jitter: from zero


@given(st.lists(st.floats(0, 0.999_999), min_size=1, max_size=200))
def test_reconnect_delay_is_within_base_cap_and_the_time_spent(draws: list[float]) -> None:
    reconnect = Reconnect(RECONNECT)
    for u in draws:
        spent = reconnect.waited_ms
        delay = reconnect.failed(lambda u=u: u)  # type: ignore[misc]
        assert 0 <= delay < RECONNECT.cap_ms
        assert delay <= max(RECONNECT.base_ms, spent)
