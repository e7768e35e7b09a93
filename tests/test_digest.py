"""Tests for ``caisey.digest``: the held-state digest both sides compute (DESIGN §6)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from caisey import wire
from caisey.digest import held_digest

held_sets = st.lists(
    st.tuples(
        st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=1, max_size=26),
        st.sampled_from(["received", "acknowledged"]),
    ),
    max_size=20,
)


@given(held_sets, st.randoms(use_true_random=False))
def test_order_and_repetition_do_not_matter(held: list[tuple[str, str]], rnd: object) -> None:
    shuffled = list(held) * 2
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert held_digest(shuffled) == held_digest(held)


def test_differs_when_a_status_changes() -> None:
    before = [("P1", "received"), ("P2", "received")]
    after = [("P1", "received"), ("P2", "acknowledged")]
    assert held_digest(before) != held_digest(after)


def test_differs_when_a_prompt_is_added_or_dropped() -> None:
    one = [("P1", "received")]
    assert held_digest(one) != held_digest([*one, ("P2", "received")])
    assert held_digest(one) != held_digest([])


def test_the_encoding_is_pinned() -> None:
    # Runtime and bridge may run different versions: the encoding must not drift.
    assert held_digest([]) == hashlib.sha256(b"").hexdigest()
    expected = hashlib.sha256(b"P1\x1freceived\x1eP2\x1facknowledged\x1e").hexdigest()
    assert held_digest([("P2", "acknowledged"), ("P1", "received")]) == expected


def test_fields_cannot_run_into_each_other() -> None:
    assert held_digest([("P1", "received"), ("P2", "received")]) != held_digest([("P1", "receivedP2")])


@given(held_sets)
def test_fits_a_heartbeat_frame(held: list[tuple[str, str]]) -> None:
    digest = held_digest(held)
    assert len(digest) == 64 <= wire.MAX_DIGEST_CHARS and int(digest, 16) >= 0
    wire.Heartbeat(id="h1", sent_at_ms=0, digest=digest)
