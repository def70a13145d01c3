"""/export: a dataset (transfers or blocks) over any block range as CSV, JSON lines or Parquet.

The bot (or the public API) validates the request and puts it on the export queue; the exporter builds the
file from the raw Parquet parts in S3, one raw part at a time, across as many exporter runs as the range needs
(``depu.analytics.export_run``: checkpoints, continuations, composing the parts into one file). This module
holds what the request is, how it is checked, and how rows are written in each format.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import re
import secrets
from dataclasses import asdict, dataclass
from typing import IO, Any

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
    chat: bool = True  # progress and the file in the chat; the public API's exports are polled instead

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


def message(request: ExportRequest, hop: int = 0) -> str:
    """The export queue's message for one exporter run: the request, and which hop of its chain of runs."""
    return json.dumps({**asdict(request), "hop": hop})


def hop_of(body: str) -> int:
    hop = json.loads(body).get("hop", 0)
    if not isinstance(hop, int) or isinstance(hop, bool) or hop < 0:
        raise ExportError("A continuation's hop is a whole number.")
    return hop


def enqueue(request: ExportRequest, hop: int = 0) -> None:
    """Queue a run of the exporter: hop 0 starts the export, a later hop continues it."""
    boto3.client("sqs").send_message(QueueUrl=get_settings().export_queue_url, MessageBody=message(request, hop))


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


# columns a user looks a value up in (a transaction, an address, a token, a block): a Parquet export carries
# a bloom filter for each, per row group, so a reader filtering on one skips the row groups without it
BLOOM_COLUMNS = {"transfers": ("tx_hash", "sender", "recipient", "asset"), "blocks": ("hash",)}
BLOOM_FPP = 0.05


def bloom_filters(dataset: str, rows: int) -> dict[str, dict[str, float]]:
    """Bloom filter options sized for row groups like the first (a raw part's rows; parts of one range are
    alike), so a filter costs bits per row, not the writer's default of a million values."""
    ndv = min(max(rows, 1024), 1 << 20)
    return {column: {"ndv": ndv, "fpp": BLOOM_FPP} for column in BLOOM_COLUMNS[dataset]}


@functools.lru_cache(maxsize=1)
def writer_takes_bloom_filters() -> bool:
    """Whether this pyarrow writes bloom filters (``bloom_filter_options`` came in a release after 22.0; the Lambda layer's
    pin, 20.0.0, the newest with wheels its glibc runs, refuses the option): asked once, by trying it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.ParquetWriter(io.BytesIO(), pa.schema([("probe", pa.string())]),
                         bloom_filter_options={"probe": {"ndv": 16, "fpp": BLOOM_FPP}}).close()
    except TypeError:
        return False
    return True


def writer_options(dataset: str, rows: int) -> dict[str, Any]:
    """The Parquet writer's options: zstd, page indexes, and bloom filters where this pyarrow writes them."""
    options: dict[str, Any] = {"compression": "zstd", "write_page_index": True}
    if writer_takes_bloom_filters():
        options["bloom_filter_options"] = bloom_filters(dataset, rows)
    return options


class PartWriter:
    """Rows appended raw part by raw part to one file in one format (Parquet: one row group per raw part,
    with page indexes (column and offset indexes) and, where pyarrow writes them, bloom filters, for readers
    that filter).
    ``header``: a CSV file that starts the export carries the column names; the parts after it do not, so
    the parts concatenate into one CSV."""

    def __init__(self, dataset: str, fmt: str, out: IO[bytes], header: bool = True):
        self.dataset, self.fmt, self.out = dataset, fmt, out
        self.columns = list(raw.COLUMNS[dataset])
        self._parquet = None
        self._header = fmt == "csv" and header

    def add(self, rows: list[dict[str, Any]]) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = raw.to_table(self.dataset, rows)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.out, table.schema, **writer_options(self.dataset, len(rows)))
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


def progress_text(request: ExportRequest, blocks_done: int, rows: int, state: str) -> str:
    total = request.end - request.start + 1
    percent = 100 * blocks_done // total if total else 100
    return (f"📦 Export of {request.dataset}, blocks {request.start:,}–{request.end:,} as "
            f"{request.format.upper()}: {state}\n{percent}% of the range, {rows:,} rows so far")
