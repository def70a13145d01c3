"""Telegram Stars in the local stand-in: the bot's payment methods and the user's Pay button.

Bot side: ``sendInvoice`` (XTR only, no provider token, one price), ``answerPreCheckoutQuery``,
``refundStarPayment`` and ``getStarTransactions``. User side: ``pay(chat_id, message_id)`` (the control API's
``POST /_standin/pay``) does what Telegram does when Pay is pressed: a ``pre_checkout_query`` update, a wait of
at most 10 s for the bot's answer, and only if it said ok a ``successful_payment`` message from the user.
An invoice is a message with an ``invoice`` object (title, description, currency, total_amount) and a Pay
button (``{"text": "Pay ⭐N", "pay": true}``).

A mixin of ``TelegramStandIn``: it uses the stand-in's lock, chats, users, message ids and delivery.
"""
from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PRE_CHECKOUT_TIMEOUT = 10.0  # seconds Telegram waits for answerPreCheckoutQuery


@dataclass
class Invoice:
    chat_id: int
    message_id: int
    title: str
    description: str
    payload: str
    currency: str
    total_amount: int

    def as_record(self) -> dict[str, Any]:
        return {"title": self.title, "description": self.description, "currency": self.currency,
                "total_amount": self.total_amount}


@dataclass
class StarTransaction:
    id: str
    amount: int
    date: int
    user_id: int
    incoming: bool  # a payment (source: the user) or a refund (receiver: the user)
    payload: str = ""

    def as_api(self, users: dict[int, Any]) -> dict[str, Any]:
        user = users[self.user_id].as_api() if self.user_id in users else {"id": self.user_id, "is_bot": False,
                                                                           "first_name": "Local"}
        side = "source" if self.incoming else "receiver"
        partner: dict[str, Any] = {"type": "user", "user": user}
        if self.incoming:
            partner.update({"transaction_type": "invoice_payment", "invoice_payload": self.payload})
        return {"id": self.id, "amount": self.amount, "date": self.date, side: partner}


@dataclass
class StarsState:
    invoices: dict[tuple[int, int], Invoice] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # pre_checkout_query id -> answer
    open_queries: dict[str, int] = field(default_factory=dict)  # query id -> user id
    transactions: list[StarTransaction] = field(default_factory=list)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)  # charge id -> the update delivered
    refund_failures: int = 0  # the next N refundStarPayment calls fail (tests of the re-credit path)
    refund_outages: int = 0  # the next N calls answer 500 without refunding (outcome unknown to the bot)
    refund_lost_answers: int = 0  # the next N calls refund, then answer 500 (the answer is lost)
    charge_numbers: Any = field(default_factory=lambda: itertools.count(1))
    answered: threading.Event = field(default_factory=threading.Event)


class StarsMixin:
    """Bot API payment methods (``_api_*``) and the user's payments, for ``TelegramStandIn``."""

    @property
    def stars(self) -> StarsState:
        state = self.__dict__.get("_stars_state")
        if state is None:
            state = self.__dict__["_stars_state"] = StarsState()
        return state

    # ------------------------------------------------------------------ bot side
    def _api_sendinvoice(self, params: dict[str, Any]) -> dict[str, Any]:
        from local.telegram_standin import ApiError, ChatMessage, _json_param

        chat_id = self._chat_id(params)
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
        prices = _json_param(params.get("prices"), "prices")
        if not isinstance(prices, list) or len(prices) != 1 or not isinstance(prices[0], dict):
            raise ApiError(400, "Bad Request: invoices in Stars must have exactly one price")
        amount = prices[0].get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 10000:
            raise ApiError(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID")
        self._check_rate(chat_id)
        message = ChatMessage(chat_id, next(self._next_message_id[chat_id]), True, int(time.time()),
                              text=f"{title}\n{description}", raw_text=description,
                              buttons=[[{"text": f"Pay ⭐{amount}", "pay": True}]])
        invoice = Invoice(chat_id, message.message_id, title, description, payload, currency, amount)
        message.invoice = invoice.as_record()
        self.stars.invoices[(chat_id, message.message_id)] = invoice
        api = self._record_bot_message(message)
        api["invoice"] = {**invoice.as_record(), "start_parameter": ""}
        return api

    def _api_answerprecheckoutquery(self, params: dict[str, Any]) -> bool:
        from local.telegram_standin import ApiError, _truthy

        query_id = str(params.get("pre_checkout_query_id") or "")
        if query_id not in self.stars.open_queries:
            raise ApiError(400, "Bad Request: QUERY_ID_INVALID")
        ok = _truthy(params.get("ok"))
        error_message = params.get("error_message")
        if not ok and not str(error_message or "").strip():
            raise ApiError(400, "Bad Request: ERROR_MESSAGE_EMPTY")
        self.stars.open_queries.pop(query_id)
        self.stars.answers[query_id] = {"ok": ok, "error_message": None if ok else str(error_message)}
        self.stars.answered.set()
        return True

    def _api_refundstarpayment(self, params: dict[str, Any]) -> bool:
        from local.telegram_standin import ApiError

        charge_id = str(params.get("telegram_payment_charge_id") or "")
        try:
            user_id = int(params.get("user_id") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: USER_ID_INVALID") from None
        if self.stars.refund_failures > 0:
            self.stars.refund_failures -= 1
            raise ApiError(400, "Bad Request: REFUND_FAILED")
        if self.stars.refund_outages > 0:
            self.stars.refund_outages -= 1
            raise ApiError(500, "Internal Server Error")
        payments = [t for t in self.stars.transactions if t.id == charge_id]
        if not payments or payments[0].user_id != user_id:
            raise ApiError(400, "Bad Request: CHARGE_NOT_FOUND")
        if any(not t.incoming for t in payments):
            raise ApiError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        self.stars.transactions.append(StarTransaction(charge_id, payments[0].amount, int(time.time()), user_id,
                                                       incoming=False))
        if self.stars.refund_lost_answers > 0:
            self.stars.refund_lost_answers -= 1
            raise ApiError(500, "Internal Server Error")
        return True

    def _api_getstartransactions(self, params: dict[str, Any]) -> dict[str, Any]:
        from local.telegram_standin import ApiError

        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
        if offset < 0 or not 1 <= limit <= 100:
            raise ApiError(400, "Bad Request: LIMIT_INVALID")
        chosen = self.stars.transactions[offset:offset + limit]
        return {"transactions": [t.as_api(self._users) for t in chosen]}

    # ------------------------------------------------------------------ user side
    def pay(self, chat_id: int, message_id: int, user: Any = None) -> dict[str, Any]:
        """The user presses Pay on an invoice. Returns what happened: the pre-checkout answer, and the charge id
        and successful_payment delivery when the bot accepted."""
        with self._lock:
            invoice = self.stars.invoices.get((int(chat_id), int(message_id)))
            if invoice is None:
                raise ValueError(f"message {message_id} in chat {chat_id} is not an invoice")
            person = self._user(user if user is not None else self._users.get(chat_id) or chat_id)
            query_id = str(secrets.randbits(62))
            self.stars.open_queries[query_id] = person.id
            self.stars.answered.clear()
        query = {"id": query_id, "from": person.as_api(), "currency": invoice.currency,
                 "total_amount": invoice.total_amount, "invoice_payload": invoice.payload}
        started = time.monotonic()
        delivery = self._deliver({"pre_checkout_query": query})
        while query_id not in self.stars.answers and time.monotonic() - started < PRE_CHECKOUT_TIMEOUT:
            self.stars.answered.wait(0.05)
        answered_in = time.monotonic() - started
        with self._lock:
            self.stars.open_queries.pop(query_id, None)
            answer = self.stars.answers.get(query_id) or {"ok": False, "error_message": None, "timed_out": True}
        result: dict[str, Any] = {"pre_checkout_update_id": delivery.update_id, "webhook_status": delivery.status,
                                  "pre_checkout": answer, "pre_checkout_seconds": round(answered_in, 4),
                                  "paid": False}
        if not answer["ok"]:
            return result
        with self._lock:
            charge_id = f"stxLOCAL{next(self.stars.charge_numbers):06d}{secrets.token_hex(6)}"
            self.stars.transactions.append(StarTransaction(charge_id, invoice.total_amount, int(time.time()),
                                                           person.id, incoming=True, payload=invoice.payload))
            message = self._record_user_message(int(chat_id), person, text="")
            api_message = self._api_message(message)
            api_message["successful_payment"] = {
                "currency": invoice.currency, "total_amount": invoice.total_amount,
                "invoice_payload": invoice.payload, "telegram_payment_charge_id": charge_id,
                "provider_payment_charge_id": "",
            }
        update_payload = {"message": api_message}
        delivered = self._deliver(update_payload)
        with self._lock:
            self.stars.payments[charge_id] = {"update_id": delivered.update_id, **update_payload}
        result.update({"paid": True, "charge_id": charge_id, "payment_update_id": delivered.update_id,
                       "payment_webhook_status": delivered.status, "message_id": message.message_id})
        return result

    def redeliver_payment(self, charge_id: str, *, same_update_id: bool = True) -> int | None:
        """Telegram resends the successful_payment update (as after a webhook timeout); with
        ``same_update_id=False`` it arrives as a new update carrying the same charge (a replay)."""
        with self._lock:
            stored = json.loads(json.dumps(self.stars.payments[charge_id]))
            update = stored if same_update_id else {**stored, "update_id": next(self._update_ids)}
        return self._post_update(update).status

    def control_pay(self, body: dict[str, Any]) -> dict[str, Any]:
        user_id = body.get("user_id")
        return self.pay(int(body["chat_id"]), int(body["message_id"]), int(user_id) if user_id else None)
