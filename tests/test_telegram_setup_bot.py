"""scripts/setup_bot.py against moto (stack outputs, secrets) and the fake Bot API."""
from __future__ import annotations

import importlib.util
import json

import boto3
import pytest

from conftest import TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET
from depu.bot.dispatch import load_features
from telegram_harness import ROOT

WEBHOOK_URL = "https://abc123.execute-api.us-east-1.amazonaws.com/dev/telegram/webhook"


def load_script():
    spec = importlib.util.spec_from_file_location("depu_setup_bot", ROOT / "scripts" / "setup_bot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stack(aws):
    """A stack in moto whose outputs look like template.yaml's, naming the provisioned secrets."""
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "WebhookUrl": {"Value": WEBHOOK_URL},
            "TelegramBotTokenSecretArn": {"Value": "depu/local/telegram-bot-token"},
            "TelegramWebhookSecretArn": {"Value": "depu/local/telegram-webhook-secret"},
        },
    }
    boto3.client("cloudformation").create_stack(StackName="depu-test", TemplateBody=json.dumps(template))
    return "depu-test"


def test_setup_publishes_the_menu_and_registers_the_webhook(stack, telegram, capsys) -> None:
    assert load_script().main(["--stack-name", stack, "--api-base", telegram.base_url]) == 0
    commands, webhook, check = telegram.calls  # the fake only accepts the token stored in Secrets Manager
    assert commands.method == "setMyCommands"
    expected = [{"command": c.name, "description": c.description} for c in load_features().menu()]
    assert commands.params["commands"] == expected and expected
    assert webhook.method == "setWebhook"
    assert webhook.params["url"] == WEBHOOK_URL
    assert webhook.params["secret_token"] == TEST_WEBHOOK_SECRET
    assert webhook.params["allowed_updates"] == ["message", "callback_query"]
    assert check.method == "getWebhookInfo"
    printed = capsys.readouterr().out
    assert "webhook registered: yes" in printed
    assert TEST_BOT_TOKEN not in printed and TEST_WEBHOOK_SECRET not in printed


def test_dry_run_changes_nothing_and_prints_no_secret(stack, telegram, capsys) -> None:
    assert load_script().main(["--stack-name", stack, "--api-base", telegram.base_url, "--dry-run"]) == 0
    assert telegram.calls == []
    printed = capsys.readouterr().out
    assert WEBHOOK_URL in printed and "dry run" in printed
    assert TEST_BOT_TOKEN not in printed and TEST_WEBHOOK_SECRET not in printed


def test_explicit_arguments_work_without_a_stack(aws, telegram) -> None:
    load_script().main(["--webhook-url", WEBHOOK_URL, "--token-secret", "depu/local/telegram-bot-token",
                        "--webhook-secret", "depu/local/telegram-webhook-secret", "--api-base", telegram.base_url])
    assert [call.method for call in telegram.calls] == ["setMyCommands", "setWebhook", "getWebhookInfo"]


@pytest.mark.parametrize("argv", [[], ["--webhook-url", "http://insecure.example/hook", "--token-secret", "a",
                                       "--webhook-secret", "b"]])
def test_incomplete_or_insecure_setup_is_refused(aws, telegram, argv) -> None:
    with pytest.raises(SystemExit):
        load_script().main(argv)
    assert telegram.calls == []
