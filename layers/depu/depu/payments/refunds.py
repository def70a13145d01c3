"""Refunds of unused top-up credits with ``refundStarPayment``, within ``REFUND_WINDOW_DAYS``.

Order of operations, so Stars and credits can never both be with the user:
1. one conditional transaction debits the credits (available credits >= the top-up, the charge still
   ``paid``) and writes the ledger's ``refund#<charge>#<attempt>`` entry and its outside-world counterpart;
2. only then ``refundStarPayment`` is called;
3. Telegram refused (a definite 4xx): a second transaction re-credits (``refund-failed#...``) and the charge is
   ``paid`` again. A network failure or 5xx leaves the charge ``refunding``: whether Telegram refunded is
   unknown, so reconciliation (``depu.payments.reconcile``) settles it from getStarTransactions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from depu import credits
from depu.config import get_settings
from depu.credits import LedgerEntry, _Transaction, user_account
from depu.errors import UserError
from depu.payments import stars_api
from depu.payments.models import (
    ORDER_PAID, ORDER_REFUNDED, ORDER_REFUNDING, Charge, Order, charge_key, get_charge, order_key,
)
from depu.profiles import Profile, utcnow

if TYPE_CHECKING:
    from depu.telegram.client import BotApi

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refund:
    charge_id: str
    stars: int
    credits: int
    status: str  # refunded | failed (re-credited) | pending (unknown: reconciliation decides)


def refundable(user_id: int) -> list[Charge]:
    """The user's top-ups still in the window and not refunded, newest first."""
    window = timedelta(days=get_settings().refund_window_days)
    now = utcnow()
    found = [charge for charge in Charge.scan((Charge.sk == "charge") & (Charge.user_id == int(user_id)),
                                              consistent_read=True)
             if charge.status == ORDER_PAID and now - charge.created_at <= window]
    return sorted(found, key=lambda charge: charge.created_at, reverse=True)


def refund(api: "BotApi", user_id: int, charge_id: str) -> Refund:
    charge = get_charge(charge_id)
    if charge is None or int(charge.user_id) != int(user_id):
        raise UserError("There is no such top-up to refund.")
    if charge.status != ORDER_PAID:
        raise UserError("This top-up was already refunded.")
    if utcnow() - charge.created_at > timedelta(days=get_settings().refund_window_days):
        raise UserError(f"Top-ups can be refunded within {get_settings().refund_window_days} days only.")
    attempt = int(charge.refund_attempts or 0) + 1
    _debit(charge, attempt)
    try:
        stars_api.refund_star_payment(api, user_id, charge_id)
    except Exception as error:  # noqa: BLE001 - which failures are definite is decided below
        code = getattr(error, "error_code", None)
        if isinstance(code, int) and 400 <= code < 500 and "ALREADY_REFUNDED" not in str(error).upper():
            _recredit(charge, attempt)
            log.warning("refund refused by Telegram; credits returned", extra={"error_code": code})
            return Refund(charge_id, int(charge.stars), int(charge.credits), "failed")
        if code is None or code >= 500:
            log.error("refund outcome unknown; left for reconciliation")
            return Refund(charge_id, int(charge.stars), int(charge.credits), "pending")
    finish(charge)
    return Refund(charge_id, int(charge.stars), int(charge.credits), "refunded")


def _entry_id(charge_id: str, attempt: int, failed: bool = False) -> str:
    return f"{'refund-failed' if failed else 'refund'}#{charge_id}#{attempt}"


def _debit(charge: Charge, attempt: int) -> None:
    now, amount = utcnow(), int(charge.credits)
    entry_id = _entry_id(charge.charge_id, attempt)
    reason = f"Refund: {int(charge.stars)} Stars back (charge {charge.charge_id})"
    transaction = _Transaction()
    transaction.put("entry", LedgerEntry(user_account(charge.user_id), entry_id, kind="refund", amount=amount,
                                         reason=reason, charge_id=charge.charge_id, created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.put("world", LedgerEntry(credits.WORLD_STARS, entry_id, kind="in", amount=amount, reason=reason,
                                         charge_id=charge.charge_id, user_id=int(charge.user_id), created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.update("charge", Charge(charge_key(charge.charge_id), "charge"),
                       [Charge.status.set(ORDER_REFUNDING), Charge.refund_attempts.set(attempt),
                        Charge.refund_started_at.set(now)],
                       (Charge.status == ORDER_PAID) & (Charge.refund_attempts == int(charge.refund_attempts or 0)))
    transaction.update("profile", Profile(charge.user_id),
                       [Profile.credits.add(-amount), Profile.updated_at.set(now)], Profile.credits >= amount)
    failed = transaction.commit()
    if "profile" in failed and not failed - {"profile"}:
        raise UserError("These credits were already spent, so this top-up can no longer be refunded.")
    if failed:
        raise UserError("This top-up is already being refunded.")


def _recredit(charge: Charge, attempt: int) -> None:
    now, amount = utcnow(), int(charge.credits)
    entry_id = _entry_id(charge.charge_id, attempt, failed=True)
    reason = f"Refund failed, credits returned (charge {charge.charge_id})"
    transaction = _Transaction()
    transaction.put("entry", LedgerEntry(user_account(charge.user_id), entry_id, kind="refund_reversal",
                                         amount=amount, reason=reason, charge_id=charge.charge_id, created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.put("world", LedgerEntry(credits.WORLD_STARS, entry_id, kind="out", amount=amount, reason=reason,
                                         charge_id=charge.charge_id, user_id=int(charge.user_id), created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.update("charge", Charge(charge_key(charge.charge_id), "charge"), [Charge.status.set(ORDER_PAID)],
                       Charge.status == ORDER_REFUNDING)
    transaction.update("profile", Profile(charge.user_id), [Profile.credits.add(amount), Profile.updated_at.set(now)])
    failed = transaction.commit()
    if failed - {"entry", "world"}:
        raise credits.LedgerError(f"refund {charge.charge_id} could not be reversed: {sorted(failed)}")


def finish(charge: Charge) -> None:
    """Telegram refunded: the charge and its order are ``refunded`` (idempotent)."""
    now = utcnow()
    Charge(charge_key(charge.charge_id), "charge").update(
        actions=[Charge.status.set(ORDER_REFUNDED)], condition=Charge.status.is_in(ORDER_REFUNDING, ORDER_REFUNDED))
    Order(order_key(charge.order_id), "order").update(
        actions=[Order.status.set(ORDER_REFUNDED), Order.refunded_at.set(now)])


def reverse(charge: Charge) -> None:
    """Telegram did not refund a charge left ``refunding``: give the credits back."""
    _recredit(charge, int(charge.refund_attempts or 1))
