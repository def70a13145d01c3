"""PaymentsTable items: one per order (an invoice we sent) and one per charge (a payment Telegram reported).

The charge item is the guard that makes ``successful_payment`` apply once: it is written with
``attribute_not_exists`` in the same transaction as the credits, keyed by Telegram's charge id.
"""
from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from depu.config import get_settings

ORDER_OPEN, ORDER_PAID, ORDER_REFUNDING, ORDER_REFUNDED = "open", "paid", "refunding", "refunded"


class Order(Model):
    """An invoice for ``stars`` Stars worth ``credits`` credits, payable by ``user_id`` only."""

    class Meta:
        table_name = get_settings().payments_table

    pk = UnicodeAttribute(hash_key=True)  # "order#<order_id>"
    sk = UnicodeAttribute(range_key=True, default="order")
    order_id = UnicodeAttribute()
    user_id = NumberAttribute()
    stars = NumberAttribute()
    credits = NumberAttribute()
    status = UnicodeAttribute(default=ORDER_OPEN)
    created_at = UTCDateTimeAttribute()
    expires_at = NumberAttribute()  # epoch seconds: a pre-checkout after this is declined
    chat_id = NumberAttribute(null=True)
    invoice_message_id = NumberAttribute(null=True)
    charge_id = UnicodeAttribute(null=True)
    paid_at = UTCDateTimeAttribute(null=True)
    refunded_at = UTCDateTimeAttribute(null=True)


class Charge(Model):
    """A payment Telegram reported, by its ``telegram_payment_charge_id``."""

    class Meta:
        table_name = get_settings().payments_table

    pk = UnicodeAttribute(hash_key=True)  # "charge#<telegram_payment_charge_id>"
    sk = UnicodeAttribute(range_key=True, default="charge")
    charge_id = UnicodeAttribute()
    order_id = UnicodeAttribute()
    user_id = NumberAttribute()
    stars = NumberAttribute()
    credits = NumberAttribute()
    status = UnicodeAttribute(default=ORDER_PAID)  # paid | refunding | refunded
    created_at = UTCDateTimeAttribute()
    refund_attempts = NumberAttribute(default=0)
    refund_started_at = UTCDateTimeAttribute(null=True)


def order_key(order_id: str) -> str:
    return f"order#{order_id}"


def charge_key(charge_id: str) -> str:
    return f"charge#{charge_id}"


def get_order(order_id: str) -> Order | None:
    try:
        return Order.get(order_key(order_id), "order", consistent_read=True)
    except Order.DoesNotExist:
        return None


def get_charge(charge_id: str) -> Charge | None:
    try:
        return Charge.get(charge_key(charge_id), "charge", consistent_read=True)
    except Charge.DoesNotExist:
        return None


def all_charges() -> list[Charge]:
    """Every charge (for reconciliation; a scan, run hourly)."""
    return [item for item in Charge.scan(Charge.sk == "charge", consistent_read=True)]
