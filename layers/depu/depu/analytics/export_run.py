"""One run of the exporter on one export: build parts up to a deadline, then hand over or deliver.

An export of any range outlasts one exporter run (600 s), so the work is a chain of runs over the raw parts
of the range, in block order (``depu.analytics.raw``):

1. **Build.** Each raw part is one chunk: its rows in the range are appended to a local file in the
   export's format. When that file reaches ``PART_TARGET_BYTES``, or the run is about to hand over, or the
   range is done, it is stored as the export's next *part object* (``exports/<user>/<id>/parts/<n>``) and
   the checkpoint moves past it (``depu.analytics.export_checkpoint``: a conditional write on hop, cursor and
   part count). A crash loses at most the chunks since the last part; the redelivered message resumes at the
   checkpoint and rewrites the same part object, so no row is lost or doubled.
2. **Hand over.** A run starts a chunk only before its ``deadline`` (the handler's remaining time less a
   margin; the domain never sees Lambda's context), and always does at least one, so every run moves the
   export on. At the deadline it queues the next hop's message and stops; the user's export slot is renewed.
3. **Compose.** With the range done (and, if the run has worked, ``compose_reserve`` left, else in a fresh
   run), the parts become one file (``depu.analytics.export_compose``) until ``compose_deadline``: a compose
   that needs longer checkpoints its multipart upload (``advance_compose``) and hands over like a build, and
   the next run resumes it. The file is sent as a document up to the Bot API's 50 MB, as a presigned link
   beyond; then the slot is freed and the parts and saved buffers are deleted (the bucket's 7-day expiry of
   ``exports/`` takes any a crash leaves, its multipart-upload rule an upload nobody finished).

The progress message is one message slot edited in place across runs, compose runs included ("composing:
part k of n"): its next version and the time of the last edit are part of the checkpoint (the build's and
the compose's), so edits stay in order and at most one per ``progress_seconds``.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable

import boto3

from depu.analytics import export_checkpoint as checkpoints
from depu.analytics import export_compose, export_quota, raw
from depu.analytics.export import (DOCUMENT_LIMIT, FORMATS, LINK_SECONDS, PROGRESS_SECONDS, ExportRequest,
                                   PartWriter, enqueue, progress_text)
from depu.analytics.export_checkpoint import BUILDING, COMPOSING, DELIVERED, FAILED, Checkpoint
from depu.config import get_settings

if TYPE_CHECKING:
    from depu.notify import Notice

PART_TARGET_BYTES = 64 * 1024 * 1024  # a part object's size before it is stored (and memory-free: a temp file)
MAX_RECEIVES = 3  # ExportQueue's maxReceiveCount (template.yaml): the last try before the dead-letter queue
# the least time worth starting a compose in after building (with less left, a fresh run composes; a compose
# resumes across runs, so this only saves a run that would do a part or two and hand over)
COMPOSE_SECONDS = {"csv": 60.0, "jsonl": 60.0, "parquet": 60.0}
COMPOSE_SHARE = {"csv": 0.1, "jsonl": 0.1, "parquet": 0.1}
DELIVERED_OUTCOME, CONTINUED, STALE, SUPERSEDED, FINISHED = "delivered", "continued", "stale", "superseded", "finished"


@dataclass(frozen=True)
class Outcome:
    """What a run did: ``delivered`` (the notice is the file), ``continued`` (the next hop is queued),
    ``stale`` (a newer hop owns the export), ``superseded`` (a twin run of the same hop moved it first) or
    ``finished`` (the export had already ended)."""

    kind: str
    checkpoint: Checkpoint | None = None
    notice: "Notice | None" = None


def part_key(request: ExportRequest, index: int) -> str:
    return f"exports/{request.user_id}/{request.request_id}/parts/{index:06d}.{FORMATS[request.format][0]}"


class _Progress:
    """The export's progress message: one slot, versions carried in the checkpoint, edits throttled."""

    def __init__(self, request: ExportRequest, notify: Callable[["Notice"], None], seconds: float):
        self.request, self.notify, self.seconds = request, notify, seconds

    def send(self, held: Checkpoint, state: str, blocks_done: int, rows: int | None = None) -> Checkpoint:
        from depu.notify import Notice

        slot = f"export:{self.request.request_id}"
        version = held.progress_version
        if self.request.chat:
            text = progress_text(self.request, blocks_done, held.rows if rows is None else rows, state)
            self.notify(Notice(self.request.chat_id, text, slot=slot, slot_version=version,
                               dedupe_key=f"{slot}:{version}"))
        return held.moved(progress_version=version + 1, progress_at=time.time())

    def maybe(self, held: Checkpoint, blocks_done: int, rows: int, state: str = "working") -> Checkpoint:
        if time.time() - held.progress_at < self.seconds:
            return held
        return self.send(held, state, blocks_done, rows)

    def composing(self, held: Checkpoint, done: int, parts: int, written: int) -> Checkpoint:
        """An edit while composing (throttled like the build's): the parts in the file so far and its size,
        so a compose that takes several runs still shows it moving."""
        blocks = self.request.end - self.request.start + 1
        return self.maybe(held, blocks, held.rows, f"composing: part {done} of {parts}, {written / 1e6:,.1f} MB")


class _OpenPart:
    """Chunks since the last checkpoint, in a temporary file until they are stored as one part object."""

    def __init__(self, request: ExportRequest, index: int):
        self.request, self.index = request, index
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self.writer = PartWriter(request.dataset, request.format, self.file, header=index == 0)
        self.rows = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.writer.add(rows)
        self.rows += len(rows)

    @property
    def size(self) -> int:
        return self.file.tell()

    def store(self) -> int:
        """Upload the part (nothing when it holds no rows); returns its size."""
        self.writer.close()
        size = self.file.tell()
        if self.rows:
            self.file.seek(0)
            boto3.client("s3").upload_fileobj(self.file, get_settings().artifacts_bucket,
                                              part_key(self.request, self.index))
        self.file.close()
        return size if self.rows else 0

    def discard(self) -> None:
        self.file.close()


def _chunk_rows(request: ExportRequest, key: str, cursor: int) -> list[dict[str, Any]]:
    order = raw.ORDER[request.dataset]
    rows = [row for row in raw.read_part(key) if cursor <= row[order] <= request.end
            and (request.asset is None or row.get("asset") == request.asset)]
    rows.sort(key=lambda row: (row[order], row.get("log_index") if row.get("log_index") is not None else -1,
                               row.get("tx_index") or 0))
    return rows


def run(request: ExportRequest, hop: int, *, deadline: float,
        continue_with: Callable[[ExportRequest, int], None] = enqueue,
        notify: Callable[["Notice"], None] | None = None, deliver: Callable[["Notice"], None] | None = None,
        clock: Callable[[], float] = time.monotonic, document_limit: int = DOCUMENT_LIMIT,
        progress_seconds: float = PROGRESS_SECONDS, part_target_bytes: int = PART_TARGET_BYTES,
        compose_seconds: float | None = None, compose_deadline: float = float("inf")) -> Outcome:
    """One exporter run of ``request``, started by a message of ``hop``. On ``clock``: ``deadline`` is when
    the run stops starting chunks and hands over; ``compose_deadline`` is when a compose stops starting
    parts, checkpoints and hands over."""
    from depu.notify import enqueue as queue_notice

    held = checkpoints.claim(request.request_id, hop, request.start)
    if held is None:
        return Outcome(STALE)
    if held.state in (DELIVERED, FAILED):
        return Outcome(FINISHED, held)
    progress = _Progress(request, notify or queue_notice, progress_seconds)
    if held.created:
        held = progress.send(held, "started", 0)
    worked = False
    if held.state == BUILDING:
        built = _build(request, held, deadline, clock, progress, part_target_bytes)
        if built.checkpoint is None:
            return Outcome(SUPERSEDED)
        if not built.done:
            _hand_over(request, built.checkpoint, continue_with)
            return Outcome(CONTINUED, built.checkpoint)
        held, worked = built.checkpoint, built.worked
    reserve = COMPOSE_SECONDS[request.format] if compose_seconds is None else compose_seconds
    if worked and clock() + reserve >= deadline:
        _hand_over(request, held, continue_with)
        return Outcome(CONTINUED, held)
    composed = _compose(request, held, lambda: clock() < compose_deadline, progress)
    if composed is None:
        return Outcome(SUPERSEDED)
    if composed.rows and not composed.compose.done:  # an empty export has nothing to compose
        _hand_over(request, composed, continue_with)
        return Outcome(CONTINUED, composed)
    return _deliver(request, composed, progress, deliver or queue_notice, document_limit)


def compose_reserve(fmt: str, budget: float) -> float:
    """Seconds a run of ``budget`` seconds keeps for composing a file in ``fmt``."""
    return min(COMPOSE_SECONDS[fmt], COMPOSE_SHARE[fmt] * budget)


@dataclass(frozen=True)
class _Built:
    checkpoint: Checkpoint | None  # None: another run moved the checkpoint first (this one stops)
    done: bool = False  # the range is done (else: the deadline came)
    worked: bool = False  # this run exported at least one chunk


def _build(request: ExportRequest, held: Checkpoint, deadline: float, clock: Callable[[], float],
           progress: _Progress, part_target_bytes: int) -> _Built:
    """Chunks from the checkpoint on, until the range is done or the deadline comes."""
    pieces = [(start, end, key) for start, end, key in raw.parts(request.dataset)
              if end >= held.cursor and start <= request.end]
    open_part: _OpenPart | None = None
    cursor, worked = held.cursor, False

    def checkpoint(state: str) -> Checkpoint | None:
        nonlocal open_part
        size, rows = (open_part.store(), open_part.rows) if open_part else (0, 0)
        open_part = None
        moved = held.moved(cursor=cursor, parts=held.parts + (1 if rows else 0), rows=held.rows + rows,
                           bytes=held.bytes + size, state=state)
        return moved if checkpoints.advance(held, moved) else None

    try:
        for start, end, key in pieces:
            if worked and clock() >= deadline:
                return _Built(checkpoint(BUILDING), worked=True)
            rows = _chunk_rows(request, key, cursor)
            if rows:
                open_part = open_part or _OpenPart(request, held.parts)
                open_part.add(rows)
            cursor, worked = min(end, request.end) + 1, True
            held = progress.maybe(held, cursor - request.start, held.rows + (open_part.rows if open_part else 0))
            if open_part and open_part.size >= part_target_bytes:
                moved = checkpoint(BUILDING)
                if moved is None:
                    return _Built(None)
                held = moved
        cursor = request.end + 1
        return _Built(checkpoint(COMPOSING), done=True, worked=worked)
    finally:
        if open_part:
            open_part.discard()


def _hand_over(request: ExportRequest, held: Checkpoint, continue_with: Callable[[ExportRequest, int], None]) -> None:
    """Queue the next hop, then record that it was queued. The next run's claim takes the export; a copy of
    this run's message that comes later finds the hand-over and stops, and one that comes after a crash
    between the send and the record carries on and is superseded by the first checkpoint it races."""
    export_quota.renew(request.user_id, request.request_id)
    continue_with(request, held.hop + 1)
    checkpoints.handed_over(held)


def _compose(request: ExportRequest, held: Checkpoint, in_time: Callable[[], bool],
             progress: _Progress) -> Checkpoint | None:
    """Compose from the checkpoint on while ``in_time``, editing the progress message as parts are added;
    returns the checkpoint moved (its ``compose.done`` says whether the file is whole; an export of no rows
    is returned as it is), or None when a twin run moved it first. The progress message's version moves
    with each compose checkpoint, so the next run's edits follow this run's instead of repeating them."""
    if not held.rows or held.compose.done:
        return held
    current = held  # the compose state checkpointed so far, and the progress message's next version

    def register(state: export_compose.ComposeState) -> bool:
        nonlocal current
        moved = checkpoints.advance_compose(current, state)
        current = moved or current
        return moved is not None

    def composed_part(done: int, written: int) -> None:
        nonlocal current
        current = progress.composing(current, done, held.parts, written)

    keys = [part_key(request, index) for index in range(held.parts)]
    try:
        state = export_compose.compose(boto3.client("s3"), get_settings().artifacts_bucket, request.key,
                                       FORMATS[request.format][1], request.format, keys, held.bytes,
                                       held.compose, in_time, register, composed_part)
    except export_compose.ComposeSuperseded:
        return None
    return checkpoints.advance_compose(current, state)


def _deliver(request: ExportRequest, held: Checkpoint, progress: _Progress, deliver: Callable[["Notice"], None],
             document_limit: int) -> Outcome:
    from depu.notify import Notice

    blocks = request.end - request.start + 1
    dedupe = f"export:{request.request_id}"
    s3, bucket = boto3.client("s3"), get_settings().artifacts_bucket
    keys = [part_key(request, index) for index in range(held.parts)]
    if not held.rows:
        held = progress.send(held, "nothing there", blocks)
        notice = Notice(request.chat_id, f"Export: no {request.dataset} in blocks {request.start}–{request.end} "
                        "(they may not be indexed yet).", dedupe_key=dedupe)
        size = 0
    else:
        size = held.compose.written
        caption = (f"Export: {held.rows:,} {request.dataset} rows, blocks {request.start}–{request.end}, "
                   f"{request.format.upper()}, {size / 1e6:,.1f} MB")
        if size <= document_limit:
            held = progress.send(held, "done: the file follows", blocks)
            notice = Notice(request.chat_id, caption, document_key=request.key, filename=request.filename,
                            dedupe_key=dedupe)
        else:
            held = progress.send(held, "done: too big for a chat file, the download link follows", blocks)
            link = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": request.key},
                                             ExpiresIn=LINK_SECONDS)
            notice = Notice(request.chat_id, caption + " (over the Bot API's 50 MB upload limit: download link "
                            "valid 24 h)", buttons=[[{"text": "Download", "url": link}]], dedupe_key=dedupe)
    if request.chat:
        deliver(notice)
    delivered = held.moved(state=DELIVERED, bytes=size)
    checkpoints.advance(held.moved(state=COMPOSING), delivered)  # a twin that delivered first: already so
    export_quota.release(request.user_id, request.request_id)  # the user may start the next one
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                         Prefix=export_compose.leftover_prefix(request.key))
    done_with = keys + [item["Key"] for page in pages for item in page.get("Contents", [])]
    for first in range(0, len(done_with), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in done_with[first:first + 1000]],
                                                 "Quiet": True})
    return Outcome(DELIVERED_OUTCOME, delivered, notice)


def give_up(request: ExportRequest) -> None:
    """The export's last try failed and its message is going to the dead-letter queue: say so in the chat,
    mark it failed (the public API reports ``failed``) and free the user's slot, as a delivery would."""
    from depu.notify import Notice
    from depu.notify import enqueue as queue_notice

    current = checkpoints.read(request.request_id)
    if current is not None and current.state == DELIVERED:  # a twin delivered it: nothing failed
        return
    failed = checkpoints.fail(request.request_id)
    if failed is not None:  # no half upload is left behind (the bucket's rule would take it, later)
        export_compose.abort(boto3.client("s3"), get_settings().artifacts_bucket, request.key, failed.compose)
    export_quota.release(request.user_id, request.request_id)
    if request.chat:
        queue_notice(Notice(request.chat_id, f"⚠️ Export of {request.dataset}, blocks {request.start:,}–"
                            f"{request.end:,}, failed after {MAX_RECEIVES} tries and was set aside for a look "
                            f"(reference {request.request_id}). Nothing was charged; you can start another.",
                            dedupe_key=f"export-failed:{request.request_id}"))


def build(request: ExportRequest, notify: Callable[["Notice"], None] | None = None,
          document_limit: int = DOCUMENT_LIMIT, progress_seconds: float = PROGRESS_SECONDS,
          deadline: float = float("inf"), **options: Any) -> "Notice":
    """The whole export in this process, however many runs it takes (scripts and tests); returns the notice
    that delivers the file. Continuations are followed here instead of through the queue; ``deadline``
    (on the runs' clock) applies to every run: ``-inf`` makes each run do one chunk and hand over."""
    hops = [0]
    delivered: list["Notice"] = []
    outcome = Outcome(STALE)
    while hops:
        outcome = run(request, hops.pop(), deadline=deadline,
                      continue_with=lambda _request, hop: hops.append(hop), notify=notify,
                      deliver=delivered.append, document_limit=document_limit,
                      progress_seconds=progress_seconds, **options)
        if outcome.kind == DELIVERED_OUTCOME:
            return outcome.notice  # type: ignore[return-value]
    raise RuntimeError(f"export {request.request_id} ended without a file: {outcome.kind}")
