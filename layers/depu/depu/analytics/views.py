"""What the bot shows: address, token and chain summaries read from ChainTable's aggregates and indexes.

Windows (1h, 24h, 7d) end at the newest indexed block's time (chain time, so a lagging indexer shows a
consistent picture instead of an empty last hour) and sum the hourly aggregates they cover.

Dollar values: every view carries the time-weighted price of each asset it shows, where a pool prices it
(``depu.analytics.prices``), as of the newest indexed block; ``usd(asset, amount)`` is None without one.
Charts follow the same rule through ``AmountAxis``: dollars where a price exists, else token units, and the
axis label says which.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from depu.analytics import metadata
from depu.analytics.aggregates import HOUR, hour_key, hour_of
from depu.chain import store

WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
MAX_ROWS = 5000  # rows read for top transfers/holders in one window


def chain_time() -> int | None:
    """Timestamp of the newest indexed block, or None before the first run."""
    for header in store.query_all(store.BLOCKS, reverse=True, limit=1):
        return int(header["timestamp"])
    return None


def _window(window: str) -> tuple[int, int]:
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}")
    end = chain_time() or 0
    return end - WINDOWS[window], end


def _hours(start: int, end: int) -> list[int]:
    return list(range(hour_of(start), hour_of(end) + 1, HOUR))


def _prices():
    from depu.analytics.prices import PriceBook

    return PriceBook()


def usd(asset: str, amount: int, meta: metadata.TokenMeta | None, book: Any = None) -> Decimal | None:
    """``amount`` base units of ``asset`` in dollars at the time-weighted price, or None without a price."""
    book = book or _prices()
    return book.usd(asset, amount, meta.decimals if meta else None)


USD_LABEL = "US dollars (time-weighted price)"


@dataclass(frozen=True)
class AmountAxis:
    """How a chart plots one asset's amounts: in dollars at the view's time-weighted price where a pool prices
    the asset, else in whole tokens (or base units, for a token that reports no decimals). ``label`` is the
    axis label and ``unit`` the short word for captions; both say which it is."""

    label: str
    unit: str
    in_usd: bool
    decimals: int | None
    price_usd: Decimal | None = None

    def value(self, amount: int) -> float:
        """``amount`` base units as plotted (a float: for axes only, every number in text stays exact)."""
        scaled = Decimal(amount) if self.decimals is None else Decimal(amount).scaleb(-self.decimals)
        return float(scaled * self.price_usd) if self.in_usd and self.price_usd is not None else float(scaled)


def amount_axis(asset: str, meta: metadata.TokenMeta | None, price_usd: Decimal | None) -> AmountAxis:
    """Dollars where both a price and the token's decimals exist; otherwise the token units, said so."""
    if meta is not None and meta.decimals is not None:
        if price_usd is not None:
            return AmountAxis(USD_LABEL, "US dollars", True, meta.decimals, price_usd)
        return AmountAxis(f"{meta.label} (no dollar price)", meta.label, False, meta.decimals)
    name = meta.label if meta is not None else asset[:8] + "…"
    return AmountAxis(f"{name}, base units (no decimals, no dollar price)", "base units", False, None)


@dataclass
class AssetFlow:
    asset: str
    meta: metadata.TokenMeta | None
    inflow: int = 0
    outflow: int = 0
    transfers: int = 0
    price_usd: Decimal | None = None  # dollars per whole token, time-weighted; None without a pool

    @property
    def net(self) -> int:
        return self.inflow - self.outflow

    def usd(self, amount: int) -> Decimal | None:
        if self.price_usd is None or self.meta is None or self.meta.decimals is None:
            return None
        return Decimal(amount).scaleb(-self.meta.decimals) * self.price_usd

    @property
    def axis(self) -> AmountAxis:
        return amount_axis(self.asset, self.meta, self.price_usd)


@dataclass
class AddressView:
    address: str
    window: str
    seen: list[AssetFlow]  # all-time in/out per asset since indexing began
    flows: list[AssetFlow]  # within the window
    series: dict[str, list[tuple[int, int, int]]]  # asset -> [(hour, in, out)]
    counterparties: list[tuple[str, str, int, int, int]]  # (asset, other, sent, received, count)


def address_view(address: str, window: str = "24h") -> AddressView:
    address = address.lower()
    start, end = _window(window)
    seen: list[AssetFlow] = []
    for item in store.prefix(f"ADR#{address}", "BAL#"):
        asset = item["sk"][4:]
        seen.append(AssetFlow(asset, metadata.cached(asset), int(item.get("in", 0)), int(item.get("out", 0))))
    flows: dict[str, AssetFlow] = {}
    series: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    first_hour = hour_key(hour_of(start))
    for item in store.prefix(f"ADR#{address}", "FLOW#"):
        _, asset, hour = item["sk"].split("#")
        if hour < first_hour:
            continue
        flow = flows.setdefault(asset, AssetFlow(asset, metadata.cached(asset)))
        flow.inflow += int(item.get("in", 0))
        flow.outflow += int(item.get("out", 0))
        flow.transfers += int(item.get("n_in", 0)) + int(item.get("n_out", 0))
        series[asset].append((int(hour), int(item.get("in", 0)), int(item.get("out", 0))))
    counterparties = []
    for item in store.prefix(f"ADR#{address}", "CP#"):
        _, asset, other = item["sk"].split("#")
        if int(item.get("n", 0)) > 0:
            counterparties.append((asset, other, int(item.get("sent", 0)), int(item.get("received", 0)),
                                   int(item.get("n", 0))))
    counterparties.sort(key=lambda row: -row[4])
    book = _prices()
    for flow in list(seen) + list(flows.values()):
        flow.price_usd = book.price(flow.asset)
    return AddressView(address, window, [s for s in seen if s.inflow or s.outflow],
                       sorted(flows.values(), key=lambda f: -f.transfers), dict(series), counterparties[:10])


@dataclass
class TokenView:
    token: str
    meta: metadata.TokenMeta | None
    window: str
    volume: int = 0
    transfers: int = 0
    active_addresses: int = 0
    series: list[tuple[int, int, int]] = field(default_factory=list)  # (hour, volume, count)
    top_transfers: list[dict[str, Any]] = field(default_factory=list)
    top_movers: list[tuple[str, int]] = field(default_factory=list)  # (address, gross moved)
    price_usd: Decimal | None = None  # dollars per whole token, time-weighted; None without a pool

    def usd(self, amount: int) -> Decimal | None:
        if self.price_usd is None or self.meta is None or self.meta.decimals is None:
            return None
        return Decimal(amount).scaleb(-self.meta.decimals) * self.price_usd

    @property
    def volume_usd(self) -> Decimal | None:
        return self.usd(self.volume)

    @property
    def axis(self) -> AmountAxis:
        return amount_axis(self.token, self.meta, self.price_usd)


def token_view(token: str, window: str = "24h") -> TokenView:
    token = token.lower()
    start, end = _window(window)
    view = TokenView(token, metadata.cached(token), window)
    for item in store.query_all(f"TOK#{token}", start=f"VOL#{hour_key(hour_of(start))}", end="VOL#\uffff"):
        hour = int(item["sk"][4:])
        view.volume += int(item.get("volume", 0))
        view.transfers += int(item.get("count", 0))
        view.series.append((hour, int(item.get("volume", 0)), int(item.get("count", 0))))
    rows = []
    for row in store.query_all(store.token_transfers_pk(token), reverse=True, limit=MAX_ROWS):
        if int(row["block_timestamp"]) < start:
            break
        rows.append(row)
    addresses: set[str] = set()
    moved: dict[str, int] = defaultdict(int)
    for row in rows:
        amount = int(row["amount"]) if row.get("amount") else 0
        for side in ("sender", "recipient"):
            if row.get(side):
                addresses.add(row[side])
                moved[row[side]] += amount
    addresses.discard("0x" + "0" * 40)
    view.active_addresses = len(addresses)
    view.top_transfers = sorted((r for r in rows if r.get("amount")), key=lambda r: -int(r["amount"]))[:5]
    view.top_movers = sorted(((a, v) for a, v in moved.items() if a != "0x" + "0" * 40), key=lambda x: -x[1])[:5]
    view.price_usd = _prices().price(token)
    return view


def known_tokens(limit: int = 8) -> list[metadata.TokenMeta]:
    """Tokens with cached metadata, busiest first (by 7-day transfer count)."""
    from boto3.dynamodb.conditions import Attr

    metas = []
    kwargs: dict[str, Any] = {"FilterExpression": Attr("sk").eq("META")}
    while True:
        page = store.table().scan(**kwargs)
        metas.extend(metadata._from_item(item) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return metas[:limit]


@dataclass
class ChainView:
    window: str
    blocks: list[dict[str, Any]]
    head: int | None
    capped: bool = False  # the window holds more blocks than were read

    @property
    def transfers(self) -> int:
        return sum(int(b.get("transfer_count", 0)) + int(b.get("native_count", 0)) for b in self.blocks)

    @property
    def txs(self) -> int:
        return sum(int(b.get("tx_count", 0)) for b in self.blocks)

    def average(self, name: str) -> float:
        return sum(int(b.get(name, 0)) for b in self.blocks) / len(self.blocks) if self.blocks else 0.0


def chain_view(window: str = "1h", max_blocks: int = 600) -> ChainView:
    start, _ = _window(window)
    blocks = []
    capped = True  # unless a block older than the window is reached before ``max_blocks``
    for header in store.query_all(store.BLOCKS, reverse=True, limit=max_blocks):
        if int(header["timestamp"]) < start:
            capped = False
            break
        if header.get("status") == "done":
            blocks.append(header)
    blocks.reverse()
    checkpoint = store.get(store.CHAIN, store.CHECKPOINT)
    capped = capped and len(blocks) >= max_blocks
    return ChainView(window, blocks, int(checkpoint["number"]) if checkpoint else None, capped)
