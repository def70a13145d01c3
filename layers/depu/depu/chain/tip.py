"""The tip follower: alerts at inclusion, for the blocks the confirmed indexer has not reached yet.

The confirmed indexer (``depu.chain.indexer``) writes rows, aggregates and Parquet only for blocks
``CHAIN_CONFIRMATIONS`` deep, so that reorganisations stay rare for what it stores. Watchers should not wait
that long: each loop turn this follower fetches the blocks above the confirmed head up to the chain head,
decodes their transfers in memory, and hands them to ``depu.analytics.alerts`` marked unconfirmed; the same
turn confirms the alerts of the block the new head made ``CHAIN_CONFIRMATIONS`` deep, before the confirmed
indexer applies that height (so the confirmation edit waits for no other work). It stores
nothing but its cursor (the last block it saw and the hashes of the last ``TIP_HASHES``), and the alert
records themselves. When the chain head's parent is not the block it saw last, it walks back through those
hashes to the highest block still canonical and goes on from there: alerts of the dropped blocks are edited
when the confirmed indexer settles their height (moved, if the transfer was seen again; dropped if not).

    CHAIN  TIP   number, hashes {number: hash} of the last TIP_HASHES blocks seen at the tip
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from depu.analytics import metadata, watches
from depu.chain import store

if TYPE_CHECKING:
    from depu.chain.indexer import Indexer, RunReport

TIP = "TIP"
TIP_HASHES = 64
TIP_MAX_BLOCKS = 16  # per turn; more than that behind and the confirmed indexer is the one to catch up


@dataclass
class TipCursor:
    number: int
    hashes: dict[int, str]


def load() -> TipCursor | None:
    item = store.get(store.CHAIN, TIP)
    if not item:
        return None
    return TipCursor(int(item["number"]), {int(n): h for n, h in item.get("hashes", {}).items()})


def save(cursor: TipCursor) -> None:
    kept = {str(n): h for n, h in cursor.hashes.items() if n > cursor.number - TIP_HASHES and n <= cursor.number}
    store.table().put_item(Item={"pk": store.CHAIN, "sk": TIP, "number": cursor.number, "hashes": kept})


class TipFollower:
    def __init__(self, indexer: "Indexer"):
        self.indexer = indexer

    def step(self, report: "RunReport") -> int:
        """Alert the new blocks at the tip; returns how many blocks it looked at."""
        from depu.chain.rows import ChainMoved, hex_int as _int, transfer_rows

        ix = self.indexer
        head = ix.rpc.head()
        target = head - ix.config.confirmations  # up to here the confirmed indexer alerts
        cursor = load()
        first = max(cursor.number + 1 if cursor else head, target + 1)
        if first > head:
            return 0
        last = min(head, first + TIP_MAX_BLOCKS - 1)
        blocks, logs_by_block, receipts = ix.fetch(first, last)
        expected = cursor.hashes.get(cursor.number) if cursor and first == cursor.number + 1 else None
        linked = expected is not None  # this turn's blocks extend the cursor's run of checked heights
        for block in blocks:
            if expected is not None and block["parentHash"] != expected:
                if _int(block["number"]) == first:
                    self.rewind(cursor, report)
                    return 0
                raise ChainMoved(f"tip block {_int(block['number'])} does not follow the block fetched before it")
            expected = block["hash"]
        hashes = dict(cursor.hashes) if cursor else {}
        for block in blocks:
            hashes[_int(block["number"])] = block["hash"]
        # confirmations first: the head that makes a block N deep edits its alerts at once (see confirm_deep)
        report.alerts += self.confirm_deep(hashes, first, last, linked)
        ix.metas = metadata.ensure(ix.rpc, {entry["address"].lower() for logs in logs_by_block.values()
                                            for entry in logs}, ix.metas)
        for block in blocks:
            rows = transfer_rows(block, logs_by_block.get(block["hash"], []), receipts)
            current = watches.watching(watches.moved_addresses(rows))
            report.alerts += ix.book.include(rows, current, ix.metas, confirmed=False,
                                             usd=ix.dollars(None) if current else None)
        save(TipCursor(last, hashes))
        report.tip_blocks += len(blocks)
        return len(blocks)

    def confirm_deep(self, hashes: dict[int, str], first: int, last: int, linked: bool) -> int:
        """Confirm the alerts of the heights that blocks ``first..last`` made ``confirmations`` deep, where the
        follower knows the block there as an ancestor of ``last``: every height from it up to ``last`` is in
        ``hashes`` and was checked parent by parent (the cursor's run of heights, when this turn's blocks
        extend it, else this turn's blocks only). Other heights wait for the confirmed indexer's ``settle``."""
        depth = self.indexer.config.confirmations
        lowest = first
        if linked:
            while lowest - 1 in hashes:
                lowest -= 1
        queued = 0
        for number in range(max(lowest, first - depth), last - depth + 1):
            queued += self.indexer.book.confirm_deep(number, hashes[number])
        return queued

    def rewind(self, cursor: TipCursor, report: "RunReport") -> None:
        """Move the cursor back to the highest block it saw that is still canonical (or forget it)."""
        report.tip_reorgs += 1
        numbers = sorted((n for n in cursor.hashes if n <= cursor.number), reverse=True)
        canonical: list[Any] = self.indexer.rpc.blocks(numbers, full=False) if numbers else []
        for number, block in zip(numbers, canonical):
            if block is not None and block["hash"] == cursor.hashes[number]:
                save(TipCursor(number, {n: h for n, h in cursor.hashes.items() if n <= number}))
                return
        store.table().delete_item(Key={"pk": store.CHAIN, "sk": TIP})
