"""The Telegram webhook function, invoked with API Gateway proxy events against moto and a fake Bot API.

Handlers registered here count their side effects, so "processed once" is observed, not assumed.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import boto3
import pytest

from conftest import TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET
from depu.bot import dispatch as dispatch_module
from depu.bot.registry import Button, registry
from depu.config import get_settings
from depu.errors import UserError
from depu.telegram.client import bot_api
from local.telegram_standin import TelegramStandIn
from telegram_harness import ROOT, FakeLambdaContext, api_event, load_function

PATH = "/telegram/webhook"
USER = {"id": 501, "is_bot": False, "first_name": "Ada", "username": "ada"}
PRIVATE = {"id": 501, "type": "private"}
GROUP = {"id": -100200, "type": "supergroup", "title": "GPU friends"}


class Recorder:
    """Test handlers: each call is one side effect."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def ping(self, incoming, chat) -> None:
        self.calls.append(("ping", incoming.args))
        chat.reply(f"pong {incoming.args}".strip(), [[Button("Again", data="tping:again")]])

    def refuse(self, incoming, chat) -> None:
        self.calls.append(("refuse", None))
        raise UserError("You need <b>40</b> credits for that.")

    def crash(self, incoming, chat) -> None:
        self.calls.append(("crash", None))
        raise RuntimeError("database on fire")

    def button(self, incoming, chat) -> None:
        self.calls.append(("button", incoming.callback_data))
        chat.edit(incoming.message_id, "pressed")
        chat.answer_callback("Done")

    def silent_button(self, incoming, chat) -> None:
        self.calls.append(("silent", incoming.callback_data))


@pytest.fixture
def recorder(monkeypatch):
    """Our own tiny feature set: hidden test commands, removed again afterwards."""
    recorder = Recorder()
    monkeypatch.setattr(dispatch_module, "_loaded", True)  # install no features: the registry as it is
    registry.command("tping", "test ping", menu=False)(recorder.ping)
    registry.command("trefuse", "test user error", menu=False)(recorder.refuse)
    registry.command("tcrash", "test crash", menu=False)(recorder.crash)
    registry.callback("tping")(recorder.button)
    registry.callback("tsilent")(recorder.silent_button)
    try:
        yield recorder
    finally:
        for name in ("tping", "trefuse", "tcrash"):
            registry.commands.pop(name, None)
        for prefix in ("tping", "tsilent"):
            registry.callbacks.pop(prefix, None)


@pytest.fixture
def webhook(aws, telegram, monkeypatch):
    monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
    get_settings.cache_clear()
    bot_api.cache_clear()
    module = load_function("telegram_webhook")
    yield module
    bot_api.cache_clear()
    get_settings.cache_clear()


def invoke(webhook, update: dict | str | None, secret: str | None = TEST_WEBHOOK_SECRET) -> dict:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    body = update if isinstance(update, str) or update is None else json.dumps(update)
    return webhook.lambda_handler(api_event(PATH, body, headers), FakeLambdaContext())


def message_update(update_id: int, text: str, chat: dict = PRIVATE) -> dict:
    return {"update_id": update_id, "message": {"message_id": 10 + update_id % 1000, "date": 1764000000,
                                                "chat": chat, "from": USER, "text": text}}


def idempotency_items() -> list[dict]:
    return boto3.client("dynamodb").scan(TableName=get_settings().idempotency_table)["Items"]


def sent_texts(telegram: TelegramStandIn) -> list[str]:
    return [call.params["text"] for call in telegram.calls_of("sendMessage")]


# ---------------------------------------------------------------- authentication and input
@pytest.mark.parametrize("secret", [None, "", "wrong-secret", TEST_WEBHOOK_SECRET + "x", TEST_WEBHOOK_SECRET[:-1]])
def test_missing_or_forged_secret_is_refused_and_touches_nothing(webhook, telegram, recorder, secret) -> None:
    response = invoke(webhook, message_update(1, "/tping"), secret=secret)
    assert response["statusCode"] == 401
    assert recorder.calls == [] and telegram.calls == []
    assert idempotency_items() == []


def test_secret_header_name_is_case_insensitive(webhook, telegram, recorder) -> None:
    event = api_event(PATH, json.dumps(message_update(2, "/tping")), {"x-telegram-bot-api-secret-token": TEST_WEBHOOK_SECRET})
    assert webhook.lambda_handler(event, FakeLambdaContext())["statusCode"] == 200
    assert recorder.calls == [("ping", "")]


@pytest.mark.parametrize("body", ["not json", "[]", '{"message": {}}', '{"update_id": "7"}', "", None])
def test_malformed_body_is_400(webhook, telegram, recorder, body) -> None:
    response = invoke(webhook, body)
    assert response["statusCode"] == 400
    assert recorder.calls == [] and telegram.calls == [] and idempotency_items() == []


def test_oversized_body_is_413(webhook, telegram, recorder) -> None:
    update = message_update(3, "/tping " + "a" * (1024 * 1024))
    assert invoke(webhook, update)["statusCode"] == 413
    assert recorder.calls == [] and idempotency_items() == []


# ---------------------------------------------------------------- exactly once
def test_a_retried_update_is_processed_once(webhook, telegram, recorder) -> None:
    update = message_update(4242, "/tping hello")
    first, second, third = (invoke(webhook, update) for _ in range(3))
    assert [r["statusCode"] for r in (first, second, third)] == [200, 200, 200]
    assert recorder.calls == [("ping", "hello")]
    assert sent_texts(telegram) == ["pong hello"]
    assert len(idempotency_items()) == 1
    # the reply came through the token stored in Secrets Manager (the fake refuses any other token)
    assert telegram.calls_of("sendMessage")[0].params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Again", "callback_data": "tping:again"}]]}


def test_a_retry_arriving_while_the_first_is_still_running_gets_409(webhook, telegram, recorder) -> None:
    update = message_update(4343, "/tslow")
    nested: list[int] = []

    def slow(incoming, chat) -> None:
        recorder.calls.append(("slow", None))
        nested.append(invoke(webhook, update)["statusCode"])  # Telegram's retry while we are still working

    registry.command("tslow", "test slow", menu=False)(slow)
    try:
        assert invoke(webhook, update)["statusCode"] == 200
    finally:
        registry.commands.pop("tslow", None)
    assert nested == [409]  # "try again later": by then the stored outcome answers it
    assert recorder.calls == [("slow", None)]
    assert invoke(webhook, update)["statusCode"] == 200 and recorder.calls == [("slow", None)]


def test_distinct_updates_are_each_processed(webhook, telegram, recorder) -> None:
    for update_id in (10, 11, 12):
        assert invoke(webhook, message_update(update_id, f"/tping {update_id}"))["statusCode"] == 200
    assert recorder.calls == [("ping", "10"), ("ping", "11"), ("ping", "12")]


# ---------------------------------------------------------------- routing
def test_unknown_command_gets_a_helpful_reply(webhook, telegram, recorder) -> None:
    assert invoke(webhook, message_update(20, "/frobnicate now"))["statusCode"] == 200
    assert sent_texts(telegram) == ["I don't know /frobnicate. Try /help to see what I can do."]


def test_group_command_addressed_to_us_is_answered_in_thread(webhook, telegram, recorder) -> None:
    update = message_update(21, "/tping@DePUDevBot group", chat=GROUP)
    assert invoke(webhook, update)["statusCode"] == 200
    assert recorder.calls == [("ping", "group")]
    (call,) = telegram.calls_of("sendMessage")
    assert call.params["chat_id"] == GROUP["id"]
    assert call.params["reply_parameters"]["message_id"] == update["message"]["message_id"]


def test_group_command_for_another_bot_is_ignored(webhook, telegram, recorder) -> None:
    for update_id, text in ((22, "/tping@OtherBot"), (23, "/frobnicate")):
        assert invoke(webhook, message_update(update_id, text, chat=GROUP))["statusCode"] == 200
    assert recorder.calls == [] and telegram.calls == []


def test_ignored_update_kinds_are_accepted(webhook, telegram, recorder) -> None:
    update = {"update_id": 24, "my_chat_member": {"chat": GROUP, "from": USER, "date": 1}}
    assert invoke(webhook, update)["statusCode"] == 200
    assert telegram.calls == []


def test_callback_query_is_routed_and_answered(webhook, telegram, recorder) -> None:
    message_id = bot_api().send_message(501, "menu")
    update = {"update_id": 30, "callback_query": {"id": "cbq-30", "from": USER, "data": "tping:again",
                                                  "message": {"message_id": message_id, "chat": PRIVATE, "date": 1}}}
    assert invoke(webhook, update)["statusCode"] == 200
    assert recorder.calls == [("button", "tping:again")]
    assert telegram.texts[(501, message_id)] == "pressed"
    (answer,) = telegram.calls_of("answerCallbackQuery")
    assert answer.params["callback_query_id"] == "cbq-30" and answer.params["text"] == "Done"


def test_callback_handler_that_forgets_to_answer_is_answered_for_it(webhook, telegram, recorder) -> None:
    update = {"update_id": 31, "callback_query": {"id": "cbq-31", "from": USER, "data": "tsilent:x",
                                                  "message": {"message_id": 5, "chat": PRIVATE, "date": 1}}}
    invoke(webhook, update)
    assert recorder.calls == [("silent", "tsilent:x")]
    assert [call.params["callback_query_id"] for call in telegram.calls_of("answerCallbackQuery")] == ["cbq-31"]


@pytest.mark.parametrize("data", ["gone:1", "", "nocolon"])
def test_unknown_or_expired_button_gets_a_notice(webhook, telegram, recorder, data) -> None:
    update = {"update_id": 32, "callback_query": {"id": "cbq-32", "from": USER, "data": data,
                                                  "message": {"message_id": 5, "chat": PRIVATE, "date": 1}}}
    assert invoke(webhook, update)["statusCode"] == 200
    (answer,) = telegram.calls_of("answerCallbackQuery")
    assert "expired" in answer.params["text"]
    assert recorder.calls == []


# ---------------------------------------------------------------- failures
def test_user_error_becomes_the_reply(webhook, telegram, recorder) -> None:
    assert invoke(webhook, message_update(40, "/trefuse"))["statusCode"] == 200
    assert sent_texts(telegram) == ["You need <b>40</b> credits for that."]


def test_a_crashing_handler_is_logged_apologised_for_and_not_retried(webhook, telegram, recorder, caplog) -> None:
    update = message_update(41, "/tcrash")
    assert invoke(webhook, update)["statusCode"] == 200
    assert invoke(webhook, update)["statusCode"] == 200  # Telegram's retry finds it done
    assert recorder.calls == [("crash", None)]
    (apology,) = sent_texts(telegram)
    assert "went wrong" in apology and "ref 41" in apology
    (failure,) = [record for record in caplog.records if record.getMessage() == "handler failed"]
    assert failure.correlation_id == "41" and "database on fire" in caplog.text
    assert TEST_BOT_TOKEN not in caplog.text and TEST_WEBHOOK_SECRET not in caplog.text


def test_telegram_outage_while_answering_still_accepts_the_update(webhook, telegram, recorder) -> None:
    telegram.fail_next("sendMessage", 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
                       times=2)
    assert invoke(webhook, message_update(42, "/tping"))["statusCode"] == 200
    assert recorder.calls == [("ping", "")]


def test_logs_never_contain_secrets(webhook, telegram, recorder, caplog, capsys) -> None:
    caplog.set_level("DEBUG")
    invoke(webhook, message_update(50, "/tping"))
    invoke(webhook, message_update(51, "/tping"), secret="forged-secret-value")
    invoke(webhook, "garbage")
    telegram.fail_next("sendMessage", 400, {"ok": False, "error_code": 400, "description": "Bad Request: x"})
    invoke(webhook, message_update(52, "/tping"))
    output = capsys.readouterr()
    assert "update handled" in caplog.text and "handler failed" in caplog.text  # the logs were captured
    for secret in (TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET, "forged-secret-value"):
        assert secret not in caplog.text and secret not in output.out and secret not in output.err


def test_a_feature_that_fails_to_import_fails_loudly_and_keeps_the_update(webhook, telegram, recorder, monkeypatch) -> None:
    import depu.bot
    from depu.bot import analytics

    monkeypatch.setattr(dispatch_module, "_loaded", False)
    monkeypatch.delattr(depu.bot, "analytics")
    monkeypatch.setitem(sys.modules, "depu.bot.analytics", None)  # that feature module cannot be imported now
    with pytest.raises(ModuleNotFoundError):
        invoke(webhook, message_update(70, "/tping"))  # a Lambda error: Telegram retries, the alarm fires
    assert idempotency_items() == []  # not marked done, so the retry after the fix is processed
    monkeypatch.setitem(sys.modules, "depu.bot.analytics", analytics)  # fixed
    monkeypatch.setattr(depu.bot, "analytics", analytics, raising=False)
    assert invoke(webhook, message_update(70, "/tping"))["statusCode"] == 200
    assert recorder.calls == [("ping", "")]


# ---------------------------------------------------------------- the real feature set
@pytest.mark.skipif(importlib.util.find_spec("depu.bot.basics") is None, reason="depu.bot.basics not written yet")
def test_real_features_answer_help_in_a_group(webhook, telegram, monkeypatch) -> None:
    monkeypatch.setattr(dispatch_module, "_loaded", False)
    assert invoke(webhook, message_update(60, "/help@DePUDevBot", chat=GROUP))["statusCode"] == 200
    (reply,) = sent_texts(telegram)
    for command in registry.menu():
        assert f"/{command.name}" in reply
    assert invoke(webhook, message_update(61, "/help@OtherBot", chat=GROUP))["statusCode"] == 200
    assert len(sent_texts(telegram)) == 1


def test_module_import_stays_light() -> None:
    code = (
        "import sys, importlib.util\n"
        f"sys.path[:0] = [{str(ROOT / 'layers' / 'depu')!r}]\n"
        f"spec = importlib.util.spec_from_file_location('app', {str(ROOT / 'functions' / 'telegram_webhook' / 'app.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "heavy = [name for name in ('web3', 'torch', 'matplotlib', 'pyarrow', 'pandas') if name in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
