"""BotApi against a real HTTP server on 127.0.0.1 speaking the Bot API's JSON (the Telegram stand-in, local/telegram_standin)."""
from __future__ import annotations

import json
import re
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depu.bot.registry import Button
from depu.telegram.client import BotApi, TelegramError, inline_keyboard
from depu.telegram.text import escape, split_message
from local.moto_server import free_port
from local.telegram_standin import TelegramStandIn

TOKEN = "424242:client-test-token"


@pytest.fixture
def bot_token() -> str:
    return TOKEN


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def api(telegram: TelegramStandIn, slept: list[float]) -> BotApi:
    return BotApi(token=TOKEN, base_url=telegram.base_url, sleep=slept.append, max_attempts=4, max_sleep=10)


def too_many(retry_after: int) -> dict:
    return {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after}}


def test_send_message_is_html_and_returns_the_message_id(api: BotApi, telegram: TelegramStandIn) -> None:
    message_id = api.send_message(7, "<b>hi</b> there")
    (call,) = telegram.calls
    assert call.method == "sendMessage"
    assert call.params["chat_id"] == 7 and call.params["text"] == "<b>hi</b> there"
    assert call.params["parse_mode"] == "HTML"
    assert "reply_markup" not in call.params  # no keyboard, no field
    assert message_id == max(mid for _, mid in telegram.texts)


def test_reply_to_threads_the_first_part(api: BotApi, telegram: TelegramStandIn) -> None:
    api.send_message(-100, "answer", reply_to=55)
    assert telegram.calls[0].params["reply_parameters"] == {"message_id": 55, "allow_sending_without_reply": True}


def test_429_retry_after_is_honoured(api: BotApi, telegram: TelegramStandIn, slept: list[float]) -> None:
    telegram.fail_next("sendMessage", 429, too_many(3))
    message_id = api.send_message(7, "hello")
    assert slept == [3.0]
    assert len(telegram.calls_of("sendMessage")) == 2
    assert telegram.texts[(7, message_id)] == "hello"


def test_429_longer_than_the_cap_is_raised_without_sleeping(telegram: TelegramStandIn, slept: list[float]) -> None:
    api = BotApi(token=TOKEN, base_url=telegram.base_url, sleep=slept.append, max_sleep=2)
    telegram.fail_next("sendMessage", 429, too_many(30))
    with pytest.raises(TelegramError) as raised:
        api.send_message(7, "hello")
    assert raised.value.rate_limited and raised.value.retry_after == 30
    assert slept == [] and len(telegram.calls) == 1


def test_server_errors_are_retried_with_backoff_then_given_up(api: BotApi, telegram: TelegramStandIn, slept: list[float]) -> None:
    failure = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    telegram.fail_next("sendMessage", 502, failure, times=2)
    assert api.send_message(7, "eventually") > 0
    assert len(slept) == 2 and slept[1] > slept[0]  # growing back-off

    telegram.fail_next("sendMessage", 500, {"ok": False, "error_code": 500, "description": "Internal"}, times=4)
    with pytest.raises(TelegramError) as raised:
        api.send_message(7, "never")
    assert raised.value.error_code == 500
    assert len(telegram.calls_of("sendMessage")) == 3 + 4  # bounded: max_attempts calls, no more


def test_client_errors_are_not_retried_and_never_show_the_token(api: BotApi, telegram: TelegramStandIn) -> None:
    telegram.fail_next("sendMessage", 400, {"ok": False, "error_code": 400, "description": f"Bad Request: chat not found {TOKEN}"})
    with pytest.raises(TelegramError) as raised:
        api.send_message(7, "x")
    assert len(telegram.calls) == 1
    assert raised.value.error_code == 400 and "chat not found" in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_network_errors_are_retried_and_redacted(slept: list[float]) -> None:
    api = BotApi(token=TOKEN, base_url=f"http://127.0.0.1:{free_port()}", sleep=slept.append, max_attempts=3,
                 timeout=(0.5, 0.5))
    with pytest.raises(TelegramError) as raised:
        api.send_message(7, "nobody listens")
    assert "network error" in str(raised.value)
    assert len(slept) == 2  # three attempts, two waits
    rendered = "".join(traceback.format_exception(raised.value))
    assert TOKEN not in rendered and "424242" not in rendered


def test_retries_stop_at_the_overall_deadline(telegram: TelegramStandIn, slept: list[float]) -> None:
    readings = iter(range(0, 1000, 7))  # every look at the clock: 7 s later (slow Telegram answers)
    api = BotApi(token=TOKEN, base_url=telegram.base_url, sleep=slept.append, max_attempts=10, max_total=20,
                 clock=lambda: next(readings))
    telegram.fail_next("sendMessage", 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}, times=10)
    with pytest.raises(TelegramError):
        api.send_message(7, "x")
    assert len(telegram.calls) == 3  # 0 s, 7 s, 14 s; a fourth try would end past 20 s


def test_wrong_token_is_a_clear_error(telegram: TelegramStandIn) -> None:
    with pytest.raises(TelegramError) as raised:
        BotApi(token="1:wrong", base_url=telegram.base_url).send_message(7, "x")
    assert raised.value.error_code == 401


def test_long_text_is_split_on_lines_with_buttons_on_the_last_part(api: BotApi, telegram: TelegramStandIn) -> None:
    lines = [f"line {index:04d} " + "x" * 40 for index in range(200)]  # about 10 200 characters
    buttons = [[Button("Again", data="again:1"), Button("Docs", url="https://depu.example/docs")]]
    last_id = api.send_message(9, "\n".join(lines), buttons)
    calls = telegram.calls_of("sendMessage")
    assert len(calls) == 3
    assert all(len(call.params["text"]) <= 4096 for call in calls)
    sent_lines = [line for call in calls for line in call.params["text"].split("\n")]
    assert sent_lines == lines  # cut between lines, nothing lost, order kept
    assert [("reply_markup" in call.params) for call in calls] == [False, False, True]
    assert calls[-1].params["reply_markup"] == {"inline_keyboard": [[
        {"text": "Again", "callback_data": "again:1"}, {"text": "Docs", "url": "https://depu.example/docs"}]]}
    assert telegram.texts[(9, last_id)] == calls[-1].params["text"]


def test_split_keeps_html_balanced_across_parts() -> None:
    body = "\n".join(f"{index:05d} | {'y' * 60}" for index in range(300))
    parts = split_message(f"<b>Report</b>\n<pre>{body}</pre>\ndone")
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= 4096
        assert part.count("<pre>") == part.count("</pre>") == 1
    assert parts[-1].endswith("done")


def test_a_single_huge_line_is_cut_without_breaking_entities() -> None:
    text = ("word &amp; " * 1000).strip()
    parts = split_message(text, limit=500)
    assert all(len(part) <= 500 for part in parts)
    assert all(not re.search(r"&[a-z]*$", part) for part in parts)  # no entity cut in half
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="<>&", blacklist_categories=("Cs",)), max_size=3000),
       st.integers(min_value=20, max_value=700))
def test_split_message_property(text: str, limit: int) -> None:
    parts = split_message(text, limit=limit)
    assert all(len(part) <= limit for part in parts)
    squash = lambda value: "".join(value.split())  # noqa: E731 - the cut may drop line breaks only
    assert squash("".join(parts)) == squash(text)


@st.composite
def html_messages(draw) -> str:
    """Well-formed Telegram HTML over many lines: nested tags opening and closing across line breaks,
    entities, long words."""
    words = st.text(alphabet="abcdefghij XYZ0123456789", min_size=1, max_size=60) | st.sampled_from(["&amp;", "&lt;", "&gt;"])
    tags = st.sampled_from(["b", "i", "u", "code", "pre", "blockquote", "tg-spoiler", 'a href="https://depu.example/x?a=1&amp;b=2"'])
    out, stack = [], []
    for _ in range(draw(st.integers(min_value=60, max_value=250))):
        action = draw(st.integers(min_value=0, max_value=5))
        if action == 0 and len(stack) < 3:
            tag = draw(tags)
            stack.append(tag.split()[0])
            out.append(f"<{tag}>")
        elif action == 1 and stack:
            out.append(f"</{stack.pop()}>")
        elif action == 2:
            out.append("\n")
        else:
            out.append(draw(words))
    out.extend(f"</{name}>" for name in reversed(stack))
    return "".join(out)


@settings(max_examples=150, deadline=None)
@given(html_messages(), st.integers(min_value=450, max_value=1200))
def test_every_part_of_split_html_parses_on_its_own(text: str, limit: int) -> None:
    """Checked by the local stand-in's HTML parser, an independent implementation of Telegram's rules."""
    from local.telegram_html import parse_html

    whole = parse_html(text)
    parts = split_message(text, limit=limit)
    assert all(len(part) <= limit for part in parts)
    seen = "".join(parse_html(part) for part in parts)  # raises EntityError on any broken part
    squash = lambda value: "".join(value.split())  # noqa: E731
    assert squash(seen) == squash(whole)


def test_keyboards_accept_buttons_and_notice_dicts() -> None:
    assert inline_keyboard(None) is None and inline_keyboard([]) is None
    assert inline_keyboard([[{"text": "Open", "url": "https://depu.example"}], [{"text": "Stop", "data": "job:stop:1"}]]) == {
        "inline_keyboard": [[{"text": "Open", "url": "https://depu.example"}], [{"text": "Stop", "callback_data": "job:stop:1"}]]}
    with pytest.raises(ValueError):
        inline_keyboard([[{"text": "Too long", "data": "x" * 65}]])


def test_edit_to_identical_text_is_a_no_op(api: BotApi, telegram: TelegramStandIn) -> None:
    message_id = api.send_message(7, "50%")
    api.edit_message_text(7, message_id, "75%", [[Button("Cancel", data="job:cancel")]])
    api.edit_message_text(7, message_id, "75%")  # Telegram: "message is not modified" -> swallowed
    assert telegram.texts[(7, message_id)] == "75%"
    assert len(telegram.calls_of("editMessageText")) == 2
    with pytest.raises(TelegramError, match="message to edit not found"):
        api.edit_message_text(7, 999_999, "gone")


def test_answer_callback_query(api: BotApi, telegram: TelegramStandIn) -> None:
    api.answer_callback_query("cb-1", "Done", alert=True)
    assert telegram.calls[0].params == {"callback_query_id": "cb-1", "text": "Done", "show_alert": True}


def test_document_download(api: BotApi, telegram: TelegramStandIn) -> None:
    script = b"import torch\nprint(torch.cuda.is_available())\n" * 100
    telegram.add_file("FILE-1", "documents/file_1.py", script)
    assert api.download_file("FILE-1") == script
    with pytest.raises(TelegramError, match="limit"):
        api.download_file("FILE-1", max_bytes=100)
    with pytest.raises(TelegramError, match="invalid file_id"):
        api.download_file("NOPE")


def test_photo_and_document_uploads_are_multipart(api: BotApi, telegram: TelegramStandIn) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    api.send_photo(7, png, caption="<b>gas</b>", filename="gas.png")
    api.send_document(7, b"a,b\n1,2\n", "export.csv", caption="your export",
                      buttons=[[Button("More", data="export:more")]])
    photo, document = telegram.calls
    assert photo.files == {"photo": ("gas.png", png)} and photo.params["caption"] == "<b>gas</b>"
    assert document.files == {"document": ("export.csv", b"a,b\n1,2\n")}
    assert json.loads(document.params["reply_markup"]) == {"inline_keyboard": [[{"text": "More", "callback_data": "export:more"}]]}


def test_caption_over_the_limit_follows_as_a_message(api: BotApi, telegram: TelegramStandIn) -> None:
    api.send_photo(7, b"png", caption="c" * 1500)
    assert [call.method for call in telegram.calls] == ["sendPhoto", "sendMessage"]
    assert "caption" not in telegram.calls[0].params


def test_bot_setup_calls(api: BotApi, telegram: TelegramStandIn) -> None:
    api.set_my_commands([("help", "What I can do"), ("profile", "Your profile")])
    api.set_webhook("https://api.depu.example/dev/telegram/webhook", "s3cret", ["message", "callback_query"])
    api.delete_webhook()
    commands, webhook, _ = telegram.calls
    assert commands.params == {"commands": [{"command": "help", "description": "What I can do"},
                                            {"command": "profile", "description": "Your profile"}]}
    assert webhook.params["secret_token"] == "s3cret"
    assert webhook.params["allowed_updates"] == ["message", "callback_query"]


def test_empty_text_is_refused_before_any_call(api: BotApi, telegram: TelegramStandIn) -> None:
    with pytest.raises(ValueError):
        api.send_message(7, "  ")
    assert telegram.calls == []


def test_escape() -> None:
    assert escape('<script>&"') == "&lt;script&gt;&amp;&quot;"
