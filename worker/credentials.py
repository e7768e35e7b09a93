"""The bridge's bearer credentials: how they look, how they are stored, how they are compared.

Technician tokens (``cst_``), agent secrets (``csa_``) and one-time enrollment tokens
(``cse_<endpoint id>~<secret>``, so the gateway can route an exchange to its endpoint) are
high-entropy random strings (``worker.host.Entropy.token``); only their SHA-256 is stored
(DESIGN §8), and a presented one is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

ENROLLMENT_PREFIX = "cse_"
AGENT_SECRET_PREFIX = "csa_"
ENROLLMENT_SEPARATOR = "~"  # not in endpoint ids nor in URL-safe base64


def secret_hash(secret: str) -> str:
    """Secrets and tokens are stored as SHA-256 hex; they are high-entropy, so no salt/KDF."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(stored_hash: str | None, presented: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    if not stored_hash or not presented or not presented.isascii():  # every secret is ASCII
        return False
    return hmac.compare_digest(stored_hash, secret_hash(presented))


def enrollment_endpoint(token: str) -> str | None:
    """The endpoint an enrollment token belongs to (the gateway routes by it)."""
    if not token.startswith(ENROLLMENT_PREFIX) or ENROLLMENT_SEPARATOR not in token:
        return None
    return token[len(ENROLLMENT_PREFIX) :].rpartition(ENROLLMENT_SEPARATOR)[0] or None
