"""How much one user's upload links may hold at once: a ledger of reservations per user in DynamoDB.

An upload link (``depu.jobs.uploads``) lets its holder store up to its declared size until the bucket's
``expire-uploads`` rule removes the file, and the API key's throttle alone would let anyone ask for links
by the hundred. So each link reserves room first: at most ``upload_max_outstanding`` files and
``upload_max_outstanding_bytes`` declared bytes per user that no submitted job has used yet. The policy of
each link takes at most its declared size, so the declared bytes are what can be stored.

Why one ledger item per user (TokensTable, ``upload-room#<user_id>``) and not a count kept anywhere else:
the links are made by many Lambda containers (chat, Mini App, public API), so the count must be one record
that they all write. Each write is conditional on the version it read (optimistic concurrency): of two
requests racing for the last slot one writes, the other reads again and is refused.

A reservation is keyed by the object key, so asking again for the same file (a fresh form, a replay) does
not count twice. It stops counting without a sweeper:

- when a job uses the file (``release``, after the job is saved: a job pays for what it reads);
- when the file can no longer exist: ``until`` is the latest moment the bucket's rule can keep an object
  created while the link was valid (S3 expires an object at the first midnight UTC after creation plus the
  rule's days);
- when the link has expired and nothing was posted with it (a HEAD, made only when the bound would refuse).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PutError
from pynamodb.models import Model

from depu.config import get_settings
from depu.errors import UserError
from depu.jobs import storage

KIND = "upload_room"
DAY = 86_400
RETRIES = 8


class UploadRoom(Model):
    """One user's reservations: ``held`` is JSON {object key: {"bytes", "link_until", "until"}}."""

    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)  # "upload-room#<user id>": not a secret, an id
    kind = UnicodeAttribute()
    user_id = NumberAttribute()
    version = NumberAttribute()
    held = UnicodeAttribute()
    expires_at = NumberAttribute()  # the table's TTL: when the last reservation stops counting


class UploadsFull(UserError):
    """A link that would take the user over a bound; the message says which and how to free room."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Reservation:
    key: str
    bytes: int
    link_until: int
    until: int


def clock() -> float:
    """Now, as reservations are compared with it (one place, so a test can move it)."""
    return time.time()


def object_gone_by(created_by: float, days: int) -> int:
    """The latest time an object created by ``created_by`` is kept by an ``ExpirationInDays: days`` rule:
    creation plus the days, rounded up to the next midnight UTC (as S3 applies lifecycle expiry)."""
    return (int(created_by + days * DAY) // DAY + 1) * DAY


def _record_key(user_id: int) -> str:
    return f"upload-room#{int(user_id)}"


def _load(user_id: int) -> tuple[UploadRoom | None, dict[str, Reservation]]:
    try:
        item = UploadRoom.get(_record_key(user_id), consistent_read=True)
    except DoesNotExist:
        return None, {}
    held = {key: Reservation(key, int(value["bytes"]), int(value["link_until"]), int(value["until"]))
            for key, value in json.loads(item.held or "{}").items()}
    return item, held


def outstanding(user_id: int, now: float | None = None) -> list[Reservation]:
    """The reservations that count now (expired ones left out; no HEAD)."""
    now = clock() if now is None else now
    return [item for item in _load(user_id)[1].values() if item.until > now]


def _save(user_id: int, item: UploadRoom | None, held: dict[str, Reservation]) -> bool:
    """Write ``held`` if the ledger is still the version read; False if another request wrote first."""
    version = int(item.version) if item is not None else 0
    record = UploadRoom(_record_key(user_id), kind=KIND, user_id=int(user_id), version=version + 1,
                        held=json.dumps({key: {"bytes": r.bytes, "link_until": r.link_until, "until": r.until}
                                         for key, r in sorted(held.items())}),
                        expires_at=max([r.until for r in held.values()], default=int(clock())))
    condition = (UploadRoom.token_hash.does_not_exist() if item is None else UploadRoom.version == version)
    try:
        record.save(condition=condition)
    except PutError as error:
        if getattr(error, "cause_response_code", "") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _over(held: dict[str, Reservation], adding: int) -> str | None:
    settings = get_settings()
    count, declared = len(held) + 1, sum(r.bytes for r in held.values()) + adding
    if count > settings.upload_max_outstanding:
        return f"at most {settings.upload_max_outstanding} files at a time"
    if declared > settings.upload_max_outstanding_bytes:
        return f"at most {_size(settings.upload_max_outstanding_bytes)} declared at a time"
    return None


def _size(size: int) -> str:
    for unit, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def reserve(user_id: int, key: str, size: int, link_seconds: int, days: int, now: float | None = None) -> None:
    """Room for one upload link of ``size`` bytes at ``key``, or ``UploadsFull`` (and nothing written)."""
    for _attempt in range(RETRIES):
        moment = clock() if now is None else now
        item, held = _load(user_id)
        held = {k: r for k, r in held.items() if r.until > moment and k != key}
        if _over(held, size):
            held = {k: r for k, r in held.items() if r.link_until > moment or storage.head(k) is not None}
        bound = _over(held, size)
        if bound:
            soonest = min(r.until for r in held.values())
            wait = max(1, int(soonest - moment))
            declared = sum(r.bytes for r in held.values())
            raise UploadsFull(
                f"Your upload links already hold {len(held)} files ({_size(declared)} declared) that no job has "
                f"used yet; they may hold {bound}. Submit a job that uses them, or wait: a link's room is freed "
                f"{link_seconds // 60} min after it was made if nothing was posted with it, and at the latest "
                f"when its file expires (the next in about {max(1, wait // 3600)} h).", retry_after_s=wait)
        link_until = int(moment) + link_seconds
        held[key] = Reservation(key, int(size), link_until, object_gone_by(link_until, days))
        if _save(user_id, item, held):
            return
    raise UserError("Too many upload requests at once: try again in a moment.")


def release(user_id: int, keys: list[str]) -> None:
    """The room of these uploads back to the user: a job has used them (a key not reserved is no-op)."""
    wanted = set(keys)
    for _attempt in range(RETRIES):
        item, held = _load(user_id)
        if item is None or not wanted & set(held):
            return
        if _save(user_id, item, {k: r for k, r in held.items() if k not in wanted}):
            return
    raise UserError("Too many upload requests at once: try again in a moment.")
