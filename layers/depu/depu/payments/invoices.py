"""Sending a top-up invoice, from the chat (a pack button) or from the Mini App (its Top up button): either
way the invoice goes to the user's private chat, where Telegram's Pay button is."""
from __future__ import annotations

from typing import TYPE_CHECKING

from depu.payments import orders, stars_api

if TYPE_CHECKING:
    from depu.payments.models import Order
    from depu.telegram.client import BotApi


def send_topup_invoice(api: "BotApi", user_id: int, stars: int, chat_id: int | None = None) -> "Order":
    """Open an order for the pack of ``stars`` Stars and send its invoice (raises UserError for a pack not on
    offer)."""
    chat = int(chat_id if chat_id is not None else user_id)
    order = orders.open_order(user_id, stars, chat_id=chat)
    pack = orders.pack_for(int(order.stars))
    message_id = stars_api.send_invoice(api, chat, order, pack.title,
                                        f"{pack.credits:,} credits for GPU time, shadow forks and analytics on DePU.")
    orders.remember_invoice(order, message_id)
    return order
