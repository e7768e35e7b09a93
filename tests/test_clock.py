"""Tests for ``caisey.clock``: RFC 3339 at the edges and the NTP-style offset estimator."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from caisey.clock import OFFSET_WINDOW, OffsetEstimator, OffsetSample, from_rfc3339, offset_sample, to_rfc3339
from caisey.errors import ProtocolError
from caisey.wire import MAX_TIME_MS

T = 1_764_151_440_000  # 2025-11-26T10:04:00.000Z


def test_to_rfc3339_known_values() -> None:
    assert to_rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert to_rfc3339(T) == "2025-11-26T10:04:00.000Z"
    assert to_rfc3339(T + 1_001) == "2025-11-26T10:04:01.001Z"
    assert to_rfc3339(MAX_TIME_MS) == "9999-12-31T23:59:59.999Z"


@given(st.integers(0, MAX_TIME_MS))
@example(1_001)  # 1.001 s is not exact in binary floating point
def test_rfc3339_round_trips_every_wire_time(ms: int) -> None:
    assert from_rfc3339(to_rfc3339(ms)) == ms


@pytest.mark.parametrize("ms", [1, 1_001, 1_003, 1_005, 1_009, T + 1, T + 999, 253_402_300_799_999])
def test_rfc3339_round_trips_awkward_milliseconds(ms: int) -> None:
    # milliseconds that are not exact in binary floating point
    assert from_rfc3339(to_rfc3339(ms)) == ms


def test_from_rfc3339_honours_offsets_and_lowercase_z() -> None:
    assert from_rfc3339("2025-11-26T12:04:00.000+02:00") == T
    assert from_rfc3339("2025-11-26T05:04:00-05:00") == T
    assert from_rfc3339("2025-11-26t10:04:00.250z".upper()) == T + 250
    assert from_rfc3339("2025-11-26T10:04:00.250z") == T + 250


@pytest.mark.parametrize("text", ["2025-11-26T10:04:00", "yesterday", "", "2025-13-01T00:00:00Z", "10:04"])
def test_from_rfc3339_refuses_times_without_offset_or_not_times(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        from_rfc3339(text)
    assert info.value.code == "invalid_time"


def test_offset_sample_known_skew_and_symmetric_delay() -> None:
    # The bridge clock is 5 s ahead of the runtime's; 40 ms each way; the bridge takes 10 ms.
    skew, one_way, processing = 5_000, 40, 10
    t0 = 1_000_000  # runtime clock
    t1 = t0 + one_way + skew  # bridge clock
    t2 = t1 + processing  # bridge clock
    t3 = t2 - skew + one_way  # runtime clock
    assert offset_sample(t0, t1, t2, t3) == OffsetSample(offset_ms=skew, rtt_ms=2 * one_way)


def test_offset_sample_runtime_ahead() -> None:
    t0, skew, one_way = 2_000_000, -90_000, 25
    t1 = t0 + one_way + skew
    assert offset_sample(t0, t1, t1, t1 - skew + one_way) == OffsetSample(offset_ms=skew, rtt_ms=50)


def test_asymmetric_delay_errs_by_at_most_half_the_round_trip() -> None:
    skew, out, back = 5_000, 10, 190
    t0 = 0
    t1 = t0 + out + skew
    sample = offset_sample(t0, t1, t1, t1 - skew + back)
    assert sample.rtt_ms == out + back
    assert abs(sample.offset_ms - skew) <= sample.rtt_ms // 2


def test_round_trip_is_never_negative() -> None:
    assert offset_sample(0, 100, 500, 10).rtt_ms == 0


def test_estimator_picks_the_sample_with_the_smallest_round_trip() -> None:
    estimator = OffsetEstimator(offset_ms=123)
    assert estimator.offset_ms == 123 and estimator.error_ms is None
    estimator.add(OffsetSample(offset_ms=4_900, rtt_ms=300))
    estimator.add(OffsetSample(offset_ms=5_001, rtt_ms=20))
    estimator.add(OffsetSample(offset_ms=5_200, rtt_ms=900))
    assert estimator.offset_ms == 5_001 and estimator.error_ms == 10


def test_estimator_forgets_samples_older_than_its_window() -> None:
    estimator = OffsetEstimator()
    estimator.add(OffsetSample(offset_ms=1, rtt_ms=1))
    for _ in range(OFFSET_WINDOW - 1):
        estimator.add(OffsetSample(offset_ms=2, rtt_ms=50))
    assert estimator.offset_ms == 1
    estimator.add(OffsetSample(offset_ms=3, rtt_ms=40))  # the best sample falls out of the window
    assert estimator.offset_ms == 3 and estimator.error_ms == 20
