"""Exports of any range, against moto: raw Parquet parts over 60,000 blocks (as the indexer and backfill write
them, through ``depu.analytics.raw``), read back part by part into one file, a progress message edited in
place (one message slot, versions in order), a document up to the upload limit and a presigned link beyond
it, each reading back exactly."""
from __future__ import annotations

import csv
import io
import json
import random
import re

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


# ------------------------------------------------------------------------- exports longer than one run
def s3_body(key: str) -> bytes:
    import boto3

    from depu.config import get_settings

    return boto3.client("s3").get_object(Bucket=get_settings().artifacts_bucket, Key=key)["Body"].read()


def s3_keys(prefix: str) -> list[str]:
    import boto3

    from depu.config import get_settings

    listed = boto3.client("s3").list_objects_v2(Bucket=get_settings().artifacts_bucket, Prefix=prefix)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def parts_prefix(request) -> str:
    return f"exports/{request.user_id}/{request.request_id}/parts/"


def one_run_export(fmt: str) -> bytes:
    """The same range exported by a single run (no deadline), for comparison."""
    from depu.analytics import export_run

    reference = request(BLOCKS - 1, fmt)
    export_run.build(reference, notify=lambda notice: None)
    return s3_body(reference.key)


def parquet_rows(body: bytes) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(body)).to_pylist()


def drain_queue(url: str) -> list[str]:
    import boto3

    sqs, bodies = boto3.client("sqs"), []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return bodies
        for item in batch:
            bodies.append(item["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=item["ReceiptHandle"])


@pytest.fixture
def one_chunk_runs(monkeypatch):
    """Every exporter run does one chunk and hands over (its budget is 0 s), as a 600 s run does with a
    range that takes longer."""
    from depu.config import get_settings

    monkeypatch.setenv("EXPORT_RUN_SECONDS", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def exporter_run(body: str, receives: int = 1) -> dict:
    from telegram_harness import FakeLambdaContext, load_function, sqs_event

    event = sqs_event([body])
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(receives)
    return load_function("exporter").lambda_handler(event, FakeLambdaContext())


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_tiny_deadline_chains_runs_and_the_file_equals_a_one_run_export(history, aws, fmt):
    from depu.analytics import export_checkpoint, export_run

    chained = request(BLOCKS - 1, fmt)
    progress: list = []
    notice = export_run.build(chained, notify=progress.append, deadline=float("-inf"), progress_seconds=0.0,
                              document_limit=10**9)
    record = export_checkpoint.read(chained.request_id)
    assert record.state == export_checkpoint.DELIVERED
    assert record.runs == BLOCKS // PART + 1 >= 4, "one run per raw part, then one that composes"
    assert record.parts == BLOCKS // PART and record.rows == len(history)
    chained_body = s3_body(notice.document_key)
    reference = one_run_export(fmt)
    if fmt == "parquet":
        assert parquet_rows(chained_body) == parquet_rows(reference)
        import pyarrow.parquet as pq

        assert pq.ParquetFile(io.BytesIO(chained_body)).num_row_groups == BLOCKS // PART
    else:
        assert chained_body == reference, "byte for byte"
    assert len({n.slot for n in progress}) == 1 and [n.slot_version for n in progress] == list(range(len(progress)))
    assert "100%" in progress[-1].text and f"{len(history):,} rows" in progress[-1].text
    assert s3_keys(parts_prefix(chained)) == [], "the parts are deleted once the file is composed"


def test_parts_of_5_mib_and_more_are_copied_inside_s3_and_the_file_equals_a_streamed_compose(aws, monkeypatch):
    """Big parts (~6 MB of JSON lines each): the compose copies them inside S3 (UploadPartCopy, no bytes
    through the exporter) and streams the small one; the file equals a compose that streams every byte."""
    from depu.analytics import export_compose, export_run, raw

    rng = random.Random(5)
    truth = []
    for start, count in ((0, 16_000), (1_000, 16_000), (2_000, 50)):
        rows = [{"block_number": start + i % 1_000, "block_hash": f"0x{start + i % 1_000:064x}", "block_timestamp": 1,
                 "tx_hash": f"0x{rng.getrandbits(256):064x}", "tx_index": i, "log_index": i, "asset": "0x" + "ab" * 20,
                 "kind": "erc20", "shape": "standard", "sender": "0x" + "01" * 20, "recipient": "0x" + "02" * 20,
                 "amount": str(rng.getrandbits(200)), "token_id": None} for i in range(count)]
        raw.write_part("transfers", start, start + 999, rows)
        truth += rows
    copies: list[str] = []
    original = export_compose.MultipartSink.copy_range

    def counted(sink, source_key, start, end, whole):
        if len(sink.buffer) < export_compose.MIN_PART_BYTES <= end - start:
            copies.append(source_key)
        return original(sink, source_key, start, end, whole)

    monkeypatch.setattr(export_compose.MultipartSink, "copy_range", counted)
    copied = export_run.build(request(2_999, "jsonl"), notify=lambda n: None, deadline=float("-inf"),
                              part_target_bytes=1, document_limit=10**9)
    assert len(copies) == 2, "the two big parts were copied inside S3"
    monkeypatch.setattr(export_compose, "MIN_PART_BYTES", 10**12)  # nothing qualifies: every byte streamed
    streamed = export_run.build(request(2_999, "jsonl"), notify=lambda n: None, deadline=float("-inf"),
                                part_target_bytes=1, document_limit=10**9)
    body = s3_body(copied.document_key)
    assert body == s3_body(streamed.document_key) and len(body) > 12_000_000
    rows = [json.loads(line) for line in body.decode().splitlines()]
    assert sorted((r["tx_hash"], r["amount"]) for r in rows) == sorted((t["tx_hash"], t["amount"]) for t in truth)


def test_every_message_delivered_twice_adds_no_row_and_one_file(history, aws, one_chunk_runs):
    """Through the exporter handler and the real export queue: each run's message (the first and every
    continuation) is handled twice, as SQS may deliver it; the copy finds the export handed over and stops."""
    from depu.analytics import export, export_checkpoint, export_quota
    from depu.config import get_settings

    chained = request(BLOCKS - 1, "csv")
    export_quota.acquire(42, chained.request_id)
    export.enqueue(chained)
    hops: list[int] = []
    for _ in range(100):  # bounded: 12 parts need 13 runs
        bodies = drain_queue(get_settings().export_queue_url)
        if not bodies:
            break
        for body in bodies:
            hops.append(json.loads(body)["hop"])
            for _copy in range(2):
                assert exporter_run(body) == {"batchItemFailures": []}
    assert len([hop for hop in hops if hop > 0]) >= 3 and hops == list(range(len(hops))), "one chain, no fork"
    # every copy but the last message's found the export handed over; that one found it delivered
    assert export_checkpoint.read(chained.request_id).runs == len(hops) + 1
    assert s3_body(chained.key) == one_run_export("csv")
    notices = [json.loads(body) for body in drain_queue(get_settings().notify_queue_url)]
    assert len([n for n in notices if n["document_key"]]) == 1
    versions = [n["slot_version"] for n in notices if n["slot"]]
    assert versions == sorted(versions) and len(set(versions)) == len(versions), "edits in order, none twice"
    export_quota.acquire(42, "next")  # delivered: the slot was freed


def test_a_twin_run_of_the_same_hop_that_checkpoints_first_supersedes_the_other(history, aws):
    """Two runs of one message at once (a duplicate delivered to two exporters): the second writes its part,
    the first moves the checkpoint before it; the second's checkpoint is refused and it stops."""
    from depu.analytics import export_checkpoint, export_run

    chained = request(BLOCKS - 1, "csv")
    original = export_checkpoint.advance
    outcomes: list[str] = []

    def twin_first(held, moved):
        if not outcomes:
            outcomes.append("twin")
            outcomes.append(export_run.run(chained, 0, deadline=float("-inf"), continue_with=lambda r, h: None,
                                           notify=lambda n: None).kind)
        return original(held, moved)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_checkpoint, "advance", twin_first)
        first = export_run.run(chained, 0, deadline=float("-inf"), continue_with=lambda r, h: None,
                               notify=lambda n: None)
    assert outcomes == ["twin", export_run.CONTINUED] and first.kind == export_run.SUPERSEDED
    record = export_checkpoint.read(chained.request_id)
    assert record.parts == 1 and record.cursor == PART and record.rows == 40


def test_a_crash_between_part_and_checkpoint_resumes_without_loss_or_duplicates(history, aws, one_chunk_runs):
    from depu.analytics import export, export_checkpoint
    from depu.config import get_settings

    chained = request(BLOCKS - 1, "jsonl")
    export.enqueue(chained)
    original, crashes = export_checkpoint.advance, []

    def crash_after_the_third_part(held, moved):
        if moved.parts == 3 and held.parts == 2 and not crashes:
            crashes.append(s3_keys(parts_prefix(chained)))
            raise RuntimeError("the exporter died between its part and its checkpoint")
        return original(held, moved)

    failed = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_checkpoint, "advance", crash_after_the_third_part)
        for _ in range(100):
            bodies = drain_queue(get_settings().export_queue_url)
            if not bodies:
                break
            for body in bodies:
                result = exporter_run(body)
                if result["batchItemFailures"]:  # SQS offers it again after the visibility timeout
                    failed += 1
                    assert exporter_run(body, receives=2) == {"batchItemFailures": []}
    assert failed == 1 and len(crashes[0]) == 3, "the third part was written, then the run died"
    rows = [json.loads(line) for line in s3_body(chained.key).decode().splitlines()]
    assert len(rows) == len(history) and len({(r["block_number"], r["tx_hash"]) for r in rows}) == len(history)
    assert s3_body(chained.key) == one_run_export("jsonl")


def test_a_poison_export_fails_on_its_last_try_with_the_user_told_and_its_slot_freed(aws):
    from depu.analytics import export, export_checkpoint, export_quota, export_run
    from depu.config import get_settings
    from depu.publicapi import exports as api_exports
    from local.template import LocalTemplate

    import boto3

    boto3.client("s3").put_object(Bucket=get_settings().artifacts_bucket, Body=b"not parquet",
                                  Key="raw/transfers/blocks=000000000000-000000000099/part.parquet")
    started = api_exports.start(42, "transfers", 0, 99, "csv", notify_chat=True)
    body = drain_queue(get_settings().export_queue_url)[0]
    for receives in (1, 2):
        assert exporter_run(body, receives)["batchItemFailures"], "retried"
        assert api_exports.find(42, started.export_id).status == "pending"
    assert not [n for n in drain_queue(get_settings().notify_queue_url) if "failed" in n]
    assert exporter_run(body, export_run.MAX_RECEIVES)["batchItemFailures"], "on to the dead-letter queue"
    told = [json.loads(n) for n in drain_queue(get_settings().notify_queue_url)]
    assert any("failed after 3 tries" in n["text"] and started.export_id in n["text"] for n in told)
    assert export_checkpoint.read(started.export_id).state == export_checkpoint.FAILED
    assert api_exports.find(42, started.export_id).status == "failed"
    export_quota.acquire(42, "next")  # the slot is free at once, not after the lease
    redrive = LocalTemplate().raw["Resources"]["ExportQueue"]["Properties"]["RedrivePolicy"]
    assert int(redrive["maxReceiveCount"]) == export_run.MAX_RECEIVES
    assert export.ExportRequest.from_json(body).chat is True


@pytest.mark.parametrize("notify_chat", [False, True])
def test_an_api_export_is_polled_and_says_nothing_in_the_chat_unless_asked(history, aws, notify_chat):
    from depu.config import get_settings
    from depu.publicapi import exports as api_exports

    started = api_exports.start(42, "transfers", 0, BLOCKS - 1, "csv", notify_chat=notify_chat)
    for body in drain_queue(get_settings().export_queue_url):
        assert exporter_run(body) == {"batchItemFailures": []}
    found = api_exports.find(42, started.export_id)
    assert found.status == "ready" and found.download_url and found.rows == len(history) and found.percent == 100
    assert requests.get(found.download_url, timeout=30).content == one_run_export("csv")
    notices = [json.loads(n) for n in drain_queue(get_settings().notify_queue_url)]
    if notify_chat:
        assert [n for n in notices if n["document_key"]] and [n for n in notices if n["slot"]]
    else:
        assert notices == [], "nothing in the chat"


def test_the_local_runtime_carries_an_export_across_runs_through_its_queue(history, aws):
    """The local runtime's SQS poller delivers the continuations: every run does one chunk
    (``EXPORT_RUN_SECONDS=0``) and the file still comes out whole."""
    from depu.analytics import export, export_checkpoint
    from forks_support import wait_for
    from local.moto_server import free_port
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    chained = request(BLOCKS - 1, "csv")
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(
        port=free_port(), poll_wait_seconds=1, extra_environment={"EXPORT_RUN_SECONDS": "0"}))
    runtime.functions = {name: fn for name, fn in runtime.functions.items() if name == "ExporterFunction"}
    runtime.start()
    try:
        export.enqueue(chained)
        record = wait_for(lambda: (lambda r: r if r and r.state == export_checkpoint.DELIVERED else None)(
            export_checkpoint.read(chained.request_id)), 120, "the export delivered")
    finally:
        runtime.stop()
    assert record.runs == BLOCKS // PART + 1
    assert s3_body(chained.key) == one_run_export("csv")


# ------------------------------------------------------------------------- composing longer than one run
BIG_PARTS = ((0, 40_000), (1_000, 3_000), (2_000, 40_000), (3_000, 500))  # (first block, rows) per raw part
BIG_LAST = 3_999


@pytest.fixture
def big_history(aws):
    """Four raw parts, two of them big (a file of several S3 upload parts, some copied inside S3, some
    streamed); returns their rows in export order."""
    from depu.analytics import raw

    rng = random.Random(21)
    written = []
    for start, count in BIG_PARTS:
        rows = [{"block_number": start + i * 1_000 // count, "block_hash": f"0x{start + i * 1_000 // count:064x}",
                 "block_timestamp": 1_700_000_000, "tx_hash": f"0x{rng.getrandbits(256):064x}", "tx_index": i,
                 "log_index": i, "asset": "0x" + "ab" * 20, "kind": "erc20", "shape": "standard",
                 "sender": "0x" + "01" * 20, "recipient": f"0x{rng.getrandbits(160):040x}",
                 "amount": str(rng.getrandbits(200)), "token_id": None} for i in range(count)]
        raw.write_part("transfers", start, start + 999, rows)
        written += rows
    return written


def big_request(fmt: str):
    from depu.analytics.export import parse

    return parse(f"transfers 0-{BIG_LAST} {fmt}", 42, 42)


def one_run_compose(fmt: str) -> bytes:
    """The big range exported with a part per raw part, composed in a single run."""
    from depu.analytics import export_run

    reference = big_request(fmt)
    export_run.build(reference, notify=lambda n: None, part_target_bytes=1, document_limit=10**9)
    return s3_body(reference.key)


def open_uploads() -> list:
    import boto3

    from depu.config import get_settings

    return boto3.client("s3").list_multipart_uploads(Bucket=get_settings().artifacts_bucket).get("Uploads", [])


def assert_same_rows(body: bytes, fmt: str, truth: list[dict]) -> None:
    if fmt == "parquet":
        import polars

        rows = parquet_rows(body)
        assert polars.read_parquet(io.BytesIO(body)).height == len(truth), "another reader reads it whole"
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in body.decode().splitlines()]
    else:
        rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(int(r["block_number"]), r["tx_hash"], str(r["amount"])) for r in rows] == [
        (t["block_number"], t["tx_hash"], t["amount"]) for t in truth]


@pytest.fixture
def one_step_runs(monkeypatch):
    """Through the handler: every run builds one chunk and composes one part, then hands over."""
    from depu.config import get_settings

    monkeypatch.setenv("EXPORT_RUN_SECONDS", "0")
    monkeypatch.setenv("EXPORT_COMPOSE_SECONDS", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_queue(handle) -> list[int]:
    """Hand every message on the export queue to ``handle`` until none is left (bounded); returns the hops."""
    from depu.config import get_settings

    hops: list[int] = []
    for _ in range(60):
        bodies = drain_queue(get_settings().export_queue_url)
        if not bodies:
            return hops
        for body in bodies:
            hops.append(json.loads(body)["hop"])
            handle(body)
    raise AssertionError("the export queue never emptied")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_tiny_compose_deadline_resumes_the_upload_across_runs_and_equals_a_one_run_compose(big_history, aws, fmt):
    """Every compose run composes one part and hands over (its compose deadline has always passed): the
    upload, its parts and the buffer carry across four runs, and the file is the one a single run composes,
    byte for byte (Parquet too: its row groups are copied, never re-encoded)."""
    from depu.analytics import export_checkpoint, export_compose, export_run

    chained = big_request(fmt)
    compose_states: list = []
    original = export_checkpoint.advance_compose

    def recorded(held, compose):
        compose_states.append(compose)
        return original(held, compose)

    footers_read: list[str] = []
    layout_of = export_compose._parquet_layout

    def read_footer(s3, bucket, key, size, shift):
        footers_read.append(key)
        return layout_of(s3, bucket, key, size, shift)

    with pytest.MonkeyPatch.context() as patch:
        if fmt == "parquet":  # its parts are ~4 MB in all: a multipart upload of one final part all the same
            patch.setattr(export_compose, "SINGLE_PUT_BYTES", 0)
        patch.setattr(export_checkpoint, "advance_compose", recorded)
        patch.setattr(export_compose, "_parquet_layout", read_footer)
        notice = export_run.build(chained, notify=lambda n: None, deadline=float("-inf"), part_target_bytes=1,
                                  compose_deadline=float("-inf"), document_limit=10**9)
    record = export_checkpoint.read(chained.request_id)
    assert record.state == export_checkpoint.DELIVERED and record.parts == len(BIG_PARTS)
    paused = [state for state in compose_states if not state.done and state.next_part]
    assert [state.next_part for state in paused] == [1, 2, 3], "three hand-overs mid-compose"
    assert len({state.upload_id for state in compose_states}) == 1, "one upload, resumed"
    assert any(state.leftover for state in paused), "a buffer was carried from one run to the next"
    assert record.runs == len(BIG_PARTS) + len(BIG_PARTS), "a run per chunk, then a run per part composed"
    body = s3_body(notice.document_key)
    assert fmt == "parquet" or len(body) > export_compose.PART_BYTES, "several upload parts"
    assert body == one_run_compose(fmt), "byte for byte (the one-run file: Parquet's is one PutObject)"
    assert_same_rows(body, fmt, big_history)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.ParquetFile(io.BytesIO(body)).num_row_groups == len(BIG_PARTS)
        assert footers_read == [export_run.part_key(chained, i) for i in range(len(BIG_PARTS))], \
            "each part's footer read once: the last run writes the footer from the one saved so far"
    assert open_uploads() == [] and s3_keys(parts_prefix(chained)) == []
    assert s3_keys(export_compose.leftover_prefix(chained.key)) == [], "saved buffers deleted with the parts"


def test_every_compose_message_delivered_twice_adds_no_byte_and_one_file(big_history, aws, one_step_runs):
    from depu.analytics import export, export_checkpoint
    from depu.config import get_settings

    chained = big_request("jsonl")
    export.enqueue(chained)
    hops = run_queue(lambda body: [exporter_run(body) for _copy in range(2)])
    assert hops == list(range(len(BIG_PARTS) * 2)), "one chain: a hop per chunk and per part composed"
    assert export_checkpoint.read(chained.request_id).state == export_checkpoint.DELIVERED
    assert s3_body(chained.key) == one_run_compose("jsonl")
    notices = [json.loads(body) for body in drain_queue(get_settings().notify_queue_url)]
    assert len([n for n in notices if n["document_key"]]) == 1 and open_uploads() == []


def test_a_twin_compose_run_of_the_same_hop_supersedes_the_other_and_the_file_is_whole(big_history, aws):
    """Two runs of one compose message at once: the twin uploads the same parts under the same numbers and
    checkpoints first; the other's checkpoint is refused and it stops; the chain goes on to the same file."""
    from depu.analytics import export_checkpoint, export_run

    chained = big_request("csv")
    options = {"continue_with": lambda r, h: None, "notify": lambda n: None, "deliver": lambda n: None,
               "part_target_bytes": 1, "compose_deadline": float("-inf")}
    for hop in range(len(BIG_PARTS) + 1):  # build, then the first compose run
        assert export_run.run(chained, hop, deadline=float("-inf"), **options).kind == export_run.CONTINUED
    compose_hop = len(BIG_PARTS) + 1
    original, outcomes = export_checkpoint.advance_compose, []

    def twin_first(held, compose):
        if not outcomes and held.compose.next_part == 1:
            outcomes.append("twin")
            outcomes.append(export_run.run(chained, compose_hop, deadline=float("-inf"), **options).kind)
        return original(held, compose)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_checkpoint, "advance_compose", twin_first)
        first = export_run.run(chained, compose_hop, deadline=float("-inf"), **options)
    assert outcomes == ["twin", export_run.CONTINUED] and first.kind == export_run.SUPERSEDED
    assert export_checkpoint.read(chained.request_id).compose.next_part == 2
    hop = compose_hop + 1
    while export_run.run(chained, hop, deadline=float("-inf"), **options).kind == export_run.CONTINUED:
        hop += 1
    assert s3_body(chained.key) == one_run_compose("csv") and open_uploads() == []


@pytest.mark.parametrize("crash", ["after parts uploaded", "after the upload completed"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_crash_mid_compose_resumes_without_loss_or_duplicates(big_history, aws, one_step_runs, crash, fmt):
    """The run dies after S3 holds its work and before its compose checkpoint: the redelivered message
    uploads the same parts again (a dead run's extra part is left out of the upload), or finds the file
    already whole; either way the file is the one-run file."""
    from depu.analytics import export, export_checkpoint

    chained = big_request(fmt)
    export.enqueue(chained)
    original, crashes = export_checkpoint.advance_compose, []

    def crash_once(held, compose):
        hit = compose.done if crash == "after the upload completed" else compose.next_part == 3 and not compose.done
        if hit and not crashes:
            crashes.append(compose)
            raise RuntimeError("the exporter died before its compose checkpoint")
        return original(held, compose)

    failed = []

    def handle(body):
        result = exporter_run(body)
        if result["batchItemFailures"]:  # SQS offers it again after the visibility timeout
            failed.append(body)
            assert exporter_run(body, receives=2) == {"batchItemFailures": []}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_checkpoint, "advance_compose", crash_once)
        run_queue(handle)
    assert len(failed) == 1 and crashes
    if crash == "after the upload completed":
        assert crashes[0].done
    body = s3_body(chained.key)
    assert body == one_run_compose(fmt)
    assert_same_rows(body, fmt, big_history)
    assert open_uploads() == []


def test_a_compose_that_fails_for_good_aborts_its_upload_and_tells_the_user(big_history, aws, one_step_runs):
    import boto3

    from depu.analytics import export, export_checkpoint, export_run
    from depu.config import get_settings

    chained = big_request("csv")
    export.enqueue(chained)
    for _ in range(len(BIG_PARTS) + 1):  # the chunks, then the first compose run (it starts the upload)
        [body] = drain_queue(get_settings().export_queue_url)
        assert exporter_run(body) == {"batchItemFailures": []}
    assert export_checkpoint.read(chained.request_id).compose.next_part == 1
    assert len(open_uploads()) == 1, "a multipart upload is under way"
    boto3.client("s3").delete_object(Bucket=get_settings().artifacts_bucket,  # a part gone: no run can go on
                                     Key=export_run.part_key(chained, 1))
    [body] = drain_queue(get_settings().export_queue_url)
    for receives in range(1, export_run.MAX_RECEIVES):
        assert exporter_run(body, receives)["batchItemFailures"], "retried"
        assert len(open_uploads()) == 1, "kept for the retry"
    assert exporter_run(body, export_run.MAX_RECEIVES)["batchItemFailures"], "on to the dead-letter queue"
    assert open_uploads() == [], "the upload is aborted"
    assert export_checkpoint.read(chained.request_id).state == export_checkpoint.FAILED
    assert s3_keys(chained.key) == []
    told = [json.loads(n) for n in drain_queue(get_settings().notify_queue_url)]
    assert any("failed after 3 tries" in n["text"] for n in told)


def test_the_local_runtime_carries_a_compose_across_runs_through_its_queue(big_history, aws):
    from depu.analytics import export, export_checkpoint
    from forks_support import wait_for
    from local.moto_server import free_port
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    chained = big_request("csv")
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(
        port=free_port(), poll_wait_seconds=1,
        extra_environment={"EXPORT_RUN_SECONDS": "0", "EXPORT_COMPOSE_SECONDS": "0"}))
    runtime.functions = {name: fn for name, fn in runtime.functions.items() if name == "ExporterFunction"}
    runtime.start()
    try:
        export.enqueue(chained)
        record = wait_for(lambda: (lambda r: r if r and r.state == export_checkpoint.DELIVERED else None)(
            export_checkpoint.read(chained.request_id)), 180, "the export delivered")
    finally:
        runtime.stop()
    assert record.runs == 2 * len(BIG_PARTS), "a run per chunk, a run per part composed"
    assert s3_body(chained.key) == one_run_compose("csv") and open_uploads() == []


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_composing_across_runs_edits_the_one_progress_message_in_order_then_delivers(big_history, aws,
                                                                                    one_step_runs, fmt,
                                                                                    monkeypatch):
    """Through the handler, a run per part composed: each compose run edits the export's one progress
    message ("composing: part k of n") as read from the notify queue, versions in order across the runs and
    after the build's edits, then the "done" edit and the file; no second progress message."""
    from depu.analytics import export, export_compose, export_run
    from depu.config import get_settings

    monkeypatch.setenv("EXPORT_PROGRESS_SECONDS", "0")  # every edit, to see them all
    get_settings.cache_clear()
    if fmt == "parquet":  # its parts are ~4 MB in all: a multipart upload all the same
        monkeypatch.setattr(export_compose, "SINGLE_PUT_BYTES", 0)
    chained = big_request(fmt)
    export.enqueue(chained)
    by_run: list[list[dict]] = []

    def handle(body):
        assert exporter_run(body) == {"batchItemFailures": []}
        by_run.append([json.loads(n) for n in drain_queue(get_settings().notify_queue_url)])

    run_queue(handle)
    notices = [n for run in by_run for n in run]
    slot = f"export:{chained.request_id}"
    edits = [n for n in notices if n["slot"] is not None]
    assert {n["slot"] for n in edits} == {slot}, "one progress message"
    assert [n["slot_version"] for n in edits] == list(range(len(edits))), "versions in order, none repeated"
    composing = [(run, n["text"]) for run, batch in enumerate(by_run) for n in batch
                 if n["slot"] and "composing:" in n["text"]]
    parts = len(BIG_PARTS)
    assert [f"composing: part {k} of {parts}," in text for k, (_run, text) in zip(range(1, parts + 1), composing)] \
        == [True] * parts and len(composing) == parts
    assert len({run for run, _text in composing}) == parts, "one edit per compose run, each in its own run"
    sizes = [float(re.search(r"part \d+ of \d+, ([\d,.]+) MB", text)[1].replace(",", "")) for _run, text in composing]
    assert sizes == sorted(sizes) and sizes[-1] > 0, "the file's size grows"
    first_compose = edits.index(next(n for n in edits if "composing:" in n["text"]))
    assert all("composing:" not in n["text"] for n in edits[:first_compose]) and "started" in edits[0]["text"]
    assert "file follows" in edits[-1]["text"] and notices[-1]["document_key"] == chained.key
    assert notices.index(edits[-1]) == len(notices) - 2, "the done edit, then the file, last"
    assert len([n for n in notices if n["document_key"]]) == 1
    assert s3_body(chained.key) == one_run_compose(fmt)
    assert export_run.part_key(chained, 0) not in s3_keys(parts_prefix(chained))


# ------------------------------------------------------------------------- Parquet page indexes, bloom filters
class CompactReader:
    """A plain Thrift compact-protocol decoder (to dicts of field id -> value), independent of the exporter's
    footer rewriter, to read what a composed file's offsets point at."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def zigzag(self) -> int:
        raw = self.varint()
        return (raw >> 1) ^ -(raw & 1)

    def read(self, kind: int):
        if kind in (1, 2):
            return kind == 1
        if kind == 3:
            self.pos += 1
            return self.data[self.pos - 1]
        if kind in (4, 5, 6):
            return self.zigzag()
        if kind == 7:
            self.pos += 8
            return self.data[self.pos - 8:self.pos]
        if kind == 8:
            size = self.varint()
            self.pos += size
            return self.data[self.pos - size:self.pos]
        if kind in (9, 10):
            header = self.data[self.pos]
            self.pos += 1
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            return [self.data[self.pos - 1] == 1 if element in (1, 2) and not self._skip(1) else self.read(element)
                    for _ in range(size)]
        if kind == 12:
            return self.struct()
        raise AssertionError(f"compact type {kind}")

    def _skip(self, count: int) -> bool:
        self.pos += count
        return False

    def struct(self) -> dict:
        fields, field = {}, 0
        while True:
            header = self.data[self.pos]
            self.pos += 1
            if header == 0:
                return fields
            field = field + (header >> 4) if header >> 4 else self.zigzag()
            fields[field] = self.read(header & 0x0F)


def thrift_at(body: bytes, offset: int) -> tuple[dict, int]:
    """The struct encoded at ``offset`` and how many bytes it took."""
    reader = CompactReader(body, offset)
    value = reader.struct()
    return value, reader.pos - offset


BLOOM_SALT = (0x47B6137B, 0x44974D91, 0x8824AD5B, 0xA2B7289D, 0x705495C7, 0x2DF1424B, 0x9EFC4947, 0x5C6BFB31)


def bloom_holds(bitset: bytes, value: str) -> bool:
    """Parquet's split-block bloom filter lookup (its spec): XXH64 of the value's plain bytes picks a 32-byte
    block by the hash's upper half, and the lower half, times each salt, one bit in each of its eight words."""
    import xxhash

    digest = xxhash.xxh64_intdigest(value.encode())
    block = ((digest >> 32) * (len(bitset) // 32)) >> 32
    key = digest & 0xFFFFFFFF
    words = [int.from_bytes(bitset[block * 32 + 4 * i:block * 32 + 4 * i + 4], "little") for i in range(8)]
    return all(words[i] >> (((key * salt) & 0xFFFFFFFF) >> 27) & 1 for i, salt in enumerate(BLOOM_SALT))


@pytest.mark.parametrize("blooms", [True, False], ids=["with bloom filters", "pyarrow without bloom filters"])
def test_a_composed_parquet_keeps_page_indexes_and_bloom_filters_pointing_at_real_bytes(big_history, aws, blooms,
                                                                                        monkeypatch):
    """Parquet parts carry page indexes and bloom filters; composed across runs, every shifted ColumnIndex,
    OffsetIndex and bloom filter offset in the merged footer points at a whole Thrift structure of the length
    the footer says, every page location at a real page header of that page's size, and readers that use
    them (pyarrow with a filter, polars) read the rows back. Without bloom filters (the Lambda layer's
    pyarrow 20 refuses the option; test_sam_build runs the real one) the same holds for the page indexes."""
    import polars
    import pyarrow.parquet as pq

    from depu.analytics import export, export_compose, export_run

    assert export.writer_takes_bloom_filters(), "the dev environment's pyarrow writes bloom filters"
    if not blooms:
        monkeypatch.setattr(export, "writer_takes_bloom_filters", lambda: False)

    chained = big_request("parquet")
    with pytest.MonkeyPatch.context() as patch:  # a multipart upload across four compose runs
        patch.setattr(export_compose, "SINGLE_PUT_BYTES", 0)
        notice = export_run.build(chained, notify=lambda n: None, deadline=float("-inf"), part_target_bytes=1,
                                  compose_deadline=float("-inf"), document_limit=10**9)
    body = s3_body(notice.document_key)
    assert body == one_run_compose("parquet"), "the one-run compose lays the indexes the same way"
    footer_length = int.from_bytes(body[-8:-4], "little")
    meta, used = thrift_at(body, len(body) - 8 - footer_length)
    assert used == footer_length
    metadata = pq.ParquetFile(io.BytesIO(body)).metadata
    names = [metadata.schema.column(j).name for j in range(metadata.num_columns)]
    row_groups = meta[4]
    assert len(row_groups) == metadata.num_row_groups == len(BIG_PARTS)
    table = pq.read_table(io.BytesIO(body))
    seen_bloom, first_row = 0, 0
    for i, group in enumerate(row_groups):
        for j, chunk in enumerate(group[1]):
            column = metadata.row_group(i).column(j)
            assert column.has_column_index and column.has_offset_index
            offset_index, length = thrift_at(body, chunk[4])
            assert length == chunk[5], "the offset index is as long as the footer says"
            column_index, length = thrift_at(body, chunk[6])
            assert length == chunk[7] and len(column_index[1]) == len(offset_index[1]), "a null flag per page"
            pages = offset_index[1]
            assert pages[0][1] == chunk[3][9], "the first page is the column's first data page"
            for page in pages:
                header, header_length = thrift_at(body, page[1])
                assert header[1] in (0, 3) and header_length + header[3] == page[2], "a data page header, its size"
            assert [page[3] for page in pages][0] == 0
            if not blooms:
                assert 14 not in chunk[3] and column.bloom_filter_offset is None
            elif names[j] in export.BLOOM_COLUMNS["transfers"]:
                bloom, header_length = thrift_at(body, chunk[3][14])
                assert header_length + bloom[1] == chunk[3][15], "a bloom filter header and its bitset"
                assert column.bloom_filter_offset == chunk[3][14]
                bitset = body[chunk[3][14] + header_length:chunk[3][15] + chunk[3][14]]
                values = table.column(names[j]).to_pylist()[first_row:first_row + group[3]]
                assert all(bloom_holds(bitset, value) for value in values), "every value of the group is in its filter"
                others = [f"0x{index:064x}" for index in range(400)]  # hex strings no row holds
                false_hits = sum(bloom_holds(bitset, other) for other in others if other not in values)
                assert false_hits < 0.2 * len(others), f"{false_hits} of {len(others)} absent values seem present"
                seen_bloom += 1
        first_row += group[3]
    assert seen_bloom == (len(BIG_PARTS) * len(export.BLOOM_COLUMNS["transfers"]) if blooms else 0)
    wanted = big_history[-1]["tx_hash"]  # in the last part, the one shifted furthest
    found = pq.read_table(io.BytesIO(body), filters=[("tx_hash", "=", wanted)]).to_pylist()
    assert [row["tx_hash"] for row in found] == [wanted]
    assert polars.read_parquet(io.BytesIO(body)).height == len(big_history)
    assert_same_rows(body, "parquet", big_history)


def test_a_parquet_compose_whose_saved_footer_is_gone_reads_the_parts_again_to_the_same_file(big_history, aws):
    """The footer saved by a compose run that stopped (or a record from before footers were saved) is
    missing: the next run reads the composed parts' footers again and the file is the same, byte for byte."""
    from depu.analytics import export_checkpoint, export_compose, export_run

    chained = big_request("parquet")
    options = {"continue_with": lambda r, h: None, "notify": lambda n: None, "deliver": lambda n: None,
               "part_target_bytes": 1, "compose_deadline": float("-inf"), "document_limit": 10**9}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_compose, "SINGLE_PUT_BYTES", 0)
        hop = 0
        while export_checkpoint.read(chained.request_id) is None or \
                export_checkpoint.read(chained.request_id).compose.next_part < 2:
            assert export_run.run(chained, hop, deadline=float("-inf"), **options).kind == export_run.CONTINUED
            hop += 1
        saved = export_compose.footer_key(chained.key, 2)
        assert saved in s3_keys(export_compose.leftover_prefix(chained.key))
        import boto3

        from depu.config import get_settings

        boto3.client("s3").delete_object(Bucket=get_settings().artifacts_bucket, Key=saved)
        while export_run.run(chained, hop, deadline=float("-inf"), **options).kind == export_run.CONTINUED:
            hop += 1
    body = s3_body(chained.key)
    assert body == one_run_compose("parquet")
    assert_same_rows(body, "parquet", big_history)
    assert s3_keys(export_compose.leftover_prefix(chained.key)) == []
