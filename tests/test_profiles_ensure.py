"""Profiles against moto: created once with starter credits however often or concurrently /start arrives,
identity kept current, referrals recorded once, and the /profile section registry."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from moto_serializable import serialize_dynamodb


@pytest.fixture
def store(aws, monkeypatch):
    serialize_dynamodb(monkeypatch)
    from depu import credits, profiles

    return profiles, credits


def _starter_entries(credits, user_id: int) -> list:
    return [entry for entry in credits.history(user_id, 100) if entry.entry_id == credits.STARTER_ENTRY]


def test_first_call_creates_with_starter_credits_and_later_calls_refresh_identity(store):
    profiles, credits = store
    profile, created = profiles.ensure_profile(7, "Ada", "ada", "en")
    assert created is True
    assert (profile.user_id, profile.first_name, profile.username, profile.language_code) == (7, "Ada", "ada", "en")
    assert (profile.credits, profile.held, profile.earned) == (1000, 0, 0)
    assert profile.created_at is not None and profile.created_at.tzinfo is not None
    first_created = profile.created_at

    again, created = profiles.ensure_profile(7, "Ada L.", None, "de")
    assert created is False
    assert (again.first_name, again.username, again.language_code) == ("Ada L.", None, "de")
    assert again.created_at == first_created and again.updated_at >= first_created
    assert again.credits == 1000
    assert len(_starter_entries(credits, 7)) == 1
    assert profiles.get_profile(8) is None


def test_starter_amount_comes_from_settings(store, monkeypatch):
    profiles, credits = store
    from depu.config import get_settings

    monkeypatch.setenv("STARTER_CREDITS", "250")
    get_settings.cache_clear()
    assert profiles.ensure_profile(7, "Ada")[0].credits == 250
    monkeypatch.setenv("STARTER_CREDITS", "0")
    get_settings.cache_clear()
    assert profiles.ensure_profile(8, "Bob")[0].credits == 0
    assert _starter_entries(credits, 8) == []


def test_concurrent_starts_create_and_grant_once(store):
    profiles, credits = store
    barrier = threading.Barrier(8)

    def start(_: int) -> bool:
        barrier.wait()
        return profiles.ensure_profile(42, "Racer", "racer", "en")[1]

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(start, range(8)))

    assert created.count(True) == 1
    assert credits.balance(42) == credits.Balance(1000, 0, 0)
    assert len(_starter_entries(credits, 42)) == 1


def test_spent_starter_credits_are_not_granted_again(store):
    profiles, credits = store
    profiles.ensure_profile(7, "Ada")
    credits.hold(7, 1000, "job-1")
    credits.settle(7, "job-1", 1000, provider_id=None, job_id="job-1")
    profile, created = profiles.ensure_profile(7, "Ada")
    assert (created, profile.credits) == (False, 0)


def test_record_start_counts_and_keeps_the_first_referral(store):
    profiles, _ = store
    profiles.ensure_profile(7, "Ada")
    profiles.record_start(7, "ref_first")
    profiles.record_start(7, "ref_second")
    profiles.record_start(7)
    profile = profiles.get_profile(7)
    assert (profile.starts, profile.referred_by) == (3, "ref_first")


def test_sections_render_in_order_with_empty_and_failing_ones_contained():
    from depu.bot.registry import Feature, Registry
    from depu.bot.sections import Section, render_sections

    def broken(user_id: int) -> str:
        raise RuntimeError("feature bug")

    sections = [Section(20, "Forks", lambda user_id: ""), Section(10, "Rentals", lambda user_id: f"2 jobs for {user_id}"),
                Section(30, "Analytics", broken)]
    assert render_sections(5, sections) == [
        ("Rentals", "2 jobs for 5"),
        ("Forks", "Nothing yet."),
        ("Analytics", "Unavailable right now."),
    ]
    registry = Registry()
    registry.install(Feature("one", sections=tuple(sections)))
    with pytest.raises(ValueError):
        registry.install(Feature("two", sections=(Section(1, "Rentals", lambda user_id: "another"),)))
