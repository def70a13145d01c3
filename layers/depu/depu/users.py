"""The UsersTable item: a DePU user's identity, balances and open conversation, and how to read it.

Why its own module: the ledger (depu.credits) changes the balance fields in the same transaction as its
entries and so needs the model, while creating a profile (depu.profiles) opens its ledger account; with the
model here, both import it and neither imports the other's importer.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pynamodb.attributes import (
    JSONAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.models import Model

from depu.config import get_settings


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ConversationState(MapAttribute):
    """Where a user is in a multi-step flow (see ``depu.conversation``); ``version`` guards concurrent steps."""

    flow = UnicodeAttribute()
    step = UnicodeAttribute()
    data = JSONAttribute(null=True)
    expires_at = NumberAttribute()  # epoch seconds
    version = NumberAttribute(default=0)


class Profile(Model):
    """A user. Amounts are integer credits (1 credit = 0.001 USD)."""

    class Meta:
        table_name = get_settings().users_table

    user_id = NumberAttribute(hash_key=True)
    first_name = UnicodeAttribute(null=True)
    username = UnicodeAttribute(null=True)
    language_code = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    credits = NumberAttribute(default=0)  # available to spend
    held = NumberAttribute(default=0)  # reserved for running jobs
    earned = NumberAttribute(default=0)  # earned as a GPU provider
    starts = NumberAttribute(default=0)  # how many times /start was sent
    referred_by = UnicodeAttribute(null=True)  # the first deep-link referral payload, e.g. "ref_42"
    conversation = ConversationState(null=True)


def get_profile(user_id: int) -> Profile | None:
    """The user's profile, read consistently (balances just changed must show), or None if never started."""
    try:
        return Profile.get(user_id, consistent_read=True)
    except Profile.DoesNotExist:
        return None
