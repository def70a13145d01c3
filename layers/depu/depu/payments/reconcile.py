"""The scheduled check: Telegram's list of Star transactions against DePU's charges.

Every incoming payment Telegram lists must be a charge with the same amount, every charge must be listed,
and a charge is refunded exactly when Telegram lists its refund. Any difference is a mismatch (the handler
turns their count into the ``StarsLedgerMismatches`` metric, which has an alarm). Charges left ``refunding``
by an unknown refund outcome are settled here: refunded if Telegram lists the refund, re-credited if not
after ``STUCK_REFUND_SECONDS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from depu.payments import refunds, stars_api
from depu.payments.models import ORDER_PAID, ORDER_REFUNDED, ORDER_REFUNDING, all_charges
from depu.profiles import utcnow

if TYPE_CHECKING:
    from depu.telegram.client import BotApi

STUCK_REFUND_SECONDS = 600


@dataclass
class Report:
    payments: int = 0
    refunds: int = 0
    charges: int = 0
    settled: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def _split(transactions: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    paid: dict[str, int] = {}
    refunded: dict[str, int] = {}
    for item in transactions:
        tx_id, amount = str(item.get("id") or ""), item.get("amount")
        if not tx_id or not isinstance(amount, int):
            continue
        if isinstance(item.get("source"), dict):
            paid[tx_id] = paid.get(tx_id, 0) + amount
        elif isinstance(item.get("receiver"), dict):
            refunded[tx_id] = refunded.get(tx_id, 0) + amount
    return paid, refunded


def reconcile(api: "BotApi") -> Report:
    paid, refunded = _split(stars_api.star_transactions(api))
    charges = {charge.charge_id: charge for charge in all_charges()}
    report = Report(payments=len(paid), refunds=len(refunded), charges=len(charges))
    for tx_id, amount in sorted(paid.items()):
        charge = charges.get(tx_id)
        if charge is None:
            report.mismatches.append(f"payment {tx_id} of {amount} Stars has no charge in the ledger")
        elif int(charge.stars) != amount:
            report.mismatches.append(f"charge {tx_id}: Telegram says {amount} Stars, the ledger {int(charge.stars)}")
    for charge_id, charge in sorted(charges.items()):
        if charge_id not in paid:
            report.mismatches.append(f"charge {charge_id} is not among Telegram's transactions")
        refund_listed = charge_id in refunded
        if charge.status == ORDER_REFUNDING:
            if refund_listed:
                refunds.finish(charge)
                report.settled.append(f"{charge_id}: refunded")
            elif (utcnow() - (charge.refund_started_at or charge.created_at)).total_seconds() > STUCK_REFUND_SECONDS:
                refunds.reverse(charge)
                report.settled.append(f"{charge_id}: refund never happened, credits returned")
        elif charge.status == ORDER_REFUNDED and not refund_listed:
            report.mismatches.append(f"charge {charge_id} is refunded in the ledger, not at Telegram")
        elif charge.status == ORDER_PAID and refund_listed:
            report.mismatches.append(f"charge {charge_id} was refunded at Telegram, not in the ledger")
    return report
