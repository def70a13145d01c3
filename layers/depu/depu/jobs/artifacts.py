"""The files a job completed with, as download links: only while each is what the job completed with.

Upload links are write-once (S3 refuses an overwrite), and this check makes sure a file changed after the
job ended is never handed out even where that refusal is missing: a file's ETag must match the one recorded
at completion.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from depu.jobs import storage
from depu.jobs.models import Job

MAX_LISTED = 50


@dataclass(frozen=True)
class Artifact:
    name: str
    state: str  # "ok" | "missing" (no longer stored) | "withheld" (changed after the job ended)
    size: int | None = None
    url: str | None = None
    expires_at: int | None = None  # when the link stops working at the latest (it may stop earlier: see storage)


def artifacts(job: Job, link_seconds: int = storage.DOWNLOAD_URL_SECONDS) -> list[Artifact]:
    """Each file the job completed with; a usable one with a download link valid for ``link_seconds`` (the
    chat's summary keeps its links a day, the Mini App asks for short ones each time it shows them)."""
    prefix = storage.artifact_prefix(job.job_id)
    etags = list(job.artifact_etags or [])
    found: list[Artifact] = []
    for index, key in enumerate((job.artifacts or [])[:MAX_LISTED]):
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        stored = storage.head(key)
        if stored is None:
            found.append(Artifact(name, "missing"))
        elif index < len(etags) and stored[1] != etags[index]:
            found.append(Artifact(name, "withheld"))
        else:
            found.append(Artifact(name, "ok", stored[0], storage.download_url(key, link_seconds, filename=name),
                                  int(time.time()) + link_seconds))
    return found
