"""The held-state digest (DESIGN §6).

Each heartbeat carries a digest of the prompts the runtime holds open; the bridge computes
the same digest from its own view of what the runtime holds and asks for a full
``state.report`` when they differ. Both sides call this one function, so they cannot
disagree about the encoding — only about the facts, which is what the digest is for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def held_digest(held: Iterable[tuple[str, str]]) -> str:
    """Digest of ``(prompt_id, status)`` pairs, independent of their order.

    ``status`` is ``received`` or ``acknowledged``: a prompt that is open at the runtime and
    not yet decided. Decided, closed and withdrawn prompts are left out on both sides.
    """
    h = hashlib.sha256()
    for prompt_id, status in sorted(set(held)):
        h.update(f"{prompt_id}\x1f{status}\x1e".encode())
    return h.hexdigest()
