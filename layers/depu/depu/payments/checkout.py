"""The pre-checkout decision: Telegram asks whether to take the user's Stars for an invoice.

Only an open, unexpired order of *that* user for *exactly* that amount in XTR is accepted; everything else
(someone else's order, a changed amount, an order already paid or refunded, a forged payload) is declined
with a message the user sees. Read-only: nothing is granted here, only on ``successful_payment``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from depu.payments import orders
from depu.payments.models import ORDER_OPEN


@dataclass(frozen=True)
class PreCheckout:
    query_id: str
    user_id: int
    currency: str
    total_amount: int
    payload: str


@dataclass(frozen=True)
class Decision:
    ok: bool
    error_message: str | None = None


DECLINED_UNKNOWN = "This invoice is not valid. Send /topup for a new one."
DECLINED_PAID = "This invoice was already paid. Send /topup to buy more credits."
DECLINED_EXPIRED = "This invoice has expired. Send /topup for a new one."
DECLINED_AMOUNT = "The amount does not match this invoice. Send /topup for a new one."


def decide(query: PreCheckout) -> Decision:
    order = orders.find(query.payload)
    if order is None or int(order.user_id) != query.user_id:
        return Decision(False, DECLINED_UNKNOWN)  # someone else's order reads as no order at all
    if order.status != ORDER_OPEN:
        return Decision(False, DECLINED_PAID)
    if int(order.expires_at) < time.time():
        return Decision(False, DECLINED_EXPIRED)
    if query.currency != orders.CURRENCY or query.total_amount != int(order.stars):
        return Decision(False, DECLINED_AMOUNT)
    return Decision(True)
