"""The Telegram stand-in answers like the Bot API (shapes and errors) and plays the user's side faithfully."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from local.moto_server import free_port
from local.telegram_html import EntityError, parse_html, to_plain_text
from local.telegram_standin import TelegramStandIn

TOKEN = "987654321:standin-test-token"
CHAT = 5550001


@pytest.fixture
def standin():
    server = TelegramStandIn(TOKEN, port=free_port(), bot_username="DePUTestBot").start()
    yield server
    server.stop()


def api(standin: TelegramStandIn, method: str, token: str = TOKEN, **params) -> requests.Response:
    return requests.post(f"{standin.url}/bot{token}/{method}", json=params, timeout=10)


class WebhookRecorder:
    """A stand-in for our API: records what Telegram would POST to the webhook."""

    def __init__(self, status: int = 200, reply: dict | None = None):
        self.requests: list[tuple[dict, dict]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.requests.append((dict(self.headers), body))
                payload = json.dumps(reply or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/telegram/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_token_and_message_validation_like_telegram(standin):
    assert api(standin, "getMe", token="1:wrong").status_code == 401
    assert api(standin, "getMe", token="1:wrong").json() == {"ok": False, "error_code": 401,
                                                             "description": "Unauthorized"}
    me = api(standin, "getMe").json()["result"]
    assert me["is_bot"] and me["id"] == 987654321 and me["username"] == "DePUTestBot"
    assert api(standin, "noSuchMethod").status_code == 404

    too_long = api(standin, "sendMessage", chat_id=CHAT, text="x" * 4097)
    assert too_long.status_code == 400 and too_long.json()["description"] == "Bad Request: message is too long"
    assert api(standin, "sendMessage", chat_id=CHAT, text="").json()["description"] == \
        "Bad Request: message text is empty"
    # the limit counts what the user sees: markup does not count, astral characters count twice (UTF-16)
    assert api(standin, "sendMessage", chat_id=CHAT, text="<b>" + "x" * 4096 + "</b>", parse_mode="HTML").ok
    assert api(standin, "sendMessage", chat_id=CHAT, text="😀" * 2049).status_code == 400

    unbalanced = api(standin, "sendMessage", chat_id=CHAT, text="<b>bold <i>both</b></i>", parse_mode="HTML")
    assert unbalanced.status_code == 400
    assert unbalanced.json()["description"].startswith("Bad Request: can't parse entities:")
    unknown_tag = api(standin, "sendMessage", chat_id=CHAT, text="<div>x</div>", parse_mode="HTML")
    assert "Unsupported start tag \"div\"" in unknown_tag.json()["description"]
    # without parse_mode the same text is plain and fine
    assert api(standin, "sendMessage", chat_id=CHAT, text="<b>bold <i>both</b></i>").ok

    long_data = {"inline_keyboard": [[{"text": "Go", "callback_data": "x" * 65}]]}
    rejected = api(standin, "sendMessage", chat_id=CHAT, text="hi", reply_markup=long_data)
    assert rejected.status_code == 400 and rejected.json()["description"] == "Bad Request: BUTTON_DATA_INVALID"
    no_action = {"inline_keyboard": [[{"text": "Go"}]]}
    assert api(standin, "sendMessage", chat_id=CHAT, text="hi", reply_markup=no_action).status_code == 400

    # rejected messages were not recorded; accepted ones were, as the user sees them
    texts = [message.text for message in standin.messages(CHAT)]
    assert texts == ["x" * 4096, "<b>bold <i>both</b></i>"]


def test_messages_are_recorded_and_edited_with_telegram_shapes(standin):
    keyboard = {"inline_keyboard": [[{"text": "Rent a GPU", "callback_data": "rent:start"}],
                                    [{"text": "Docs", "url": "https://example.com/docs"}]]}
    sent = api(standin, "sendMessage", chat_id=CHAT, text="Hello <b>Ann</b> &amp; co", parse_mode="HTML",
               reply_markup=json.dumps(keyboard)).json()["result"]
    assert sent["message_id"] == 1 and sent["chat"]["id"] == CHAT and sent["from"]["is_bot"]
    assert sent["text"] == "Hello Ann & co"
    assert sent["reply_markup"] == keyboard
    second = api(standin, "sendMessage", chat_id=CHAT, text="second").json()["result"]
    assert second["message_id"] == 2

    edited = api(standin, "editMessageText", chat_id=CHAT, message_id=1, text="Progress 50%").json()
    assert edited["ok"] and edited["result"]["text"] == "Progress 50%" and "edit_date" in edited["result"]
    unchanged = api(standin, "editMessageText", chat_id=CHAT, message_id=1, text="Progress 50%")
    assert unchanged.status_code == 400 and "message is not modified" in unchanged.json()["description"]
    assert api(standin, "editMessageText", chat_id=CHAT, message_id=99, text="x").json()["description"] == \
        "Bad Request: message to edit not found"
    assert api(standin, "editMessageReplyMarkup", chat_id=CHAT, message_id=2, reply_markup=keyboard).ok

    first = standin.message(CHAT, 1)
    assert (first.text, first.edits, first.buttons) == ("Progress 50%", 1, [])
    assert standin.message(CHAT, 2).button_data() == ["rent:start"]
    kinds = [event["kind"] for event in standin.events(CHAT)]
    assert kinds == ["message", "message", "edited", "edited"]

    assert api(standin, "sendChatAction", chat_id=CHAT, action="typing").ok
    assert api(standin, "sendChatAction", chat_id=CHAT, action="dancing").status_code == 400
    assert api(standin, "setMyCommands", commands=[{"command": "start", "description": "Begin"}]).ok
    assert api(standin, "setMyCommands", commands=[{"command": "Bad-Name", "description": "x"}]).status_code == 400
    assert standin.commands == [{"command": "start", "description": "Begin"}]


def test_files_upload_as_multipart_and_download_through_get_file(standin):
    csv = b"block,value\n1,2\n"
    response = requests.post(f"{standin.url}/bot{TOKEN}/sendDocument",
                             data={"chat_id": str(CHAT), "caption": "Your <i>export</i>", "parse_mode": "HTML"},
                             files={"document": ("export.csv", csv, "text/csv")}, timeout=10)
    result = response.json()["result"]
    document = result["document"]
    assert (document["file_name"], document["mime_type"], document["file_size"]) == ("export.csv", "text/csv", len(csv))
    assert result["caption"] == "Your export"

    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (640).to_bytes(4, "big") + (480).to_bytes(4, "big") + b"rest"
    photo = requests.post(f"{standin.url}/bot{TOKEN}/sendPhoto", data={"chat_id": CHAT},
                          files={"photo": ("chart.png", png, "image/png")}, timeout=10).json()["result"]["photo"][0]
    assert (photo["width"], photo["height"]) == (640, 480)

    path = api(standin, "getFile", file_id=document["file_id"]).json()["result"]["file_path"]
    assert requests.get(f"{standin.url}/file/bot{TOKEN}/{path}", timeout=10).content == csv
    assert requests.get(f"{standin.url}/file/bot1:wrong/{path}", timeout=10).status_code == 401
    assert api(standin, "getFile", file_id="nope").json()["description"] == "Bad Request: invalid file_id"
    # a known file id can be sent again without uploading
    again = api(standin, "sendDocument", chat_id=CHAT, document=document["file_id"]).json()["result"]
    assert again["document"]["file_id"] == document["file_id"]


def test_rate_limit_emulation_answers_429_with_retry_after():
    with TelegramStandIn(TOKEN, port=free_port(), rate_limit=True) as standin:
        assert api(standin, "sendMessage", chat_id=CHAT, text="one").ok
        limited = api(standin, "sendMessage", chat_id=CHAT, text="two")
        assert limited.status_code == 429
        assert limited.json()["parameters"]["retry_after"] >= 1
        assert api(standin, "sendMessage", chat_id=CHAT + 1, text="other chat").ok  # per chat
        assert [m.text for m in standin.messages(CHAT)] == ["one"]
        standin.block_bot(CHAT + 2)
        blocked = api(standin, "sendMessage", chat_id=CHAT + 2, text="hello?")
        assert blocked.status_code == 403 and blocked.json()["description"] == "Forbidden: bot was blocked by the user"


def test_user_side_posts_real_updates_to_the_webhook_with_the_secret(standin):
    recorder = WebhookRecorder(reply={"method": "sendMessage", "chat_id": CHAT, "text": "answered in the reply"})
    try:
        assert api(standin, "setWebhook", url=recorder.url, secret_token="bad secret!").status_code == 400
        assert api(standin, "setWebhook", url=recorder.url, secret_token="s3cret_-ok").json()["description"] == \
            "Webhook was set"

        first = standin.send_user_message({"id": CHAT, "first_name": "Ann", "username": "ann"}, None,
                                          "/start ref_42 then /help@DePUTestBot")
        assert first.status == 200
        headers, update = recorder.requests[0]
        assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cret_-ok"
        message = update["message"]
        assert message["from"] == {"id": CHAT, "is_bot": False, "first_name": "Ann", "language_code": "en",
                                   "username": "ann"}
        assert message["chat"] == {"id": CHAT, "type": "private", "first_name": "Ann", "username": "ann"}
        assert message["text"] == "/start ref_42 then /help@DePUTestBot"
        assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 6},
                                       {"type": "bot_command", "offset": 19, "length": 17}]
        # the method in the webhook's answer was executed, as Telegram does
        assert standin.messages(CHAT)[-1].text == "answered in the reply"

        keyboard = {"inline_keyboard": [[{"text": "Rent", "callback_data": "rent:start"}]]}
        bot_message = api(standin, "sendMessage", chat_id=CHAT, text="Menu", reply_markup=keyboard).json()["result"]
        with pytest.raises(ValueError):
            standin.press_button(CHAT, bot_message["message_id"], "not:a:button")
        pressed = standin.press_button(CHAT, bot_message["message_id"], "rent:start")
        _, update = recorder.requests[-1]
        query = update["callback_query"]
        assert query["data"] == "rent:start" and query["from"]["id"] == CHAT
        assert query["message"]["message_id"] == bot_message["message_id"]
        assert update["update_id"] == first.update_id + 1
        assert api(standin, "answerCallbackQuery", callback_query_id=pressed.callback_query_id, text="ok").ok
        assert api(standin, "answerCallbackQuery", callback_query_id=pressed.callback_query_id).status_code == 400

        doc = standin.send_user_document(CHAT, None, "train.py", b"print('hi')\n", caption="my script")
        _, update = recorder.requests[-1]
        sent = update["message"]["document"]
        assert sent["file_name"] == "train.py" and update["message"]["caption"] == "my script"
        path = api(standin, "getFile", file_id=sent["file_id"]).json()["result"]["file_path"]
        assert requests.get(f"{standin.url}/file/bot{TOKEN}/{path}", timeout=10).content == b"print('hi')\n"
        assert doc.status == 200
        # user and bot messages share one message id sequence per chat, as in a private chat
        ids = [m.message_id for m in standin.messages(CHAT, from_bot=None)]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    finally:
        recorder.close()


def test_control_api_drives_the_user_and_never_shows_secrets(standin):
    recorder = WebhookRecorder()
    try:
        api(standin, "setWebhook", url=recorder.url, secret_token="hidden-secret")
        said = requests.post(f"{standin.url}/_standin/say", json={"chat_id": CHAT, "text": "hello"}, timeout=10)
        assert said.json()["webhook_status"] == 200
        api(standin, "sendMessage", chat_id=CHAT, text="reply",
            reply_markup={"inline_keyboard": [[{"text": "A", "callback_data": "a:1"}]]})
        updates = requests.get(f"{standin.url}/_standin/updates", params={"chat": CHAT, "after": 0},
                               timeout=10).json()
        assert [(e["kind"], e["message"]["from_bot"]) for e in updates["events"]] == [("message", False),
                                                                                      ("message", True)]
        bot_id = updates["events"][1]["message"]["message_id"]
        pressed = requests.post(f"{standin.url}/_standin/press",
                                json={"chat_id": CHAT, "message_id": bot_id, "data": "a:1"}, timeout=10)
        assert pressed.status_code == 200 and recorder.requests[-1][1]["callback_query"]["data"] == "a:1"
        bad = requests.post(f"{standin.url}/_standin/press",
                            json={"chat_id": CHAT, "message_id": bot_id, "data": "zzz"}, timeout=10)
        assert bad.status_code == 400
        state = requests.get(f"{standin.url}/_standin/state", timeout=10).text
        assert "hidden-secret" not in state and TOKEN not in state and "webhook_registered" in state
    finally:
        recorder.close()


def test_html_rendering_for_the_terminal():
    assert parse_html("a &lt;b&gt; &amp; <code>x</code> &#128512;") == "a <b> & x 😀"
    with pytest.raises(EntityError):
        parse_html("<b>open")
    with pytest.raises(EntityError):
        parse_html("&nbsp;")
    assert to_plain_text('<a href="https://x.io/a?b=1&amp;c=2">docs</a>', "HTML") == "docs (https://x.io/a?b=1&c=2)"
    assert to_plain_text("<b>as is</b>", None) == "<b>as is</b>"


def test_updates_wait_for_a_webhook_and_are_then_delivered_in_order(standin):
    early = [standin.send_user_message(CHAT, None, text) for text in ("first", "second")]
    assert [delivery.status for delivery in early] == [None, None]
    recorder = WebhookRecorder()
    try:
        assert api(standin, "setWebhook", url=recorder.url).ok
        deadline = time.monotonic() + 5
        while len(recorder.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [update["message"]["text"] for _, update in recorder.requests] == ["first", "second"]
        assert [update["update_id"] for _, update in recorder.requests] == [d.update_id for d in early]
        assert "X-Telegram-Bot-Api-Secret-Token" not in recorder.requests[0][0]  # none was set
    finally:
        recorder.close()


def test_a_method_in_its_own_module_is_served_recorded_and_scriptable(standin):
    """The extension point other features use (one module under methods/): registered by name, answered over
    HTTP with Telegram's envelope, case-insensitive, in ``calls``, and ``fail_next`` applies to it too."""
    from local.telegram_standin import methods
    from local.telegram_standin.methods import bot_method
    from local.telegram_standin.models import ApiError

    @bot_method("sendProbeForTests")
    def send_probe(stand_in: TelegramStandIn, params: dict) -> dict:
        if not params.get("value"):
            raise ApiError(400, "Bad Request: value is empty")
        return {"echo": params["value"], "bot": stand_in.bot_username}

    assert "sendprobefortests" in methods.names()
    assert api(standin, "sendProbeForTests", value="x").json() == {"ok": True, "result": {"echo": "x",
                                                                                       "bot": "DePUTestBot"}}
    assert api(standin, "SENDPROBEFORTESTS", value="y").json()["result"]["echo"] == "y"
    refused = api(standin, "sendProbeForTests")
    assert refused.status_code == 400 and refused.json()["description"] == "Bad Request: value is empty"
    standin.fail_next("sendProbeForTests", 429, {"ok": False, "error_code": 429, "description": "slow down",
                                                 "parameters": {"retry_after": 2}})
    limited = api(standin, "sendProbeForTests", value="z")
    assert limited.status_code == 429 and limited.json()["parameters"] == {"retry_after": 2}
    assert [call.params.get("value") for call in standin.calls_of("sendProbeForTests")] == ["x", None, "z"]
    with pytest.raises(ValueError, match="registered twice"):
        bot_method("sendprobefortests")(lambda stand_in, params: None)
