"""What the webhook does with a payment update, in the webhook itself (no queue: the 10 s answer deadline).

``pre_checkout_query``: decide and answer right away. ``successful_payment``: grant once, then tell the user.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from depu.payments import checkout, stars_api, topup, updates

if TYPE_CHECKING:
    from depu.telegram.client import BotApi

log = logging.getLogger(__name__)


def handle(raw: dict[str, Any], api: "BotApi") -> str:
    if "pre_checkout_query" in raw:
        query = updates.pre_checkout(raw)
        if query is None:
            return "ignored"
        decision = checkout.decide(query)
        stars_api.answer_pre_checkout(stars_api.quick_api(), query.query_id, decision.ok, decision.error_message)
        return "pre_checkout:ok" if decision.ok else "pre_checkout:declined"
    payment = updates.successful_payment(raw)
    if payment is None:
        return "ignored"
    result = topup.apply(payment)
    if result.credited:
        from depu import credits

        balance = credits.balance(payment.user_id)
        api.send_message(payment.chat_id, f"Payment received: <b>+{result.credits:,} credits</b>.\n"
                                          f"Available now: {balance.credits:,} credits.")
        return "payment:credited"
    return "payment:duplicate"
