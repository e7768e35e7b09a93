"""Ed25519 verification on CPython (the local host and ``caisey-audit``), with ``cryptography``.

The Worker verifies the same claims with WebCrypto (``worker/entry.py``); this module is not
uploaded to Cloudflare (``scripts/stage-worker.mjs``).
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from caisey.signing import SignatureClaim


def verify(claim: SignatureClaim) -> bool:
    """Whether ``claim.public_key`` made ``claim.signature`` over ``claim.message``."""
    try:
        Ed25519PublicKey.from_public_bytes(claim.public_key).verify(claim.signature, claim.message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verified(claims: Iterable[SignatureClaim]) -> list[SignatureClaim]:
    return [claim for claim in claims if verify(claim)]
