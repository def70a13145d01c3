"""Provider enrolment tokens and agent tokens: random, shown once, stored only as SHA-256 hashes.

A provider gets an enrolment token from ``/provider`` in Telegram; it may enrol several machines until it
expires. Registering with it gives each machine its own agent token, which authenticates every later call.
Both live in TokensTable, keyed by the hash, so a lookup is one GetItem and a leaked table reveals no token.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model

from depu.config import get_settings

ENROLMENT_KIND = "provider_enrolment"
AGENT_KIND = "agent"
ENROLMENT_TTL_SECONDS = 24 * 3600
AGENT_TOKEN_PREFIX = "depa_"
ENROLMENT_TOKEN_PREFIX = "depp_"


class TokenRecord(Model):
    """One token's hash and what it grants. Other features keep their own kinds in the same table."""

    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    user_id = NumberAttribute(null=True)
    agent_id = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    expires_at = NumberAttribute(null=True)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_enrolment_token(provider_user_id: int, ttl_seconds: int = ENROLMENT_TTL_SECONDS) -> str:
    """A new enrolment token for this provider; the local stack calls this to enrol its own agent."""
    token = ENROLMENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = int(time.time())
    TokenRecord(
        hash_token(token), kind=ENROLMENT_KIND, user_id=provider_user_id, created_at=now, expires_at=now + ttl_seconds
    ).save(condition=TokenRecord.token_hash.does_not_exist())
    return token


def issue_agent_token(agent_id: str, provider_user_id: int) -> str:
    token = AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    TokenRecord(
        hash_token(token), kind=AGENT_KIND, user_id=provider_user_id, agent_id=agent_id, created_at=int(time.time())
    ).save(condition=TokenRecord.token_hash.does_not_exist())
    return token


def _lookup(token: str | None, kind: str) -> TokenRecord | None:
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    try:
        record = TokenRecord.get(digest)
    except DoesNotExist:
        return None
    # the hash is the key, so this comparison is belt and braces against a mis-keyed item
    if not hmac.compare_digest(record.token_hash, digest) or record.kind != kind:
        return None
    if record.expires_at is not None and record.expires_at < time.time():
        return None  # DynamoDB's TTL deletes expired items lazily, so expiry is checked here too
    return record


def provider_for_enrolment(token: str | None) -> int | None:
    """The provider's user id an enrolment token belongs to, or None if it is unknown or expired."""
    record = _lookup(token, ENROLMENT_KIND)
    return int(record.user_id) if record and record.user_id is not None else None


def agent_for_token(token: str | None) -> str | None:
    """The agent id an agent token authenticates, or None."""
    record = _lookup(token, AGENT_KIND)
    return record.agent_id if record else None
