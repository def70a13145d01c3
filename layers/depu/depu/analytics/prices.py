"""Dollar prices read on-chain from constant-product pools against stablecoins, time-weighted.

A pool of token X against a stablecoin S keeps, besides its reserves, the price of each side summed over
every second it held (``price0CumulativeLast``/``price1CumulativeLast``, 112.112 fixed point, updated
before each change of reserves). The indexer observes each listed pool once per chunk of confirmed blocks
(two ``eth_call`` at the chunk's last block): the cumulative price as of that block, counting the seconds
since the pool's last update at its current spot price. The time-weighted average between two observations
is their difference divided by the seconds between them. A manipulator who moves the spot price in one
block gets it counted only for the seconds until the next block moves it back: over ``TWAP_SECONDS`` (30
minutes) a 12 s block moves the average by at most 12/1800 of the distortion, a swap and its reversal in
the same block not at all. Observations sit in ChainTable (``PRICE#<pair>/<timestamp>``) and are removed
with their blocks by a reorganisation.

Which pools: ``price_pools.json`` (mainnet, or the local chain's ``DevChain.deploy_market`` pair). A token
without a pool has no price; views and alerts then show token amounts only, and a dollar threshold is not
reached.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from depu.chain import store

if TYPE_CHECKING:
    from depu.analytics.metadata import TokenMeta
    from depu.chain.rpc import RpcClient

TWAP_SECONDS = 1800
MIN_TWAP_SECONDS = 300  # with less history than this a pool gives no price yet
Q112 = 2**112
WRAP = 2**256
SELECTORS = {"getReserves": "0x0902f1ac", "token0": "0x0dfe1681", "token1": "0xd21220a7",
             "price0CumulativeLast": "0x5909c0d5", "price1CumulativeLast": "0x5a3d5493"}


@dataclass(frozen=True)
class Pool:
    pair: str
    token: str  # the side priced
    stable: str  # the stablecoin side
    token_is_0: bool


@dataclass(frozen=True)
class Observation:
    timestamp: int
    block: int
    cumulative: int  # stablecoin base units per token base unit, 112.112, summed over seconds (mod 2**256)


@lru_cache(maxsize=1)
def listing() -> dict[str, Any]:
    from depu.config import get_settings

    chain = "local" if get_settings().stage == "local" else "mainnet"
    data = json.loads(Path(__file__).with_name("price_pools.json").read_text())
    return {"stablecoins": set(data["stablecoins"][chain]), "wrapped_native": data["wrapped_native"][chain],
            "pools": list(data["pools"][chain])}


def _word(result: str, index: int) -> int:
    return int(result[2 + 64 * index: 2 + 64 * (index + 1)] or "0", 16)


def _address(result: str) -> str:
    return "0x" + result[-40:].lower()


_pools: dict[str, Pool | None] = {}
POOLS_SK = "PRICE_POOLS"


def pools(rpc: "RpcClient") -> list[Pool]:
    """The listed pools that exist on this chain, with their sides (read from the node once per process,
    and kept in ChainTable's ``CHAIN/PRICE_POOLS`` for the processes that read prices without a node)."""
    stable = listing()["stablecoins"]
    known = len(_pools)
    for pair in listing()["pools"]:
        if pair in _pools:
            continue
        answers = rpc.batch([("eth_call", [{"to": pair, "data": SELECTORS[name]}, "latest"])
                             for name in ("token0", "token1")], allow_errors=True)
        if any(not isinstance(a, str) or len(a) < 66 for a in answers):
            continue  # not deployed (yet): ask again next time
        token0, token1 = (_address(a) for a in answers)
        if token1 in stable:
            _pools[pair] = Pool(pair, token0, token1, True)
        elif token0 in stable:
            _pools[pair] = Pool(pair, token1, token0, False)
        else:
            _pools[pair] = None
    found = [pool for pool in _pools.values() if pool is not None]
    if len(_pools) != known or {pool.pair for pool in stored_pools()} != {pool.pair for pool in found}:
        store.table().put_item(Item={"pk": store.CHAIN, "sk": POOLS_SK, "pools": {
            pool.pair: {"token": pool.token, "stable": pool.stable, "token_is_0": pool.token_is_0}
            for pool in found}})
    return found


def stored_pools() -> list[Pool]:
    item = store.get(store.CHAIN, POOLS_SK) or {}
    return [Pool(pair, side["token"], side["stable"], bool(side["token_is_0"]))
            for pair, side in item.get("pools", {}).items()]


def observe(rpc: "RpcClient", block: int, timestamp: int) -> int:
    """Record every pool's cumulative price as of ``block``; returns how many were recorded."""
    found = pools(rpc)
    if not found:
        return 0
    calls = []
    for pool in found:
        cumulative = "price0CumulativeLast" if pool.token_is_0 else "price1CumulativeLast"
        calls += [("eth_call", [{"to": pool.pair, "data": SELECTORS["getReserves"]}, hex(block)]),
                  ("eth_call", [{"to": pool.pair, "data": SELECTORS[cumulative]}, hex(block)])]
    answers = rpc.batch(calls, allow_errors=True)
    written = 0
    with store.table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for i, pool in enumerate(found):
            reserves, cumulative = answers[2 * i], answers[2 * i + 1]
            if not isinstance(reserves, str) or not isinstance(cumulative, str) or len(reserves) < 2 + 3 * 64:
                continue
            reserve0, reserve1, last = _word(reserves, 0), _word(reserves, 1), _word(reserves, 2)
            token_reserve, stable_reserve = (reserve0, reserve1) if pool.token_is_0 else (reserve1, reserve0)
            total = int(cumulative, 16)
            if token_reserve and stable_reserve and timestamp > last:
                total += (stable_reserve * Q112 // token_reserve) * (timestamp - last)
            batch.put_item(Item={"pk": f"PRICE#{pool.pair}", "sk": f"{timestamp:012d}#{block:012d}",
                                 "block": block, "cumulative": str(total % WRAP),
                                 "spot": str(stable_reserve * Q112 // token_reserve) if token_reserve else "0"})
            written += 1
    return written


def forget_after(block: int) -> None:
    """A reorganisation rewound to ``block``: observations of the dropped blocks go with them."""
    for pair in listing()["pools"]:
        doomed = [item for item in store.query_all(f"PRICE#{pair}", reverse=True, limit=500)
                  if int(item["block"]) > block]
        with store.table().batch_writer() as batch:
            for item in doomed:
                batch.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})


def _observation(item: dict[str, Any]) -> Observation:
    return Observation(int(item["sk"][:12]), int(item["block"]), int(item["cumulative"]))


def twap_units(pair: str, at: int | None = None, window: int = TWAP_SECONDS) -> Decimal | None:
    """Stablecoin base units per token base unit, averaged over ``window`` seconds up to time ``at``
    (default: the newest observation); None without ``MIN_TWAP_SECONDS`` of history."""
    end_key = f"{at:012d}#\uffff" if at is not None else None
    latest = next(iter(store.query_all(f"PRICE#{pair}", end=end_key, reverse=True, limit=1)), None)
    if latest is None:
        return None
    newest = _observation(latest)
    before = next(iter(store.query_all(f"PRICE#{pair}", end=f"{newest.timestamp - window:012d}#\uffff",
                                       reverse=True, limit=1)), None)
    oldest = _observation(before) if before else _observation(
        next(iter(store.query_all(f"PRICE#{pair}", limit=1))))
    seconds = newest.timestamp - oldest.timestamp
    if seconds < min(MIN_TWAP_SECONDS, window):
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        return Decimal((newest.cumulative - oldest.cumulative) % WRAP) / Decimal(Q112) / Decimal(seconds)


class PriceBook:
    """Dollar values of amounts, for one view or one block: each token's price looked up once."""

    def __init__(self, rpc: "RpcClient | None" = None, metas: Callable[[str], "TokenMeta | None"] | None = None,
                 at: int | None = None):
        from depu.analytics import metadata

        self.at = at
        self.metas = metas or metadata.cached
        self._prices: dict[str, Decimal | None] = {}
        self._pools = pools(rpc) if rpc is not None else stored_pools()

    def _pool_for(self, token: str) -> list[Pool]:
        return [pool for pool in self._pools if pool.token == token]

    def price(self, asset: str) -> Decimal | None:
        """Dollars per whole token (or ETH), or None where no pool prices it."""
        if asset in self._prices:
            return self._prices[asset]
        token = listing()["wrapped_native"] if asset == store.NATIVE else asset
        value: Decimal | None = None
        if token in listing()["stablecoins"]:
            value = Decimal(1)
        else:
            for pool in self._pool_for(token):
                units = twap_units(pool.pair, self.at)
                token_meta, stable_meta = self.metas(pool.token), self.metas(pool.stable)
                if units is None or token_meta is None or stable_meta is None:
                    continue
                if token_meta.decimals is None or stable_meta.decimals is None:
                    continue
                value = units.scaleb(token_meta.decimals - stable_meta.decimals)
                break
        self._prices[asset] = value
        return value

    def usd(self, asset: str, amount: int, decimals: int | None) -> Decimal | None:
        price = self.price(asset)
        if price is None or decimals is None:
            return None
        with localcontext() as ctx:
            ctx.prec = 60
            return Decimal(amount).scaleb(-decimals) * price

    def row_usd(self, row: dict[str, Any]) -> Decimal | None:
        if row.get("amount") is None:
            return None
        from depu.analytics.metadata import NATIVE_META

        meta = NATIVE_META if row["asset"] == store.NATIVE else self.metas(row["asset"])
        return self.usd(row["asset"], int(row["amount"]), meta.decimals if meta else None)
