"""PayoutsTable items: payouts, the providers' payout addresses, the treasury's nonce, daily limit counters."""
from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from depu.config import get_settings

# the payout states, in order; FAILED ends with the credits back with the provider
REQUESTED, DEBITED, SIGNED, SENT, CONFIRMED, FAILED = "requested", "debited", "signed", "sent", "confirmed", "failed"
IN_FLIGHT = (DEBITED, SIGNED, SENT)  # debited and not yet settled either way
FINAL = (CONFIRMED, FAILED)


class Payout(Model):
    class Meta:
        table_name = get_settings().payouts_table

    pk = UnicodeAttribute(hash_key=True)  # "payout#<id>"
    sk = UnicodeAttribute(range_key=True, default="payout")
    payout_id = UnicodeAttribute()
    provider_id = NumberAttribute()
    credits = NumberAttribute()
    token_amount = UnicodeAttribute()  # base units as a decimal string (can exceed 2**63)
    to_address = UnicodeAttribute()
    state = UnicodeAttribute(default=REQUESTED)
    treasury = UnicodeAttribute(null=True)
    nonce = NumberAttribute(null=True)
    raw_tx = UnicodeAttribute(null=True)  # the signed transaction, hex: what every (re)send sends
    tx_hash = UnicodeAttribute(null=True)
    block_number = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    day = UnicodeAttribute()  # UTC date it counts against the daily limits
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class Payee(Model):
    """Where a provider's payouts go. A change waits ``PAYOUT_ADDRESS_DELAY_SECONDS`` (24 h) before use."""

    class Meta:
        table_name = get_settings().payouts_table

    pk = UnicodeAttribute(hash_key=True)  # "payee#<provider id>"
    sk = UnicodeAttribute(range_key=True, default="payee")
    address = UnicodeAttribute(null=True)
    pending_address = UnicodeAttribute(null=True)
    pending_from = NumberAttribute(null=True)  # epoch seconds when pending_address takes over


class NonceRecord(Model):
    """The treasury's next nonce. Taken only together with binding it to one payout (one transaction), so a
    nonce is never given twice nor left unused."""

    class Meta:
        table_name = get_settings().payouts_table

    pk = UnicodeAttribute(hash_key=True)  # "nonce#<treasury address>"
    sk = UnicodeAttribute(range_key=True, default="nonce")
    next_nonce = NumberAttribute(default=0)


class DailyTotal(Model):
    class Meta:
        table_name = get_settings().payouts_table

    pk = UnicodeAttribute(hash_key=True)  # "limit#<day>#<provider id | all>"
    sk = UnicodeAttribute(range_key=True, default="limit")
    credits = NumberAttribute(default=0)


def payout_key(payout_id: str) -> str:
    return f"payout#{payout_id}"


def get_payout(payout_id: str) -> Payout | None:
    try:
        return Payout.get(payout_key(payout_id), "payout", consistent_read=True)
    except Payout.DoesNotExist:
        return None


def payouts_of(provider_id: int) -> list[Payout]:
    found = Payout.scan((Payout.sk == "payout") & (Payout.provider_id == int(provider_id)), consistent_read=True)
    return sorted(found, key=lambda payout: payout.created_at, reverse=True)


def unfinished() -> list[Payout]:
    return [p for p in Payout.scan(Payout.sk == "payout", consistent_read=True) if p.state not in FINAL]
