"""Fork RPC URL tokens: random, shown to the owner once, stored only as SHA-256 hashes in TokensTable.

The rules every token follows (hashing, kinds, expiry, revocation) are depu.tokens'; a fork token is the
``fork_rpc`` kind, lives as long as its fork (the caller's ``expires_at``) and is read eventually consistent,
because it is checked on every RPC call and a fresh fork's first call waits for its creation anyway.
"""
from __future__ import annotations

from depu.config import get_settings
from depu.tokens import TokenKind, TokenRecord, hash_token

PREFIX = "dpf_"
FORK_RPC = TokenKind("fork_rpc", PREFIX, ttl=None, max_chars=100, consistent_read=False)
KIND = FORK_RPC.name
ForkRpcToken = TokenRecord
"""The record a fork token names (TokensTable's one model; a fork token's carries ``fork_id``)."""

__all__ = ["FORK_RPC", "KIND", "PREFIX", "ForkRpcToken", "fork_for", "hash_token", "issue", "revoke", "rpc_url"]


def issue(fork_id: str, user_id: int, expires_at: int) -> tuple[str, str]:
    """A new token for the fork; returns ``(token, token_hash)``. The token itself is never stored."""
    issued = FORK_RPC.issue(user_id=user_id, fork_id=fork_id, expires_at=expires_at)
    return issued.token, issued.token_hash


def revoke(token_hash: str | None) -> None:
    FORK_RPC.revoke(token_hash)


def fork_for(token: str | None) -> TokenRecord | None:
    """The token's record if it is a live fork token, else None (unknown, other kind, expired, malformed)."""
    return FORK_RPC.check(token)


def rpc_url(token: str) -> str:
    return f"{get_settings().public_api_url}/rpc/{token}"
