"""The whole loop with the local Telegram stand-in (local/telegram_standin/), an independent implementation
of the Bot API that validates HTML, keyboards and callback data the way Telegram does:

stand-in user types -> webhook POST over HTTP -> the real handler (moto) -> BotApi -> stand-in's chat.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET
from depu.bot import dispatch as dispatch_module
from depu.bot.registry import Button, registry
from depu.config import get_settings
from depu.telegram.client import BotApi, bot_api
from local.telegram_standin import TelegramStandIn
from telegram_harness import FakeLambdaContext, api_event, load_function

USER = 7001


class WebhookRelay:
    """API Gateway in miniature: POST /telegram/webhook on 127.0.0.1 becomes a proxy event for the handler."""

    def __init__(self, handler) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                event = api_event(self.path, body, dict(self.headers.items()))
                response = handler(event, FakeLambdaContext())
                raw = (response.get("body") or "").encode()
                self.send_response(response["statusCode"])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/telegram/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def features_under_test(monkeypatch):
    """A report command with a long <pre> table, a button, and a document handler that downloads the file."""
    received: list[bytes] = []

    def report(incoming, chat) -> None:
        rows = "\n".join(f"{index:04d} | {'#' * (index % 50)}" for index in range(400))
        chat.reply(f"<b>Report</b> for {incoming.first_name}\n<pre>{rows}</pre>", [[Button("Refresh", data="trep:1")]])

    def refresh(incoming, chat) -> None:
        chat.edit(incoming.message_id, "<i>refreshed</i>")
        chat.answer_callback("Refreshed")

    def script(incoming, chat) -> bool:
        received.append(bot_api().download_file(incoming.document.file_id))
        chat.reply(f"Got <code>{incoming.document.file_name}</code> ({len(received[-1])} bytes)")
        return True

    monkeypatch.setattr(dispatch_module, "_loaded", True)  # install no features: the registry as it is
    registry.command("treport", "test report", menu=False)(report)
    registry.callback("trep")(refresh)
    registry.document(script)
    try:
        yield received
    finally:
        registry.commands.pop("treport", None)
        registry.callbacks.pop("trep", None)
        registry.documents.remove(script)


@contextmanager
def webhook_loop(monkeypatch):
    """The stand-in posting every update to the real TelegramWebhookFunction handler through a loopback relay."""
    standin = TelegramStandIn(TEST_BOT_TOKEN, port=0).start()
    monkeypatch.setenv("TELEGRAM_API_BASE", standin.api_base)
    get_settings.cache_clear()
    bot_api.cache_clear()
    webhook = load_function("telegram_webhook")
    relay = WebhookRelay(webhook.lambda_handler)
    BotApi(token=TEST_BOT_TOKEN, base_url=standin.api_base).set_webhook(relay.url, TEST_WEBHOOK_SECRET)
    try:
        yield standin
    finally:
        relay.stop()
        standin.stop()
        bot_api.cache_clear()


@pytest.fixture
def loop(aws, features_under_test, monkeypatch):
    with webhook_loop(monkeypatch) as standin:
        yield standin


def test_long_html_reply_is_accepted_by_the_standin_in_parts(loop) -> None:
    delivery = loop.send_user_message(USER, text="/treport")
    assert delivery.status == 200
    replies = loop.messages(USER)
    assert len(replies) >= 2  # split, and every part passed the stand-in's HTML entity parser
    assert replies[0].text.startswith("Report for")
    assert "0399 |" in replies[-1].text
    assert replies[-1].button_data() == ["trep:1"] and all(not r.buttons for r in replies[:-1])


def test_button_press_edits_and_answers(loop) -> None:
    loop.send_user_message(USER, text="/treport")
    last = loop.messages(USER)[-1]
    delivery = loop.press_button(USER, last.message_id, "trep:1")
    assert delivery.status == 200
    assert loop.message(USER, last.message_id).text == "refreshed"
    assert [answer.get("text") for answer in loop.callback_answers] == ["Refreshed"]


def test_document_is_downloaded_through_get_file(loop, features_under_test) -> None:
    content = json.dumps({"epochs": 3}).encode() * 50
    delivery = loop.send_user_document(USER, None, "train.json", content, caption="")
    assert delivery.status == 200
    assert features_under_test == [content]
    assert loop.messages(USER)[-1].text == f"Got train.json ({len(content)} bytes)"


def test_forged_update_to_the_relay_is_refused(loop) -> None:
    loop.webhook_secret = "not-the-secret"  # a sender that does not know our secret
    delivery = loop.send_user_message(USER, text="/treport")
    assert delivery.status == 401
    assert loop.messages(USER) == []
