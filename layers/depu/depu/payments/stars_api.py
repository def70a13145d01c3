"""The Bot API's payment methods, over DePU's Bot API client (retries, token redaction)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from depu.payments.orders import CURRENCY

if TYPE_CHECKING:
    from depu.payments.models import Order
    from depu.telegram.client import BotApi


def quick_api() -> "BotApi":
    """A client for answerPreCheckoutQuery: Telegram cancels the payment if no answer comes within 10 s, so
    retries must end well before that (the default client may retry for 20 s)."""
    from depu.telegram.client import BotApi

    return BotApi(max_attempts=2, max_sleep=1.0, max_total=5.0, timeout=(2.0, 4.0))


def send_invoice(api: "BotApi", chat_id: int, order: "Order", title: str, description: str) -> int | None:
    """An invoice in Stars: no provider token, one price line, the order id as payload."""
    result = api.call("sendInvoice", {
        "chat_id": chat_id,
        "title": title,
        "description": description,
        "payload": order.order_id,
        "provider_token": "",
        "currency": CURRENCY,
        "prices": json.dumps([{"label": title, "amount": int(order.stars)}]),
    })
    return result.get("message_id") if isinstance(result, dict) else None


def answer_pre_checkout(api: "BotApi", query_id: str, ok: bool, error_message: str | None = None) -> None:
    params: dict[str, Any] = {"pre_checkout_query_id": query_id, "ok": ok}
    if not ok:
        params["error_message"] = error_message or "This payment cannot be accepted."
    api.call("answerPreCheckoutQuery", params)


def refund_star_payment(api: "BotApi", user_id: int, charge_id: str) -> None:
    api.call("refundStarPayment", {"user_id": int(user_id), "telegram_payment_charge_id": charge_id})


def star_transactions(api: "BotApi", page: int = 100) -> list[dict[str, Any]]:
    """Every Star transaction of the bot, oldest first (paged by ``offset``)."""
    found: list[dict[str, Any]] = []
    while True:
        result = api.call("getStarTransactions", {"offset": len(found), "limit": page})
        batch = result.get("transactions", []) if isinstance(result, dict) else []
        found.extend(item for item in batch if isinstance(item, dict))
        if len(batch) < page:
            return found
