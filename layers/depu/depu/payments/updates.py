"""Payment updates in a raw Telegram update, type-checked like depu.telegram.updates (trusting nothing).

Kept free of heavy imports: the webhook asks ``is_payment`` about every update before deciding to load the
payments code.
"""
from __future__ import annotations

from typing import Any


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def is_payment(raw: dict[str, Any]) -> bool:
    return "pre_checkout_query" in raw or "successful_payment" in _dict(raw.get("message"))


def pre_checkout(raw: dict[str, Any]):
    """A ``checkout.PreCheckout``, or None when the query is not well-formed (it is then left unanswered and
    Telegram cancels the payment)."""
    from depu.payments.checkout import PreCheckout

    query = _dict(raw.get("pre_checkout_query"))
    sender = _dict(query.get("from"))
    query_id, user_id = _str(query.get("id")), _int(sender.get("id"))
    currency, amount = _str(query.get("currency")), _int(query.get("total_amount"))
    payload = _str(query.get("invoice_payload"))
    if not query_id or user_id is None or sender.get("is_bot") is True or currency is None or amount is None:
        return None
    return PreCheckout(query_id, user_id, currency, amount, payload or "")


def successful_payment(raw: dict[str, Any]):
    """A ``topup.SuccessfulPayment``, or None when the message is not a well-formed payment."""
    from depu.payments.topup import SuccessfulPayment

    message = _dict(raw.get("message"))
    payment = _dict(message.get("successful_payment"))
    user_id, chat_id = _int(_dict(message.get("from")).get("id")), _int(_dict(message.get("chat")).get("id"))
    currency, amount = _str(payment.get("currency")), _int(payment.get("total_amount"))
    payload, charge_id = _str(payment.get("invoice_payload")), _str(payment.get("telegram_payment_charge_id"))
    if user_id is None or chat_id is None or currency is None or amount is None or amount <= 0:
        return None
    if not payload or not charge_id or len(charge_id) > 200:
        return None
    return SuccessfulPayment(user_id, chat_id, currency, amount, payload, charge_id)
