"""Input files for public-API jobs: an upload of one file, owned by the API key that asked for it.

``POST /v1/uploads`` makes an upload: a random id (``u`` + 16 hex) and the upload form of
``depu.jobs.uploads`` (the same signed policy as the chat's: a fixed key under the user's own prefix, 1 byte
to the cap, 15 minutes). ``POST /v1/jobs`` names uploads by id in ``inputs``; before anything is held or
queued, each id is looked up here and then checked by ``depu.jobs.uploads.confirm_uploads`` (a HEAD: there,
within the cap, its ETag pinned for the agent), exactly as the chat's draft files are.

Why a record: an upload id names a file, so the record keeps the file's name, and it binds the upload to
the key that made it. Another user's id is "no such upload of yours" (and its file lies under the other
user's prefix anyway); another key's id of the same user is refused too, so a key that is revoked, or scoped
to something else, cannot have its files run by a sibling key. The record sits in TokensTable beside the
keys, ``api-upload#<id>``, and lives as long as the file (the bucket's expire-uploads rule).

Each link reserves room in the user's upload ledger (``depu.jobs.upload_room``, through
``depu.jobs.uploads``): over the bound, ``start`` raises ``UploadsFull`` (a 429) before any record or form.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model

from depu.apikeys.keys import Caller
from depu.config import get_settings
from depu.errors import UserError
from depu.jobs import uploads
from depu.jobs.spec import MAX_INPUT_FILES
from depu.jobs.storage import safe_name

KIND = "api_upload"
RECORD_SECONDS = uploads.UPLOAD_FILES_DAYS * 86_400


class ApiUpload(Model):
    """One upload: whose it is, which key made it, and the file's name in the job's inputs/."""

    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)  # "api-upload#<upload id>": not a secret, an id
    kind = UnicodeAttribute()
    user_id = NumberAttribute()
    key_id = UnicodeAttribute()
    name = UnicodeAttribute()
    declared_size = NumberAttribute()
    created_at = NumberAttribute()
    expires_at = NumberAttribute()  # the table's TTL; checked here too (TTL deletes lazily)


@dataclass(frozen=True)
class Upload:
    """A fresh upload: its id and its form (``depu.jobs.uploads.UploadLink``)."""

    upload_id: str
    link: uploads.UploadLink


def _record_key(upload_id: str) -> str:
    return f"api-upload#{upload_id}"


def start(caller: Caller, file_name: str, size: int) -> Upload:
    """A new upload for the caller's key: the room and the form, then the record (``UserError`` for a size over
    the cap, ``UploadsFull`` over the user's upload bound: then nothing is written)."""
    upload_id = uploads.new_upload_id()
    link = uploads.create_upload_link(caller.user_id, upload_id, file_name, size)
    now = int(time.time())
    ApiUpload(_record_key(upload_id), kind=KIND, user_id=caller.user_id, key_id=caller.key_id, name=link.name,
              declared_size=int(size), created_at=now, expires_at=now + RECORD_SECONDS
              ).save(condition=ApiUpload.token_hash.does_not_exist())
    return Upload(upload_id, link)


def form(caller: Caller, upload_id: str) -> uploads.UploadLink:
    """A fresh form for an upload the caller's key made (an Idempotency-Key replay gets this: the stored
    answer never holds a signed form)."""
    record = _owned(caller, upload_id)
    return uploads.create_upload_link(caller.user_id, upload_id, record.name, int(record.declared_size))


def _owned(caller: Caller, upload_id: str) -> ApiUpload:
    try:
        record = ApiUpload.get(_record_key(str(upload_id)), consistent_read=True)
    except DoesNotExist:
        record = None
    if record is None or record.kind != KIND or int(record.user_id) != int(caller.user_id) \
            or int(record.expires_at) <= time.time():
        raise UserError(f"No upload {upload_id} of yours (an upload lives {uploads.UPLOAD_FILES_DAYS * 24} h): "
                        "ask for one with POST /v1/uploads.")
    if record.key_id != caller.key_id:
        raise UserError(f"Upload {upload_id} was made with another of your API keys: a job takes only the "
                        "uploads of the key that submits it. Upload the file again with this key.")
    return record


def confirm(caller: Caller, upload_ids: list[str]) -> list[uploads.UploadedInput]:
    """The uploads a job names, as stored now, or a ``UserError`` saying which one is not the caller's key's,
    shares a name with another, is missing or is too large. Nothing is held or queued before this passes."""
    if len(upload_ids) > MAX_INPUT_FILES:
        raise UserError(f"A job takes at most {MAX_INPUT_FILES} input files.")
    named: list[tuple[str, str]] = []
    for upload_id in upload_ids:
        name = safe_name(_owned(caller, upload_id).name)
        if any(name == taken for _id, taken in named):
            raise UserError(f"Two inputs are both named {name}: a job's input files have distinct names.")
        named.append((upload_id, name))
    return uploads.confirm_uploads(caller.user_id, named)
