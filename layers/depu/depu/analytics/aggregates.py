"""Per-address and per-token aggregates, maintained as guarded per-block deltas so they survive crashes and
reorgs without double counting.

A block's transfers become one delta per aggregate item (hourly flows, all-time balances seen,
counterparties, token volume). Two attributes make applying and reverting idempotent:

* ``last_block``: applying block ``n`` adds its delta only where ``last_block < n`` and sets it to ``n``;
  reverting ``n`` subtracts only where ``last_block >= n`` and sets it to ``n - 1``. Blocks are applied
  ascending and reverted descending, so a retry after a crash changes nothing twice.
* ``floor``: a revert also records the rewind's target (the common ancestor). ``last_block = n - 1`` may then
  sit above blocks that were never applied to this item; while ``floor`` is present no block above it has
  been applied since, so an apply of ``b > floor`` is allowed and removes ``floor``.

DynamoDB numbers are exact to 38 digits; a single amount
beyond that is counted in ``oversized`` instead of being summed (the raw row keeps it exactly).
"""
from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from botocore.exceptions import ClientError

from depu.config import chain_tuning

HOUR = 3600
MAX_EXACT = 10**37
AGGREGATED_SHAPES = {"standard", "nft", "unindexed", "native"}

Delta = dict[str, int]
# Each item's update is guarded on its own, so a block's updates can go out together: a busy mainnet block
# touches over a thousand items, and one at a time at DynamoDB's latency would fall behind the chain.
_pool: ThreadPoolExecutor | None = None
_local = threading.local()


def _table():
    """The worker thread's own Table (boto3 resources must not be shared between threads)."""
    from depu.config import get_settings

    name = get_settings().chain_table
    table = getattr(_local, "table", None)
    if table is None or table.name != name:
        import boto3

        table = _local.table = boto3.session.Session().resource("dynamodb").Table(name)
    return table


def _each(work: list[tuple[tuple[str, str], Delta]], run) -> int:
    global _pool
    workers = chain_tuning().aggregate_workers
    if workers <= 1 or len(work) < 8:
        return sum(run(key, delta) for key, delta in work)
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="depu-aggregates")
    return sum(_pool.map(lambda item: run(*item), work))


def hour_of(timestamp: int) -> int:
    return timestamp - timestamp % HOUR


def hour_key(hour: int) -> str:
    return f"{hour:010d}"


def block_deltas(rows: Iterable[dict[str, Any]], timestamp: int) -> dict[tuple[str, str], Delta]:
    """Every aggregate item a block's rows change, with the (signed) amounts to add."""
    deltas: dict[tuple[str, str], Delta] = defaultdict(lambda: defaultdict(int))
    hour = hour_key(hour_of(timestamp))
    for row in rows:
        if row["shape"] not in AGGREGATED_SHAPES or not row.get("sender") or not row.get("recipient"):
            continue
        asset, sender, recipient = row["asset"], row["sender"], row["recipient"]
        amount = int(row["amount"]) if row.get("amount") not in (None, "") else 0
        if amount >= MAX_EXACT:
            deltas[(f"TOK#{asset}", f"VOL#{hour}")]["oversized"] += 1
            amount = 0
        out_flow = deltas[(f"ADR#{sender}", f"FLOW#{asset}#{hour}")]
        out_flow["out"] += amount
        out_flow["n_out"] += 1
        in_flow = deltas[(f"ADR#{recipient}", f"FLOW#{asset}#{hour}")]
        in_flow["in"] += amount
        in_flow["n_in"] += 1
        deltas[(f"ADR#{sender}", f"BAL#{asset}")]["out"] += amount
        deltas[(f"ADR#{recipient}", f"BAL#{asset}")]["in"] += amount
        sent = deltas[(f"ADR#{sender}", f"CP#{asset}#{recipient}")]
        sent["sent"] += amount
        sent["n"] += 1
        received = deltas[(f"ADR#{recipient}", f"CP#{asset}#{sender}")]
        received["received"] += amount
        received["n"] += 1
        volume = deltas[(f"TOK#{asset}", f"VOL#{hour}")]
        volume["volume"] += amount
        volume["count"] += 1
    return {key: dict(delta) for key, delta in deltas.items()}


def _update(key: tuple[str, str], delta: Delta, guard_block: int, sign: int, floor: int | None = None) -> bool:
    names = {f"#f{i}": name for i, name in enumerate(delta)}
    values: dict[str, Any] = {f":v{i}": sign * value for i, value in enumerate(delta.values())}
    add = ", ".join(f"#f{i} :v{i}" for i in range(len(delta)))
    values[":b"] = guard_block
    if sign > 0:
        condition = "attribute_not_exists(last_block) OR last_block < :b OR #floor < :b"
        values[":new"] = guard_block
        expression = f"ADD {add} SET last_block = :new REMOVE #floor"
    else:
        condition = "last_block >= :b"
        values[":new"] = guard_block - 1
        values[":floor"] = guard_block - 1 if floor is None else floor
        expression = f"ADD {add} SET last_block = :new, #floor = :floor"
    names["#floor"] = "floor"
    try:
        _table().update_item(
            Key={"pk": key[0], "sk": key[1]},
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False  # already applied (or already reverted): the retry after a crash
        raise


def apply_block(number: int, deltas: dict[tuple[str, str], Delta]) -> int:
    """Add block ``number``'s deltas; returns how many items changed (0 on a full retry)."""
    return _each(sorted(deltas.items()), lambda key, delta: _update(key, delta, number, +1))


def revert_block(number: int, deltas: dict[tuple[str, str], Delta], floor: int) -> int:
    """Subtract a dropped block's deltas (``floor``: the block the rewind returns to); returns items changed."""
    return _each(sorted(deltas.items()), lambda key, delta: _update(key, delta, number, -1, floor))


def chunk_deltas(blocks: Iterable[tuple[int, list[dict[str, Any]]]]) -> dict[tuple[str, str], Delta]:
    """The summed deltas of many blocks (``(timestamp, rows)`` each): one update per item for a history chunk."""
    total: dict[tuple[str, str], Delta] = defaultdict(lambda: defaultdict(int))
    for timestamp, rows in blocks:
        for key, delta in block_deltas(rows, timestamp).items():
            for name, value in delta.items():
                total[key][name] += value
    return {key: dict(delta) for key, delta in total.items()}


def _add_chunk(key: tuple[str, str], delta: Delta, chunk: str) -> bool:
    names = {f"#f{i}": name for i, name in enumerate(delta)}
    values: dict[str, Any] = {f":v{i}": value for i, value in enumerate(delta.values())}
    values[":c"] = chunk
    values[":cs"] = {chunk}
    add = ", ".join(f"#f{i} :v{i}" for i in range(len(delta)))
    try:
        _table().update_item(
            Key={"pk": key[0], "sk": key[1]}, UpdateExpression=f"ADD {add}, history :cs",
            ConditionExpression="attribute_not_exists(history) OR NOT contains(history, :c)",
            ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False  # this chunk is in the item already: the retry after a crash
        raise


def apply_history_chunk(chunk: str, deltas: dict[tuple[str, str], Delta]) -> int:
    """Add a backfilled chunk's deltas, once per item: each item remembers the history chunks it holds
    (``history``, a string set), because ``last_block`` belongs to the live indexer, which is ahead of any
    history (blocks below the first one it indexed, see ``depu.chain.backfill``)."""
    return _each(sorted(deltas.items()), lambda key, delta: _add_chunk(key, delta, chunk))
