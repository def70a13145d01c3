"""parse_update / parse_body: every Telegram update shape we care about, and property tests that arbitrary
JSON never raises anything but MalformedUpdate."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depu.bot.registry import Document, Incoming
from depu.telegram.updates import MalformedUpdate, parse_body, parse_update

BOT = "DePUDevBot"
USER = {"id": 501, "is_bot": False, "first_name": "Ada", "username": "ada", "language_code": "en"}
PRIVATE = {"id": 501, "type": "private"}
GROUP = {"id": -100200, "type": "supergroup", "title": "GPU friends"}


def message(text: str | None = None, chat: dict = PRIVATE, **extra) -> dict:
    body = {"message_id": 11, "date": 1764000000, "chat": chat, "from": USER, **extra}
    if text is not None:
        body["text"] = text
    return {"update_id": 9001, "message": body}


def test_plain_message() -> None:
    incoming = parse_update(message("hello there"), BOT)
    assert incoming == Incoming(update_id=9001, user_id=501, chat_id=501, chat_type="private", text="hello there",
                                message_id=11, first_name="Ada", username="ada", language_code="en")


@pytest.mark.parametrize(
    ("text", "command", "args"),
    [
        ("/help", "help", ""),
        ("/HELP", "help", ""),
        ("/rent_gpu  a100 2h ", "rent_gpu", "a100 2h"),
        ("/start ref_42", "start", "ref_42"),  # deep link payload
        (f"/help@{BOT}", "help", ""),
        ("/help@depudevbot", "help", ""),  # usernames are case-insensitive
        ("/fork@DePUDevBot\nblock 123", "fork", "block 123"),
    ],
)
def test_commands(text: str, command: str, args: str) -> None:
    incoming = parse_update(message(text, chat=GROUP), BOT)
    assert incoming is not None
    assert (incoming.command, incoming.args, incoming.chat_type, incoming.chat_id) == (command, args, "supergroup", -100200)


def test_command_for_another_bot_is_not_ours() -> None:
    assert parse_update(message("/help@OtherBot", chat=GROUP), BOT) is None
    assert parse_update(message("/help@OtherBot"), BOT) is None


@pytest.mark.parametrize("text", ["/", "hello /help", "/help,please", "/ help", "//help"])
def test_things_that_are_not_commands(text: str) -> None:
    incoming = parse_update(message(text), BOT)
    assert incoming is not None and incoming.command is None and incoming.text == text


def test_document_with_a_command_caption() -> None:
    update = message(document={"file_id": "F1", "file_unique_id": "U1", "file_name": "train.py",
                               "mime_type": "text/x-python", "file_size": 1234}, caption="/rent_gpu a100")
    incoming = parse_update(update, BOT)
    assert incoming is not None
    assert incoming.document == Document("F1", "train.py", "text/x-python", 1234)
    assert (incoming.command, incoming.args) == ("rent_gpu", "a100")


def test_document_with_odd_fields() -> None:
    incoming = parse_update(message(document={"file_id": "F2", "file_size": "big", "file_name": 7}), BOT)
    assert incoming is not None and incoming.document == Document("F2", "document", None, None)
    no_id = parse_update(message("x", document={"file_name": "a.py"}), BOT)
    assert no_id is not None and no_id.document is None


def test_callback_query() -> None:
    update = {"update_id": 77, "callback_query": {
        "id": "cbq-1", "from": USER, "data": "job:cancel:abc", "chat_instance": "x",
        "message": {"message_id": 40, "chat": PRIVATE, "date": 1}}}
    incoming = parse_update(update, BOT)
    assert incoming == Incoming(update_id=77, user_id=501, chat_id=501, chat_type="private", callback_id="cbq-1",
                                callback_data="job:cancel:abc", message_id=40, first_name="Ada", username="ada",
                                language_code="en")


def test_callback_without_message_or_data() -> None:
    update = {"update_id": 78, "callback_query": {"id": "cbq-2", "from": USER, "inline_message_id": "im"}}
    incoming = parse_update(update, BOT)
    assert incoming is not None
    assert (incoming.chat_id, incoming.callback_data, incoming.message_id) == (501, "", None)
    oversized = {"update_id": 79, "callback_query": {"id": "c", "from": USER, "data": "x" * 65}}
    assert parse_update(oversized, BOT).callback_data == ""


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 1, "edited_message": message("/rent_gpu")["message"]},
        {"update_id": 1, "channel_post": {"message_id": 1, "chat": {"id": -5, "type": "channel"}, "text": "/help"}},
        {"update_id": 1, "edited_channel_post": {"message_id": 1, "chat": {"id": -5, "type": "channel"}}},
        {"update_id": 1, "my_chat_member": {"chat": GROUP, "from": USER, "date": 1}},
        {"update_id": 1, "chat_member": {"chat": GROUP, "from": USER, "date": 1}},
        {"update_id": 1, "poll": {"id": "p"}},
        {"update_id": 1},
        {"update_id": 1, "message": "not an object"},
        {"update_id": 1, "message": {"chat": PRIVATE, "text": "/help"}},  # no sender (anonymous admin)
        {"update_id": 1, "message": {"chat": PRIVATE, "from": {**USER, "is_bot": True}, "text": "/help"}},
        {"update_id": 1, "message": {"chat": PRIVATE, "from": {**USER, "id": "501"}, "text": "/help"}},
        {"update_id": 1, "message": {"chat": {"id": "501", "type": "private"}, "from": USER, "text": "/help"}},
        {"update_id": 1, "message": {"chat": {"id": 501}, "from": USER, "text": "/help"}},
        {"update_id": 1, "callback_query": {"from": USER, "data": "x:y"}},  # no id
        {"update_id": 1, "callback_query": []},
    ],
)
def test_ignored_updates(update: dict) -> None:
    assert parse_update(update, BOT) is None


def test_wrong_types_in_optional_fields_are_tolerated() -> None:
    update = message(text=12345, message_id="eleven")
    update["message"]["from"] = {**USER, "first_name": None, "username": 5, "language_code": ["en"]}
    incoming = parse_update(update, BOT)
    assert incoming is not None
    assert (incoming.text, incoming.message_id, incoming.first_name, incoming.username) == ("", None, "", None)


@pytest.mark.parametrize("body", [None, "", "  ", "not json", "[1,2]", "42", "null", '{"message": {}}',
                                  '{"update_id": "9"}', '{"update_id": true}', '{"update_id": 1.5}', b"\xff\xfe",
                                  "[" * 100_000])
def test_malformed_bodies(body) -> None:
    with pytest.raises(MalformedUpdate):
        parse_body(body)


def test_well_formed_body() -> None:
    assert parse_body(json.dumps(message("/help")))["update_id"] == 9001


# ---------------------------------------------------------------- properties
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
ids = st.one_of(st.integers(min_value=-(2**52), max_value=2**52), st.text(max_size=5), st.none(), st.booleans(),
                st.floats(allow_nan=False))
texts = st.one_of(st.text(max_size=40), st.sampled_from(["/help", "/help@DePUDevBot", "/x@Other a", "/start abc"]),
                  st.integers(), st.none())
users = st.fixed_dictionaries({}, optional={"id": ids, "is_bot": st.booleans() | st.none(),
                                            "first_name": texts, "username": texts, "language_code": texts})
chats = st.fixed_dictionaries({}, optional={"id": ids, "type": st.sampled_from(["private", "group", "supergroup", "channel"]) | ids})
documents = st.fixed_dictionaries({}, optional={"file_id": texts, "file_name": texts, "mime_type": texts, "file_size": ids})
messages = st.fixed_dictionaries({}, optional={"message_id": ids, "from": users | json_values, "chat": chats | json_values,
                                               "text": texts, "caption": texts, "document": documents | json_values})
callbacks = st.fixed_dictionaries({}, optional={"id": texts, "from": users | json_values, "data": texts,
                                                "message": messages | json_values})
update_like = st.fixed_dictionaries(
    {"update_id": ids},
    optional={"message": messages | json_values, "edited_message": messages, "channel_post": messages,
              "callback_query": callbacks | json_values, "my_chat_member": json_values},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_only_ever_raises_malformed_update(raw) -> None:
    try:
        result = parse_update(raw, BOT)
    except MalformedUpdate:
        return
    assert result is None or isinstance(result, Incoming)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(update_like)
def test_update_shaped_json_never_crashes(raw) -> None:
    try:
        result = parse_update(raw, BOT)
        body = parse_body(json.dumps(raw))
    except MalformedUpdate:
        assert not isinstance(raw["update_id"], int) or isinstance(raw["update_id"], bool)
        return
    assert body == raw
    if result is not None:
        assert isinstance(result.user_id, int) and not isinstance(result.user_id, bool)
        assert isinstance(result.chat_id, int) and isinstance(result.chat_type, str)
        assert result.command is None or result.command == result.command.lower()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bodies_only_ever_raise_malformed_update(body) -> None:
    try:
        parse_body(body)
    except MalformedUpdate:
        pass
