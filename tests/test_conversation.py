"""Conversation state on the profile (moto) and the versioned callback-data encoding."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from depu import conversation
from moto_serializable import serialize_dynamodb


@pytest.fixture
def user(aws, monkeypatch):
    serialize_dynamodb(monkeypatch)
    from depu import profiles

    profiles.ensure_profile(5, "Flo")
    return 5


def test_start_load_advance_clear(user):
    assert conversation.load(user) is None
    started = conversation.start(user, "rent", "await_script", {"gpu": "h100"})
    assert conversation.load(user) == started

    moved = conversation.advance(user, "await_confirm", {"script": "train.py"}, flow="rent")
    assert (moved.flow, moved.step, moved.data) == ("rent", "await_confirm", {"gpu": "h100", "script": "train.py"})
    assert moved.version == started.version + 1
    assert conversation.load(user) == moved

    conversation.clear(user)
    assert conversation.load(user) is None


def test_starting_another_flow_replaces_the_old_one(user):
    conversation.start(user, "rent", "await_script", {"gpu": "h100"})
    conversation.start(user, "fork", "await_block", {})
    current = conversation.load(user)
    assert (current.flow, current.step, current.data) == ("fork", "await_block", {})
    with pytest.raises(conversation.NoConversation):
        conversation.advance(user, "await_confirm", flow="rent")
    conversation.clear(user, flow="rent")  # finishing the old flow must not wipe the new one
    assert conversation.load(user).flow == "fork"
    conversation.clear(user, flow="fork")
    assert conversation.load(user) is None


def test_expired_flow_is_gone(user):
    conversation.start(user, "rent", "await_script", ttl_seconds=-1)
    assert conversation.load(user) is None
    assert conversation.load(user, include_expired=True).step == "await_script"
    with pytest.raises(conversation.NoConversation):
        conversation.advance(user, "await_confirm")


def test_start_needs_a_profile(aws):
    with pytest.raises(conversation.NoConversation):
        conversation.start(999, "rent", "await_script")
    from depu.profiles import get_profile

    assert get_profile(999) is None  # no half-made profile row appeared
    conversation.clear(999)  # nothing to clear: quiet


def test_two_racing_steps_advance_once(user, monkeypatch):
    conversation.start(user, "rent", "await_confirm", {"n": 0})
    real_load = conversation.load
    both_read = threading.Barrier(2)

    def load_then_wait(user_id, **kwargs):
        snapshot = real_load(user_id, **kwargs)
        both_read.wait(timeout=10)  # both updates read the same version before either writes
        return snapshot

    monkeypatch.setattr(conversation, "load", load_then_wait)

    def press(n: int):
        try:
            return conversation.advance(user, "submitted", {"n": n}, flow="rent")
        except conversation.ConversationChanged:
            return None

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(press, [1, 2]))

    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    assert real_load(user) == winners[0]


@given(
    prefix=st.text(st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), min_size=1, max_size=8),
    parts=st.lists(
        st.text(st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), max_size=10), max_size=4
    ),
)
def test_callback_data_round_trips_or_refuses(prefix, parts):
    try:
        data = conversation.encode(prefix, *parts)
    except ValueError:
        assert len(":".join([prefix, "1", *parts]).encode()) > 64
        return
    assert len(data.encode()) <= 64
    assert conversation.decode(data) == (prefix, parts)


def test_callback_data_limits():
    assert conversation.encode("menu", "rent") == "menu:1:rent"
    assert conversation.decode("menu:1:rent") == ("menu", ["rent"])
    assert conversation.encode("job", 42, "cancel") == "job:1:42:cancel"
    with pytest.raises(ValueError):
        conversation.encode("job", "a:b")
    with pytest.raises(ValueError):
        conversation.encode("bad:prefix")
    with pytest.raises(ValueError):
        conversation.encode("job", "x" * 60)
    with pytest.raises(conversation.StaleCallback):
        conversation.decode("menu:0:rent")  # a button from an older release
    for malformed in ("", "menu", ":1:x", "x" * 65):
        with pytest.raises(conversation.CallbackDataError):
            conversation.decode(malformed)
