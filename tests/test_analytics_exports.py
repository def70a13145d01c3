"""Exports of any range, against moto: raw Parquet parts over 60,000 blocks (as the indexer and backfill write
them, through ``depu.analytics.raw``), read back part by part into one file, a progress message edited in
place (one message slot, versions in order), a document up to the upload limit and a presigned link beyond
it, each reading back exactly."""
from __future__ import annotations

import csv
import io
import json
import random

import pytest
import requests

BLOCKS = 60_000  # six times the old 10,000-block limit of one export
PART = 5_000


@pytest.fixture
def history(aws):
    """Transfers in every part of 0..BLOCKS-1, written as the indexer writes its parts; returns them."""
    from depu.analytics import raw

    rng = random.Random(18)
    written = []
    for start in range(0, BLOCKS, PART):
        rows = []
        for number in sorted(rng.sample(range(start, start + PART), 40)):
            rows.append({"block_number": number, "block_hash": f"0x{number:064x}", "block_timestamp": 1_700_000_000 + 12 * number,
                         "tx_hash": f"0x{rng.getrandbits(256):064x}", "tx_index": 0, "log_index": 0,
                         "asset": "0x" + "ab" * 20, "kind": "erc20", "shape": "standard",
                         "sender": "0x" + "01" * 20, "recipient": "0x" + "02" * 20,
                         "amount": str(rng.getrandbits(200)), "token_id": None})
        raw.write_part("transfers", start, start + PART - 1, rows)
        written += rows
    return written


def request(last: int, fmt: str):
    from depu.analytics.export import parse

    return parse(f"transfers 0-{last} {fmt}", 42, 42)


def test_a_range_beyond_ten_thousand_blocks_exports_with_progress_edited_in_place(history, aws):
    import boto3

    from depu.analytics import export_run
    from depu.config import get_settings

    last = BLOCKS - 1
    progress: list = []  # an edit after every part (no pause between edits), to see them all
    notice = export_run.build(request(last, "csv"), notify=progress.append, progress_seconds=0.0)
    assert notice.document_key and notice.filename.endswith(".csv")
    slots = {n.slot for n in progress}
    assert len(slots) == 1, "one progress message"
    assert [n.slot_version for n in progress] == list(range(len(progress))) and len(progress) >= 2
    assert "started" in progress[0].text and "100%" in progress[-1].text and "file follows" in progress[-1].text
    body = boto3.client("s3").get_object(Bucket=get_settings().artifacts_bucket, Key=notice.document_key)["Body"]
    rows = list(csv.DictReader(io.StringIO(body.read().decode())))
    assert [(int(r["block_number"]), r["tx_hash"], r["amount"]) for r in rows] == [
        (t["block_number"], t["tx_hash"], t["amount"]) for t in history]
    assert len(progress) == BLOCKS // PART + 2, "started, one edit per part, done"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_over_the_upload_limit_the_file_comes_as_a_presigned_link(history, aws, fmt):
    from depu.analytics import export_run

    last = BLOCKS - 1
    progress: list = []
    notice = export_run.build(request(last, fmt), notify=progress.append, document_limit=1_000)
    assert notice.document_key is None
    [[button]] = notice.buttons
    downloaded = requests.get(button["url"], timeout=30)
    assert downloaded.status_code == 200 and len(downloaded.content) > 1_000
    truth = {(t["block_number"], t["tx_hash"]) for t in history}
    if fmt == "jsonl":
        rows = [json.loads(line) for line in downloaded.text.splitlines()]
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(io.BytesIO(downloaded.content))
        assert parquet.num_row_groups == BLOCKS // PART, "one row group per raw part, never the range in memory"
        rows = parquet.read().to_pylist()
    assert {(r["block_number"], r["tx_hash"]) for r in rows} == truth
    assert "download link follows" in progress[-1].text
