"""The chain indexer: follows head minus a confirmation depth, block by block, resumable and reorg-safe.

One cycle takes the next chunk of blocks after the checkpoint: one batch of ``eth_getBlockByNumber`` (full
transactions) and ``eth_getLogs`` for the Transfer topic over the chunk's range, plus receipts of the
value-carrying transactions (a reverted transaction moves no ETH). Each block then goes through:

1. its header is written with ``status=applying`` (a crash leaves a trace the next run can undo);
2. its transfer rows, keyed by block and log/tx index, are written (puts: a retry rewrites the same items);
3. its aggregate deltas are applied (guarded by ``last_block``: a retry changes nothing twice);
4. watch alerts are queued (``dedupe_key`` per transfer and chat), for the watches that exist as the block is
   applied: they are looked up per block by the addresses it moves, never cached across blocks;
5. the header becomes ``status=done``.

After a chunk its raw rows go to S3 as one Parquet part, then the checkpoint (number and hash) moves with a
conditional write. Every block's parent hash must equal the hash stored for the block before it; when it does
not (or the checkpoint's own block is no longer canonical), the indexer walks back to the highest block whose
stored hash is still canonical and reverts everything above it: aggregate deltas subtracted, rows and headers
deleted, Parquet parts truncated. Unlike lag-only indexers, confirmations only reduce how often that happens.
"""
from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import ClientError

from depu.analytics import aggregates, metadata, raw, watches
from depu.chain import store
from depu.chain.decode import DECODED_SHAPES, NFT, TRANSFER_TOPIC, decode_transfer
from depu.chain.rpc import RpcClient
from depu.config import chain_tuning

log = logging.getLogger(__name__)

RAW_TTL_DAYS = 30
MARKER_BACKFILL_SECONDS = 5.0  # per run, until watches stored before markers existed all have one
MAX_ALERTS_PER_BLOCK = 5  # per watch (chat and address); the rest of a block is summed up in one notice


class ReorgTooDeep(RuntimeError):
    """No stored block within ``max_reorg_depth`` is canonical any more: an operator must look."""


class ChainMoved(RuntimeError):
    """The node's answers within one chunk disagree (a reorg happened while fetching): retry the chunk."""


@dataclass(frozen=True)
class IndexerConfig:
    confirmations: int = 6
    chunk_blocks: int = 50
    start_block: int | None = None  # where a first run starts; default: ``backfill`` blocks before the confirmed head
    backfill: int = 100
    max_reorg_depth: int = 128
    poll_seconds: float = 2.0
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
    shapes: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _int(value: str | None) -> int:
    return int(value, 16) if value else 0


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


# ---------------------------------------------------------------------------- rows of one block
def block_header(block: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Header and gas statistics: base fee, gas used, and the effective priority fee each tx paid."""
    base_fee = _int(block.get("baseFeePerGas"))
    tips = []
    for tx in block.get("transactions", []):
        if not isinstance(tx, dict):
            continue
        if tx.get("maxPriorityFeePerGas") is not None:
            tip = min(_int(tx["maxPriorityFeePerGas"]), _int(tx["maxFeePerGas"]) - base_fee)
        else:
            tip = _int(tx.get("gasPrice")) - base_fee
        tips.append(max(tip, 0))
    return {
        "number": _int(block["number"]),
        "hash": block["hash"],
        "parent_hash": block["parentHash"],
        "timestamp": _int(block["timestamp"]),
        "gas_used": _int(block["gasUsed"]),
        "gas_limit": _int(block["gasLimit"]),
        "base_fee": base_fee,
        "tx_count": len(block.get("transactions", [])),
        "transfer_count": sum(1 for row in rows if row["kind"] != "native"),
        "native_count": sum(1 for row in rows if row["kind"] == "native"),
        "tip_min": min(tips) if tips else 0,
        "tip_median": int(statistics.median(tips)) if tips else 0,
        "tip_max": max(tips) if tips else 0,
    }


def transfer_rows(block: dict[str, Any], logs: list[dict[str, Any]], receipts: dict[str, dict[str, Any]],
                  shapes: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every value movement in a block: native ETH from transactions' value, tokens from Transfer logs."""
    number, block_hash, timestamp = _int(block["number"]), block["hash"], _int(block["timestamp"])
    rows: list[dict[str, Any]] = []
    for tx in block.get("transactions", []):
        value = _int(tx.get("value"))
        if value <= 0:
            continue
        receipt = receipts.get(tx["hash"])
        if receipt is not None and _int(receipt.get("status")) != 1:
            continue  # reverted: no ETH moved
        recipient = tx.get("to") or (receipt or {}).get("contractAddress")
        tx_index = _int(tx["transactionIndex"])
        rows.append({
            "pos": f"N{tx_index:06d}", "block_number": number, "block_hash": block_hash,
            "block_timestamp": timestamp, "tx_hash": tx["hash"], "tx_index": tx_index, "log_index": None,
            "asset": store.NATIVE, "kind": "native", "shape": "native", "sender": tx["from"].lower(),
            "recipient": recipient.lower() if recipient else None, "amount": str(value), "token_id": None,
        })
    for entry in logs:
        if entry.get("removed"):
            continue
        decoded = decode_transfer(entry)
        if decoded is None:
            continue
        if shapes is not None:
            shapes[decoded.shape] += 1
        kind = "nft" if decoded.shape == NFT else ("erc20" if decoded.shape in DECODED_SHAPES else "odd")
        rows.append({
            "pos": f"L{decoded.log_index:06d}", "block_number": number, "block_hash": block_hash,
            "block_timestamp": timestamp, "tx_hash": decoded.tx_hash, "tx_index": decoded.tx_index,
            "log_index": decoded.log_index, "asset": decoded.token, "kind": kind, "shape": decoded.shape,
            "sender": decoded.sender, "recipient": decoded.recipient,
            "amount": None if decoded.amount is None else str(decoded.amount),
            "token_id": None if decoded.token_id is None else str(decoded.token_id),
        })
    return rows


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

    # ------------------------------------------------------------------ run loop
    def run(self, deadline: float | None = None, *, until_caught_up: bool = False) -> RunReport:
        """Index until ``deadline`` (time.monotonic()), polling when caught up; or, with ``until_caught_up``,
        stop as soon as the confirmed head is reached."""
        report = RunReport()
        started = time.monotonic()
        watches.backfill_markers(min(deadline, started + MARKER_BACKFILL_SECONDS) if deadline is not None
                                 else started + MARKER_BACKFILL_SECONDS)
        checkpoint = self.verify_checkpoint(report)
        while deadline is None or time.monotonic() < deadline:
            try:
                checkpoint, indexed = self.step(checkpoint, report, deadline)
            except ChainMoved as moved:
                log.info("chain moved while fetching, retrying: %s", moved)
                checkpoint = self.verify_checkpoint(report)
                continue
            if indexed:
                continue
            if until_caught_up or deadline is None:
                break
            time.sleep(min(self.config.poll_seconds, max(0.0, deadline - time.monotonic())))
        report.checkpoint = checkpoint.number if checkpoint else None
        report.seconds = time.monotonic() - started
        return report

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
        report.alerts += self.alert(rows)
        table.update_item(Key={"pk": store.BLOCKS, "sk": store.block_key(number)},
                          UpdateExpression="SET #s = :done", ExpressionAttributeNames={"#s": "status"},
                          ExpressionAttributeValues={":done": "done"})

    def alert(self, rows: list[dict[str, Any]]) -> int:
        current = watches.watching(watches.moved_addresses(rows))
        if not current:
            return 0
        from depu.notify import Notice

        fired = watches.alerts_for(rows, current, self.metas)
        per_watch: dict[tuple[int, str], list[tuple[dict[str, Any], str]]] = defaultdict(list)
        for watch, row, text in fired:
            per_watch[(watch.chat_id, watch.address)].append((row, text))
        sent = 0
        for (chat_id, address), alerts in per_watch.items():
            # a busy address must not flood a chat: a few alerts per block, then one summary
            for row, text in alerts[:MAX_ALERTS_PER_BLOCK]:
                self.notify(Notice(chat_id=chat_id, text=text,
                                   dedupe_key=f"watch:{chat_id}:{row['block_hash']}:{row['pos']}"))
                sent += 1
            if len(alerts) > MAX_ALERTS_PER_BLOCK:
                block = alerts[0][0]
                self.notify(Notice(chat_id=chat_id, dedupe_key=f"watch:{chat_id}:{block['block_hash']}:{address}:more",
                                   text=f"🔔 …and {len(alerts) - MAX_ALERTS_PER_BLOCK} more transfers of "
                                        f"<code>{address}</code> in block {block['block_number']}: "
                                        f"<code>/analytics {address}</code>"))
                sent += 1
        return sent

    def revert_block(self, header: dict[str, Any], floor: int) -> None:
        """Undo everything one stored block contributed (idempotent: a crash midway is finished next run)."""
        number = int(header["number"])
        rows = list(store.query_all(store.block_rows_pk(number)))
        for row in rows:
            row["block_number"] = int(row["block_number"])
        aggregates.revert_block(number, aggregates.block_deltas(rows, int(header["timestamp"])), floor)
        self.retract_alerts(header, rows)
        with store.table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for row in rows:
                batch.delete_item(Key=_index_key(row))
                batch.delete_item(Key={"pk": row["pk"], "sk": row["sk"]})
        store.table().delete_item(Key={"pk": store.BLOCKS, "sk": store.block_key(number)})

    def retract_alerts(self, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Alerts cannot be unsent: tell each watcher whose address moved in a dropped block that it is gone
        (the watchers as they are now: one who has since unwatched is not told)."""
        current = watches.watching(watches.moved_addresses(rows))
        if not current:
            return
        from depu.notify import Notice

        told: set[tuple[int, str]] = set()
        for watch, _row, _text in watches.alerts_for(rows, current, self.metas):
            if (watch.chat_id, watch.address) in told:
                continue
            told.add((watch.chat_id, watch.address))
            self.notify(Notice(
                chat_id=watch.chat_id,
                dedupe_key=f"watch:{watch.chat_id}:{header['hash']}:{watch.address}:dropped",
                text=(f"↩️ Block {int(header['number'])} was replaced by a chain reorganisation: alerts for "
                      f"<code>{watch.address}</code> from that block no longer hold. Transfers that made it into "
                      "the new chain are alerted again.")))

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
