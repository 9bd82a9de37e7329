"""Keys derived from INTERNAL_SECRET, one per purpose, so that no credential of one kind can
pass as another's (a service token is never a command signature)."""

from __future__ import annotations

import hashlib
import hmac


class MissingSecret(RuntimeError):
    """INTERNAL_SECRET is not set: nothing can be signed, and nothing passes a check."""


def derive_key(secret: str, purpose: str) -> bytes:
    if not secret:
        raise MissingSecret("INTERNAL_SECRET is not set")
    return hmac.new(secret.encode(), f"shopstream/{purpose}".encode(), hashlib.sha256).digest()
