"""ChainTable's item layout (one table, ``pk``/``sk``), in one place.

    CHAIN            CHECKPOINT               the last fully indexed block (number, hash)
    CHAIN#BLOCKS     <number:012>             block header + gas statistics; status applying|done
    BLK#<number>     <pos>                    a transfer row of that block (pos: L<log index> or N<tx index>)
    TOK#<token>#XFER <number:012>#<pos>       the token's transfers, newest last (top transfers, holders)
    TOK#<token>      META                     symbol, decimals, name (fetched once)
    TOK#<token>      VOL#<hour>               hourly volume and count (aggregate)
    ADR#<address>    FLOW#<asset>#<hour>      hourly in/out/counts (aggregate)
    ADR#<address>    BAL#<asset>              all-time in/out seen (aggregate)
    ADR#<address>    CP#<asset>#<other>       sent to / received from a counterparty (aggregate)
    WATCH#<address>  <chat id>                a /watch: min amount, owner
    WATCHED#<address> MARKER                  present while the address may have watches (per-block lookup)
    USERWATCH#<user> <address>                the user's watches (for /unwatch and listing)
    CHAIN            WATCH_MARKERS            progress of the one-off marker backfill for older watches
    CHAIN            TIP                      the tip follower's cursor: last block seen, hashes of the last 64
    CHAIN            FOLLOWER                 the follower lease: owner, expires_at, successor (depu.chain.lease)
    CHAIN            HISTORY                  the highest block a history backfill covered
    CHAIN            PRICE_POOLS              the listed price pools found on this chain, with their sides
    ALERT#<chat>     <transfer>#<address>     one two-phase alert: state, version, block, body (analytics.alerts)
    ALERTBLK#<number> <chat>#<transfer>#<addr> the alerts sent for a block at that height (settled there)
    LABEL#<user>     <address>                the user's own label for an address
    PRICE#<pair>     <timestamp:012>#<block>  a pool's cumulative price as of a block (analytics.prices)
    BACKFILL#<job>   JOB | <start:012>        a history backfill's range, and each chunk it finished

``asset`` is ``eth`` for native transfers, else the token's lower-case address. Aggregates carry
``last_block``, the guard that makes applying and reverting a block's deltas idempotent (see
``depu.analytics.aggregates``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator

import boto3
from boto3.dynamodb.conditions import Key

from depu.config import get_settings

CHAIN = "CHAIN"
CHECKPOINT = "CHECKPOINT"
BLOCKS = "CHAIN#BLOCKS"
NATIVE = "eth"


@lru_cache(maxsize=1)
def _resource():
    return boto3.resource("dynamodb")


@lru_cache(maxsize=1)
def _table_cached(name: str):
    return _resource().Table(name)


def table():
    return _table_cached(get_settings().chain_table)


def block_key(number: int) -> str:
    return f"{number:012d}"


def block_rows_pk(number: int) -> str:
    return f"BLK#{number}"


def token_transfers_pk(token: str) -> str:
    return f"TOK#{token}#XFER"


def query_all(pk: str, *, start: str | None = None, end: str | None = None, reverse: bool = False,
              limit: int | None = None, consistent: bool = True) -> Iterator[dict[str, Any]]:
    """Every item under ``pk`` with ``start <= sk <= end`` (either bound optional), paginating."""
    condition = Key("pk").eq(pk)
    if start is not None and end is not None:
        condition &= Key("sk").between(start, end)
    elif start is not None:
        condition &= Key("sk").gte(start)
    elif end is not None:
        condition &= Key("sk").lte(end)
    kwargs: dict[str, Any] = {"KeyConditionExpression": condition, "ScanIndexForward": not reverse,
                              "ConsistentRead": consistent}
    seen = 0
    while True:
        if limit is not None:
            kwargs["Limit"] = limit - seen
        page = table().query(**kwargs)
        for item in page.get("Items", []):
            yield item
            seen += 1
        if "LastEvaluatedKey" not in page or (limit is not None and seen >= limit):
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def prefix(pk: str, sk_prefix: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    return query_all(pk, start=sk_prefix, end=sk_prefix + "\uffff", **kwargs)


BATCH_GET_MAX = 100  # DynamoDB's limit of keys per BatchGetItem
BATCH_GET_ATTEMPTS = 8


def batch_get(keys: list[dict[str, str]], *, projection: str | None = None,
              consistent: bool = True) -> list[dict[str, Any]]:
    """The items that exist among ``keys`` (any number; 100 per request), strongly consistent by default.

    Keys DynamoDB leaves unprocessed (throttling) are asked again with backoff; when they still are after
    ``BATCH_GET_ATTEMPTS`` this raises, so a caller's block is redone instead of silently missing items."""
    import time

    name = get_settings().chain_table
    found: list[dict[str, Any]] = []
    for i in range(0, len(keys), BATCH_GET_MAX):
        request: dict[str, Any] = {"Keys": keys[i : i + BATCH_GET_MAX], "ConsistentRead": consistent}
        if projection:
            request["ProjectionExpression"] = projection
        for attempt in range(BATCH_GET_ATTEMPTS):
            answer = _resource().batch_get_item(RequestItems={name: request})
            found.extend(answer.get("Responses", {}).get(name, []))
            left = answer.get("UnprocessedKeys", {}).get(name, {}).get("Keys")
            if not left:
                break
            request = request | {"Keys": left}
            time.sleep(min(0.05 * 2**attempt, 2.0))
        else:
            raise RuntimeError(f"DynamoDB left {len(left)} keys unprocessed after {BATCH_GET_ATTEMPTS} attempts")
    return found


def get(pk: str, sk: str) -> dict[str, Any] | None:
    return table().get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")
