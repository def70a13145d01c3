"""A DePU user's profile: who they are, their credit balance and their open conversation.

One UsersTable item per Telegram user. The balance fields (``credits``, ``held``, ``earned``) are only ever
changed by ``depu.credits`` in the same transaction as the ledger entry that explains the change, so the
profile and the ledger cannot disagree. What /profile shows is the bot's (``depu.bot.basics``,
``depu.bot.sections``); this module keeps the data.
"""
from __future__ import annotations

import logging

from depu import credits
from depu.config import get_settings
from depu.users import ConversationState, Profile, get_profile, utcnow

__all__ = ["ConversationState", "Profile", "get_profile", "utcnow"]  # the model lives in depu.users

log = logging.getLogger(__name__)


def ensure_profile(
    user_id: int,
    first_name: str = "",
    username: str | None = None,
    language_code: str | None = None,
) -> tuple[Profile, bool]:
    """Create the profile if it does not exist yet, granting the starter credits exactly once.

    Creation is one transaction: a put conditioned on ``attribute_not_exists(user_id)`` together with the
    starter ledger entry, so a retried or concurrent /start creates (and grants) once. When the profile
    already exists its Telegram identity is refreshed; the starter grant is re-offered idempotently so a
    profile row that was created some other way (a provider credited before ever sending /start) still
    gets it once. Returns ``(profile, created)``.
    """
    now = utcnow()
    starter = max(0, get_settings().starter_credits)
    created = credits.open_account(
        Profile(
            user_id,
            first_name=first_name or None,
            username=username or None,
            language_code=language_code or None,
            created_at=now,
            updated_at=now,
            credits=0,
            held=0,
            earned=0,
            starts=0,
        ),
        starter,
    )
    if not created:
        refresh_identity(user_id, first_name, username, language_code)
        if starter:
            credits.grant(user_id, starter, credits.STARTER_ENTRY, "Welcome credits")
    profile = get_profile(user_id)
    assert profile is not None  # created or updated above
    return profile, created


def refresh_identity(
    user_id: int, first_name: str = "", username: str | None = None, language_code: str | None = None
) -> Profile:
    """Store the name, @username and language Telegram reports now (users rename themselves)."""
    now = utcnow()
    profile = Profile(user_id)
    profile.update(
        actions=[
            Profile.first_name.set(first_name) if first_name else Profile.first_name.remove(),
            Profile.username.set(username) if username else Profile.username.remove(),
            Profile.language_code.set(language_code) if language_code else Profile.language_code.remove(),
            Profile.updated_at.set(now),
            Profile.created_at.set(Profile.created_at | now),
        ]
    )
    return profile


def identity_changed(profile: Profile, first_name: str, username: str | None, language_code: str | None) -> bool:
    return (profile.first_name, profile.username, profile.language_code) != (
        first_name or None,
        username or None,
        language_code or None,
    )


def record_start(user_id: int, referral: str | None = None) -> None:
    """Count a /start and keep the first referral payload seen (later ones never overwrite it)."""
    actions = [Profile.starts.add(1)]
    if referral:
        actions.append(Profile.referred_by.set(Profile.referred_by | referral))
    Profile(user_id).update(actions=actions, condition=Profile.user_id.exists())
