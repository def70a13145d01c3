"""Make moto's DynamoDB apply each request atomically, as DynamoDB does.

DynamoDB evaluates a condition and applies the write as one step per item, and a transaction as one step over
all its items; DePU relies on that everywhere money or a slot is taken (credits, export quotas, payout nonces).
moto's backend runs requests on the server's threads with no lock, so two racing conditional writes can both
read the old item and both succeed: a race DynamoDB never allows, which made DePU's racing tests fail at
random. One lock around every item operation restores DynamoDB's semantics (moto is in-memory, so the cost is
small). Installed by ``local.moto_server`` before the server starts.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable

_OPERATIONS = ("get_item", "put_item", "update_item", "delete_item", "batch_get_item", "batch_write_item",
               "transact_get_items", "transact_write_items", "execute_transaction", "query", "scan")
_lock = threading.RLock()
_installed = False


def _atomic(operation: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(operation)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return operation(*args, **kwargs)

    return run


def install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        from moto.dynamodb.models import DynamoDBBackend

        for name in _OPERATIONS:
            setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))
        _installed = True
