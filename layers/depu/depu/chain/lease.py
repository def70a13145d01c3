"""The follower lease: one indexer invocation follows the chain at a time, and the next takes over gaplessly.

The schedule starts an invocation every minute and each runs for longer than that (template: timeout 90 s,
two concurrent at most), so the next one is always started before the current one ends. The newcomer writes
itself into the lease as ``successor`` and waits; the holder sees that on its next loop turn (it checks
every turn, between steps, with one strongly consistent read), finishes nothing more, and hands the lease
over in one conditional write. The chain is followed without a pause longer than one loop turn plus the
newcomer's polling interval: no new block waits for an invocation to start.

A holder that dies stops renewing; its lease expires after ``LEASE_SECONDS`` and any invocation takes it.
The checkpoints keep their own conditional writes: a stale holder fails there instead of corrupting.

    CHAIN  FOLLOWER   owner, expires_at (epoch seconds), successor (while one waits)
"""
from __future__ import annotations

import time
import uuid

from botocore.exceptions import ClientError

from depu.chain import store

FOLLOWER = "FOLLOWER"
LEASE_SECONDS = 15.0
RENEW_EVERY_SECONDS = 5.0
WAIT_POLL_SECONDS = 0.05


def _conditional_failed(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


class FollowerLease:
    def __init__(self, owner: str | None = None):
        self.owner = owner or uuid.uuid4().hex
        self._renewed = 0.0
        self.handed_over = False

    @staticmethod
    def _key() -> dict[str, str]:
        return {"pk": store.CHAIN, "sk": FOLLOWER}

    def acquire(self, deadline: float) -> bool:
        """Take the lease, waiting as the announced successor while another invocation holds it; False if
        ``deadline`` (time.monotonic()) passes first."""
        announced = False
        while True:
            now = time.time()
            try:
                store.table().put_item(
                    Item=self._key() | {"owner": self.owner, "expires_at": int((now + LEASE_SECONDS) * 1000)},
                    ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR #o = :me",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":now": int(now * 1000), ":me": self.owner})
                self._renewed = time.monotonic()
                return True
            except ClientError as error:
                if not _conditional_failed(error):
                    raise
            if not announced:
                self._announce()
                announced = True
            while time.monotonic() < deadline:
                item = store.get(store.CHAIN, FOLLOWER)
                if item is None or item.get("owner") == self.owner or int(item["expires_at"]) < time.time() * 1000:
                    break
                if item.get("successor") != self.owner:
                    self._announce()  # a third invocation took the place; ask again
                time.sleep(WAIT_POLL_SECONDS)
            else:
                return False
            item = store.get(store.CHAIN, FOLLOWER)
            if item is not None and item.get("owner") == self.owner:
                self._renewed = time.monotonic()
                return True  # handed over to us

    def _announce(self) -> None:
        try:
            store.table().update_item(Key=self._key(), UpdateExpression="SET successor = :me",
                                      ConditionExpression="attribute_exists(pk)",
                                      ExpressionAttributeValues={":me": self.owner})
        except ClientError as error:
            if not _conditional_failed(error):
                raise

    def keep(self) -> bool:
        """Called by the holder every loop turn: True to go on, False once it has handed the lease to a
        waiting successor (or lost it)."""
        item = store.get(store.CHAIN, FOLLOWER)
        if item is None or item.get("owner") != self.owner:
            return False
        if item.get("successor"):
            self._hand_over(item["successor"])
            return False
        if time.monotonic() - self._renewed >= RENEW_EVERY_SECONDS:
            try:
                store.table().update_item(
                    Key=self._key(), UpdateExpression="SET expires_at = :e",
                    ConditionExpression="#o = :me", ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":e": int((time.time() + LEASE_SECONDS) * 1000), ":me": self.owner})
            except ClientError as error:
                if _conditional_failed(error):
                    return False
                raise
            self._renewed = time.monotonic()
        return True

    def _hand_over(self, successor: str) -> None:
        try:
            store.table().update_item(
                Key=self._key(), UpdateExpression="SET #o = :s, expires_at = :e REMOVE successor",
                ConditionExpression="#o = :me AND successor = :s", ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":s": successor, ":me": self.owner,
                                           ":e": int((time.time() + LEASE_SECONDS) * 1000)})
            self.handed_over = True
        except ClientError as error:
            if not _conditional_failed(error):
                raise

    def release(self) -> None:
        """At the end of a run: to the waiting successor if there is one, else free."""
        if self.handed_over:
            return
        item = store.get(store.CHAIN, FOLLOWER)
        if item is None or item.get("owner") != self.owner:
            return
        if item.get("successor"):
            self._hand_over(item["successor"])
            return
        try:
            store.table().delete_item(Key=self._key(), ConditionExpression="#o = :me AND attribute_not_exists(successor)",
                                      ExpressionAttributeNames={"#o": "owner"},
                                      ExpressionAttributeValues={":me": self.owner})
        except ClientError as error:
            if not _conditional_failed(error):
                raise
            self.release()  # a successor announced itself meanwhile
