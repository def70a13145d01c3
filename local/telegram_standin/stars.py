"""Telegram Stars in the local stand-in: the bot's payment methods and the user's Pay button.

Bot side: ``sendInvoice`` (XTR only, no provider token, one price), ``answerPreCheckoutQuery``,
``refundStarPayment`` and ``getStarTransactions``. User side: ``pay(chat_id, message_id)`` (the control API's
``POST /_standin/pay``) does what Telegram does when Pay is pressed: a ``pre_checkout_query`` update, a wait of
at most 10 s for the bot's answer, and only if it said ok a ``successful_payment`` message from the user.
An invoice is a message with an ``invoice`` object (title, description, currency, total_amount) and a Pay
button (``{"text": "Pay ⭐N", "pay": true}``).

Rooms: this module holds the state and the user's side (a mixin of ``TelegramStandIn``, and the control
API's ``pay`` action); ``methods/stars.py`` holds the bot's methods.
"""
from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from local.telegram_standin.control import control_action

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn

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


class StarsUserSide:
    """The user's payments (a mixin of ``TelegramStandIn``); the bot's methods are in ``methods/stars.py``."""

    @property
    def stars(self) -> StarsState:
        state = self.__dict__.get("_stars_state")
        if state is None:
            state = self.__dict__["_stars_state"] = StarsState()
        return state

    def pay(self, chat_id: int, message_id: int, user: Any = None) -> dict[str, Any]:
        """The user presses Pay on an invoice. Returns what happened: the pre-checkout answer, and the charge id
        and successful_payment delivery when the bot accepted."""
        with self.lock:
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
        delivery = self.deliver({"pre_checkout_query": query})
        while query_id not in self.stars.answers and time.monotonic() - started < PRE_CHECKOUT_TIMEOUT:
            self.stars.answered.wait(0.05)
        answered_in = time.monotonic() - started
        with self.lock:
            self.stars.open_queries.pop(query_id, None)
            answer = self.stars.answers.get(query_id) or {"ok": False, "error_message": None, "timed_out": True}
        result: dict[str, Any] = {"pre_checkout_update_id": delivery.update_id, "webhook_status": delivery.status,
                                  "pre_checkout": answer, "pre_checkout_seconds": round(answered_in, 4),
                                  "paid": False}
        if not answer["ok"]:
            return result
        with self.lock:
            charge_id = f"stxLOCAL{next(self.stars.charge_numbers):06d}{secrets.token_hex(6)}"
            self.stars.transactions.append(StarTransaction(charge_id, invoice.total_amount, int(time.time()),
                                                           person.id, incoming=True, payload=invoice.payload))
            message = self._record_user_message(int(chat_id), person, text="")
            api_message = self.api_message(message)
            api_message["successful_payment"] = {
                "currency": invoice.currency, "total_amount": invoice.total_amount,
                "invoice_payload": invoice.payload, "telegram_payment_charge_id": charge_id,
                "provider_payment_charge_id": "",
            }
        update_payload = {"message": api_message}
        delivered = self.deliver(update_payload)
        with self.lock:
            self.stars.payments[charge_id] = {"update_id": delivered.update_id, **update_payload}
        result.update({"paid": True, "charge_id": charge_id, "payment_update_id": delivered.update_id,
                       "payment_webhook_status": delivered.status, "message_id": message.message_id})
        return result

    def redeliver_payment(self, charge_id: str, *, same_update_id: bool = True) -> int | None:
        """Telegram resends the successful_payment update (as after a webhook timeout); with
        ``same_update_id=False`` it arrives as a new update carrying the same charge (a replay)."""
        with self.lock:
            stored = json.loads(json.dumps(self.stars.payments[charge_id]))
            update = stored if same_update_id else {**stored, "update_id": next(self._update_ids)}
        return self.post_update(update).status



@control_action("POST", "pay")
def pay(standin: TelegramStandIn, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """``POST /_standin/pay {"chat_id", "message_id"}``: the user presses Pay on that invoice."""
    user_id = body.get("user_id")
    return standin.pay(int(body["chat_id"]), int(body["message_id"]), int(user_id) if user_id else None)
