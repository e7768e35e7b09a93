"""Tests for ``caisey.ids``: ULID-shaped, 26 characters, sortable by time, strictly increasing
from one source even within a millisecond or when the clock steps back (DESIGN §5)."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from caisey import wire
from caisey.ids import ID_LENGTH, IdSource, is_id

T = 1_764_151_440_000
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def seeded(seed: int = 7) -> IdSource:
    rng = random.Random(seed)
    return IdSource(rng.getrandbits)


def time_part(prompt_id: str) -> int:
    return int("".join(f"{CROCKFORD.index(c):05b}" for c in prompt_id), 2) >> 80


def test_ids_are_26_crockford_characters_and_fit_the_wire() -> None:
    new = seeded().new(T)
    assert len(new) == ID_LENGTH == 26 and is_id(new)
    wire.check_id(new, "prompt_id")
    assert time_part(new) == T


def test_is_id_refuses_other_shapes() -> None:
    good = seeded().new(T)
    for bad in (good[:-1], good + "0", good.lower(), "I" * 26, "L" * 26, "O" * 26, "U" * 26, ""):
        assert not is_id(bad), bad


def test_sortable_by_time_whatever_the_random_bits() -> None:
    early = IdSource(lambda bits: (1 << bits) - 1).new(T)  # largest random part
    late = IdSource(lambda bits: 0).new(T + 1)  # smallest random part
    assert early < late


def test_monotonic_within_one_millisecond() -> None:
    falling = iter(range(1000, 0, -1))
    source = IdSource(lambda bits: next(falling))
    made = [source.new(T) for _ in range(100)]
    assert made == sorted(made) and len(set(made)) == 100
    assert all(time_part(m) == T for m in made)


def test_monotonic_when_the_clock_steps_back() -> None:
    source = seeded()
    first = source.new(T)
    after_step_back = source.new(T - 60_000)
    assert after_step_back > first
    assert source.new(T + 1) > after_step_back


@given(st.lists(st.integers(0, 2**48 - 1), min_size=1, max_size=50), st.integers(0, 2**32))
def test_one_source_makes_strictly_increasing_ids(times: list[int], seed: int) -> None:
    source = seeded(seed)
    made = [source.new(now) for now in times]
    assert all(is_id(m) for m in made)
    assert all(a < b for a, b in itertools.pairwise(made))


@given(st.integers(0, 2**47), st.integers(1, 2**20), st.integers(0, 2**32), st.integers(0, 2**32))
def test_sources_after_a_restart_sort_by_time(now: int, later_by: int, seed_a: int, seed_b: int) -> None:
    assert seeded(seed_a).new(now) < seeded(seed_b).new(now + later_by)
