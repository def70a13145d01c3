"""Input files over Telegram's 20 MB download limit: an upload link for one file of a user's job draft, or
of an API key's upload (``POST /v1/uploads``, ``depu.publicapi.uploads``).

A bot cannot download a document over 20 MB from Telegram (getFile), so such a file comes to DePU directly:
the user posts it to the artifacts bucket with a presigned POST that DePU signs. What the form may do is
fixed by its signed policy, which S3 checks before it stores a byte:

- the key is DePU's, ``uploads/<user_id>/<owner>/<safe name>``: the owner is the chat's job draft
  (``d`` + 16 hex) or one public-API upload (``u`` + 16 hex), a random id the server made; the user picks
  neither the user nor the owner, and a form edited to name another key fails the policy;
- 1 byte to the size the user's client declared (the cap, ``upload_max_bytes``, 2 GiB by default, when none
  was declared: ``content-length-range``), so what a link can store is what it reserved;
- it dies after UPLOAD_LINK_SECONDS.

Before a form is signed it reserves room in the user's ledger (``depu.jobs.upload_room``): a user's links
hold at most so many files and bytes that no submitted job has used yet, whichever container signs them.

S3's check is the first line. The second is ``confirm``, before the job is dispatched: the object must exist
and be within the cap (a HEAD), and its ETag is recorded, so the agent's download link is pinned to that
version (``If-Match``): the same form posted again after the job started changes nothing the job reads (the
agent gets 412 and the setup fails, unbilled).
"""
from __future__ import annotations

import re
import secrets
import shlex
from dataclasses import dataclass

from depu.config import get_settings
from depu.errors import UserError
from depu.jobs import storage, upload_room

UPLOAD_LINK_SECONDS = 15 * 60
UPLOADS_PREFIX = "uploads/"
UPLOAD_FILES_DAYS = 1  # template.yaml's expire-uploads rule (tests/test_rental_uploads.py holds them equal)
_DRAFT_ID = re.compile(r"^d[0-9a-f]{16}$")
_UPLOAD_ID = re.compile(r"^u[0-9a-f]{16}$")


@dataclass(frozen=True)
class UploadLink:
    """One file's upload form: POST ``fields`` and then the file (as the form's last field) to ``url``."""

    name: str  # the file's name in the job's inputs/
    key: str
    url: str
    fields: dict[str, str]
    expires_in: int
    max_bytes: int

    def curl(self, path: str | None = None) -> str:
        """The one-line command that posts the file at ``path`` (the file's own name by default)."""
        parts = ["curl", "-sS", "--fail"]
        for field, value in self.fields.items():
            parts += ["-F", f"{field}={value}"]
        parts += ["-F", f"file=@{path or self.name}", self.url]
        return " ".join(shlex.quote(part) for part in parts)


@dataclass(frozen=True)
class UploadedInput:
    """An uploaded file as checked before dispatch: the agent fetches exactly this version of it."""

    name: str
    key: str
    size: int
    etag: str


def max_bytes() -> int:
    return get_settings().upload_max_bytes


def describe_cap() -> str:
    size = max_bytes()
    for unit, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def new_draft_id() -> str:
    return "d" + secrets.token_hex(8)


def new_upload_id() -> str:
    """One public-API upload's id: the owner of exactly one file (the API key's record says which key)."""
    return "u" + secrets.token_hex(8)


def draft_key(user_id: int, draft_id: str, file_name: str) -> str:
    if not _DRAFT_ID.match(str(draft_id)):
        raise ValueError("not a draft id")
    return _key(user_id, draft_id, file_name)


def upload_key(user_id: int, upload_id: str, file_name: str) -> str:
    if not _UPLOAD_ID.match(str(upload_id)):
        raise ValueError("not an upload id")
    return _key(user_id, upload_id, file_name)


def _key(user_id: int, owner: str, file_name: str) -> str:
    return f"{UPLOADS_PREFIX}{int(user_id)}/{owner}/{storage.safe_name(str(file_name))}"


def create_link(user_id: int, draft_id: str, file_name: str, size: int | None = None) -> UploadLink:
    """The upload form for one file of the user's draft. ``size`` (as the user's client declares it) is only
    bounds the policy (and the room reserved); the policy and ``confirm`` are what hold."""
    return _link(user_id, draft_key(user_id, draft_id, file_name), size)


def create_upload_link(user_id: int, upload_id: str, file_name: str, size: int | None = None) -> UploadLink:
    """The upload form of one public-API upload: the same policy as a draft's file, under its own owner id."""
    return _link(user_id, upload_key(user_id, upload_id, file_name), size)


def _link(user_id: int, key: str, size: int | None) -> UploadLink:
    cap = max_bytes()
    if size is not None and not 0 < int(size) <= cap:
        raise UserError(f"An input file is at most {describe_cap()}.")
    most = cap if size is None else int(size)
    upload_room.reserve(user_id, key, most, UPLOAD_LINK_SECONDS, UPLOAD_FILES_DAYS)  # UploadsFull: nothing signed
    url, fields = storage.post_form(key, most, UPLOAD_LINK_SECONDS)
    return UploadLink(name=key.rsplit("/", 1)[-1], key=key, url=url, fields=fields,
                      expires_in=UPLOAD_LINK_SECONDS, max_bytes=most)


def confirm(user_id: int, draft_id: str, names: list[str]) -> list[UploadedInput]:
    """Each named upload of the draft as it is stored now, or a ``UserError`` saying which one is missing or
    too large (and so nothing is dispatched). All of them together are within the cap too."""
    return _confirm_keys([draft_key(user_id, draft_id, name) for name in names])


def confirm_uploads(user_id: int, uploads: list[tuple[str, str]]) -> list[UploadedInput]:
    """``confirm`` for public-API uploads, given as (upload id, file name): the same checks, the same pins."""
    return _confirm_keys([upload_key(user_id, upload_id, name) for upload_id, name in uploads])


def _confirm_keys(keys: list[str]) -> list[UploadedInput]:
    cap = max_bytes()
    found: list[UploadedInput] = []
    for key in keys:
        stored = storage.head(key)
        if stored is None:
            raise UserError(f"<code>{key.rsplit('/', 1)[-1]}</code> has not been uploaded yet: post it with its "
                            f"upload link (valid {UPLOAD_LINK_SECONDS // 60} min), then submit again.")
        size, etag = stored
        if not 0 < size <= cap:
            raise UserError(f"<code>{key.rsplit('/', 1)[-1]}</code> is over the {describe_cap()} cap.")
        found.append(UploadedInput(name=key.rsplit("/", 1)[-1], key=key, size=size, etag=etag))
    if sum(item.size for item in found) > cap:
        raise UserError(f"A job's uploaded input files are at most {describe_cap()} together.")
    return found
