"""A withdrawal request: checked, then debited in one transaction with its limits, then queued for the worker.

requested -> debited is one DynamoDB transaction: the payout item moves from ``requested``, the provider's
earnings go down (``earned >= amount``), the ledger gets ``payout#<id>`` and the day's counters (this provider
and everyone) go up within their limits. Concurrent withdrawals that together exceed the earnings or a limit
cannot all pass: each condition is checked against the item as it is when the transaction commits.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone

from depu import credits
from depu.config import get_settings
from depu.credits import LedgerEntry, _Transaction, provider_account
from depu.errors import UserError
from depu.payouts import addresses
from depu.payouts.models import DEBITED, FAILED, REQUESTED, DailyTotal, Payout, payout_key
from depu.profiles import Profile, utcnow


def token_units(amount_credits: int) -> int:
    """DUSD base units for an amount of credits (1 credit = 0.001 USD, 1 DUSD = 1 USD)."""
    decimals = get_settings().payout_token_decimals
    return int(amount_credits) * 10 ** decimals // 1000


def request(provider_id: int, amount: int) -> Payout:
    settings = get_settings()
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < settings.payout_min_credits:
        raise UserError(f"The smallest withdrawal is {settings.payout_min_credits:,} credits.")
    if amount > min(settings.payout_daily_limit_credits, settings.payout_daily_total_credits):
        raise UserError(f"That is over the daily withdrawal limit of "
                        f"{min(settings.payout_daily_limit_credits, settings.payout_daily_total_credits):,} credits.")
    if not settings.payout_token_address:
        raise UserError("Withdrawals are not available right now.")
    address = addresses.current(provider_id).active
    if address is None:
        raise UserError("Set your payout address first: <code>/payout_address 0x…</code>.")
    now = utcnow()
    payout_id = secrets.token_hex(8)
    payout = Payout(payout_key(payout_id), "payout", payout_id=payout_id, provider_id=int(provider_id),
                    credits=amount, token_amount=str(token_units(amount)), to_address=address, state=REQUESTED,
                    day=now.strftime("%Y-%m-%d"), created_at=now, updated_at=now)
    payout.save(condition=Payout.pk.does_not_exist())
    failed = _debit(payout)
    if failed:
        Payout(payout.pk, "payout").update(actions=[Payout.state.set(FAILED), Payout.error.set(failed),
                                                    Payout.updated_at.set(utcnow())],
                                           condition=Payout.state == REQUESTED)
        raise UserError(failed)
    payout.state = DEBITED
    enqueue(payout_id)
    return payout


def _debit(payout: Payout) -> str | None:
    """requested -> debited; None if it applied, else why not (in the provider's words)."""
    settings = get_settings()
    amount, now = int(payout.credits), utcnow()
    transaction = _Transaction()
    transaction.put("entry", LedgerEntry(provider_account(payout.provider_id), f"payout#{payout.payout_id}",
                                         kind="payout", amount=amount, payout_id=payout.payout_id,
                                         reason=f"Withdrawal to {payout.to_address}", created_at=now),
                    LedgerEntry.entry_id.does_not_exist())
    transaction.update("payout", Payout(payout.pk, "payout"), [Payout.state.set(DEBITED), Payout.updated_at.set(now)],
                       Payout.state == REQUESTED)
    transaction.update("earnings", Profile(payout.provider_id), [Profile.earned.add(-amount)],
                       Profile.earned >= amount)
    transaction.update("provider_day", DailyTotal(f"limit#{payout.day}#{int(payout.provider_id)}", "limit"),
                       [DailyTotal.credits.add(amount)],
                       DailyTotal.credits.does_not_exist() | (DailyTotal.credits <= settings.payout_daily_limit_credits - amount))
    transaction.update("all_day", DailyTotal(f"limit#{payout.day}#all", "limit"), [DailyTotal.credits.add(amount)],
                       DailyTotal.credits.does_not_exist() | (DailyTotal.credits <= settings.payout_daily_total_credits - amount))
    failed = transaction.commit()
    if not failed:
        return None
    if "earnings" in failed:
        return f"You have fewer than {amount:,} earned credits to withdraw."
    if "provider_day" in failed:
        return f"That is over your daily withdrawal limit of {settings.payout_daily_limit_credits:,} credits."
    if "all_day" in failed:
        return "Withdrawals have reached today's overall limit. Please try again tomorrow."
    raise credits.LedgerError(f"payout {payout.payout_id} debit failed: {sorted(failed)}")


def enqueue(payout_id: str) -> None:
    """Hand the payout to the worker (the worker's schedule also finds it if this message is lost)."""
    url = get_settings().payout_queue_url
    if not url:
        return
    import boto3

    boto3.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps({"payout_id": payout_id}))


def day_of(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d")
