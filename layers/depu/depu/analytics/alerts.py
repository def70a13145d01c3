"""Two-phase chain alerts: one chat message per (watch, transfer), sent at inclusion, edited in place after.

The tip follower (``depu.chain.tip``) sees a block as soon as it is mined and sends each watch's alert for it
marked *unconfirmed*; on the head that makes that block ``CHAIN_CONFIRMATIONS`` deep it edits that very
message to *confirmed* (``confirm_deep``), and the confirmed indexer, applying the height just after, settles
what the tip could not (``settle``: transfers the tip never linked, and drops). A reorganisation edits it again: *moved* when the transfer is in
another block now (or changed: a new amount), *dropped* when the block that held it is gone and the transfer
is not in the chain. There is never a second message for one transfer: the message is a slot
(``depu.message_slots``) named after the chat, the transfer and the watched address, and every state change
is the next version of it.

A transfer is named by its transaction and its place among that transaction's movements (``<tx>:N`` for its
ETH value, ``<tx>:L<n>`` for its n-th Transfer log), not by block or log index: those change when a
reorganisation puts the same transaction into another block.

Items (ChainTable, layout in ``depu.chain.store``):

    ALERT#<chat>      <transfer>#<address>        state, version, block, body of the message
    ALERTBLK#<number> <chat>#<transfer>#<address> block hash: the alerts sent for a block at that height

A notice is queued before its record is written: a crash in between redoes the same version, which the
notifier's dedupe key drops, so no state change is lost and none is sent twice.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from botocore.exceptions import ClientError

from depu.chain import store

if TYPE_CHECKING:
    from depu.analytics.metadata import TokenMeta
    from depu.analytics.watches import Watch
    from depu.notify import Notice

UNCONFIRMED, CONFIRMED, DROPPED = "unconfirmed", "confirmed", "dropped"
MAX_ALERTS_PER_BLOCK = 5  # per watch (chat and address); the rest of a block is summed up in one notice
ALERT_DAYS = 30


def transfer_keys(rows: Iterable[dict[str, Any]]) -> dict[str, str]:
    """``pos`` → the transfer's name that survives a move to another block (see the module doc)."""
    per_tx: dict[str, int] = defaultdict(int)
    names: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r["pos"]):
        if row["kind"] == "native":
            names[row["pos"]] = f"{row['tx_hash']}:N"
        else:
            names[row["pos"]] = f"{row['tx_hash']}:L{per_tx[row['tx_hash']]}"
            per_tx[row["tx_hash"]] += 1
    return names


def slot_name(chat_id: int, transfer: str, address: str) -> str:
    return f"alert:{chat_id}:{transfer}:{address}"


def status_line(state: str, number: int, confirmations: int, moved: bool = False) -> str:
    if state == CONFIRMED:
        return f"✅ <b>confirmed</b>: block {number}, {confirmations} blocks deep"
    if state == DROPPED:
        return (f"↩️ <b>dropped</b>: block {number} was replaced by a chain reorganisation and this transfer "
                "is not in the chain now")
    if moved:
        return f"⏳ <b>unconfirmed</b>: a chain reorganisation moved it to block {number}"
    return f"⏳ <b>unconfirmed</b>: just included in block {number}"


def _record_key(chat_id: int, transfer: str, address: str) -> dict[str, str]:
    return {"pk": f"ALERT#{chat_id}", "sk": f"{transfer}#{address}"}


def _index_key(number: int, chat_id: int, transfer: str, address: str) -> dict[str, str]:
    return {"pk": f"ALERTBLK#{number}", "sk": f"{chat_id}#{transfer}#{address}"}


def record(chat_id: int, transfer: str, address: str) -> dict[str, Any] | None:
    return store.get(**_record_key(chat_id, transfer, address))


def alerts_of_block(number: int, block_hash: str) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(chat, transfer, address, record) of each alert sent for a transfer of block ``block_hash`` at
    ``number`` whose record still points at that block (a later sighting elsewhere has moved the others on)."""
    for index in store.query_all(f"ALERTBLK#{number}"):
        if index["block_hash"] != block_hash:
            continue
        chat, transfer, address = index["sk"].split("#")
        old = record(int(chat), transfer, address)
        if old is not None and old["block_hash"] == block_hash:
            yield int(chat), transfer, address, old


class AlertBook:
    """Writes alert state and queues the notices that show it; one per indexer (it holds the settings)."""

    def __init__(self, notify: Callable[["Notice"], None], confirmations: int):
        self.notify = notify
        self.confirmations = confirmations

    # ------------------------------------------------------------------ a block is seen
    def include(self, rows: list[dict[str, Any]], current: dict[str, list["Watch"]],
                metas: dict[str, "TokenMeta"], *, confirmed: bool,
                usd: Callable[[dict[str, Any]], Any] | None = None) -> int:
        """Alert (or update the alerts of) the watched transfers of one block; returns notices queued.

        ``confirmed`` is False at the tip and True when the confirmed indexer applies the block: a transfer
        the tip never saw (the indexer was down, or it started below the tip) is then alerted once, already
        confirmed. ``usd`` values a row in dollars where a price exists (``depu.analytics.prices``)."""
        from depu.analytics import labels, watches
        from depu.notify import Notice

        if not current:
            return 0
        names = transfer_keys(rows)
        people = labels.names_for(watch.user_id for found in current.values() for watch in found)
        per_watch: dict[tuple[int, str], list[tuple["Watch", dict[str, Any], str]]] = defaultdict(list)
        for watch, row, body in watches.alerts_for(rows, current, metas, people, usd):
            per_watch[(watch.chat_id, watch.address)].append((watch, row, body))
        queued = 0
        for (chat_id, address), fired in per_watch.items():
            # a busy address must not flood a chat: a few alerts per block, then one summary
            for watch, row, body in fired[:MAX_ALERTS_PER_BLOCK]:
                queued += self._upsert(watch, row, names[row["pos"]], body, confirmed)
            if len(fired) > MAX_ALERTS_PER_BLOCK:
                first = fired[0][1]
                self.notify(Notice(chat_id=chat_id, dedupe_key=f"watch:{chat_id}:{first['block_hash']}:{address}:more",
                                   text=f"🔔 …and {len(fired) - MAX_ALERTS_PER_BLOCK} more transfers of "
                                        f"<code>{address}</code> in block {first['block_number']}: "
                                        f"<code>/analytics {address}</code>"))
                queued += 1
        return queued

    def _upsert(self, watch: "Watch", row: dict[str, Any], transfer: str, body: str, confirmed: bool) -> int:
        state = CONFIRMED if confirmed else UNCONFIRMED
        number, block_hash = int(row["block_number"]), row["block_hash"]
        old = record(watch.chat_id, transfer, watch.address)
        if old is not None and old["block_hash"] == block_hash and old["state"] != DROPPED and (
                old["state"] == CONFIRMED or state == UNCONFIRMED):
            return 0  # this block was alerted already (a rerun, or the tip then the indexer with no news)
        moved = old is not None and (old["block_hash"] != block_hash or old["state"] == DROPPED)
        version = 0 if old is None else int(old["version"]) + 1
        self._show(watch.chat_id, transfer, watch.address, version,
                   status_line(state, number, self.confirmations, moved=moved) + "\n" + body)
        expires_at = int(time.time()) + ALERT_DAYS * 86400
        self._write(watch.chat_id, transfer, watch.address, old, {
            "state": state, "version": version, "block_number": number, "block_hash": block_hash,
            "body": body, "expires_at": expires_at})
        store.table().put_item(Item=_index_key(number, watch.chat_id, transfer, watch.address)
                               | {"block_hash": block_hash, "expires_at": expires_at})
        return 1

    # ------------------------------------------------------------------ a height is confirmed or reverted
    def settle(self, number: int, canonical_hash: str) -> int:
        """After the confirmed indexer applied height ``number``: every alert still unconfirmed in the block
        that is canonical there becomes confirmed (its watch may be gone by now: the message still tells the
        truth), and every alert whose block at that height was replaced, and whose transfer has not been seen
        again elsewhere, becomes dropped. Returns notices queued."""
        queued = 0
        for index in store.query_all(f"ALERTBLK#{number}"):
            chat, transfer, address = index["sk"].split("#")
            old = record(int(chat), transfer, address)
            if old is None or old["block_hash"] != index["block_hash"] or int(old["block_number"]) != number:
                continue  # the transfer moved on; this index entry is history
            if old["state"] == UNCONFIRMED and old["block_hash"] == canonical_hash:
                queued += self._change(int(chat), transfer, address, old, CONFIRMED)
            elif old["state"] != DROPPED and old["block_hash"] != canonical_hash:
                queued += self._change(int(chat), transfer, address, old, DROPPED)
        return queued

    def confirm_deep(self, number: int, block_hash: str) -> int:
        """The tip follower has seen ``block_hash`` at ``number`` reach ``confirmations`` blocks deep, on a chain
        whose parent links it checked: its unconfirmed alerts become confirmed now, on the head that made them
        deep, without waiting for the confirmed indexer to apply the height. Dropping stays ``settle``'s: it
        sees the whole replaced block, and it also re-edits a message confirmed here if a reorganisation deeper
        than the confirmations replaces the block before the indexer gets there. Returns notices queued."""
        queued = 0
        for chat, transfer, address, old in alerts_of_block(number, block_hash):
            if old["state"] == UNCONFIRMED and int(old["block_number"]) == number:
                queued += self._change(chat, transfer, address, old, CONFIRMED)
        return queued

    def retract(self, number: int, block_hash: str) -> int:
        """The confirmed block ``block_hash`` at ``number`` is being reverted (a reorganisation deeper than
        the confirmations): its alerts become dropped until the transfer is seen again."""
        queued = 0
        for chat, transfer, address, old in alerts_of_block(number, block_hash):
            if old["state"] != DROPPED:
                queued += self._change(chat, transfer, address, old, DROPPED)
        return queued

    def _change(self, chat_id: int, transfer: str, address: str, old: dict[str, Any], state: str) -> int:
        version = int(old["version"]) + 1
        self._show(chat_id, transfer, address, version,
                   status_line(state, int(old["block_number"]), self.confirmations) + "\n" + old["body"])
        self._write(chat_id, transfer, address, old, {"state": state, "version": version})
        return 1

    # ------------------------------------------------------------------ writes
    def _show(self, chat_id: int, transfer: str, address: str, version: int, text: str) -> None:
        from depu.notify import Notice

        slot = slot_name(chat_id, transfer, address)
        self.notify(Notice(chat_id=chat_id, text=text, slot=slot, slot_version=version,
                           dedupe_key=f"{slot}:{version}"))

    @staticmethod
    def _write(chat_id: int, transfer: str, address: str, old: dict[str, Any] | None,
               changes: dict[str, Any]) -> None:
        key = _record_key(chat_id, transfer, address)
        try:
            if old is None:
                store.table().put_item(Item=key | changes, ConditionExpression="attribute_not_exists(pk)")
            else:
                store.table().put_item(Item=old | changes, ConditionExpression="version = :v",
                                       ExpressionAttributeValues={":v": old["version"]})
        except ClientError as error:
            # only one follower holds the lease; losing this race means a stale run, whose notice the
            # notifier drops as an older or equal version of the slot
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
