"""``/webapp``: the bot's way into the live dashboard (Mini App button and one-time browser link)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from depu.bot import features
from depu.bot.dispatch import load_features
from depu.bot.registry import Button, Incoming
from depu.config import get_settings
from depu.dashboard import sessions
from depu.telegram.client import inline_keyboard
from recording_chat import RecordingChat
from tests.dashboard_support import invoke


def run_webapp(user_id: int, chat_type: str = "private") -> tuple[str, list[list[Button]]]:
    chat = RecordingChat()
    incoming = Incoming(update_id=1, user_id=user_id, chat_id=user_id if chat_type == "private" else -100,
                        chat_type=chat_type, text="/webapp", command="webapp")
    load_features().commands["webapp"].handler(incoming, chat)
    assert len(chat.replies) == 1
    text, buttons = chat.replies[0]
    return text, buttons or []


def test_webapp_is_a_listed_feature_with_a_menu_entry():
    from depu.bot import dashboard_link

    assert dashboard_link.FEATURE in features.load()
    registry = load_features()
    command = registry.commands["webapp"]
    assert command.menu and command.description == "Open the live dashboard"
    assert "dashboard" not in registry.commands or registry.commands["dashboard"].handler is not command.handler


def test_private_chat_gets_a_mini_app_button_and_a_one_time_link(aws):
    text, buttons = run_webapp(31)
    web_app, browser = buttons[0][0], buttons[1][0]
    assert web_app.web_app_url == f"{get_settings().public_api_url}/dashboard/app/"
    assert inline_keyboard([[web_app]]) == {"inline_keyboard": [[{"text": web_app.text, "web_app": {"url": web_app.web_app_url}}]]}
    assert "once" in text and "5 minutes" in text

    link = urlsplit(browser.url)
    assert link.path == "/dashboard/login"
    code = parse_qs(link.query)["code"][0]
    redeemed = invoke("POST", "/dashboard/session", json_body={"login_code": code})
    assert redeemed["statusCode"] == 201 and redeemed["json"]["user"]["id"] == 31
    assert invoke("POST", "/dashboard/session", json_body={"login_code": code})["statusCode"] == 401


def test_login_link_is_stored_hashed_only(aws):
    _, buttons = run_webapp(32)
    code = parse_qs(urlsplit(buttons[-1][0].url).query)["code"][0]
    items = boto3.resource("dynamodb").Table(get_settings().tokens_table).scan()["Items"]
    assert [item["token_hash"] for item in items] == [sessions.hash_token(code)]
    assert items[0]["kind"] == "dashboard_login" and int(items[0]["user_id"]) == 32


def test_group_chat_gets_no_login_link(aws):
    """Asked for in a group, the login link goes to the user's private chat (tests/test_abuse_group_privacy.py
    has the attack and the deep link for a user without one)."""
    text, buttons = run_webapp(33, chat_type="supergroup")
    assert "private chat" in text and "login" not in text and "code=" not in text
    assert all(button.url and button.url.startswith("https://t.me/") for row in buttons for button in row)


def test_without_https_only_the_browser_link_is_offered(aws, monkeypatch):
    monkeypatch.setenv("PUBLIC_API_URL", "http://127.0.0.1:3000")
    get_settings.cache_clear()
    text, buttons = run_webapp(34)
    assert [button.web_app_url for row in buttons for button in row] == [None]
    assert buttons[0][0].url.startswith("http://127.0.0.1:3000/dashboard/login?code=")
    assert "https" in text


@pytest.mark.parametrize("kwargs", [{}, {"data": "a", "url": "https://x"}, {"url": "https://x", "web_app_url": "https://y"}])
def test_a_button_still_has_exactly_one_action(kwargs):
    with pytest.raises(ValueError):
        Button("x", **kwargs)
