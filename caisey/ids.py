"""Sortable identifiers (DESIGN §5).

A ULID-shaped id: 48 bits of milliseconds then 80 random bits, Crockford base32, 26 chars.
Lexical order is creation order across restarts, which makes "newest first" a plain sort.
Time and randomness are inputs, so simulations are reproducible; ``IdSource`` keeps ids
strictly increasing within one millisecond (and when the clock steps back), as ULID's
monotonic mode does.
"""

from __future__ import annotations

from collections.abc import Callable

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
ID_LENGTH = 26


# Two characters per 10 bits: half the steps per id (one is made for every frame sent).
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]


def _encode(value: int) -> str:
    pairs = []
    for _ in range(ID_LENGTH // 2):
        pairs.append(_PAIRS[value & 1023])
        value >>= 10
    return "".join(reversed(pairs))


def is_id(text: str) -> bool:
    """True when ``text`` has the shape of an id this module makes."""
    return len(text) == ID_LENGTH and all(c in _ALPHABET for c in text)


def id_time_ms(text: str) -> int | None:
    """The milliseconds an id of this module's shape was made at (its first 48 bits), or None
    when ``text`` is not such an id."""
    if not is_id(text):
        return None
    value = 0
    for char in text:
        value = value * 32 + _ALPHABET.index(char)
    return value >> _RANDOM_BITS


class IdSource:
    """Makes sortable ids from ``now_ms`` and ``random_bits(n) -> int``."""

    def __init__(self, random_bits: Callable[[int], int]) -> None:
        self._random_bits = random_bits
        self._last = 0

    def new(self, now_ms: int) -> str:
        candidate = (max(0, now_ms) << _RANDOM_BITS) | self._random_bits(_RANDOM_BITS)
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return _encode(candidate)
