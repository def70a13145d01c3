"""History: a backfill over any block range, writing the same Parquet parts and aggregates as the live indexer.

The range is cut into chunks of ``chunk_blocks``; ``workers`` chunks are fetched and written at once, all
through one RPC client whose token bucket (``rpc_rate`` calls/s) holds for the whole backfill. Each chunk:
its Transfer logs in one ``eth_getLogs`` (a span the node refuses as too large is halved until it answers,
``RpcClient.logs_table``), its blocks (full transactions) in batches and the receipts of value transfers;
rows decoded exactly as the live indexer decodes them, but as Arrow columns (``depu.chain.transfer_table``:
the answer parsed and the standard Transfers decoded without a Python object per log, which is what made
the client, not the node, the bottleneck); then one Parquet part per dataset (``raw/<dataset>/blocks=<start>-<end>``), the chunk's summed aggregate deltas
(``aggregates.apply_history_chunk``: each item records the chunks it holds, so a retried chunk adds
nothing twice), and last the chunk's progress item. A rerun of the same job skips the chunks marked done
and redoes the others; a crash leaves at most the chunks in flight to redo.

History lies below the live indexer: a backfill ends before the first block the live indexer stored (its
aggregates use ``last_block`` guards, which only move forwards), and no deeper than ``CHAIN_MAX_REORG_DEPTH``
below the chain head, where blocks can still change. A live indexer that starts after a backfill starts
above it (``CHAIN/HISTORY``).

    BACKFILL#<job>  JOB              first, last, chunk_blocks, created_at
    BACKFILL#<job>  <start:012>      end, rows, blocks, done_at: one finished chunk
    CHAIN           HISTORY          last: the highest block any backfill covered
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from depu.analytics import aggregates, raw
from depu.chain import store
from depu.chain.decode import TRANSFER_TOPIC
from depu.chain.rpc import RpcClient

if TYPE_CHECKING:
    import pyarrow as pa

HISTORY = "HISTORY"


class BackfillRefused(ValueError):
    """The range overlaps what the live indexer owns, or is too close to the head; the message says why."""


@dataclass(frozen=True)
class BackfillConfig:
    chunk_blocks: int = 50  # one Parquet part each, like the live indexer's chunks
    workers: int = 8  # chunks in flight: many small chunks keep the node busier than a few big ones
    rpc_batch_size: int = 100
    rpc_workers: int = 1  # requests in flight per chunk
    rpc_rate: float | None = None
    max_reorg_depth: int = 128
    write: bool = True  # False: fetch and decode only (the benchmark's figure)
    # True: token transfers only, like cryo's erc20_transfers: Transfer logs, dated by their blockTimestamp
    # where the node gives one (else by the block headers); no ETH transfers, no blocks dataset
    values_only: bool = False
    keep_tables: bool = False  # True: the report keeps every chunk's transfers table (the benchmark checks them)


@dataclass
class BackfillReport:
    chunks: int = 0
    skipped: int = 0
    blocks: int = 0
    rows: int = 0
    seconds: float = 0.0
    shapes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tables: list[Any] = field(default_factory=list)  # with ``keep_tables``: each chunk's transfers, in no order


def _int(value: str | None) -> int:
    return int(value, 16) if value else 0


def live_floor() -> int | None:
    """The first block the live indexer stored (None before its first run)."""
    for header in store.query_all(store.BLOCKS, limit=1):
        return int(header["number"])
    return None


def history_last() -> int | None:
    item = store.get(store.CHAIN, HISTORY)
    return int(item["last"]) if item else None


class Backfill:
    def __init__(self, rpc: RpcClient | str, job: str, first: int, last: int, config: BackfillConfig | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.config = config or BackfillConfig()
        self.rpc = rpc if isinstance(rpc, RpcClient) else RpcClient(
            rpc, batch_size=self.config.rpc_batch_size, workers=self.config.rpc_workers, rate=self.config.rpc_rate)
        if first < 0 or last < first:
            raise BackfillRefused(f"not a block range: {first}..{last}")
        self.job, self.first, self.last = job, first, last
        self.progress = progress  # (chunks done, chunks in all), after each chunk
        self._lock = threading.Lock()

    def chunks(self) -> list[tuple[int, int]]:
        size = self.config.chunk_blocks
        return [(start, min(start + size - 1, self.last)) for start in range(self.first, self.last + 1, size)]

    def check(self) -> None:
        """Refuse a range the live indexer owns or that can still be reorganised."""
        head = self.rpc.head()
        if self.last > head - self.config.max_reorg_depth:
            raise BackfillRefused(f"blocks above {head - self.config.max_reorg_depth} can still be reorganised; "
                                  "the live indexer follows them")
        floor = live_floor()
        if floor is not None and self.last >= floor:
            raise BackfillRefused(f"the live indexer holds blocks from {floor} on: backfill below that")

    def run(self, deadline: float | None = None) -> BackfillReport:
        """Fetch, decode and (unless ``write`` is off) write every chunk not done yet; stops starting new
        chunks at ``deadline`` (time.monotonic()), so a rerun resumes."""
        report = BackfillReport()
        started = time.monotonic()
        if self.config.write:
            self.check()
            store.table().put_item(Item={"pk": f"BACKFILL#{self.job}", "sk": "JOB", "first": self.first,
                                         "last": self.last, "chunk_blocks": self.config.chunk_blocks,
                                         "created_at": int(time.time())})
            done = {item["sk"] for item in store.query_all(f"BACKFILL#{self.job}") if item["sk"] != "JOB"}
        else:
            done = set()
        chunks = self.chunks()
        todo = [chunk for chunk in chunks if store.block_key(chunk[0]) not in done]
        report.skipped = len(chunks) - len(todo)
        finished = report.skipped
        with ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="depu-backfill") as pool:
            futures = []
            for chunk in todo:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                futures.append(pool.submit(self.chunk, *chunk, report))
            for future in as_completed(futures):
                future.result()
                finished += 1
                if self.progress:
                    self.progress(finished, len(chunks))
        if self.config.write and finished == len(chunks):
            self._raise_history(self.last)
        report.seconds = time.monotonic() - started
        return report

    def fetch_table(self, start: int, end: int) -> tuple["pa.Table", list[dict[str, Any]]]:
        """(the raw transfers table, block headers) of ``start..end``: the rows the live indexer would build
        for these blocks, as the Parquet part's columns. With ``values_only`` no headers (and, where the node
        dates its logs by ``blockTimestamp``, no blocks fetched at all)."""
        from depu.chain.rows import block_header, transfer_rows
        from depu.chain.transfer_table import transfer_table

        logs = self.rpc.logs_table(start, end, [TRANSFER_TOPIC], span=self.config.chunk_blocks)
        if self.config.values_only and logs.field("blockTimestamp").null_count == 0:
            return transfer_table(logs), []
        blocks = self.rpc.blocks(range(start, end + 1), full=not self.config.values_only)
        if any(block is None for block in blocks):
            raise RuntimeError(f"the node does not have every block of {start}..{end}")
        stamps = {block["hash"]: _int(block["timestamp"]) for block in blocks}
        if self.config.values_only:
            return transfer_table(logs, stamps), []
        value_txs = [tx["hash"] for block in blocks for tx in block["transactions"] if _int(tx.get("value")) > 0]
        receipts = {h: r for h, r in zip(value_txs, self.rpc.receipts(value_txs)) if r is not None}
        natives = {block["hash"]: transfer_rows(block, [], receipts) for block in blocks}
        table = transfer_table(logs, stamps, [row for rows in natives.values() for row in rows])
        token_rows = _token_rows_per_block(table)
        headers = [block_header(block, natives[block["hash"]]) | {"transfer_count": token_rows.get(_int(block["number"]), 0)}
                   for block in blocks]
        return table, headers

    def chunk(self, start: int, end: int, report: BackfillReport) -> None:
        from depu.chain.transfer_table import shape_counts

        table, headers = self.fetch_table(start, end)
        if self.config.write:
            raw.write_table("transfers", start, end, table)
            if not self.config.values_only:
                raw.write_part("blocks", start, end, headers)
            by_block: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in table.to_pylist():
                by_block[row["block_number"]].append(row)
            stamps = {header["number"]: header["timestamp"] for header in headers} or {
                number: rows[0]["block_timestamp"] for number, rows in by_block.items()}
            aggregates.apply_history_chunk(
                f"{start}", aggregates.chunk_deltas((stamps[n], by_block[n]) for n in sorted(by_block)))
            store.table().put_item(Item={"pk": f"BACKFILL#{self.job}", "sk": store.block_key(start), "end": end,
                                         "rows": table.num_rows, "blocks": len(headers),
                                         "done_at": int(time.time())})
        shapes = shape_counts(table)
        with self._lock:
            report.chunks += 1
            report.blocks += end - start + 1
            report.rows += table.num_rows
            for shape, count in shapes.items():
                report.shapes[shape] += count
            if self.config.keep_tables:
                report.tables.append(table)

    @staticmethod
    def _raise_history(last: int) -> None:
        from botocore.exceptions import ClientError

        try:
            store.table().put_item(Item={"pk": store.CHAIN, "sk": HISTORY, "last": last},
                                   ConditionExpression="attribute_not_exists(#l) OR #l < :l",
                                   ExpressionAttributeNames={"#l": "last"}, ExpressionAttributeValues={":l": last})
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise


def _token_rows_per_block(table: "pa.Table") -> dict[int, int]:
    """Block number → its token rows (every row but ETH transfers): a header's ``transfer_count``."""
    import pyarrow.compute as pc

    tokens = table.filter(pc.not_equal(table.column("kind"), "native"))
    return {item["values"]: item["counts"] for item in pc.value_counts(tokens.column("block_number")).to_pylist()}


def progress_of(job: str) -> tuple[int, int]:
    """(chunks done, chunks in all) of a job, for a status message."""
    items = list(store.query_all(f"BACKFILL#{job}"))
    meta = next((item for item in items if item["sk"] == "JOB"), None)
    if meta is None:
        return 0, 0
    size = int(meta["chunk_blocks"])
    total = (int(meta["last"]) - int(meta["first"])) // size + 1
    return len(items) - 1, total
