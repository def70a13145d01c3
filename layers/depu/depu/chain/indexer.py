"""The chain indexer: follows head minus a confirmation depth, block by block, resumable and reorg-safe.

One cycle takes the next chunk of blocks after the checkpoint: one batch of ``eth_getBlockByNumber`` (full
transactions) and ``eth_getLogs`` for the Transfer topic over the chunk's range, plus receipts of the
value-carrying transactions (a reverted transaction moves no ETH). Each block then goes through:

1. its header is written with ``status=applying`` (a crash leaves a trace the next run can undo);
2. its transfer rows, keyed by block and log/tx index, are written (puts: a retry rewrites the same items);
3. its aggregate deltas are applied (guarded by ``last_block``: a retry changes nothing twice);
4. watch alerts are settled (``depu.analytics.alerts``): the message the tip follower sent at inclusion is
   edited to confirmed, a transfer the tip never saw is alerted once, already confirmed, and an alert whose
   block at this height was replaced is edited to dropped. Watches are looked up per block by the addresses
   it moves, never cached across blocks;
5. the header becomes ``status=done``.

Each loop turn first runs the tip follower (``depu.chain.tip``), which alerts the blocks above the confirmed
head within a poll interval of their inclusion. One invocation follows the chain at a time, and the next
takes over without a gap (``depu.chain.lease``).

After a chunk its raw rows go to S3 as one Parquet part, then the checkpoint (number and hash) moves with a
conditional write. Every block's parent hash must equal the hash stored for the block before it; when it does
not (or the checkpoint's own block is no longer canonical), the indexer walks back to the highest block whose
stored hash is still canonical and reverts everything above it: aggregate deltas subtracted, rows and headers
deleted, Parquet parts truncated. Unlike lag-only indexers, confirmations only reduce how often that happens.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import ClientError

from depu.analytics import aggregates, metadata, prices, raw, watches
from depu.analytics.alerts import AlertBook
from depu.chain import store
from depu.chain.lease import LEASE_SECONDS, FollowerLease
from depu.chain.decode import TRANSFER_TOPIC
from depu.chain.rows import ChainMoved, block_header, hex_int as _int, transfer_rows
from depu.chain.rpc import RpcClient
from depu.config import chain_tuning

log = logging.getLogger(__name__)

RAW_TTL_DAYS = 30
MARKER_BACKFILL_SECONDS = 5.0  # per run, until watches stored before markers existed all have one


class ReorgTooDeep(RuntimeError):
    """No stored block within ``max_reorg_depth`` is canonical any more: an operator must look."""


@dataclass(frozen=True)
class IndexerConfig:
    confirmations: int = 6
    chunk_blocks: int = 50
    start_block: int | None = None  # where a first run starts; default: ``backfill`` blocks before the confirmed head
    backfill: int = 100
    max_reorg_depth: int = 128
    poll_seconds: float = 0.5  # between looks at the head when nothing is new: the alert latency's floor
    alert_at_tip: bool = True
    observe_prices: bool = True  # the listed pools' cumulative prices, once per chunk (depu.analytics.prices)
    write_raw: bool = True
    rpc_batch_size: int = 50
    rpc_workers: int = 4
    rpc_rate: float | None = None  # calls per second for paid providers

    @classmethod
    def from_env(cls) -> "IndexerConfig":
        """The defaults above, with what the deployment's settings (depu.config.chain_tuning) override."""
        tuning = chain_tuning()
        overrides = {
            "confirmations": tuning.confirmations,
            "chunk_blocks": tuning.chunk_blocks,
            "start_block": tuning.start_block,
            "backfill": tuning.backfill,
            "max_reorg_depth": tuning.max_reorg_depth,
            "rpc_rate": tuning.rpc_rate,
            "poll_seconds": tuning.poll_seconds,
            "alert_at_tip": tuning.alert_at_tip,
        }
        return cls(**{name: value for name, value in overrides.items() if value is not None})


@dataclass(frozen=True)
class Checkpoint:
    number: int
    hash: str


@dataclass
class RunReport:
    blocks: int = 0
    transfers: int = 0
    reorgs: int = 0
    reverted_blocks: int = 0
    alerts: int = 0
    checkpoint: int | None = None
    seconds: float = 0.0
    tip_blocks: int = 0
    tip_reorgs: int = 0
    following_since: float | None = None  # wall clock: when this run took the follower lease
    followed_until: float | None = None  # wall clock: when it stopped (handed over, or its time was up)
    handed_over: bool = False
    shapes: dict[str, int] = field(default_factory=lambda: defaultdict(int))


# ---------------------------------------------------------------------------- checkpoint
def load_checkpoint() -> Checkpoint | None:
    item = store.get(store.CHAIN, store.CHECKPOINT)
    return Checkpoint(int(item["number"]), item["hash"]) if item else None


def save_checkpoint(new: Checkpoint, previous: Checkpoint | None) -> None:
    """Move the checkpoint only from where this run found it (a second indexer would fail here, not corrupt)."""
    item = {"pk": store.CHAIN, "sk": store.CHECKPOINT, "number": new.number, "hash": new.hash,
            "updated_at": int(time.time())}
    if previous is None:
        store.table().put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
    else:
        store.table().put_item(Item=item, ConditionExpression="#n = :prev",
                               ExpressionAttributeNames={"#n": "number"},
                               ExpressionAttributeValues={":prev": previous.number})


def _index_key(row: dict[str, Any]) -> dict[str, str]:
    return {"pk": store.token_transfers_pk(row["asset"]), "sk": f"{store.block_key(row['block_number'])}#{row['pos']}"}


def _row_item(row: dict[str, Any], expires_at: int) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value is not None} | {"expires_at": expires_at}


# ---------------------------------------------------------------------------- the indexer
class Indexer:
    def __init__(self, rpc: RpcClient | str, config: IndexerConfig | None = None,
                 notify: Callable[[Any], None] | None = None):
        self.config = config or IndexerConfig()
        self.rpc = rpc if isinstance(rpc, RpcClient) else RpcClient(
            rpc, batch_size=self.config.rpc_batch_size, workers=self.config.rpc_workers, rate=self.config.rpc_rate)
        if notify is None:
            from depu.notify import enqueue as notify
        self.notify = notify
        self.metas: dict[str, metadata.TokenMeta] = {}
        self.book = AlertBook(notify, self.config.confirmations)
        from depu.chain.tip import TipFollower

        self.tip = TipFollower(self)

    # ------------------------------------------------------------------ run loop
    def run(self, deadline: float | None = None, *, until_caught_up: bool = False,
            lease: FollowerLease | None = None) -> RunReport:
        """Index until ``deadline`` (time.monotonic()), polling when caught up; or, with ``until_caught_up``,
        stop as soon as the confirmed head is reached. Only while holding the follower lease: a run started
        while another follows waits as its successor, and a run hands over as soon as a successor waits."""
        report = RunReport()
        started = time.monotonic()
        lease = lease or FollowerLease()
        if not lease.acquire(deadline if deadline is not None else started + 2 * LEASE_SECONDS):
            report.seconds = time.monotonic() - started
            return report
        report.following_since = time.time()
        try:
            self._follow(report, lease, deadline, until_caught_up)
        finally:
            report.followed_until = time.time()
            lease.release()
            report.handed_over = lease.handed_over
        report.seconds = time.monotonic() - started
        return report

    def _follow(self, report: RunReport, lease: FollowerLease, deadline: float | None, until_caught_up: bool) -> None:
        started = time.monotonic()
        watches.backfill_markers(min(deadline, started + MARKER_BACKFILL_SECONDS) if deadline is not None
                                 else started + MARKER_BACKFILL_SECONDS)
        checkpoint = self.verify_checkpoint(report)
        while (deadline is None or time.monotonic() < deadline) and lease.keep():
            try:
                seen = self.tip.step(report) if self.config.alert_at_tip else 0
                checkpoint, indexed = self.step(checkpoint, report, deadline)
            except ChainMoved as moved:
                log.info("chain moved while fetching, retrying: %s", moved)
                checkpoint = self.verify_checkpoint(report)
                continue
            if indexed or seen:
                continue
            if until_caught_up or deadline is None:
                break
            time.sleep(min(self.config.poll_seconds, max(0.0, deadline - time.monotonic())))
        report.checkpoint = checkpoint.number if checkpoint else None

    def verify_checkpoint(self, report: RunReport) -> Checkpoint | None:
        """The stored checkpoint if its block is still canonical, else the common ancestor after a rewind.
        Also reverts blocks a crashed run left above the checkpoint."""
        checkpoint = load_checkpoint()
        if checkpoint is None:
            return None
        block = self.rpc.call("eth_getBlockByNumber", hex(checkpoint.number), False)
        if block is None or block["hash"] != checkpoint.hash:
            return self.rewind(checkpoint, report)
        self.revert_above(checkpoint.number, report)
        return checkpoint

    def step(self, checkpoint: Checkpoint | None, report: RunReport,
             deadline: float | None = None) -> tuple[Checkpoint | None, int]:
        """Index the next chunk (closing it early at ``deadline``); returns the new checkpoint and how many
        blocks were indexed."""
        head = self.rpc.head()
        target = head - self.config.confirmations
        if checkpoint is None:
            first = self.config.start_block if self.config.start_block is not None else max(
                target - self.config.backfill + 1, 0)
            from depu.chain.backfill import history_last

            covered = history_last()
            if covered is not None:
                first = max(first, covered + 1)  # a backfill's aggregates already hold the blocks below
        else:
            first = checkpoint.number + 1
        if first > target:
            return checkpoint, 0
        last = min(target, first + self.config.chunk_blocks - 1)
        blocks, logs_by_block, receipts = self.fetch(first, last)
        expected_parent = checkpoint.hash if checkpoint else None
        for block in blocks:
            if expected_parent is not None and block["parentHash"] != expected_parent:
                if checkpoint is not None and _int(block["number"]) == checkpoint.number + 1:
                    return self.rewind(checkpoint, report), 0
                raise ChainMoved(f"block {_int(block['number'])} does not follow the block fetched before it")
            expected_parent = block["hash"]
        if self.config.write_raw:
            raw.remove_parts_after("transfers", checkpoint.number if checkpoint else first - 1)
            raw.remove_parts_after("blocks", checkpoint.number if checkpoint else first - 1)
        self.metas = metadata.ensure(self.rpc, {entry["address"].lower() for logs in logs_by_block.values()
                                                for entry in logs}, self.metas)
        chunk_rows: list[dict[str, Any]] = []
        chunk_headers: list[dict[str, Any]] = []
        for done, block in enumerate(blocks, start=1):
            rows = transfer_rows(block, logs_by_block.get(block["hash"], []), receipts, report.shapes)
            header = block_header(block, rows)
            self.apply(header, rows, report)
            chunk_rows.extend(rows)
            chunk_headers.append(header)
            if deadline is not None and time.monotonic() >= deadline and done < len(blocks):
                blocks, last = blocks[:done], header["number"]  # out of time: close the chunk here
                break
        if self.config.write_raw:
            raw.write_part("transfers", first, last, chunk_rows)
            raw.write_part("blocks", first, last, chunk_headers)
        if self.config.observe_prices:
            prices.observe(self.rpc, last, chunk_headers[-1]["timestamp"])
        new = Checkpoint(last, blocks[-1]["hash"])
        save_checkpoint(new, checkpoint)
        report.blocks += len(blocks)
        report.transfers += len(chunk_rows)
        return new, len(blocks)

    def fetch(self, first: int, last: int):
        """Blocks (full txs), their Transfer logs grouped by block hash, and receipts of value transfers."""
        blocks = self.rpc.blocks(range(first, last + 1), full=True)
        if any(block is None for block in blocks):
            raise ChainMoved(f"a block in {first}..{last} is gone")
        logs = self.rpc.logs(first, last, [TRANSFER_TOPIC])
        hashes = {block["hash"] for block in blocks}
        logs_by_block: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in logs:
            if entry["blockHash"] not in hashes:
                raise ChainMoved(f"log of unknown block {entry['blockHash']}")
            logs_by_block[entry["blockHash"]].append(entry)
        value_txs = [tx["hash"] for block in blocks for tx in block["transactions"] if _int(tx.get("value")) > 0]
        receipts = {tx_hash: receipt for tx_hash, receipt in zip(value_txs, self.rpc.receipts(value_txs))
                    if receipt is not None}
        return blocks, logs_by_block, receipts

    # ------------------------------------------------------------------ one block, forwards and back
    def apply(self, header: dict[str, Any], rows: list[dict[str, Any]], report: RunReport) -> None:
        number = header["number"]
        stored = store.get(store.BLOCKS, store.block_key(number))
        if stored and stored["hash"] != header["hash"]:
            self.revert_block(stored, number - 1)  # left half-done by a crashed run, then replaced by a reorg
            report.reverted_blocks += 1
        elif stored and stored.get("status") == "done":
            return
        table = store.table()
        table.put_item(Item={"pk": store.BLOCKS, "sk": store.block_key(number), **header, "status": "applying"})
        expires_at = header["timestamp"] + RAW_TTL_DAYS * 86400
        # block rows before index rows: a revert finds index rows through the block's rows, so a crash in
        # between may leave a block row without its index row (harmless), never an index row nobody finds
        with table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for row in rows:
                batch.put_item(Item=_row_item(row, expires_at) | {"pk": store.block_rows_pk(number), "sk": row["pos"]})
        with table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for row in rows:
                batch.put_item(Item=_row_item(row, expires_at) | _index_key(row))
        aggregates.apply_block(number, aggregates.block_deltas(rows, header["timestamp"]))
        current = watches.watching(watches.moved_addresses(rows))
        report.alerts += self.book.include(rows, current, self.metas, confirmed=True,
                                           usd=self.dollars(header["timestamp"]) if current else None)
        report.alerts += self.book.settle(number, header["hash"])
        table.update_item(Key={"pk": store.BLOCKS, "sk": store.block_key(number)},
                          UpdateExpression="SET #s = :done", ExpressionAttributeNames={"#s": "status"},
                          ExpressionAttributeValues={":done": "done"})

    def dollars(self, at: int | None) -> Callable[[dict[str, Any]], Any]:
        """A row's value in dollars at the time-weighted price as of ``at`` (None: the newest)."""
        book = prices.PriceBook(self.rpc, lambda asset: self.metas.get(asset) or metadata.cached(asset), at=at)
        return book.row_usd

    def revert_block(self, header: dict[str, Any], floor: int) -> None:
        """Undo everything one stored block contributed (idempotent: a crash midway is finished next run)."""
        number = int(header["number"])
        rows = list(store.query_all(store.block_rows_pk(number)))
        for row in rows:
            row["block_number"] = int(row["block_number"])
        aggregates.revert_block(number, aggregates.block_deltas(rows, int(header["timestamp"])), floor)
        self.book.retract(number, header["hash"])
        with store.table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for row in rows:
                batch.delete_item(Key=_index_key(row))
                batch.delete_item(Key={"pk": row["pk"], "sk": row["sk"]})
        store.table().delete_item(Key={"pk": store.BLOCKS, "sk": store.block_key(number)})

    def revert_above(self, number: int, report: RunReport) -> int:
        """Revert stored blocks above ``number``, highest first; returns how many."""
        doomed = list(store.query_all(store.BLOCKS, start=store.block_key(number + 1), reverse=True))
        for header in doomed:
            self.revert_block(header, number)
        report.reverted_blocks += len(doomed)
        return len(doomed)

    def rewind(self, checkpoint: Checkpoint, report: RunReport) -> Checkpoint | None:
        """Find the highest stored block that is still canonical and revert everything above it."""
        report.reorgs += 1
        floor = max(checkpoint.number - self.config.max_reorg_depth, 0)
        stored = {int(item["number"]): item["hash"] for item in
                  store.query_all(store.BLOCKS, start=store.block_key(floor), end=store.block_key(checkpoint.number))}
        ancestor: Checkpoint | None = None
        numbers = sorted(stored, reverse=True)
        for i in range(0, len(numbers), 16):
            window = numbers[i : i + 16]
            canonical = self.rpc.blocks(window, full=False)
            for number, block in zip(window, canonical):
                if block is not None and block["hash"] == stored[number]:
                    ancestor = Checkpoint(number, stored[number])
                    break
            if ancestor:
                break
        if ancestor is None and floor > 0 and any(store.query_all(store.BLOCKS, end=store.block_key(floor - 1), limit=1)):
            raise ReorgTooDeep(f"no canonical block within {self.config.max_reorg_depth} of {checkpoint.number}")
        keep = ancestor.number if ancestor else -1
        log.warning("reorg: rewinding from %s to %s", checkpoint.number, keep)
        self.revert_above(keep, report)
        if self.config.write_raw:
            raw.truncate_after("transfers", keep)
            raw.truncate_after("blocks", keep)
        if self.config.observe_prices:
            prices.forget_after(keep)
        if ancestor is None:
            store.table().delete_item(Key={"pk": store.CHAIN, "sk": store.CHECKPOINT})
            return None
        try:
            save_checkpoint(ancestor, checkpoint)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            raise RuntimeError("another indexer moved the checkpoint during a rewind") from error
        return ancestor
