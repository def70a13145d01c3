"""/start, /help, /profile and the onboarding menu, driven with ``Incoming`` and a recording Chat against moto."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from depu.bot.registry import Command, Incoming
from moto_serializable import serialize_dynamodb
from recording_chat import RecordingChat, to_plain


def new_chat() -> RecordingChat:
    """Basics only replies (never blank) and answers callbacks: an edit, photo or document fails the test."""
    return RecordingChat(require_text=True, allow_edits=False, allow_photos=False, allow_documents=False)


def message(user_id: int = 11, command: str | None = None, args: str = "", **extra) -> Incoming:
    text = f"/{command} {args}".strip() if command else extra.pop("text", "")
    fields = dict(first_name="Ada", username="ada", language_code="en", chat_type="private")
    fields.update(extra)
    return Incoming(update_id=1, user_id=user_id, chat_id=user_id, text=text, command=command, args=args,
                    message_id=5, **fields)


def press(data: str, user_id: int = 11, chat_type: str = "private") -> Incoming:
    return Incoming(update_id=2, user_id=user_id, chat_id=user_id, chat_type=chat_type, callback_id="cb-1",
                    callback_data=data, message_id=9, first_name="Ada")


def run(incoming: Incoming, chat: RecordingChat) -> str:
    """Through the dispatcher (with every feature installed), as the webhook runs it."""
    from depu.bot.dispatch import dispatch

    return dispatch(incoming, chat, correlation_id="test")


def installed():
    """The registry with every feature installed (what /help and the menu buttons read)."""
    from depu.bot.dispatch import load_features

    return load_features()


@pytest.fixture
def bot(aws, monkeypatch):
    serialize_dynamodb(monkeypatch)
    from depu.bot import basics

    return basics


def test_start_creates_profile_grants_once_and_shows_the_menu(bot):
    from depu import credits

    chat = new_chat()
    bot.start(message(command="start"), chat)
    assert "Welcome to DePU, Ada!" in chat.text
    assert "You received 1,000 credits ($1.00)" in chat.text
    for feature in ("Rent a GPU", "Shadow forks", "Analytics"):
        assert feature in chat.text
    assert chat.button_data == ["menu:1:rent", "menu:1:fork", "menu:1:analytics", "menu:1:profile"]

    bot.start(message(command="start"), chat)
    assert "Welcome back to DePU" in chat.text and "You received" not in chat.text
    assert "Your balance: 1,000 credits" in chat.text
    assert credits.balance(11) == credits.Balance(1000, 0, 0)


def test_concurrent_starts_grant_once(bot):
    from depu import credits

    barrier = threading.Barrier(6)
    chats = [new_chat() for _ in range(6)]

    def start(chat: RecordingChat) -> None:
        barrier.wait()
        bot.start(message(command="start"), chat)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(start, chats))

    assert sum("You received" in chat.text for chat in chats) == 1
    assert credits.balance(11) == credits.Balance(1000, 0, 0)


def test_user_names_are_escaped(bot):
    chat = new_chat()
    bot.start(message(command="start", first_name="<b>Eve</b> & co"), chat)
    assert "&lt;b&gt;Eve&lt;/b&gt; &amp; co" in chat.text and "<b>Eve</b>" not in chat.text
    bot.profile_command(message(command="profile", first_name="<b>Eve</b> & co", username="e<v>e"), chat)
    assert "&lt;b&gt;Eve&lt;/b&gt; &amp; co (@e&lt;v&gt;e)" in chat.text  # identity refreshed from Telegram
    assert "Available: 1,000 credits" in chat.text


def test_referral_payload_is_recorded_and_unknown_payload_ignored_politely(bot):
    from depu.profiles import get_profile

    chat = new_chat()
    bot.start(message(command="start", args="ref_friend42"), chat)
    assert get_profile(11).referred_by == "ref_friend42"
    assert "didn't recognise" not in chat.text

    bot.start(message(user_id=12, command="start", args="<script>"), chat)
    assert "didn't recognise the link" in chat.text and "<script>" not in chat.text
    assert get_profile(12).referred_by is None and get_profile(12).credits == 1000

    bot.start(message(user_id=13, command="start", args="ref_13"), chat)
    assert "your own invite link" in chat.text
    assert get_profile(13).referred_by is None


def test_help_lists_every_menu_command(bot, monkeypatch):
    registry = installed()
    monkeypatch.setitem(registry.commands, "zz_test", Command("zz_test", "A <test> command", lambda i, c: None))
    monkeypatch.setitem(registry.commands, "hidden", Command("hidden", "not listed", lambda i, c: None, menu=False))
    chat = new_chat()
    bot.help_command(message(command="help"), chat)
    assert "/start: " in chat.text and "/profile: " in chat.text and "/help: " in chat.text
    assert "/zz_test: A &lt;test&gt; command" in chat.text
    assert "/hidden" not in chat.text


def test_profile_shows_identity_balances_and_sections(bot, monkeypatch):
    from depu import credits
    from depu.bot.registry import registry
    from depu.bot.sections import Section

    # a stand-in for the rental feature's section, next to this feature's own
    monkeypatch.setattr(registry, "sections", [Section(10, "GPU rentals", lambda user_id: "No rentals yet."),
                                               *bot.FEATURE.sections])
    chat = new_chat()
    bot.start(message(command="start"), chat)
    credits.hold(11, 300, "job-7")
    credits.hold(11, 100, "job-8")
    credits.settle(11, "job-7", 120, provider_id=99, job_id="job-7")

    bot.profile_command(message(command="profile"), chat)
    text = chat.plain
    assert "Name: Ada (@ada)" in text and "Telegram id: 11" in text
    assert "Available: 780 credits ($0.78)" in text
    assert "Held for running jobs: 100 credits ($0.10)" in text
    assert "Earned as a provider: 0 credits ($0.00)" in text
    assert text.index("GPU rentals\nNo rentals yet.") < text.index("Recent credit activity")
    assert "charged 120 job job-7" in text and "+1,000 Welcome credits" in text


def test_profile_without_start_creates_the_profile(bot):
    chat = new_chat()
    bot.profile_command(message(user_id=31, command="profile"), chat)
    assert "Available: 1,000 credits ($1.00)" in chat.text


def test_menu_button_opens_the_feature_command(bot, monkeypatch):
    registry = installed()
    seen: list[Incoming] = []
    for name in ("rent_gpu", "rent"):
        monkeypatch.delitem(registry.commands, name, raising=False)
    monkeypatch.setitem(registry.commands, "rent_gpu",
                        Command("rent_gpu", "Rent a GPU", lambda incoming, chat: seen.append(incoming)))
    chat = new_chat()
    run(press("menu:1:rent"), chat)
    assert len(seen) == 1
    assert (seen[0].command, seen[0].callback_id, seen[0].user_id, seen[0].chat_id) == ("rent_gpu", None, 11, 11)
    assert chat.answers == [(None, False)]


def test_menu_button_profile_and_coming_soon(bot, monkeypatch):
    registry = installed()
    for name in bot.MENU_TARGETS["fork"]:
        monkeypatch.delitem(registry.commands, name, raising=False)
    chat = new_chat()
    run(press("menu:1:fork"), chat)
    assert "coming soon" in chat.text and chat.answers[-1][0] == "Shadow forks: coming soon."

    run(press("menu:1:profile"), chat)
    assert "Your profile" in chat.plain and "Available: 1,000 credits" in chat.plain


@pytest.mark.parametrize("data", ["menu:0:rent", "menu:1:nope", "menu:1", "menu"])
def test_menu_button_refuses_stale_or_unknown_buttons(data):
    chat = new_chat()
    run(press(data), chat)  # refused before any storage is touched
    assert chat.replies == []
    assert len(chat.answers) == 1 and chat.answers[0][1] is True and "/start" in chat.answers[0][0]


def test_format_credits():
    from depu.bot.basics import format_credits

    assert format_credits(1) == "1 credit ($0.001)"
    assert format_credits(1250) == "1,250 credits ($1.25)"
    assert format_credits(0) == "0 credits ($0.00)"


# ---------------------------------------------------------------- through the real webhook function
@pytest.fixture
def webhook(aws, monkeypatch):
    """The telegram_webhook Lambda, talking to a fake Bot API."""
    from conftest import TEST_BOT_TOKEN
    from depu.bot import dispatch
    from depu.config import get_settings
    from depu.telegram.client import bot_api
    from telegram_harness import bot_api_double
    from telegram_harness import load_function

    serialize_dynamodb(monkeypatch)
    telegram = bot_api_double(TEST_BOT_TOKEN)
    monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
    monkeypatch.setattr(dispatch, "_loaded", False)
    get_settings.cache_clear()
    bot_api.cache_clear()
    try:
        yield load_function("telegram_webhook"), telegram
    finally:
        telegram.stop()
        bot_api.cache_clear()
        get_settings.cache_clear()


def _post(function, update: dict) -> dict:
    import json

    from conftest import TEST_WEBHOOK_SECRET
    from telegram_harness import FakeLambdaContext, api_event

    event = api_event("/telegram/webhook", json.dumps(update), {"X-Telegram-Bot-Api-Secret-Token": TEST_WEBHOOK_SECRET})
    return function.lambda_handler(event, FakeLambdaContext())


def test_start_and_menu_through_the_webhook(webhook):
    from depu import credits
    from depu.profiles import get_profile

    function, telegram = webhook
    sender = {"id": 601, "is_bot": False, "first_name": "Grace", "username": "grace", "language_code": "en"}
    chat = {"id": 601, "type": "private"}

    def start(update_id: int, text: str) -> None:
        update = {"update_id": update_id, "message": {"message_id": update_id, "date": 1764000000, "chat": chat,
                                                       "from": sender, "text": text}}
        assert _post(function, update)["statusCode"] == 200

    start(1, "/start ref_launch")
    start(1, "/start ref_launch")  # Telegram redelivers the same update
    start(2, "/start")
    sent = [call.params for call in telegram.calls_of("sendMessage")]
    assert len(sent) == 2
    assert "Welcome to DePU, Grace!" in sent[0]["text"] and "Welcome back" in sent[1]["text"]
    assert "menu:1:rent" in str(sent[0]["reply_markup"])
    assert credits.balance(601) == credits.Balance(1000, 0, 0)
    assert (get_profile(601).referred_by, get_profile(601).starts) == ("ref_launch", 2)

    press_update = {"update_id": 3, "callback_query": {"id": "cbq-3", "from": sender, "data": "menu:1:profile",
                                                       "chat_instance": "1",
                                                       "message": {"message_id": 2, "date": 1764000000, "chat": chat}}}
    assert _post(function, press_update)["statusCode"] == 200
    assert "Your profile" in to_plain(telegram.calls_of("sendMessage")[-1].params["text"])
    assert [call.params["callback_query_id"] for call in telegram.calls_of("answerCallbackQuery")] == ["cbq-3"]


def test_profile_is_never_shown_in_a_group(bot):
    chat = new_chat()
    bot.start(message(command="start"), chat)
    in_group = message(command="profile", chat_type="supergroup")
    bot.profile_command(in_group, chat)
    assert "private chat" in chat.plain and "credits ($" not in chat.plain and "Telegram id" not in chat.plain
    run(press("menu:1:profile", chat_type="group"), chat)
    assert "private chat" in chat.text and "Available:" not in chat.text
