"""/watch: alert a chat when an address moves funds.

Three kinds of item. ``WATCH#<address>/<chat>`` holds one watch (minimum, owner); ``USERWATCH#<user>/<address>``
is what the user lists and removes; ``WATCHED#<address>/MARKER`` says the address may have watches. The
indexer reads watches per block, at the moment it indexes the block: one strongly consistent BatchGetItem of
the markers of the addresses the block moves (100 keys a request), then one Query per marked address. So a
watch counts for every block indexed after the ``/watch`` reply, ``/unwatch`` ends alerts at once, and what a
block costs depends on how many addresses it touches, not on how many watches exist (docs/analytics.md has
the figures at 100,000 watches).

The invariant is that no watch item exists without its marker (a marker without watches only costs one empty
Query when that address moves). ``add`` writes the watch and bumps the marker's ``changes`` counter in one
transaction; ``remove`` deletes the watch, and deletes the marker only if the address has no watch left and
``changes`` is what it read before looking, so a concurrent ``add`` either is seen or recreates the marker.

``min_amount`` is a decimal string in whole tokens (or ETH); NFT moves always alert. Alerts go through the
notify queue, whose consumer respects Telegram's rate limits; their ``dedupe_key`` names the transfer, so a
block re-processed after a crash does not alert twice.
"""
from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from depu.chain import store
from depu.analytics.amounts import fmt, scale
from depu.analytics.metadata import NATIVE_META

if TYPE_CHECKING:
    from typing import Callable

    from depu.analytics.labels import Names
    from depu.analytics.metadata import TokenMeta

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
MAX_WATCHES_PER_USER = 20
MARKER_PREFIX = "WATCHED#"
MARKER_SK = "MARKER"
MARKERS_DONE_SK = "WATCH_MARKERS"


class WatchError(ValueError):
    """Input the user can fix; the message is shown to them."""


@dataclass(frozen=True)
class Watch:
    address: str
    chat_id: int
    user_id: int
    min_amount: Decimal
    min_usd: Decimal | None = None  # a dollar threshold (``/watch 0x… 10000$``) instead of token units


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


def parse_threshold(text: str) -> tuple[Decimal, bool]:
    """``1000`` (token units) or ``10000$`` / ``$10000`` (US dollars): the amount and whether it is dollars."""
    stripped = text.strip()
    in_usd = stripped.endswith("$") or stripped.startswith("$")
    return parse_min_amount(stripped.strip("$").strip()), in_usd


def _watch_key(address: str, chat_id: int | str) -> dict[str, str]:
    return {"pk": f"WATCH#{address}", "sk": str(chat_id)}


def _marker_key(address: str) -> dict[str, str]:
    return {"pk": f"{MARKER_PREFIX}{address}", "sk": MARKER_SK}


def add(user_id: int, chat_id: int, address: str, min_amount: Decimal, *, min_usd: Decimal | None = None) -> bool:
    """Create or update the watch; returns False when the user already has the maximum number of watches.
    With ``min_usd`` the threshold is in dollars (a transfer alerts when its value, at the time-weighted
    on-chain price, reaches it; a token without a price never reaches it).

    When this returns the watch is durable and the indexer's next block lookup sees it."""
    mine = list(store.query_all(f"USERWATCH#{user_id}"))
    if len(mine) >= MAX_WATCHES_PER_USER and all(item["sk"] != address for item in mine):
        return False
    name = store.table().name
    usd = {"min_usd": str(min_usd)} if min_usd is not None else {}
    store.table().meta.client.transact_write_items(TransactItems=[
        {"Put": {"TableName": name, "Item": _watch_key(address, chat_id) | {
            "user_id": user_id, "min_amount": str(min_amount)} | usd}},
        {"Update": {"TableName": name, "Key": _marker_key(address), "UpdateExpression": "ADD changes :one",
                    "ExpressionAttributeValues": {":one": 1}}},
        {"Put": {"TableName": name, "Item": {"pk": f"USERWATCH#{user_id}", "sk": address, "chat_id": chat_id,
                                             "min_amount": str(min_amount)} | usd}},
    ])
    return True


def remove(user_id: int, address: str) -> bool:
    item = store.get(f"USERWATCH#{user_id}", address)
    if not item:
        return False
    name = store.table().name
    store.table().meta.client.transact_write_items(TransactItems=[
        {"Delete": {"TableName": name, "Key": _watch_key(address, item["chat_id"])}},
        {"Delete": {"TableName": name, "Key": {"pk": f"USERWATCH#{user_id}", "sk": address}}},
    ])
    _drop_marker_if_unwatched(address)
    return True


def _drop_marker_if_unwatched(address: str) -> None:
    """Delete the marker when no watch is left, unless an ``add`` bumped it meanwhile (see the module doc)."""
    marker = store.get(f"{MARKER_PREFIX}{address}", MARKER_SK)
    if marker is None or any(store.query_all(f"WATCH#{address}", limit=1)):
        return
    try:
        store.table().delete_item(Key=_marker_key(address), ConditionExpression=Attr("changes").eq(marker["changes"]))
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise


def of_user(user_id: int) -> list[dict[str, Any]]:
    return list(store.query_all(f"USERWATCH#{user_id}"))


def moved_addresses(rows: Iterable[dict[str, Any]]) -> set[str]:
    """Senders and recipients of the rows that can alert (an amount or an NFT id: odd logs never do)."""
    found: set[str] = set()
    for row in rows:
        if row.get("amount") is None and row.get("token_id") is None:
            continue
        found.update(address for address in (row.get("sender"), row.get("recipient")) if address)
    return found


def watching(addresses: Iterable[str]) -> dict[str, list[Watch]]:
    """The watches on these addresses as they are now: markers by BatchGetItem, then a Query per marked one.

    Reads are strongly consistent, so a watch whose ``/watch`` reply was sent is always seen."""
    wanted = sorted(set(addresses))
    if not wanted:
        return {}
    marked = [item["pk"][len(MARKER_PREFIX):]
              for item in store.batch_get([_marker_key(address) for address in wanted], projection="pk")]
    found: dict[str, list[Watch]] = {}
    for address in sorted(marked):
        for item in store.query_all(f"WATCH#{address}"):
            found.setdefault(address, []).append(
                Watch(address, int(item["sk"]), int(item["user_id"]), Decimal(item["min_amount"]),
                      Decimal(item["min_usd"]) if item.get("min_usd") is not None else None))
    return found


def backfill_markers(deadline: float) -> bool:
    """Give watches stored before markers existed their marker; returns True once every watch has one.

    One scan of the table, ever: it resumes from the cursor saved after each page and stops at ``deadline``
    (``time.monotonic()``). After it is done a call costs one GetItem."""
    progress = store.get(store.CHAIN, MARKERS_DONE_SK) or {}
    if progress.get("done"):
        return True
    kwargs: dict[str, Any] = {"FilterExpression": Attr("pk").begins_with("WATCH#")}
    if progress.get("cursor"):
        kwargs["ExclusiveStartKey"] = json.loads(progress["cursor"])
    while time.monotonic() < deadline:
        page = store.table().scan(**kwargs)
        for address in sorted({item["pk"][6:] for item in page.get("Items", [])}):
            store.table().update_item(Key=_marker_key(address), UpdateExpression="ADD changes :one",
                                      ExpressionAttributeValues={":one": 1})
        cursor = page.get("LastEvaluatedKey")
        record: dict[str, Any] = {"pk": store.CHAIN, "sk": MARKERS_DONE_SK}
        store.table().put_item(Item=record | ({"cursor": json.dumps(cursor)} if cursor else {"done": True}))
        if cursor is None:
            return True
        kwargs["ExclusiveStartKey"] = cursor
    return False


def alerts_for(rows: Iterable[dict[str, Any]], watches: dict[str, list[Watch]],
               metas: dict[str, "TokenMeta"], names: dict[int, "Names"] | None = None,
               usd: "Callable[[dict[str, Any]], Decimal | None] | None" = None,
               ) -> list[tuple[Watch, dict[str, Any], str]]:
    """``(watch, row, text)`` for each watched address a row moves funds from or to, above its minimum.

    ``names`` (per user) puts labels beside addresses; ``usd`` values a row in dollars where a price exists,
    which a watch with a dollar minimum (``min_usd``) needs: without a price such a watch does not fire."""
    from depu.analytics.labels import Names, tx_link

    fired = []
    for row in rows:
        for side in ("sender", "recipient"):
            address = row.get(side)
            for watch in watches.get(address or "", []):
                meta = NATIVE_META if row["asset"] == store.NATIVE else metas.get(row["asset"])
                decimals = meta.decimals if meta else None
                symbol = meta.label if meta else row["asset"]
                value = usd(row) if usd is not None and row.get("amount") is not None else None
                if row.get("token_id") is not None:
                    what = f"{html.escape(symbol)} #{row['token_id']}"
                elif row.get("amount") is not None:
                    amount = int(row["amount"])
                    if watch.min_usd is not None:
                        if value is None or value < watch.min_usd:
                            continue
                    elif scale(amount, decimals) < watch.min_amount:
                        continue
                    what = html.escape(fmt(amount, decimals, symbol))
                    if value is not None:
                        what += f" (≈ ${value:,.2f})"
                else:
                    continue
                shown = (names or {}).get(watch.user_id) or Names(own={})
                direction = "sent" if side == "sender" else "received"
                other = row["recipient"] if side == "sender" else row["sender"]
                text = (f"🔔 {shown.show(address)} {direction} {what}\n"
                        f"{'to' if side == 'sender' else 'from'} {shown.show(other)}\n"
                        f"block {row['block_number']}, tx <code>{row['tx_hash']}</code> · {tx_link(row['tx_hash'])}")
                fired.append((watch, row, text))
    return fired
