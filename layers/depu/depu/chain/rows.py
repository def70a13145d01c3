"""The rows DePU keeps for one block (its header with gas statistics, and every value movement in it), shared by
the live indexer, the tip follower and the history backfill so all three write exactly the same data."""
from __future__ import annotations

import statistics
from typing import Any

from depu.chain import store
from depu.chain.decode import DECODED_SHAPES, NFT, STANDARD, TRANSFER_TOPIC, decode_transfer


class ChainMoved(RuntimeError):
    """The node's answers within one chunk disagree (a reorg happened while fetching): retry the chunk."""


def hex_int(value: str | None) -> int:
    """A JSON-RPC quantity ("0x1a") as an int; a missing one is 0."""
    return int(value, 16) if value else 0


def block_header(block: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Header and gas statistics: base fee, gas used, and the effective priority fee each tx paid."""
    base_fee = hex_int(block.get("baseFeePerGas"))
    tips = []
    for tx in block.get("transactions", []):
        if not isinstance(tx, dict):
            continue
        if tx.get("maxPriorityFeePerGas") is not None:
            tip = min(hex_int(tx["maxPriorityFeePerGas"]), hex_int(tx["maxFeePerGas"]) - base_fee)
        else:
            tip = hex_int(tx.get("gasPrice")) - base_fee
        tips.append(max(tip, 0))
    return {
        "number": hex_int(block["number"]),
        "hash": block["hash"],
        "parent_hash": block["parentHash"],
        "timestamp": hex_int(block["timestamp"]),
        "gas_used": hex_int(block["gasUsed"]),
        "gas_limit": hex_int(block["gasLimit"]),
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
    number, block_hash, timestamp = hex_int(block["number"]), block["hash"], hex_int(block["timestamp"])
    rows: list[dict[str, Any]] = []
    for tx in block.get("transactions", []):
        value = hex_int(tx.get("value"))
        if value <= 0:
            continue
        receipt = receipts.get(tx["hash"])
        if receipt is not None and hex_int(receipt.get("status")) != 1:
            continue  # reverted: no ETH moved
        recipient = tx.get("to") or (receipt or {}).get("contractAddress")
        tx_index = hex_int(tx["transactionIndex"])
        rows.append({
            "pos": f"N{tx_index:06d}", "block_number": number, "block_hash": block_hash,
            "block_timestamp": timestamp, "tx_hash": tx["hash"], "tx_index": tx_index, "log_index": None,
            "asset": store.NATIVE, "kind": "native", "shape": "native", "sender": tx["from"].lower(),
            "recipient": recipient.lower() if recipient else None, "amount": str(value), "token_id": None,
        })
    for entry in logs:
        if entry.get("removed"):
            continue
        row = standard_row(entry, number, block_hash, timestamp)
        if row is not None:
            if shapes is not None:
                shapes[STANDARD] += 1
            rows.append(row)
            continue
        row = decoded_row(entry, number, block_hash, timestamp, shapes)
        if row is not None:
            rows.append(row)
    return rows


def decoded_row(entry: dict[str, Any], number: int, block_hash: str, timestamp: int,
                shapes: dict[str, int] | None = None) -> dict[str, Any] | None:
    """The row of any Transfer-signature log, through the general decoder (None if topic0 is not Transfer)."""
    decoded = decode_transfer(entry)
    if decoded is None:
        return None
    if shapes is not None:
        shapes[decoded.shape] += 1
    kind = "nft" if decoded.shape == NFT else ("erc20" if decoded.shape in DECODED_SHAPES else "odd")
    return {
        "pos": f"L{decoded.log_index:06d}", "block_number": number, "block_hash": block_hash,
        "block_timestamp": timestamp, "tx_hash": decoded.tx_hash, "tx_index": decoded.tx_index,
        "log_index": decoded.log_index, "asset": decoded.token, "kind": kind, "shape": decoded.shape,
        "sender": decoded.sender, "recipient": decoded.recipient,
        "amount": None if decoded.amount is None else str(decoded.amount),
        "token_id": None if decoded.token_id is None else str(decoded.token_id),
    }


def standard_row(entry: dict[str, Any], number: int, block_hash: str, timestamp: int) -> dict[str, Any] | None:
    """The row of a standard ERC-20 Transfer (3 topics, one data word), built straight from the log's strings;
    None for any other log, which goes through ``decoded_row``. Nearly every log of a backfill is this
    shape, and skipping the general classifier and its intermediate objects halves the time per row. The
    row is exactly the one the general path builds (tests compare the two)."""
    topics = entry.get("topics")
    data = entry.get("data")
    if not topics or len(topics) != 3 or not data or len(data) != 66 or data[:2] != "0x":
        return None
    topic0, sender, recipient = topics
    if len(sender) != 66 or len(recipient) != 66 or (topic0 != TRANSFER_TOPIC and topic0.lower() != TRANSFER_TOPIC):
        return None
    try:
        amount = int(data[2:], 16)  # the same int() call as the general path: the same answers, "_" included
    except ValueError:
        return None  # non-hex: the general path calls it malformed
    log_index = int(entry["logIndex"], 16)
    return {
        "pos": "L%06d" % log_index, "block_number": number, "block_hash": block_hash,
        "block_timestamp": timestamp, "tx_hash": entry["transactionHash"],
        "tx_index": int(entry["transactionIndex"], 16), "log_index": log_index,
        "asset": entry["address"].lower(), "kind": "erc20", "shape": STANDARD,
        "sender": "0x" + sender[26:].lower(), "recipient": "0x" + recipient[26:].lower(),
        "amount": str(amount), "token_id": None,
    }
