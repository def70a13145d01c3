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


# ------------------------------------------------------------------------------------------- line pages
# The Mini App polls a running job's log every couple of seconds, so a page must be cheap when nothing is
# new and bounded when much is: one chunk may hold up to the agent API's 256 KiB body, and 50 of them would
# hand a phone (and a Lambda answer) megabytes at once. A LinePosition points between two lines, so a page
# may end inside a chunk.
MAX_LINES_PER_PAGE = 500
MAX_CHARS_PER_PAGE = 200_000
MAX_CHUNKS_READ = 20
MAX_LINE_OFFSET = 256 * 1024  # a chunk of the agent API's largest body, a line at every character
MAX_CHUNK = 10_000_000  # the agent API's MAX_LOG_SEQ: a position may name the chunk after the last one


class BadPosition(ValueError):
    """A log cursor this API did not hand out (the message says what one looks like)."""


@dataclass(frozen=True)
class LinePosition:
    """Every chunk before ``chunk`` is read, and the first ``line`` lines of chunk ``chunk`` (if stored).
    Written ``"<chunk>:<line>"``; ``"0:0"`` is the start of the log."""

    chunk: int = 0
    line: int = 0

    def __str__(self) -> str:
        return f"{self.chunk}:{self.line}"

    @classmethod
    def parse(cls, text: str | None) -> "LinePosition":
        if not text:
            return cls()
        chunk, colon, line = text.partition(":")
        if not colon or not chunk.isdigit() or not line.isdigit() or not chunk.isascii() or not line.isascii():
            raise BadPosition("cursor is '<chunk>:<line>' as the previous page gave it (start with 0:0)")
        position = cls(int(chunk), int(line))
        if position.chunk > MAX_CHUNK or position.line > MAX_LINE_OFFSET:
            raise BadPosition(f"cursor is past any log: chunk at most {MAX_CHUNK}, line at most {MAX_LINE_OFFSET}")
        return position


@dataclass(frozen=True)
class LinePage:
    lines: list[str]
    cursor: LinePosition  # where the next page starts
    more: bool  # stored lines are left after this page: ask again at once


def chunk_lines(body: bytes) -> list[str]:
    """A stored chunk's lines, split exactly as depu.jobs.work.append_logs joined them, so a line offset
    names the same line on every read."""
    text = body.decode("utf-8", "replace")
    return text.split("\n") if text else []


def read_lines(job_id: str, stored_up_to: int, position: LinePosition, *, max_lines: int = MAX_LINES_PER_PAGE,
               max_chars: int = MAX_CHARS_PER_PAGE) -> LinePage:
    """The log lines after ``position``, at most ``max_lines`` lines and ``max_chars`` characters (at least one
    line, so every page moves on). ``stored_up_to`` is the job's ``log_seq_max``: chunks after it were never
    accepted, and when the position is past it the answer is an empty page without touching S3 (a poll that
    finds nothing new costs the job read alone)."""
    if position.line == 0 and position.chunk > stored_up_to:
        return LinePage([], position, False)
    prefix = f"jobs/{job_id}/logs/"
    start_after = storage.log_key(job_id, position.chunk - 1) if position.chunk > 0 else None
    keys, listed_more = storage.list_after(prefix, start_after, MAX_CHUNKS_READ)
    lines: list[str] = []
    chars = 0
    cursor = position
    for key in keys:
        name = key[len(prefix):].removesuffix(".log")
        if not name.isdigit() or int(name) > stored_up_to:
            continue
        seq = int(name)
        chunk = chunk_lines(storage.get(key))
        offset = position.line if seq == position.chunk else 0
        for index in range(offset, len(chunk)):
            if lines and (len(lines) >= max_lines or chars + len(chunk[index]) > max_chars):
                return LinePage(lines, LinePosition(seq, index), True)
            lines.append(chunk[index])
            chars += len(chunk[index])
        cursor = LinePosition(seq + 1, 0)
    more = listed_more and bool(keys) and cursor.chunk <= stored_up_to
    return LinePage(lines, cursor, more)
