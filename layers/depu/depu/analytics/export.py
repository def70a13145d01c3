"""/export: a dataset (transfers or blocks) over a block range as CSV, JSON lines or Parquet.

The bot validates the request and puts it on the export queue; the exporter function builds the file from
the raw Parquet parts in S3, stores it under ``exports/<user id>/`` (the bucket expires that prefix after
7 days) and sends it as a document, or as a presigned link when it is too big for the Bot API. The object key
comes from the request id, so a redelivered message rewrites the same file and the notice is deduplicated.
"""
from __future__ import annotations

import csv
import io
import json
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

import boto3

from depu.analytics import raw
from depu.config import get_settings

FORMATS = {"csv": ("csv", "text/csv"), "jsonl": ("jsonl", "application/x-ndjson"),
           "parquet": ("parquet", "application/vnd.apache.parquet")}
FORMAT_ALIASES = {"json": "jsonl", "jsonlines": "jsonl", "ndjson": "jsonl", "pq": "parquet"}
MAX_BLOCKS = 10_000
DOCUMENT_LIMIT = 45 * 1024 * 1024  # the Bot API takes documents up to 50 MB
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


def build(request: ExportRequest):
    """Write the export to S3 and return the Notice that delivers it."""
    from depu.notify import Notice

    rows = raw.read_range(request.dataset, request.start, request.end)
    if request.asset:
        rows = [row for row in rows if row.get("asset") == request.asset]
    dedupe = f"export:{request.request_id}"
    if not rows:
        return Notice(request.chat_id, f"Export: no {request.dataset} in blocks {request.start}–{request.end} "
                      "(they may not be indexed yet).", dedupe_key=dedupe)
    body = render(request.dataset, rows, request.format)
    s3 = boto3.client("s3")
    bucket = get_settings().artifacts_bucket
    s3.put_object(Bucket=bucket, Key=request.key, Body=body, ContentType=FORMATS[request.format][1])
    caption = (f"Export: {len(rows):,} {request.dataset} rows, blocks {request.start}–{request.end}, "
               f"{request.format.upper()}")
    if len(body) <= DOCUMENT_LIMIT:
        return Notice(request.chat_id, caption, document_key=request.key, filename=request.filename,
                      dedupe_key=dedupe)
    link = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": request.key},
                                     ExpiresIn=LINK_SECONDS)
    return Notice(request.chat_id, caption + " (too big for a chat file: download link valid 24 h)",
                  buttons=[[{"text": "Download", "url": link}]], dedupe_key=dedupe)
