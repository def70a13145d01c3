"""Every bearer token DePU issues, in one place: issue, hash, check, use once, revoke.

Why one module: provider enrolment tokens, agent tokens, fork RPC URL tokens, dashboard sessions and login
codes all live in TokensTable and follow the same rules, so the rules are written once here and each feature
only names its kind (``TokenKind``: the item's ``kind``, the token's prefix, its lifetime):

- A token is ``secrets.token_urlsafe(32)`` (256 random bits) behind its kind's prefix, shown once and stored
  only as its SHA-256, which is the table's key: a lookup is one GetItem and a leaked table grants nothing.
- A record answers only for its own kind, so a token of one kind never opens another's door.
- DynamoDB's TTL deletes expired items lazily (up to days later), so every check compares the expiry itself.
  A token is live while ``now < expiry``; a record stored without ``expires_at`` expires ``ttl`` after its
  creation (agent tokens from before tokens expired), or never for a kind without a ``ttl``.
- Single use (enrolment tokens, login codes) is one conditional update that stamps ``used_at`` only if it is
  still unset and the token unexpired, so of two requests racing with one token exactly one wins.
- Revoking deletes the item, only if it is of the kind being revoked.

The feature modules (depu.agents.tokens, depu.forks.tokens, depu.dashboard.sessions) are thin: they pick a
kind and add what only they mean (an agent's renewal overlap, a fork's URL, a session's messages).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError
from pynamodb.models import Model

from depu.config import get_settings


class TokenRecord(Model):
    """One token's hash and what it grants. Which attributes are set depends on the kind."""

    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    user_id = NumberAttribute(null=True)  # the provider, the fork's owner, the dashboard's user
    agent_id = UnicodeAttribute(null=True)  # agent tokens
    fork_id = UnicodeAttribute(null=True)  # fork RPC tokens
    created_at = NumberAttribute()
    expires_at = NumberAttribute(null=True)  # epoch seconds; also the table's TTL attribute
    used_at = NumberAttribute(null=True)  # single-use kinds: when it was used
    used_by = UnicodeAttribute(null=True)  # ... and by what (the agent an enrolment token enrolled)


@dataclass(frozen=True)
class Issued:
    """A freshly issued token: the token itself (hand it out once), its hash (what is stored) and expiry."""

    token: str
    token_hash: str
    expires_at: int | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def condition_failed(error: Exception) -> bool:
    """Whether a PynamoDB write failed on its condition (as opposed to failing for real)."""
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class TokenKind:
    """One kind of token: ``name`` is the item's ``kind``, every token starts with ``prefix``, lives ``ttl``
    seconds by default (None: as long as the caller's ``expires_at`` says, or for ever) and is at most
    ``max_chars`` long (anything longer is refused before it is hashed). ``consistent_read`` is for kinds
    checked right after they are written (sessions, agent tokens); the fork RPC hot path reads eventually."""

    name: str
    prefix: str = ""
    ttl: int | None = None
    max_chars: int = 200
    consistent_read: bool = True

    # ------------------------------------------------------------------ issue
    def new(self) -> tuple[str, str]:
        """A fresh token of this kind and its hash, stored nowhere yet (a caller that must write the hash
        elsewhere first, like an agent's item, stores it with ``save`` afterwards)."""
        token = self.prefix + secrets.token_urlsafe(32)
        return token, hash_token(token)

    def save(self, token_hash: str, *, now: float | None = None, expires_at: int | None = None, **fields: Any) -> int | None:
        """Store a new token's hash with what it grants; returns its expiry (``expires_at``, else now + ttl)."""
        created = int(_now(now))
        if expires_at is None and self.ttl is not None:
            expires_at = created + self.ttl
        TokenRecord(token_hash, kind=self.name, created_at=created, expires_at=expires_at, **fields).save(
            condition=TokenRecord.token_hash.does_not_exist()
        )
        return expires_at

    def issue(self, *, now: float | None = None, expires_at: int | None = None, **fields: Any) -> Issued:
        """A new token granting ``fields`` (user_id, agent_id, fork_id), stored hashed. The condition proves
        no 256-bit collision overwrote another token; one would be retried, and will not happen."""
        for _ in range(3):
            token, digest = self.new()
            try:
                expiry = self.save(digest, now=now, expires_at=expires_at, **fields)
            except PutError as error:
                if condition_failed(error):
                    continue
                raise
            return Issued(token, digest, expiry)
        raise RuntimeError("could not store a fresh token")

    # ------------------------------------------------------------------ check
    def usable(self, token: object) -> bool:
        """Whether ``token`` could be one of this kind at all (cheap checks before any hashing or I/O)."""
        return (
            isinstance(token, str)
            and bool(token)
            and len(token) <= self.max_chars
            and token.isascii()
            and token.startswith(self.prefix)
        )

    def expiry(self, record: TokenRecord) -> float | None:
        """When the record's token stops working (None: never)."""
        if record.expires_at is not None:
            return float(record.expires_at)
        return float(record.created_at) + self.ttl if self.ttl is not None else None

    def live(self, record: TokenRecord, now: float | None = None) -> bool:
        expiry = self.expiry(record)
        return expiry is None or _now(now) < expiry

    def find(self, token: str | None) -> TokenRecord | None:
        """The stored record of this kind for ``token``, expired or not, or None."""
        if not self.usable(token):
            return None
        digest = hash_token(token)  # type: ignore[arg-type]
        try:
            record = TokenRecord.get(digest, consistent_read=self.consistent_read)
        except DoesNotExist:
            return None
        # the hash is the key, so this comparison is belt and braces against a mis-keyed item
        if not hmac.compare_digest(record.token_hash, digest) or record.kind != self.name:
            return None
        return record

    def check(self, token: str | None, *, now: float | None = None) -> TokenRecord | None:
        """The live record ``token`` names, or None (malformed, unknown, another kind, expired)."""
        record = self.find(token)
        return record if record is not None and self.live(record, now) else None

    # ------------------------------------------------------------------ use once
    def consume(self, token: str | None, *, now: float | None = None, by: str | None = None) -> TokenRecord | None:
        """Use a single-use token up: its record, or None if it is unknown, of another kind, expired or used
        already. One conditional UpdateItem, so of two requests racing with the same token one wins."""
        if not self.usable(token):
            return None
        current = int(_now(now))
        record = TokenRecord(hash_token(token))  # type: ignore[arg-type]
        actions = [TokenRecord.used_at.set(current)]
        if by is not None:
            actions.append(TokenRecord.used_by.set(by))
        try:
            record.update(
                actions=actions,
                condition=TokenRecord.token_hash.exists()
                & (TokenRecord.kind == self.name)
                & TokenRecord.used_at.does_not_exist()
                & (TokenRecord.expires_at > current),
            )
        except UpdateError as error:
            if condition_failed(error):
                return None
            raise
        return record

    def give_back(self, token: str, by: str) -> None:
        """Undo ``consume(token, by=by)`` when what it was used for failed on our side; only the use that
        consumed it can undo it."""
        try:
            TokenRecord(hash_token(token)).update(
                actions=[TokenRecord.used_at.remove(), TokenRecord.used_by.remove()],
                condition=(TokenRecord.kind == self.name) & (TokenRecord.used_by == by),
            )
        except UpdateError as error:
            if not condition_failed(error):
                raise

    # ------------------------------------------------------------------ end
    def shorten(self, token_hash: str, until: int) -> None:
        """Let a token die at ``until`` if it would live longer (DynamoDB's TTL then deletes it)."""
        try:
            TokenRecord(token_hash).update(
                actions=[TokenRecord.expires_at.set(until)],
                condition=(TokenRecord.kind == self.name) & (TokenRecord.expires_at > until),
            )
        except UpdateError as error:
            if not condition_failed(error):
                raise

    def revoke(self, token_hash: str | None) -> None:
        """Delete a token by its hash. An unknown hash, or one of another kind, is left alone, not an error."""
        if not token_hash:
            return
        try:
            TokenRecord(token_hash).delete(condition=TokenRecord.kind == self.name)
        except DeleteError as error:
            if not condition_failed(error):
                raise

    def revoke_token(self, token: str | None) -> None:
        """Delete the token itself (sign out, a code that reached no one)."""
        if self.usable(token):
            self.revoke(hash_token(token))  # type: ignore[arg-type]
