"""The one place API keys meet hashing: a new secret, its digest, a constant-time comparison.

A thin interface over the token code's SHA-256 hashing (``depu.agents.tokens.hash_token``), so when token
issue/hash/check lives in one shared module, only this file changes.
"""
from __future__ import annotations

import hmac
import secrets

PREFIX = "dpk_"
SECRET_BYTES = 32
MAX_KEY_CHARS = 100


def new_key() -> str:
    """A fresh key: the prefix (so a leaked key is recognisable in a secret scanner) and 256 random bits."""
    return PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def digest(key: str) -> str:
    from depu.agents.tokens import hash_token

    return hash_token(key)


def well_formed(key: object) -> bool:
    """Worth a lookup: a short ASCII string with our prefix (anything else is refused without touching the table)."""
    return isinstance(key, str) and key.startswith(PREFIX) and len(key) <= MAX_KEY_CHARS and key.isascii()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def hint(key: str) -> str:
    """What a listing shows of a key: the prefix and four characters, enough to tell keys apart."""
    return key[: len(PREFIX) + 4] + "…"
