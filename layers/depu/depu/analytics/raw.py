"""Raw rows in S3 as Parquet, partitioned by block range: ``raw/<dataset>/blocks=<start>-<end>/part.parquet``.

Zero-padded bounds keep keys in block order, so the parts a range needs are found by listing, and Athena can
project the partition from the key. Each indexer chunk writes one part after its blocks are in ChainTable and
before the checkpoint moves; parts beyond the checkpoint are leftovers of a crashed run and are removed
before writing, and a reorg truncates the parts that hold dropped blocks. Amounts are decimal strings:
Parquet has no uint256 and a float would round.
"""
from __future__ import annotations

import io
import re
from typing import Any, Iterator

import boto3

from depu.config import get_settings

DATASETS = ("transfers", "blocks")
PART = re.compile(r"raw/(?P<dataset>\w+)/blocks=(?P<start>\d{12})-(?P<end>\d{12})/part\.parquet$")

TRANSFER_COLUMNS: dict[str, str] = {
    "block_number": "int64", "block_hash": "string", "block_timestamp": "int64", "tx_hash": "string",
    "tx_index": "int64", "log_index": "int64", "asset": "string", "kind": "string", "shape": "string",
    "sender": "string", "recipient": "string", "amount": "string", "token_id": "string",
}
BLOCK_COLUMNS: dict[str, str] = {
    "number": "int64", "hash": "string", "parent_hash": "string", "timestamp": "int64", "gas_used": "int64",
    "gas_limit": "int64", "base_fee": "string", "tx_count": "int64", "transfer_count": "int64",
    "native_count": "int64", "tip_min": "string", "tip_median": "string", "tip_max": "string",
}
COLUMNS = {"transfers": TRANSFER_COLUMNS, "blocks": BLOCK_COLUMNS}
ORDER = {"transfers": "block_number", "blocks": "number"}


def part_key(dataset: str, start: int, end: int) -> str:
    return f"raw/{dataset}/blocks={start:012d}-{end:012d}/part.parquet"


def _s3():
    return boto3.client("s3")


def _bucket() -> str:
    return get_settings().artifacts_bucket


def parts(dataset: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, key)`` of every part, in block order."""
    paginator = _s3().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=_bucket(), Prefix=f"raw/{dataset}/"):
        for obj in page.get("Contents", []):
            match = PART.match(obj["Key"])
            if match:
                yield int(match["start"]), int(match["end"]), obj["Key"]


def to_table(dataset: str, rows: list[dict[str, Any]]):
    import pyarrow as pa

    columns = COLUMNS[dataset]
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns.items()])
    data = {name: [_cell(row.get(name), kind) for row in rows] for name, kind in columns.items()}
    return pa.Table.from_pydict(data, schema=schema)


def _cell(value: Any, kind: str) -> Any:
    if value is None or value == "":
        return None
    return str(value) if kind == "string" else int(value)


def parquet_bytes(dataset: str, rows: list[dict[str, Any]]) -> bytes:
    return _table_bytes(to_table(dataset, rows))


def _table_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_part(dataset: str, start: int, end: int, rows: list[dict[str, Any]]) -> str:
    return write_table(dataset, start, end, to_table(dataset, rows))


def write_table(dataset: str, start: int, end: int, table) -> str:
    """A part from an Arrow table built elsewhere (the backfill's columns); its schema must be the dataset's."""
    expected = to_table(dataset, []).schema
    if not table.schema.equals(expected):
        raise ValueError(f"a {dataset} part needs the schema {expected}, not {table.schema}")
    key = part_key(dataset, start, end)
    _s3().put_object(Bucket=_bucket(), Key=key, Body=_table_bytes(table))
    return key


def read_part(key: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    body = _s3().get_object(Bucket=_bucket(), Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body)).to_pylist()


def remove_parts_after(dataset: str, number: int) -> int:
    """Delete parts that start beyond ``number`` (written by a run that crashed before its checkpoint)."""
    doomed = [key for start, _, key in parts(dataset) if start > number]
    for key in doomed:
        _s3().delete_object(Bucket=_bucket(), Key=key)
    return len(doomed)


def truncate_after(dataset: str, number: int) -> None:
    """Drop every row of blocks beyond ``number`` (a reorg's rewind): rewrite or delete the parts holding them."""
    order = ORDER[dataset]
    for start, end, key in list(parts(dataset)):
        if end <= number:
            continue
        kept = [row for row in read_part(key) if row[order] <= number] if start <= number else []
        if kept:
            write_part(dataset, start, number, kept)
        _s3().delete_object(Bucket=_bucket(), Key=key)


def read_range(dataset: str, start: int, end: int) -> list[dict[str, Any]]:
    """Rows of blocks ``start..end`` from every overlapping part, in block order."""
    order = ORDER[dataset]
    rows: list[dict[str, Any]] = []
    for part_start, part_end, key in parts(dataset):
        if part_end < start or part_start > end:
            continue
        rows.extend(row for row in read_part(key) if start <= row[order] <= end)
    rows.sort(key=lambda row: (row[order], row.get("log_index") if row.get("log_index") is not None else -1,
                               row.get("tx_index") or 0))
    return rows
