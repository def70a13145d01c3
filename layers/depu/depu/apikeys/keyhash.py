"""API keys as one more kind of DePU token (``depu.tokens``): how a key is made, hashed and pre-checked.

The key's own item (``depu.apikeys.keys.ApiKey``) holds more than ``depu.tokens.TokenRecord`` does (scopes,
last use, the throttle's bucket), so it is its own model in TokensTable; what makes it a DePU token (256 random
bits behind a prefix, stored only as its SHA-256, refused before hashing when malformed) comes from the kind.
"""
from __future__ import annotations

import hmac

from depu.tokens import TokenKind, hash_token

PREFIX = "dpk_"
API_KEY = TokenKind("api_key", PREFIX, ttl=None, max_chars=100)


def new_key() -> str:
    """A fresh key: the prefix (so a leaked key is recognisable in a secret scanner) and 256 random bits."""
    return API_KEY.new()[0]


def digest(key: str) -> str:
    return hash_token(key)


def well_formed(key: object) -> bool:
    """Worth a lookup: a short ASCII string with our prefix (anything else is refused without touching the table)."""
    return API_KEY.usable(key)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def hint(key: str) -> str:
    """What a listing shows of a key: the prefix and four characters, enough to tell keys apart."""
    return key[: len(PREFIX) + 4] + "…"
