"""Provider enrolment tokens and agent tokens: random, shown once, stored only as SHA-256 hashes.

A provider gets an enrolment token from ``/provider`` in Telegram; it enrols exactly one machine (consuming
it is one conditional write, so two registrations racing with one token yield one agent) and expires after
ENROLMENT_TTL_SECONDS if unused. Registering gives the machine its own agent token, which authenticates every
later call. An agent token lives AGENT_TOKEN_TTL_SECONDS; the agent renews it before then
(``POST /agent/token/renew``), and the renewed-away token keeps working for AGENT_TOKEN_OVERLAP_SECONDS only,
so requests already in flight with it still land. Which of an agent's tokens are live, and whether the agent
is revoked, is decided on the agent's own item (depu.agents.registry.authenticate), so revocation and
renewal take effect at once. Issuing, hashing, checking, single use and expiry are depu.tokens' (one module
for every kind of token); this module names the two kinds and their lifetimes.
"""
from __future__ import annotations

import time

from depu.tokens import TokenKind, TokenRecord, hash_token

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

ENROLMENT = TokenKind("provider_enrolment", ENROLMENT_TOKEN_PREFIX, ENROLMENT_TTL_SECONDS, MAX_TOKEN_CHARS)
AGENT = TokenKind("agent", AGENT_TOKEN_PREFIX, AGENT_TOKEN_TTL_SECONDS, MAX_TOKEN_CHARS)
ENROLMENT_KIND = ENROLMENT.name
AGENT_KIND = AGENT.name

__all__ = [
    "AGENT", "AGENT_KIND", "AGENT_TOKEN_OVERLAP_SECONDS", "AGENT_TOKEN_PREFIX", "AGENT_TOKEN_RENEW_WINDOW_SECONDS",
    "AGENT_TOKEN_TTL_SECONDS", "ENROLMENT", "ENROLMENT_KIND", "ENROLMENT_TOKEN_PREFIX", "ENROLMENT_TTL_SECONDS",
    "MAX_TOKEN_CHARS", "TokenRecord", "agent_for_token", "agent_token_record", "consume_enrolment", "expiry_of",
    "give_back_enrolment", "hash_token", "issue_enrolment_token", "new_agent_token", "provider_for_enrolment",
    "save_agent_token", "shorten_agent_token",
]


def issue_enrolment_token(provider_user_id: int, ttl_seconds: int = ENROLMENT_TTL_SECONDS) -> str:
    """A new enrolment token for this provider; the local stack calls this to enrol its own agent."""
    return ENROLMENT.issue(user_id=provider_user_id, expires_at=int(time.time()) + ttl_seconds).token


def consume_enrolment(token: str | None, agent_id: str) -> int | None:
    """Use up an enrolment token for ``agent_id``: the provider's user id, or None if the token is unknown,
    expired or used already (exactly one of two registrations racing with the same token gets it)."""
    record = ENROLMENT.consume(token, by=agent_id)
    return int(record.user_id) if record is not None and record.user_id is not None else None


def give_back_enrolment(token: str, agent_id: str) -> None:
    """Undo ``consume_enrolment`` when the registration it was for failed before the agent existed, so the
    provider's token is not lost to our own error (only the registration that consumed it can undo it)."""
    ENROLMENT.give_back(token, agent_id)


def provider_for_enrolment(token: str | None) -> int | None:
    """The provider's user id an unused, unexpired enrolment token belongs to, or None (reads only)."""
    record = ENROLMENT.check(token)
    if record is None or record.used_at is not None or record.user_id is None:
        return None
    return int(record.user_id)


def new_agent_token() -> tuple[str, str]:
    """A fresh agent token and its hash (the hash goes on the agent's item before the token is handed out)."""
    return AGENT.new()


def save_agent_token(token_hash: str, agent_id: str, provider_user_id: int, now: int | None = None) -> int:
    """Store an agent token's hash; returns when it expires."""
    expires_at = AGENT.save(token_hash, now=now, user_id=provider_user_id, agent_id=agent_id)
    assert expires_at is not None  # the kind has a ttl
    return expires_at


def shorten_agent_token(token_hash: str, until: int) -> None:
    """Let a renewed-away token's record die at ``until`` (DynamoDB's TTL then deletes it)."""
    AGENT.shorten(token_hash, until)


def expiry_of(record: TokenRecord) -> float:
    """When an agent token stops working. One stored before tokens expired has no expires_at: it counts
    from its creation like a new one."""
    return float(AGENT.expiry(record))  # type: ignore[arg-type]


def agent_token_record(token: str | None) -> TokenRecord | None:
    """The unexpired agent-token record for ``token``, or None. Whether it is still live for its agent
    (not renewed away, agent not revoked) is registry.authenticate's question."""
    return AGENT.check(token)


def agent_for_token(token: str | None) -> str | None:
    """The agent id an unexpired agent token names, or None (see registry.authenticate for the full check)."""
    record = agent_token_record(token)
    return record.agent_id if record else None
