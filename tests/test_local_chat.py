"""`python -m local chat`, fed by a pipe, talks to a bot through the stand-in and the local runtime.

The bot here is a throwaway webhook function (tmp_path template) that answers through the Bot API like the
real one does, so this test depends only on the local stack: runtime, stand-in and chat CLI, as processes
and threads talk to each other in `make up` / `make chat`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from local.moto_server import free_port
from local.provision import provision
from local.runtime import LocalRuntime, RuntimeOptions
from local.telegram_standin import TelegramStandIn
from local.template import ROOT, LocalTemplate

TOKEN = "24680:chat-test-token"
SECRET = "chat-test-webhook-secret"
USER = 7770001

BOT_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  TelegramApiBase: {Type: String, Default: https://api.telegram.org}
  BotToken: {Type: String, Default: unset}
  WebhookSecret: {Type: String, Default: unset}
Globals:
  Function:
    Handler: app.lambda_handler
    Timeout: 10
    Environment:
      Variables:
        TELEGRAM_API_BASE: !Ref TelegramApiBase
        FAKE_BOT_TOKEN: !Ref BotToken
        FAKE_WEBHOOK_SECRET: !Ref WebhookSecret
Resources:
  BotFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/bot/
      Events:
        Update: {Type: Api, Properties: {Path: /telegram/webhook, Method: post}}
"""

BOT_HANDLER = '''
import json, os, requests

def call(method, **params):
    url = f"{os.environ['TELEGRAM_API_BASE']}/bot{os.environ['FAKE_BOT_TOKEN']}/{method}"
    files = params.pop("files", None)
    response = requests.post(url, data=params, files=files, timeout=10) if files else \\
        requests.post(url, json=params, timeout=10)
    response.raise_for_status()
    return response.json()["result"]

def lambda_handler(event, context):
    if event["headers"].get("X-Telegram-Bot-Api-Secret-Token") != os.environ["FAKE_WEBHOOK_SECRET"]:
        return {"statusCode": 401, "body": "{}"}
    update = json.loads(event["body"])
    if "callback_query" in update:
        query = update["callback_query"]
        call("answerCallbackQuery", callback_query_id=query["id"], text="Noted")
        call("editMessageText", chat_id=query["message"]["chat"]["id"],
             message_id=query["message"]["message_id"], text=f"Pressed <code>{query['data']}</code>",
             parse_mode="HTML")
    else:
        message = update["message"]
        chat = message["chat"]["id"]
        if message.get("document"):
            call("sendMessage", chat_id=chat, text=f"Got {message['document']['file_name']}")
        elif message.get("text") == "/report":
            call("sendDocument", chat_id=chat, caption="Your report",
                 files={"document": ("report.csv", b"a,b\\n1,2\\n", "text/csv")})
        else:
            call("sendMessage", chat_id=chat, text=f"You said <b>{message['text']}</b> &amp; more",
                 parse_mode="HTML", reply_markup={"inline_keyboard": [
                     [{"text": "Rent a GPU", "callback_data": "rent:start"}],
                     [{"text": "Docs", "url": "https://example.com/docs"}]]})
    return {"statusCode": 200, "body": "{}"}
'''


@pytest.fixture
def local_bot(aws, tmp_path: Path):
    (tmp_path / "template.yaml").write_text(BOT_TEMPLATE)
    (tmp_path / "functions" / "bot").mkdir(parents=True)
    (tmp_path / "functions" / "bot" / "app.py").write_text(BOT_HANDLER)
    standin = TelegramStandIn(TOKEN, port=free_port()).start()
    template = LocalTemplate(
        parameters={"TelegramApiBase": standin.api_base, "BotToken": TOKEN, "WebhookSecret": SECRET},
        path=tmp_path / "template.yaml",
    )
    provision(template, aws.endpoint, bot_token=TOKEN, webhook_secret=SECRET)
    runtime = LocalRuntime(template, aws.endpoint, RuntimeOptions(port=free_port())).start()
    try:
        requests.post(f"{standin.url}/bot{TOKEN}/setWebhook",
                      json={"url": f"{runtime.url}/telegram/webhook", "secret_token": SECRET},
                      timeout=10).raise_for_status()
        yield standin
    finally:
        runtime.stop()
        standin.stop()


def run_chat(standin: TelegramStandIn, lines: str, downloads: Path, user: int = USER) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local", "chat", "--standin", standin.url, "--user-id", str(user),
         "--downloads", str(downloads), "--quiet-seconds", "0.5", "--reply-timeout", "10"],
        input=lines, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


def test_piped_chat_shows_replies_buttons_edits_and_files(local_bot, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hello')\n")
    done = run_chat(local_bot, f"hello\n1\n2\n/report\n/file {script}\n", tmp_path / "downloads")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "bot: You said hello & more" in out  # HTML rendered as plain text
    assert "[1] Rent a GPU" in out and "[2] Docs -> https://example.com/docs" in out
    assert "(Noted)" in out  # the callback answer
    assert "bot (edited): Pressed rent:start" in out  # pressing 1 sent the button's data, the bot edited
    assert "(link: https://example.com/docs)" in out  # a URL button is shown, not pressed
    saved = tmp_path / "downloads" / "report.csv"
    assert f"[document saved to {saved}]" in out and saved.read_bytes() == b"a,b\n1,2\n"
    assert "bot: Got train.py" in out
    # the order of the conversation is kept
    assert out.index("You said") < out.index("(edited)") < out.index("report.csv") < out.index("Got train.py")
    # the stand-in saw the same conversation from the user's side
    assert [m.text for m in local_bot.messages(USER, from_bot=False)][:2] == ["hello", "/report"]


def test_a_new_chat_session_resumes_with_the_last_buttons(local_bot, tmp_path):
    first = run_chat(local_bot, "hello\n", tmp_path, user=USER + 1)
    assert "[1] Rent a GPU" in first.stdout
    second = run_chat(local_bot, "1\n", tmp_path, user=USER + 1)
    assert second.returncode == 0, second.stderr
    assert "(earlier in this chat" in second.stdout and "[1] Rent a GPU" in second.stdout
    assert "bot (edited): Pressed rent:start" in second.stdout
    assert local_bot.callback_answers[-1]["text"] == "Noted"


def test_chat_without_a_running_stack_says_so(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "local", "chat", "--standin", f"http://127.0.0.1:{free_port()}"],
        input="hello\n", capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    assert done.returncode == 2 and "make up" in done.stderr
