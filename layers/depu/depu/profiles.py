"""A DePU user's profile: who they are, their credit balance and their open conversation.

One UsersTable item per Telegram user. The balance fields (``credits``, ``held``, ``earned``) are only ever
changed by ``depu.credits`` in the same transaction as the ledger entry that explains the change, so the
profile and the ledger cannot disagree. Other features add their own lines to /profile through
``@profile_section`` instead of this module knowing about rentals, forks or analytics.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

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


# --- /profile sections ---------------------------------------------------------------------------------

SectionRenderer = Callable[[int], str]


@dataclass(frozen=True)
class ProfileSection:
    order: int
    title: str
    render: SectionRenderer


_sections: dict[str, ProfileSection] = {}


def profile_section(order: int, title: str) -> Callable[[SectionRenderer], SectionRenderer]:
    """Register ``fn(user_id) -> str`` (HTML) as a /profile section, shown in ascending ``order``.

    The renderer owns its empty state ("No rentals yet."); an empty string is shown as "Nothing yet."."""

    def register(render: SectionRenderer) -> SectionRenderer:
        if title in _sections and _sections[title].render is not render:
            raise ValueError(f"profile section {title!r} registered twice")
        _sections[title] = ProfileSection(order, title, render)
        return render

    return register


def profile_sections() -> list[ProfileSection]:
    return sorted(_sections.values(), key=lambda section: (section.order, section.title))


def render_sections(user_id: int) -> list[tuple[str, str]]:
    """Every section's ``(title, html)``. A failing section shows that it is unavailable instead of
    breaking the whole /profile."""
    rendered: list[tuple[str, str]] = []
    for section in profile_sections():
        try:
            body = section.render(user_id).strip() or "Nothing yet."
        except Exception:  # one feature's bug must not hide the balance
            log.exception("profile section %s failed", section.title)
            body = "Unavailable right now."
        rendered.append((section.title, body))
    return rendered
