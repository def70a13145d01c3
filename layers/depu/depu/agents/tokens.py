"""Provider enrolment tokens and agent tokens: random, shown once, stored only as SHA-256 hashes.

A provider gets an enrolment token from ``/provider`` in Telegram; it enrols exactly one machine (consuming
it is one conditional write, so two registrations racing with one token yield one agent) and expires after
ENROLMENT_TTL_SECONDS if unused. Registering gives the machine its own agent token, which authenticates every
later call. An agent token lives AGENT_TOKEN_TTL_SECONDS; the agent renews it before then
(``POST /agent/token/renew``), and the renewed-away token keeps working for AGENT_TOKEN_OVERLAP_SECONDS only,
so requests already in flight with it still land. Which of an agent's tokens are live, and whether the agent
is revoked, is decided on the agent's own item (depu.agents.registry.authenticate), so revocation and
renewal take effect at once. Tokens live in TokensTable, keyed by the hash, so a lookup is one GetItem and a
leaked table reveals no token.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.models import Model

from depu.config import get_settings

ENROLMENT_KIND = "provider_enrolment"
AGENT_KIND = "agent"
ENROLMENT_TTL_SECONDS = 24 * 3600
AGENT_TOKEN_TTL_SECONDS = 30 * 24 * 3600
"""An agent token's lifetime. A stolen token is useful for at most this long even if nobody revokes it."""
AGENT_TOKEN_RENEW_WINDOW_SECONDS = 7 * 24 * 3600
"""Heartbeat answers ask the agent to renew once its token has less than this left: a week of retries."""
AGENT_TOKEN_OVERLAP_SECONDS = 10 * 60
"""How long a renewed-away token still works: longer than any request in flight (claim long-polls, the
outbox's retries), short enough that a copy of it is soon worthless."""
AGENT_TOKEN_PREFIX = "depa_"
ENROLMENT_TOKEN_PREFIX = "depp_"
MAX_TOKEN_CHARS = 200


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
    # An enrolment token's use: when, and the agent it enrolled (single use).
    used_at = NumberAttribute(null=True)
    used_by = UnicodeAttribute(null=True)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _usable(token: str | None) -> bool:
    return bool(token) and isinstance(token, str) and len(token) <= MAX_TOKEN_CHARS


def issue_enrolment_token(provider_user_id: int, ttl_seconds: int = ENROLMENT_TTL_SECONDS) -> str:
    """A new enrolment token for this provider; the local stack calls this to enrol its own agent."""
    token = ENROLMENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = int(time.time())
    TokenRecord(
        hash_token(token), kind=ENROLMENT_KIND, user_id=provider_user_id, created_at=now, expires_at=now + ttl_seconds
    ).save(condition=TokenRecord.token_hash.does_not_exist())
    return token


def _condition_failed(error: Exception) -> bool:
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"


def consume_enrolment(token: str | None, agent_id: str) -> int | None:
    """Use up an enrolment token for ``agent_id``: the provider's user id, or None if the token is unknown,
    expired or used already. One conditional UpdateItem, so of two registrations racing with the same token
    exactly one gets the provider."""
    if not _usable(token):
        return None
    now = int(time.time())
    record = TokenRecord(hash_token(token))
    try:
        record.update(
            actions=[TokenRecord.used_at.set(now), TokenRecord.used_by.set(agent_id)],
            condition=(TokenRecord.kind == ENROLMENT_KIND)
            & TokenRecord.used_at.does_not_exist()
            & (TokenRecord.expires_at > now),
        )
    except UpdateError as error:
        if _condition_failed(error):
            return None
        raise
    return int(record.user_id) if record.user_id is not None else None


def give_back_enrolment(token: str, agent_id: str) -> None:
    """Undo ``consume_enrolment`` when the registration it was for failed before the agent existed, so the
    provider's token is not lost to our own error (only the registration that consumed it can undo it)."""
    try:
        TokenRecord(hash_token(token)).update(
            actions=[TokenRecord.used_at.remove(), TokenRecord.used_by.remove()],
            condition=TokenRecord.used_by == agent_id,
        )
    except UpdateError as error:
        if not _condition_failed(error):
            raise


def provider_for_enrolment(token: str | None) -> int | None:
    """The provider's user id an unused, unexpired enrolment token belongs to, or None (reads only)."""
    record = _lookup(token, ENROLMENT_KIND)
    if record is None or record.used_at is not None or record.user_id is None:
        return None
    return int(record.user_id)


def new_agent_token() -> tuple[str, str]:
    """A fresh agent token and its hash (the hash goes on the agent's item before the token is handed out)."""
    token = AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def save_agent_token(token_hash: str, agent_id: str, provider_user_id: int, now: int | None = None) -> int:
    """Store an agent token's hash; returns when it expires."""
    now = int(time.time()) if now is None else int(now)
    expires_at = now + AGENT_TOKEN_TTL_SECONDS
    TokenRecord(
        token_hash, kind=AGENT_KIND, user_id=provider_user_id, agent_id=agent_id, created_at=now, expires_at=expires_at
    ).save(condition=TokenRecord.token_hash.does_not_exist())
    return expires_at


def shorten_agent_token(token_hash: str, until: int) -> None:
    """Let a renewed-away token's record die at ``until`` (DynamoDB's TTL then deletes it)."""
    try:
        TokenRecord(token_hash).update(
            actions=[TokenRecord.expires_at.set(until)],
            condition=(TokenRecord.kind == AGENT_KIND) & (TokenRecord.expires_at > until),
        )
    except UpdateError as error:
        if not _condition_failed(error):
            raise


def expiry_of(record: TokenRecord) -> float:
    """When an agent token stops working. One stored before tokens expired has no expires_at: it counts
    from its creation like a new one."""
    if record.expires_at is not None:
        return float(record.expires_at)
    return float(record.created_at) + AGENT_TOKEN_TTL_SECONDS


def _lookup(token: str | None, kind: str) -> TokenRecord | None:
    if not _usable(token):
        return None
    digest = hash_token(token)
    try:
        record = TokenRecord.get(digest, consistent_read=True)
    except DoesNotExist:
        return None
    # the hash is the key, so this comparison is belt and braces against a mis-keyed item
    if not hmac.compare_digest(record.token_hash, digest) or record.kind != kind:
        return None
    expires = expiry_of(record) if kind == AGENT_KIND else record.expires_at
    if expires is not None and expires < time.time():
        return None  # DynamoDB's TTL deletes expired items lazily, so expiry is checked here too
    return record


def agent_token_record(token: str | None) -> TokenRecord | None:
    """The unexpired agent-token record for ``token``, or None. Whether it is still live for its agent
    (not renewed away, agent not revoked) is registry.authenticate's question."""
    return _lookup(token, AGENT_KIND)


def agent_for_token(token: str | None) -> str | None:
    """The agent id an unexpired agent token names, or None (see registry.authenticate for the full check)."""
    record = agent_token_record(token)
    return record.agent_id if record else None
