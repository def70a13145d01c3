"""The one parser of ``Authorization: Bearer <token>`` headers (agent, fork-host and dashboard routes)."""
from __future__ import annotations

from collections.abc import Mapping


def bearer_token(headers: Mapping[str, str] | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (the header name in any case), or None.

    Tokens are ASCII: anything else (a lone surrogate included) is no token, so it never reaches hashing,
    where it would crash with a 5xx instead of answering 401."""
    header = ""
    for name, value in (headers or {}).items():
        if name.lower() == "authorization":
            header = value or ""
            break
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and token.isascii() else None
