"""Telegram Stars, the bot's side: sendInvoice, answerPreCheckoutQuery, refundStarPayment and
getStarTransactions (the user's side and the state are in ``local/telegram_standin/stars.py``)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from local.telegram_standin.methods import bot_method
from local.telegram_standin.models import ApiError, ChatMessage
from local.telegram_standin.stars import Invoice, StarTransaction
from local.telegram_standin.validation import chat_id as chat_id_of, json_param, truthy

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn


@bot_method("sendInvoice")
def send_invoice(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    chat_id = chat_id_of(params)
    title, description = str(params.get("title") or ""), str(params.get("description") or "")
    payload = str(params.get("payload") or "")
    currency = str(params.get("currency") or "")
    if not 1 <= len(title) <= 32:
        raise ApiError(400, "Bad Request: TITLE_INVALID")
    if not 1 <= len(description) <= 255:
        raise ApiError(400, "Bad Request: DESCRIPTION_INVALID")
    if not 1 <= len(payload.encode()) <= 128:
        raise ApiError(400, "Bad Request: PAYLOAD_INVALID")
    if currency != "XTR":
        raise ApiError(400, "Bad Request: CURRENCY_INVALID (digital goods are sold in Telegram Stars, XTR)")
    if params.get("provider_token"):
        raise ApiError(400, "Bad Request: PROVIDER_TOKEN_INVALID (payments in Stars take no provider token)")
    prices = json_param(params.get("prices"), "prices")
    if not isinstance(prices, list) or len(prices) != 1 or not isinstance(prices[0], dict):
        raise ApiError(400, "Bad Request: invoices in Stars must have exactly one price")
    amount = prices[0].get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 10000:
        raise ApiError(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID")
    standin.check_rate(chat_id)
    message = ChatMessage(chat_id, standin.next_message_id(chat_id), True, int(time.time()),
                          text=f"{title}\n{description}", raw_text=description,
                          buttons=[[{"text": f"Pay ⭐{amount}", "pay": True}]])
    invoice = Invoice(chat_id, message.message_id, title, description, payload, currency, amount)
    message.invoice = invoice.as_record()
    standin.stars.invoices[(chat_id, message.message_id)] = invoice
    api = standin.record_bot_message(message)
    api["invoice"] = {**invoice.as_record(), "start_parameter": ""}
    return api

@bot_method("answerPreCheckoutQuery")
def answer_pre_checkout_query(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    query_id = str(params.get("pre_checkout_query_id") or "")
    if query_id not in standin.stars.open_queries:
        raise ApiError(400, "Bad Request: QUERY_ID_INVALID")
    ok = truthy(params.get("ok"))
    error_message = params.get("error_message")
    if not ok and not str(error_message or "").strip():
        raise ApiError(400, "Bad Request: ERROR_MESSAGE_EMPTY")
    standin.stars.open_queries.pop(query_id)
    standin.stars.answers[query_id] = {"ok": ok, "error_message": None if ok else str(error_message)}
    standin.stars.answered.set()
    return True

@bot_method("refundStarPayment")
def refund_star_payment(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    charge_id = str(params.get("telegram_payment_charge_id") or "")
    try:
        user_id = int(params.get("user_id") or 0)
    except (TypeError, ValueError):
        raise ApiError(400, "Bad Request: USER_ID_INVALID") from None
    if standin.stars.refund_failures > 0:
        standin.stars.refund_failures -= 1
        raise ApiError(400, "Bad Request: REFUND_FAILED")
    if standin.stars.refund_outages > 0:
        standin.stars.refund_outages -= 1
        raise ApiError(500, "Internal Server Error")
    payments = [t for t in standin.stars.transactions if t.id == charge_id]
    if not payments or payments[0].user_id != user_id:
        raise ApiError(400, "Bad Request: CHARGE_NOT_FOUND")
    if any(not t.incoming for t in payments):
        raise ApiError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
    standin.stars.transactions.append(StarTransaction(charge_id, payments[0].amount, int(time.time()), user_id,
                                                   incoming=False))
    if standin.stars.refund_lost_answers > 0:
        standin.stars.refund_lost_answers -= 1
        raise ApiError(500, "Internal Server Error")
    return True

@bot_method("getStarTransactions")
def get_star_transactions(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
    if offset < 0 or not 1 <= limit <= 100:
        raise ApiError(400, "Bad Request: LIMIT_INVALID")
    chosen = standin.stars.transactions[offset:offset + limit]
    return {"transactions": [t.as_api(standin._users) for t in chosen]}
