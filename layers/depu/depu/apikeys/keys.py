"""API keys: create (shown once), list, revoke, and authenticate a presented key.

Storage, in TokensTable like every other DePU token:
- one item per key, keyed by the key's hash (``ApiKey``): owner, scopes, expiry (DynamoDB's TTL deletes it
  after that), last-used time and the throttle's bucket;
- one index item per user (``KeyIndex``, ``token_hash = "api-keys#<user id>"``) holding the hashes of the
  user's keys, so listing is one GetItem and one BatchGet, never a scan. Creating a key writes both items in
  one transaction, under a condition on the index's size: two creations racing cannot pass the limit.

Revoking deletes the key's item (and its hash from the index) in one transaction, so the very next request
with it is refused. Authentication is one consistent GetItem; the throttle's write that follows is
conditional on the key still existing (``depu.apikeys.throttle``), so a request racing a revocation loses.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute, UnicodeSetAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.expressions.condition import size
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from depu.apikeys import keyhash, scopes as scope_rules
from depu.config import get_settings

KIND = keyhash.API_KEY.name
INDEX_KIND = "api_key_index"
MAX_KEYS_PER_USER = 10
DEFAULT_DAYS = 90
MAX_DAYS = 365
MAX_NAME_CHARS = 40
DAY_S = 86_400


class ApiKey(Model):
    """One key's hash and what it grants."""

    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    user_id = NumberAttribute()
    key_id = UnicodeAttribute()
    name = UnicodeAttribute()
    hint = UnicodeAttribute()
    scopes = ListAttribute(of=UnicodeAttribute)
    created_at = NumberAttribute()
    expires_at = NumberAttribute()  # TTL
    last_used_at = NumberAttribute(null=True)
    # the throttle's token bucket (depu.apikeys.throttle): level after the last request, and when that was
    bucket_level = NumberAttribute(null=True)
    bucket_at = NumberAttribute(null=True)


class KeyIndex(Model):
    """Which keys a user has (their hashes)."""

    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    user_id = NumberAttribute()
    key_hashes = UnicodeSetAttribute(null=True)


class KeyRequestError(ValueError):
    """A request about keys the user can fix (bad name, scopes, expiry, too many keys, no such key)."""


@dataclass(frozen=True)
class KeyInfo:
    """What a listing shows of a key: never the key itself."""

    key_id: str
    name: str
    hint: str
    scopes: list[str]
    created_at: int
    expires_at: int
    last_used_at: int | None

    @property
    def expired(self) -> bool:
        return self.expires_at <= time.time()


@dataclass(frozen=True)
class Caller:
    """Who a presented key speaks for, and what it may do."""

    user_id: int
    key_id: str
    scopes: list[str]
    record: ApiKey

    def may(self, area: str, write: bool) -> bool:
        return scope_rules.allows(self.scopes, area, write)


def _index_hash(user_id: int) -> str:
    return f"api-keys#{int(user_id)}"


def _info(record: ApiKey) -> KeyInfo:
    return KeyInfo(
        key_id=record.key_id,
        name=record.name,
        hint=record.hint,
        scopes=list(record.scopes or []),
        created_at=int(record.created_at),
        expires_at=int(record.expires_at),
        last_used_at=int(record.last_used_at) if record.last_used_at is not None else None,
    )


def _clean_name(name: str | None) -> str:
    text = " ".join(str(name or "").split())
    if not text:
        return "key"
    if len(text) > MAX_NAME_CHARS or not text.isprintable():
        raise KeyRequestError(f"A key's name is at most {MAX_NAME_CHARS} printable characters.")
    return text


def _clean_days(days: int | None) -> int:
    try:
        value = DEFAULT_DAYS if days is None else int(days)
    except (TypeError, ValueError):
        raise KeyRequestError("The expiry is a whole number of days.") from None
    if not 1 <= value <= MAX_DAYS:
        raise KeyRequestError(f"A key lives between 1 and {MAX_DAYS} days.")
    return value


def create(user_id: int, name: str | None = None, scopes: list[str] | None = None, days: int | None = None,
           now: float | None = None) -> tuple[str, KeyInfo]:
    """A new key for the user: returns ``(key, info)``. The key is shown to the user this once."""
    try:
        granted = scope_rules.normalise(scopes)
    except scope_rules.BadScopes as error:
        raise KeyRequestError(str(error)) from None
    label, lifetime = _clean_name(name), _clean_days(days)
    _prune(user_id)
    current = int(time.time() if now is None else now)
    key = keyhash.new_key()
    record = ApiKey(
        keyhash.digest(key), kind=KIND, user_id=int(user_id), key_id="k" + secrets.token_hex(5), name=label,
        hint=keyhash.hint(key), scopes=granted, created_at=current, expires_at=current + lifetime * DAY_S,
    )
    index = KeyIndex(_index_hash(user_id))
    try:
        with TransactWrite(connection=ApiKey._get_connection().connection) as transaction:
            transaction.save(record, condition=ApiKey.token_hash.does_not_exist())
            transaction.update(
                index,
                actions=[KeyIndex.kind.set(INDEX_KIND), KeyIndex.user_id.set(int(user_id)),
                         KeyIndex.key_hashes.add({record.token_hash})],
                condition=KeyIndex.key_hashes.does_not_exist() | (size(KeyIndex.key_hashes) < MAX_KEYS_PER_USER),
            )
    except TransactWriteError as error:
        if "ConditionalCheckFailed" in str(getattr(error, "cause_response_message", "")) or \
                "ConditionalCheckFailed" in str(error):
            raise KeyRequestError(f"You have {MAX_KEYS_PER_USER} API keys, the most allowed. Revoke one first.") from None
        raise
    return key, _info(record)


def _records(user_id: int) -> tuple[list[ApiKey], set[str]]:
    """The user's key items, and the hashes in the index whose item is gone (expired and deleted by TTL)."""
    try:
        index = KeyIndex.get(_index_hash(user_id), consistent_read=True)
    except DoesNotExist:
        return [], set()
    hashes = set(index.key_hashes or ())
    found = [r for r in ApiKey.batch_get(list(hashes)) if r.kind == KIND and int(r.user_id) == int(user_id)] \
        if hashes else []
    return found, hashes - {r.token_hash for r in found}


def _prune(user_id: int) -> None:
    """Forget keys that are past their expiry, so they stop counting against the limit."""
    found, gone = _records(user_id)
    now = time.time()
    stale = gone | {r.token_hash for r in found if r.expires_at <= now}
    for record in found:
        if record.token_hash in stale:
            record.delete()
    if stale:
        KeyIndex(_index_hash(user_id)).update(actions=[KeyIndex.key_hashes.delete(stale)])


def list_keys(user_id: int) -> list[KeyInfo]:
    """The user's keys, newest first (expired ones included until they are pruned, marked by ``expired``)."""
    found, _ = _records(user_id)
    return sorted((_info(r) for r in found), key=lambda info: (-info.created_at, info.key_id))


def revoke(user_id: int, key_id: str) -> KeyInfo:
    """Delete one of the user's keys; the next request with it is refused."""
    found, _ = _records(user_id)
    record = next((r for r in found if r.key_id == str(key_id)), None)
    if record is None:
        raise KeyRequestError("No such API key of yours.")
    with TransactWrite(connection=ApiKey._get_connection().connection) as transaction:
        transaction.delete(record)
        transaction.update(KeyIndex(_index_hash(user_id)), actions=[KeyIndex.key_hashes.delete({record.token_hash})])
    return _info(record)


def authenticate(key: object, now: float | None = None) -> Caller | None:
    """The caller a presented key speaks for, or None: malformed, unknown, revoked or expired alike."""
    if not keyhash.well_formed(key):
        return None
    digest = keyhash.digest(key)  # type: ignore[arg-type]
    try:
        record = ApiKey.get(digest, consistent_read=True)
    except DoesNotExist:
        return None
    if record.kind != KIND or not keyhash.same(record.token_hash, digest):
        return None
    if record.expires_at <= (time.time() if now is None else now):
        return None  # TTL deletes lazily: expiry is checked here
    return Caller(int(record.user_id), record.key_id, list(record.scopes or []), record)
