"""caisey.stats: bins, percentiles, outcome classes, the binomial tail and the finding rules."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from caisey import stats
from caisey.facts import Acknowledged, Created, Decided, Decision, Entry, NoUserPolicy, Received, Superseded
from caisey.prompt import reconcile
from caisey.stats import Tally, binomial_tail, find_patterns, latency_bin, outcome_of, percentile_ms

T = 1_800_000_000_000


@given(st.integers(min_value=0, max_value=12 * 86_400_000))
@example(250)  # a lower edge: the largest relative error
def test_a_bins_value_is_within_nine_point_one_percent_of_every_duration_in_it(ms: int) -> None:
    index = latency_bin(ms)
    assert 0 <= index < stats.LATENCY_BINS
    if 250 <= ms < 250 * 2 ** ((stats.LATENCY_BINS - 1) / 4):
        # 2^(1/8) - 1 (9.05 %) at a bin's lower edge, plus the rounding to a whole millisecond.
        assert abs(stats.bin_value_ms(index) - ms) / ms <= 2 ** (1 / 8) - 1 + 0.5 / ms + 1e-12
    else:
        assert index in (0, stats.LATENCY_BINS - 1)


def test_percentiles_of_a_histogram() -> None:
    samples = [1_000] * 50 + [10_000] * 45 + [100_000] * 5
    histogram: dict[int, int] = {}
    for s in samples:
        histogram[latency_bin(s)] = histogram.get(latency_bin(s), 0) + 1
    assert abs(percentile_ms(histogram, 0.5) - 1_000) / 1_000 < 0.1  # type: ignore[operator]
    assert abs(percentile_ms(histogram, 0.95) - 10_000) / 10_000 < 0.1  # type: ignore[operator]
    assert abs(percentile_ms(histogram, 0.96) - 100_000) / 100_000 < 0.1  # type: ignore[operator]
    assert percentile_ms({}, 0.5) is None


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.3), (8, 10, 0.2), (10, 10, 0.5), (3, 40, 0.01), (30, 30, 0.9)])
def test_binomial_tail_matches_the_exact_sum(k: int, n: int, p: float) -> None:
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_binomial_tail_of_a_large_sample_does_not_overflow() -> None:
    assert 0.0 <= binomial_tail(4_000, 5_000, 0.5) < 1e-100
    assert binomial_tail(2_400, 5_000, 0.5) > 0.99


def _view(*facts: tuple[int, object], now: int = T + 400_000, supersedes: str | None = None):  # type: ignore[no-untyped-def]
    created = Created("t", "m", "a", T + 300_000, NoUserPolicy.WAIT, "bob", supersedes)
    entries = [Entry(1, T, created)] + [Entry(i + 2, at, f) for i, (at, f) in enumerate(facts)]  # type: ignore[arg-type]
    return reconcile("01P", entries, now)


def test_outcome_classes() -> None:
    assert outcome_of(_view(now=T + 1)) is None  # open
    assert outcome_of(_view()) == "unreachable"  # never delivered, expired
    received = (T + 500, Received(T + 500))
    assert outcome_of(_view(received)) == "ignored"
    decided = (T + 9_000, Decided(Decision.APPROVE, T + 9_000))
    assert outcome_of(_view(received, decided)) == "answered"
    policy = (T + 9_000, Decided(Decision.DENY, T + 9_000, how="no_user_policy"))
    assert outcome_of(_view(received, policy)) == "unattended"
    withdrawn = (T + 100, Superseded("01Q", "bob"))
    assert outcome_of(_view(withdrawn)) == "withdrawn"
    assert outcome_of(_view(received, (T + 1_000, Superseded("01Q", "bob")))) == "ignored"
    shown = (T + 2_000, Acknowledged("shown"))
    assert stats.latencies_of(_view(received, shown, decided)) == {"deliver": 500, "present": 2_000, "answer": 9_000}
    assert "answer" not in stats.latencies_of(_view(received, policy))  # nobody answered


def _cells(rng: random.Random, days: int, miss: object, unreach: object, per_day: int = 4) -> dict:  # type: ignore[type-arg]
    cells: dict[tuple[int, int], Tally] = {}
    for day in range(days):
        for _ in range(per_day):
            weekday, hour = (day + 3) % 7, rng.randrange(24)
            tally = cells.setdefault((weekday, hour), Tally())
            if rng.random() < unreach(weekday, hour):  # type: ignore[operator]
                tally.unreachable += 1
            elif rng.random() < miss(weekday, hour):  # type: ignore[operator]
                tally.ignored += 1
            else:
                tally.answered += 1
    return cells


def test_a_uniform_endpoint_shows_no_finding() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        base_miss, base_unreach = rng.uniform(0.02, 0.45), rng.uniform(0.0, 0.2)
        cells = _cells(rng, 90, lambda d, h, m=base_miss: m, lambda d, h, u=base_unreach: u)
        first = Tally(answered=rng.randint(80, 100), ignored=rng.randint(10, 40))
        reissued = Tally(answered=rng.randint(20, 30), ignored=rng.randint(3, 12))
        assert find_patterns(cells, first, reissued) == [], seed


def test_a_lunch_time_misser_is_found_with_its_evidence() -> None:
    rng = random.Random(7)
    cells = _cells(rng, 90, lambda d, h: 0.85 if h == 12 else 0.1, lambda d, h: 0.02)
    (finding,) = find_patterns(cells, Tally(answered=100), Tally())
    assert finding.kind == "misses_by_hour" and finding.hours == (12, 13)
    assert finding.text.startswith(f"misses {finding.k} of {finding.n} prompts between 12:00 and 13:00 local time")
    assert finding.n >= stats.MIN_SAMPLE and finding.p_value < stats.ALPHA


def test_monday_mornings_unreachable_is_found() -> None:
    rng = random.Random(3)
    cells = _cells(rng, 90, lambda d, h: 0.1, lambda d, h: 0.95 if d == 0 and h < 9 else 0.02, per_day=8)
    kinds = {(f.kind, f.weekday, f.hours) for f in find_patterns(cells, Tally(answered=100), Tally())}
    assert ("unreachable", 0, (0, 9)) in kinds, kinds
    text = next(f.text for f in find_patterns(cells, Tally(answered=100), Tally()) if f.kind == "unreachable")
    assert text.startswith("unreachable on Mondays before 09:00")


def test_a_first_prompt_ignorer_is_found_and_a_small_sample_is_not() -> None:
    (finding,) = find_patterns({}, Tally(answered=2, ignored=18), Tally(answered=18, ignored=2))
    assert finding.text == "answers re-issued prompts 18 times in 20, the first only 2 in 20"
    assert find_patterns({}, Tally(answered=1, ignored=7), Tally(answered=8)) == []  # under MIN_SAMPLE
