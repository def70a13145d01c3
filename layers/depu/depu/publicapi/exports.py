"""Exports started from the public API: the chat's /export pipeline, plus a record a program can poll.

The request goes through the same quota (``export_quota``) and the same queue and exporter as the chat's; the
file lands at ``exports/<user id>/<export id>/...`` and the exporter frees the quota slot once it is written.
So an export's state is read, not stored: a file under its prefix means ready; the exporter's checkpoint
(``export_checkpoint``) marked failed means failed; no file while the slot is still held by this export means
pending (with the rows and share of the range done so far, from the checkpoint); no file and the slot freed
means the range held no rows (the exporter writes no empty file). An API export says nothing in the chat
unless it was asked to (``notify_chat``): its progress and file are this record. The record (ChainTable, ``pk = APIEXPORT#<user id>``) holds
what was asked, so a poll can name the file, and so another user's id is "not found".
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from depu.analytics import export, export_checkpoint, export_quota
from depu.chain import store
from depu.jobs import storage

RECORD_DAYS = 7  # the bucket expires exports/ after 7 days


@dataclass(frozen=True)
class ApiExport:
    export_id: str
    status: str  # pending | ready | empty
    request: export.ExportRequest
    created_at: int
    size: int | None = None
    download_url: str | None = None
    rows: int | None = None
    percent: int | None = None


def _pk(user_id: int) -> str:
    return f"APIEXPORT#{int(user_id)}"


def start(user_id: int, dataset: str, first: int, last: int, fmt: str, token: str | None = None, *,
          notify_chat: bool = False) -> ApiExport:
    """Queue an export (ExportError for a bad request, ExportLimited over the quota)."""
    asset = token.lower() if token else None
    export.validate(dataset, first, last, fmt, asset)
    request = export.ExportRequest(secrets.token_hex(8), int(user_id), int(user_id), dataset, first, last, fmt, asset,
                                   chat=notify_chat)
    export_quota.acquire(user_id, request.request_id)
    now = int(time.time())
    try:
        store.table().put_item(Item={
            "pk": _pk(user_id), "sk": request.request_id, "request": request.to_json(), "created_at": now,
            "expires_at": now + RECORD_DAYS * 86_400,
        })
        export.enqueue(request)
    except Exception:
        export_quota.release(user_id, request.request_id)
        raise
    return ApiExport(request.request_id, "pending", request, now)


def find(user_id: int, export_id: str) -> ApiExport | None:
    """The user's export and its state now, or None (unknown, expired, or another user's)."""
    if not export_id.isalnum() or len(export_id) > 40:
        return None
    item = store.table().get_item(Key={"pk": _pk(user_id), "sk": export_id}, ConsistentRead=True).get("Item")
    if not item:
        return None
    request = export.ExportRequest.from_json(str(item["request"]))
    created = int(item["created_at"])
    run = export_checkpoint.read(request.request_id)
    rows = run.rows if run else None
    blocks = request.end - request.start + 1
    percent = min(100, 100 * (run.cursor - request.start) // blocks) if run else None
    stored = storage.head(request.key)
    if stored is not None:
        url = storage.download_url(request.key, seconds=export.LINK_SECONDS, filename=request.filename)
        return ApiExport(export_id, "ready", request, created, stored[0], url, rows, 100)
    if run and run.state == export_checkpoint.FAILED:
        return ApiExport(export_id, "failed", request, created, rows=rows, percent=percent)
    quota = store.table().get_item(Key=export_quota._key(user_id),
                                   ConsistentRead=True).get("Item") or {}
    running = quota.get("running") == export_id and \
        int(quota.get("running_since", 0)) >= time.time() - export_quota.RUNNING_LEASE_SECONDS
    return ApiExport(export_id, "pending" if running else "empty", request, created, rows=rows, percent=percent)
