"""Make moto's DynamoDB apply each request atomically, as DynamoDB does.

moto handles requests on threads without a lock, and a cancelled transaction "rolls back" by restoring a
copy of the whole table taken before it started, which would erase writes that other threads made
meanwhile. Real DynamoDB serialises conditional writes per item and transactions across items, which is
exactly what our idempotency relies on. Concurrency tests therefore run moto (in this process) with one
re-entrant lock around each DynamoDB operation; the code under test is unchanged.
"""
from __future__ import annotations

import functools
import threading

from moto.dynamodb.models import DynamoDBBackend

_OPERATIONS = ("put_item", "get_item", "query", "scan", "update_item", "delete_item", "transact_write_items")


def serialize_dynamodb(monkeypatch) -> None:
    lock = threading.RLock()
    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name)

        def locked(self, *args, __original=original, **kwargs):
            with lock:
                return __original(self, *args, **kwargs)

        functools.update_wrapper(locked, original)
        monkeypatch.setattr(DynamoDBBackend, name, locked)
