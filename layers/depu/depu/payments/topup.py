"""Credits for a ``successful_payment``: granted once per ``telegram_payment_charge_id``.

One DynamoDB transaction writes the charge item (``attribute_not_exists``), marks the order paid, puts the
user's ledger entry ``topup#<charge id>`` and its counterpart in the outside world's Stars account, and adds
the credits to the profile. A redelivered update, a retried Lambda or a replayed charge id finds the charge
item and changes nothing. The referral reward (the referrer's share of the referee's first top-up) is its own
idempotent step afterwards, keyed by the referee, so it is paid once however many top-ups follow.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from depu import credits
from depu.config import get_settings
from depu.credits import LedgerEntry, _Transaction, user_account
from depu.payments.models import ORDER_PAID, Charge, Order, charge_key, get_charge, get_order, order_key
from depu.profiles import Profile, get_profile, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuccessfulPayment:
    user_id: int
    chat_id: int
    currency: str
    total_amount: int
    payload: str  # the order id
    charge_id: str  # telegram_payment_charge_id


@dataclass(frozen=True)
class TopUp:
    credited: bool  # False: this charge was already applied (a redelivery) or cannot be matched
    credits: int
    charge_id: str
    order_id: str | None
    referral_reward: int = 0


def topup_entry(charge_id: str) -> str:
    return f"topup#{charge_id}"


def apply(payment: SuccessfulPayment) -> TopUp:
    """Grant the credits of one payment, once. Unknown orders are logged and not credited (the reconciliation
    alarm reports the Stars received for them, for a person to refund)."""
    order = get_order(payment.payload)
    if payment.currency != "XTR":
        log.error("payment in a currency DePU never invoices", extra={"currency": payment.currency[:8]})
        return TopUp(False, 0, payment.charge_id, None)
    if order is None or int(order.user_id) != payment.user_id:
        log.error("payment for an unknown order", extra={"order_id": payment.payload[:64]})
        return TopUp(False, 0, payment.charge_id, None)
    # the Stars actually paid decide the credits, at the order's rate (a pre-checkout only passes the exact amount)
    amount = payment.total_amount * int(order.credits) // max(1, int(order.stars))
    credited_now = get_charge(payment.charge_id) is None and _credit(payment, order, amount)
    charge = get_charge(payment.charge_id)
    if charge is None or charge.order_id != order.order_id or int(charge.user_id) != payment.user_id:
        log.error("charge id replayed for another order", extra={"order_id": order.order_id})
        return TopUp(False, 0, payment.charge_id, order.order_id)
    reward = reward_referrer(payment.user_id, payment.charge_id, int(charge.credits))
    return TopUp(credited_now, int(charge.credits), payment.charge_id, order.order_id, reward)


def _credit(payment: SuccessfulPayment, order: Order, amount: int) -> bool:
    now = utcnow()
    charge = Charge(charge_key(payment.charge_id), "charge", charge_id=payment.charge_id, order_id=order.order_id,
                    user_id=payment.user_id, stars=payment.total_amount, credits=amount, created_at=now)
    reason = f"Top-up: {payment.total_amount} Stars (charge {payment.charge_id})"
    transaction = _Transaction()
    transaction.put("charge", charge, Charge.pk.does_not_exist())
    transaction.put("entry", LedgerEntry(user_account(payment.user_id), topup_entry(payment.charge_id), kind="topup",
                                         amount=amount, reason=reason, charge_id=payment.charge_id, created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.put("world", LedgerEntry(credits.WORLD_STARS, topup_entry(payment.charge_id), kind="out",
                                         amount=amount, reason=reason, charge_id=payment.charge_id,
                                         user_id=payment.user_id, created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.update("order", Order(order_key(order.order_id), "order"),
                       [Order.status.set(ORDER_PAID), Order.charge_id.set(Order.charge_id | payment.charge_id),
                        Order.paid_at.set(now)], Order.user_id == payment.user_id)
    transaction.update("profile", Profile(payment.user_id),
                       [Profile.credits.add(amount), Profile.updated_at.set(now)], Profile.user_id.exists())
    failed = transaction.commit()
    if not failed:
        return True
    if failed & {"charge", "entry", "world"}:
        return False  # applied before: a redelivery or a replayed charge id
    raise credits.LedgerError(f"top-up {payment.charge_id} could not be applied: {sorted(failed)}")


def reward_referrer(referee: int, charge_id: str, topup_credits: int) -> int:
    """Give the referrer ``REFERRAL_SHARE_PCT`` percent of the referee's first top-up, once (by referee)."""
    share = get_settings().referral_share_pct
    profile = get_profile(referee)
    referrer = _referrer_id(profile.referred_by if profile else None)
    reward = topup_credits * share // 100
    if referrer is None or referrer == referee or reward <= 0 or get_profile(referrer) is None:
        return 0
    now = utcnow()
    entry_id = f"referral#{int(referee)}"
    reason = f"Referral reward: your invitee's first top-up (charge {charge_id})"
    transaction = _Transaction()
    transaction.put("entry", LedgerEntry(user_account(referrer), entry_id, kind="referral", amount=reward,
                                         reason=reason, charge_id=charge_id, user_id=int(referee), created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.put("treasury", LedgerEntry(credits.TREASURY, entry_id, kind="out", amount=reward, reason=reason,
                                            charge_id=charge_id, user_id=int(referrer), created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.update("profile", Profile(referrer), [Profile.credits.add(reward), Profile.updated_at.set(now)],
                       Profile.user_id.exists())
    failed = transaction.commit()
    return 0 if failed else reward


def _referrer_id(payload: str | None) -> int | None:
    """``ref_<user id>`` deep links (depu.bot.basics records the first one on the profile)."""
    if not payload or not payload.startswith("ref_"):
        return None
    digits = payload[4:]
    return int(digits) if digits.isdigit() and len(digits) <= 15 else None
