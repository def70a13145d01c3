"""/export: a dataset (transfers or blocks) over any block range as CSV, JSON lines or Parquet.

The bot validates the request and puts it on the export queue; the exporter function builds the file from
the raw Parquet parts in S3, one part at a time into a temporary file (memory holds one part, whatever the
range: Parquet gets one row group per part), stores it under ``exports/<user id>/`` (the bucket expires that
prefix after 7 days) and sends it as a document up to the Bot API's 50 MB upload limit, as a presigned link
beyond. While it works, one progress message is edited in place (a message slot, ``depu.message_slots``:
blocks and rows done, percent), and at the end says where the file is. The object key comes from the
request id, so a redelivered message rewrites the same file and every notice is deduplicated.
"""
from __future__ import annotations

import csv
import io
import json
import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Callable

import boto3

from depu.analytics import raw
from depu.config import get_settings

FORMATS = {"csv": ("csv", "text/csv"), "jsonl": ("jsonl", "application/x-ndjson"),
           "parquet": ("parquet", "application/vnd.apache.parquet")}
FORMAT_ALIASES = {"json": "jsonl", "jsonlines": "jsonl", "ndjson": "jsonl", "pq": "parquet"}
MAX_BLOCKS = 100_000_000  # any range of mainnet's history (a sanity bound on the request, not a cost limit)
DOCUMENT_LIMIT = 50 * 1000 * 1000  # the Bot API takes uploads up to 50 MB; beyond that, a link
PROGRESS_SECONDS = 3.0  # at most one progress edit this often (the chat's 1 message/s, and readability)
LINK_SECONDS = 24 * 3600
ASSET = re.compile(r"^0x[0-9a-f]{40}$")
RANGE = re.compile(r"^(\d+)\s*(?:-|\.\.|–)\s*(\d+)$")


class ExportError(ValueError):
    """A request the user can fix; the message is shown to them."""


@dataclass(frozen=True)
class ExportRequest:
    request_id: str
    user_id: int
    chat_id: int
    dataset: str
    start: int
    end: int
    format: str
    asset: str | None = None  # transfers of this token only (the public API's exports); None: every asset

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, body: str) -> "ExportRequest":
        data = json.loads(body)
        request = cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        validate(request.dataset, request.start, request.end, request.format, request.asset)
        return request

    @property
    def filename(self) -> str:
        return f"depu-{self.dataset}-{self.start}-{self.end}.{FORMATS[self.format][0]}"

    @property
    def key(self) -> str:
        return f"exports/{self.user_id}/{self.request_id}/{self.filename}"


def validate(dataset: str, start: int, end: int, fmt: str, asset: str | None = None) -> None:
    if dataset not in raw.DATASETS:
        raise ExportError(f"Dataset must be one of: {', '.join(raw.DATASETS)}.")
    if fmt not in FORMATS:
        raise ExportError(f"Format must be one of: {', '.join(FORMATS)}.")
    if start < 0 or end < start:
        raise ExportError("The block range must be START-END with START ≤ END.")
    if end - start + 1 > MAX_BLOCKS:
        raise ExportError(f"At most {MAX_BLOCKS:,} blocks per export.")
    if asset is not None and (dataset != "transfers" or not ASSET.match(asset)):
        raise ExportError("A token filter is a lowercase 0x address, for transfers only.")


def parse(args: str, user_id: int, chat_id: int) -> ExportRequest:
    """``transfers 100-200 csv`` -> a validated request (raises ExportError with a usable message)."""
    parts = args.split()
    if len(parts) != 3:
        raise ExportError("Usage: /export DATASET START-END FORMAT, e.g. <code>/export transfers 100-200 csv</code>")
    dataset, block_range, fmt = parts[0].lower(), parts[1], parts[2].lower()
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    match = RANGE.match(block_range)
    if not match:
        raise ExportError("The block range must look like 100-200.")
    start, end = int(match[1]), int(match[2])
    validate(dataset, start, end, fmt)
    return ExportRequest(secrets.token_hex(8), user_id, chat_id, dataset, start, end, fmt)


def enqueue(request: ExportRequest) -> None:
    boto3.client("sqs").send_message(QueueUrl=get_settings().export_queue_url, MessageBody=request.to_json())


def render(dataset: str, rows: list[dict[str, Any]], fmt: str) -> bytes:
    columns = list(raw.COLUMNS[dataset])
    if fmt == "parquet":
        return raw.parquet_bytes(dataset, rows)
    if fmt == "jsonl":
        return "".join(json.dumps({c: row.get(c) for c in columns}, separators=(",", ":")) + "\n"
                       for row in rows).encode()
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return text.getvalue().encode()


class _Writer:
    """Rows appended part by part to a file in one format (Parquet: one row group per part)."""

    def __init__(self, dataset: str, fmt: str, out: IO[bytes]):
        self.dataset, self.fmt, self.out = dataset, fmt, out
        self.columns = list(raw.COLUMNS[dataset])
        self._parquet = None
        self._header = fmt == "csv"

    def add(self, rows: list[dict[str, Any]]) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = raw.to_table(self.dataset, rows)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.out, table.schema, compression="zstd")
            self._parquet.write_table(table)
            return
        if self._header:
            self.out.write((",".join(self.columns) + "\n").encode())
            self._header = False
        if self.fmt == "jsonl":
            self.out.write("".join(json.dumps({c: row.get(c) for c in self.columns}, separators=(",", ":")) + "\n"
                                   for row in rows).encode())
        else:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
            for row in rows:
                writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in self.columns})
            self.out.write(text.getvalue().encode())

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


def _progress_text(request: ExportRequest, blocks_done: int, rows: int, state: str) -> str:
    total = request.end - request.start + 1
    percent = 100 * blocks_done // total if total else 100
    return (f"📦 Export of {request.dataset}, blocks {request.start:,}–{request.end:,} as "
            f"{request.format.upper()}: {state}\n{percent}% of the range, {rows:,} rows so far")


def build(request: ExportRequest, notify: Callable[[Any], None] | None = None,
          document_limit: int = DOCUMENT_LIMIT, progress_seconds: float = PROGRESS_SECONDS):
    """Write the export to S3, editing the progress message as it goes; returns the Notice that delivers
    the file (a document, or a link beyond ``document_limit`` bytes)."""
    from depu.notify import Notice
    from depu.notify import enqueue as default_notify

    notify = notify or default_notify
    slot = f"export:{request.request_id}"
    version = 0

    def progress(text: str) -> None:
        nonlocal version
        notify(Notice(request.chat_id, text, slot=slot, slot_version=version, dedupe_key=f"{slot}:{version}"))
        version += 1

    dedupe = f"export:{request.request_id}"
    progress(_progress_text(request, 0, 0, "started"))
    pieces = [(start, end, key) for start, end, key in raw.parts(request.dataset)
              if end >= request.start and start <= request.end]
    order = raw.ORDER[request.dataset]
    rows_written = 0
    last_progress = time.monotonic()
    with tempfile.TemporaryFile() as out:
        writer = _Writer(request.dataset, request.format, out)
        for start, end, key in pieces:
            rows = [row for row in raw.read_part(key) if request.start <= row[order] <= request.end
                    and (request.asset is None or row.get("asset") == request.asset)]
            rows.sort(key=lambda row: (row[order], row.get("log_index") if row.get("log_index") is not None else -1,
                                       row.get("tx_index") or 0))
            if rows:
                writer.add(rows)
                rows_written += len(rows)
            if time.monotonic() - last_progress >= progress_seconds:
                progress(_progress_text(request, min(end, request.end) - request.start + 1, rows_written, "working"))
                last_progress = time.monotonic()
        writer.close()
        size = out.tell()
        if not rows_written:
            progress(_progress_text(request, request.end - request.start + 1, 0, "nothing there"))
            return Notice(request.chat_id, f"Export: no {request.dataset} in blocks {request.start}–{request.end} "
                          "(they may not be indexed yet).", dedupe_key=dedupe)
        out.seek(0)
        s3 = boto3.client("s3")
        bucket = get_settings().artifacts_bucket
        s3.upload_fileobj(out, bucket, request.key, ExtraArgs={"ContentType": FORMATS[request.format][1]})
    caption = (f"Export: {rows_written:,} {request.dataset} rows, blocks {request.start}–{request.end}, "
               f"{request.format.upper()}, {size / 1e6:,.1f} MB")
    if size <= document_limit:
        progress(_progress_text(request, request.end - request.start + 1, rows_written, "done: the file follows"))
        return Notice(request.chat_id, caption, document_key=request.key, filename=request.filename,
                      dedupe_key=dedupe)
    progress(_progress_text(request, request.end - request.start + 1, rows_written,
                            "done: too big for a chat file, the download link follows"))
    link = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": request.key},
                                     ExpiresIn=LINK_SECONDS)
    return Notice(request.chat_id, caption + " (over the Bot API's 50 MB upload limit: download link valid 24 h)",
                  buttons=[[{"text": "Download", "url": link}]], dedupe_key=dedupe)
