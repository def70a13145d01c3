"""/watch: alert a chat when an address moves funds.

Two items per watch: ``WATCH#<address>/<chat>`` (what the indexer looks up by address) and
``USERWATCH#<user>/<address>`` (what the user lists and removes). ``min_amount`` is a decimal string in whole
tokens (or ETH); NFT moves always alert. Alerts go through the notify queue, whose consumer respects
Telegram's rate limits; their ``dedupe_key`` names the transfer, so a block re-processed after a crash does not
alert twice.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable

from boto3.dynamodb.conditions import Attr

from depu.chain import store
from depu.analytics.amounts import fmt, scale
from depu.analytics.metadata import NATIVE_META

if TYPE_CHECKING:
    from depu.analytics.metadata import TokenMeta

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
MAX_WATCHES_PER_USER = 20


class WatchError(ValueError):
    """Input the user can fix; the message is shown to them."""


@dataclass(frozen=True)
class Watch:
    address: str
    chat_id: int
    user_id: int
    min_amount: Decimal


def parse_address(text: str) -> str:
    candidate = text.strip()
    if not ADDRESS.match(candidate):
        raise WatchError("That is not an Ethereum address: expected 0x followed by 40 hex characters.")
    if candidate != candidate.lower() and candidate[2:] != candidate[2:].upper():
        from depu.analytics.checksum import is_checksum_valid

        if not is_checksum_valid(candidate):
            raise WatchError("That address has a wrong checksum (mixed case): check for a typo.")
    return candidate.lower()


def parse_min_amount(text: str) -> Decimal:
    try:
        value = Decimal(text.replace(",", ""))
    except Exception:
        raise WatchError(f"Minimum amount must be a number, like 1000 or 0.5 (got {html.escape(text)}).") from None
    if not value.is_finite() or value < 0:
        raise WatchError("Minimum amount must be zero or positive.")
    return value


def add(user_id: int, chat_id: int, address: str, min_amount: Decimal) -> bool:
    """Create or update the watch; returns False when the user already has the maximum number of watches."""
    mine = list(store.query_all(f"USERWATCH#{user_id}"))
    if len(mine) >= MAX_WATCHES_PER_USER and all(item["sk"] != address for item in mine):
        return False
    table = store.table()
    table.put_item(Item={"pk": f"WATCH#{address}", "sk": str(chat_id), "user_id": user_id,
                         "min_amount": str(min_amount)})
    table.put_item(Item={"pk": f"USERWATCH#{user_id}", "sk": address, "chat_id": chat_id,
                         "min_amount": str(min_amount)})
    return True


def remove(user_id: int, address: str) -> bool:
    item = store.get(f"USERWATCH#{user_id}", address)
    if not item:
        return False
    store.table().delete_item(Key={"pk": f"WATCH#{address}", "sk": str(item["chat_id"])})
    store.table().delete_item(Key={"pk": f"USERWATCH#{user_id}", "sk": address})
    return True


def of_user(user_id: int) -> list[dict[str, Any]]:
    return list(store.query_all(f"USERWATCH#{user_id}"))


def all_watches() -> dict[str, list[Watch]]:
    """Every watch by address: one scan per indexer run (watches are few next to transfers)."""
    found: dict[str, list[Watch]] = {}
    kwargs: dict[str, Any] = {"FilterExpression": Attr("pk").begins_with("WATCH#")}
    while True:
        page = store.table().scan(**kwargs)
        for item in page.get("Items", []):
            address = item["pk"][6:]
            found.setdefault(address, []).append(
                Watch(address, int(item["sk"]), int(item["user_id"]), Decimal(item["min_amount"])))
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def alerts_for(rows: Iterable[dict[str, Any]], watches: dict[str, list[Watch]],
               metas: dict[str, "TokenMeta"]) -> list[tuple[Watch, dict[str, Any], str]]:
    """``(watch, row, text)`` for each watched address a row moves funds from or to, above its minimum."""
    fired = []
    for row in rows:
        for side in ("sender", "recipient"):
            address = row.get(side)
            for watch in watches.get(address or "", []):
                meta = NATIVE_META if row["asset"] == store.NATIVE else metas.get(row["asset"])
                decimals = meta.decimals if meta else None
                symbol = meta.label if meta else row["asset"]
                if row.get("token_id") is not None:
                    what = f"{html.escape(symbol)} #{row['token_id']}"
                elif row.get("amount") is not None:
                    amount = int(row["amount"])
                    if scale(amount, decimals) < watch.min_amount:
                        continue
                    what = html.escape(fmt(amount, decimals, symbol))
                else:
                    continue
                direction = "sent" if side == "sender" else "received"
                other = row["recipient"] if side == "sender" else row["sender"]
                text = (f"🔔 <code>{address}</code> {direction} {what}\n"
                        f"{'to' if side == 'sender' else 'from'} <code>{other}</code>\n"
                        f"block {row['block_number']}, tx <code>{row['tx_hash']}</code>")
                fired.append((watch, row, text))
    return fired
