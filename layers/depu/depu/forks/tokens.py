"""Fork RPC URL tokens: random, shown to the owner once, stored only as SHA-256 hashes in TokensTable."""
from __future__ import annotations

import hashlib
import secrets
import time

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model

from depu.config import get_settings

KIND = "fork_rpc"
PREFIX = "dpf_"


class ForkRpcToken(Model):
    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    user_id = NumberAttribute()
    fork_id = UnicodeAttribute()
    created_at = NumberAttribute()
    expires_at = NumberAttribute(null=True)  # TTL: the fork's expiry


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(fork_id: str, user_id: int, expires_at: int) -> tuple[str, str]:
    """A new token for the fork; returns ``(token, token_hash)``. The token itself is never stored."""
    token = PREFIX + secrets.token_urlsafe(32)
    digest = hash_token(token)
    ForkRpcToken(
        digest, kind=KIND, user_id=user_id, fork_id=fork_id, created_at=int(time.time()), expires_at=expires_at
    ).save(condition=ForkRpcToken.token_hash.does_not_exist())
    return token, digest


def revoke(token_hash: str | None) -> None:
    if token_hash:
        ForkRpcToken(token_hash).delete()


def fork_for(token: str | None) -> ForkRpcToken | None:
    """The token's record if it is a live fork token, else None (unknown, other kind, expired, malformed)."""
    if not token or len(token) > 100 or not token.startswith(PREFIX) or not token.isascii():
        return None
    try:
        record = ForkRpcToken.get(hash_token(token))
    except DoesNotExist:
        return None
    if record.kind != KIND or (record.expires_at is not None and record.expires_at < time.time()):
        return None
    return record


def rpc_url(token: str) -> str:
    return f"{get_settings().public_api_url}/rpc/{token}"
