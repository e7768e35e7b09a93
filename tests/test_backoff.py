"""Tests for ``caisey.backoff``: full jitter in [0, min(cap, base * factor**attempt)] (DESIGN §5)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caisey.backoff import Backoff
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
    ],
)
def test_invalid_policy_is_a_usage_error(fields: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        Backoff(**fields)  # type: ignore[arg-type]


def test_negative_attempt_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Backoff().ceiling_ms(-1)
