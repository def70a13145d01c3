"""How DePU's domain objects read in the public API (the ``models`` shapes). Amounts of tokens are decimal
strings: base units overflow JSON's safe integers."""
from __future__ import annotations

from typing import Any

from depu.analytics.metadata import TokenMeta
from depu.analytics.views import AddressView, AssetFlow, ChainView, TokenView
from depu.credits import Balance, LedgerEntry
from depu.forks.models import Fork
from depu.jobs import lifecycle
from depu.jobs.artifacts import Artifact
from depu.jobs.models import Job
from depu.publicapi import models


def job(item: Job) -> models.JobOut:
    return models.JobOut(
        job_id=item.job_id, status=item.status, gpu_class=item.gpu_class, workload=item.workload,
        params=dict(item.params or {}), created_at=item.created_at, time_limit_s=int(item.time_limit_s),
        price_per_hour=int(item.price_per_hour), max_cost=int(item.max_cost), attempt=int(item.attempt or 0),
        progress=float(item.progress or 0), message=item.message,
        started_at=_int(item.started_at), finished_at=_int(item.finished_at),
        billed_seconds=int(item.billed_seconds or 0), charged=_int(item.charged),
        result=item.result if isinstance(item.result, dict) else None, error=item.error,
        metrics=item.metrics if isinstance(item.metrics, dict) else None,
        artifacts=[key.rsplit("/", 1)[-1] for key in (item.artifacts or [])],
        inputs=[key.rsplit("/", 1)[-1] for key in (item.input_keys or [])],
        finished=item.status in lifecycle.TERMINAL,
    )


def artifact(item: Artifact) -> models.ArtifactOut:
    return models.ArtifactOut(name=item.name, state=item.state, size=item.size, url=item.url,  # type: ignore[arg-type]
                              expires_at=item.expires_at)


def fork(item: Fork) -> models.ForkOut:
    return models.ForkOut(
        fork_id=item.fork_id, status=item.status, block_requested=item.block_requested,
        base_block=_int(item.base_block), chain_id=_int(item.chain_id), created_at=item.created_at,
        expires_at=int(item.expires_at), auto_sync=bool(item.auto_sync), last_synced_at=item.last_synced_at,
        last_sync_error=item.last_sync_error, conflicts=item.conflicts, failure=item.failure,
    )


def token(meta: TokenMeta | None, address: str) -> models.TokenInfo:
    if meta is None:
        return models.TokenInfo(token=address)
    return models.TokenInfo(token=meta.token, symbol=meta.symbol, name=meta.name, decimals=meta.decimals)


def _flow(item: AssetFlow) -> models.AssetFlowOut:
    return models.AssetFlowOut(
        asset=item.asset, token=token(item.meta, item.asset) if item.meta else None, inflow=str(item.inflow),
        outflow=str(item.outflow), net=str(item.net), transfers=item.transfers,
    )


def address_view(view: AddressView) -> models.AddressViewOut:
    return models.AddressViewOut(
        address=view.address, window=view.window, seen=[_flow(f) for f in view.seen],
        flows=[_flow(f) for f in view.flows],
        counterparties=[models.CounterpartyOut(asset=a, address=o, sent=str(s), received=str(r), transfers=n)
                        for a, o, s, r, n in view.counterparties],
    )


def token_view(view: TokenView) -> models.TokenViewOut:
    return models.TokenViewOut(
        token=token(view.meta, view.token), window=view.window, volume=str(view.volume), transfers=view.transfers,
        active_addresses=view.active_addresses,
        series=[models.HourPoint(hour=h, volume=str(v), transfers=n) for h, v, n in view.series],
        top_transfers=[_plain(row) for row in view.top_transfers],
        top_movers=[models.MoverOut(address=a, moved=str(v)) for a, v in view.top_movers],
    )


def chain_view(view: ChainView) -> models.ChainViewOut:
    return models.ChainViewOut(
        window=view.window, head=view.head, blocks=len(view.blocks), transactions=view.txs,
        transfers=view.transfers, average_gas_used=view.average("gas_used"),
        average_base_fee_wei=view.average("base_fee"), capped=view.capped,
        recent_blocks=[_plain(b) for b in view.blocks[-20:]],
    )


def credits(balance: Balance) -> models.CreditsOut:
    return models.CreditsOut(available=balance.credits, held=balance.held, earned=balance.earned)


def ledger_entry(entry: LedgerEntry) -> models.LedgerEntryOut:
    return models.LedgerEntryOut(
        entry_id=entry.entry_id, kind=entry.kind, amount=int(entry.amount), released=int(entry.released or 0),
        reason=entry.reason, job_id=entry.job_id, created_at=entry.created_at.isoformat(),
    )


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB row as JSON: Decimals to int (whole) or str, keys of our own (pk/sk) left out."""
    from decimal import Decimal

    out: dict[str, Any] = {}
    for name, value in row.items():
        if name in ("pk", "sk", "expires_at"):
            continue
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else str(value)
        out[name] = value
    return out
