"""Reading a job's full log in order, from a cursor: what the public API's logs route (and ``--follow``) pages.

The agent ships numbered chunks (``jobs/<id>/logs/<seq>.log``, depu.jobs.work.append_logs); the cursor is the
last chunk a reader has seen, so a page is one ListObjectsV2 after it and one GetObject per chunk. Sequence
numbers may skip (a chunk refused over budget), which a listing tolerates and counting would not.
"""
from __future__ import annotations

from dataclasses import dataclass

from depu.jobs import storage

MAX_CHUNKS_PER_PAGE = 50


@dataclass(frozen=True)
class LogPage:
    lines: list[str]
    cursor: int  # the last chunk included (-1: none yet); pass it back for the next page
    more: bool  # further chunks are already stored


def read(job_id: str, after: int = -1, max_chunks: int = MAX_CHUNKS_PER_PAGE) -> LogPage:
    prefix = f"jobs/{job_id}/logs/"
    keys, more = storage.list_after(prefix, storage.log_key(job_id, after) if after >= 0 else None, max_chunks)
    lines: list[str] = []
    cursor = after
    for key in keys:
        name = key[len(prefix):].removesuffix(".log")
        if not name.isdigit():
            continue
        lines.extend(storage.get(key).decode("utf-8", "replace").splitlines())
        cursor = int(name)
    return LogPage(lines, cursor, more)
