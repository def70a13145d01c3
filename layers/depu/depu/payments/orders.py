"""Credit packs and orders: what a user may buy, and the open order each invoice carries as its payload."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from depu.config import get_settings
from depu.errors import UserError
from depu.payments.models import ORDER_OPEN, Order, get_order, order_key
from depu.profiles import utcnow

CURRENCY = "XTR"  # Telegram Stars: the only currency for digital goods, no payment provider


@dataclass(frozen=True)
class Pack:
    stars: int
    credits: int

    @property
    def title(self) -> str:
        return f"{self.credits:,} DePU credits"


def packs() -> list[Pack]:
    """The packs on offer, from settings (``STAR_PACKS``, ``CREDITS_PER_STAR``)."""
    rate = get_settings().credits_per_star
    return [Pack(stars, stars * rate) for stars in get_settings().star_packs if stars > 0]


def pack_for(stars: int) -> Pack:
    for pack in packs():
        if pack.stars == stars:
            return pack
    raise UserError("That credit pack is not on offer any more. Send /topup to see the current packs.")


def open_order(user_id: int, stars: int, chat_id: int | None = None) -> Order:
    """A new open order for one of the packs. Its id is the invoice payload (unguessable, 16 hex digits)."""
    pack = pack_for(stars)
    order_id = secrets.token_hex(8)
    order = Order(
        order_key(order_id), "order", order_id=order_id, user_id=int(user_id), stars=pack.stars,
        credits=pack.credits, status=ORDER_OPEN, created_at=utcnow(),
        expires_at=int(time.time()) + get_settings().order_ttl_seconds, chat_id=chat_id,
    )
    order.save(condition=Order.pk.does_not_exist())
    return order


def remember_invoice(order: Order, message_id: int | None) -> None:
    if message_id is not None:
        order.update(actions=[Order.invoice_message_id.set(int(message_id))])


def find(order_id: str) -> Order | None:
    if not isinstance(order_id, str) or not 1 <= len(order_id) <= 64:
        return None
    return get_order(order_id)
