"""/api_keys in the chat (and its /profile section): make a key with chosen scopes and lifetime, shown once,
usable at once against the public API; list, revoke; a double tap makes one key; groups see no key."""
from __future__ import annotations

import re

from depu.apikeys import keys
from depu.bot.dispatch import dispatch
from depu.bot.registry import Incoming
from depu.bot.sections import render_sections
from recording_chat import RecordingChat
from tests.public_api_support import call

OWNER, STRANGER = 5353, 6363
KEY = re.compile(r"dpk_[A-Za-z0-9_-]{40,}")


def send(user: int, text: str, command: str, chat_type: str = "private") -> RecordingChat:
    chat = RecordingChat(allow_photos=False, allow_documents=False)
    incoming = Incoming(update_id=1, user_id=user, chat_id=user if chat_type == "private" else -100, chat_type=chat_type,
                        text=text, command=command, args="", message_id=3, first_name="Ada")
    dispatch(incoming, chat, correlation_id="test")
    return chat


def press(user: int, data: str) -> RecordingChat:
    chat = RecordingChat(allow_photos=False, allow_documents=False)
    incoming = Incoming(update_id=2, user_id=user, chat_id=user, chat_type="private", callback_id="cb",
                        callback_data=data, message_id=4, first_name="Ada")
    dispatch(incoming, chat, correlation_id="test")
    return chat


def test_make_a_key_with_chosen_scopes_use_it_list_it_and_revoke_it(aws):
    menu = send(OWNER, "/api_keys", "api_keys")
    assert "You have none yet" in menu.plain and menu.button_data == ["ak:1:new"]
    scopes = press(OWNER, "ak:1:new")
    assert "ak:1:t:read-only" in scopes.button_data and "ak:1:days:30" in scopes.button_data
    assert "✅ analytics" in " ".join(scopes.button_labels)
    toggled = press(OWNER, "ak:1:t:analytics")  # off
    assert "▫️ analytics and exports" in toggled.button_labels and "✅ GPU jobs" in toggled.button_labels
    press(OWNER, "ak:1:t:read-only")  # on
    made = press(OWNER, "ak:1:days:30")
    [key] = KEY.findall(made.plain)
    assert "this once only" in made.plain
    press(OWNER, "ak:1:days:30")  # a double tap makes no second key
    [info] = keys.list_keys(OWNER)
    assert info.scopes == ["jobs", "forks", "read-only"] and info.expires_at - info.created_at == 30 * 86400

    # the key works at once against the public API, within its scopes
    assert call("GET", "/v1/jobs", key=key)["statusCode"] == 200
    assert call("GET", "/v1/analytics/chain", key=key)["statusCode"] == 403
    assert call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "benchmark"})["statusCode"] == 403

    listed = send(OWNER, "/api_keys", "api_keys")
    assert info.hint in listed.plain and key not in listed.plain and "last used" in listed.plain
    assert f"ak:1:rv:{info.key_id}" in listed.button_data
    [(_, section)] = [s for s in render_sections(OWNER) if s[0] == "API keys"]
    assert "1 (" in section and key not in section

    # another user's press of the revoke button does nothing
    assert any("already gone" in (text or "") for text, _ in press(STRANGER, f"ak:1:rv:{info.key_id}").answers)
    assert call("GET", "/v1/jobs", key=key)["statusCode"] == 200
    revoked = press(OWNER, f"ak:1:rv:{info.key_id}")
    assert "Revoked" in revoked.plain and keys.list_keys(OWNER) == []
    assert call("GET", "/v1/jobs", key=key)["statusCode"] == 401


def test_in_a_group_no_key_is_listed_or_made(aws):
    keys.create(OWNER, "laptop")
    group = send(OWNER, "/api_keys", "api_keys", chat_type="group")
    assert "private chat" in group.plain and "laptop" not in group.plain and not group.button_data
    assert len(keys.list_keys(OWNER)) == 1


def test_a_forged_scope_or_lifetime_makes_no_key(aws):
    send(OWNER, "/api_keys", "api_keys")
    press(OWNER, "ak:1:new")
    press(OWNER, "ak:1:t:admin")
    press(OWNER, "ak:1:days:9999")
    assert keys.list_keys(OWNER) == []
    for scope in ("jobs", "forks", "analytics"):  # every area off: no key can be made
        press(OWNER, f"ak:1:t:{scope}")
    refused = press(OWNER, "ak:1:days:90")
    assert keys.list_keys(OWNER) == [] and any("at least one" in (text or "") for text, _ in refused.answers)
