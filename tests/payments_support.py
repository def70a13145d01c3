"""The loop the payment tests run in: the Telegram stand-in (with its Stars emulation) posting to the real
webhook handler through a loopback relay, against moto."""
from __future__ import annotations

import pytest
import requests

from local.telegram_standin import TelegramStandIn
from test_telegram_standin_loop import webhook_loop


@pytest.fixture
def stars(aws, monkeypatch):
    """A stand-in whose webhook is the real TelegramWebhookFunction handler."""
    with webhook_loop(monkeypatch) as standin:
        yield standin


def start(standin: TelegramStandIn, user_id: int, text: str = "/start") -> None:
    assert standin.send_user_message(user_id, text=text).status == 200


def invoice_for(standin: TelegramStandIn, user_id: int, stars: int):
    """/topup, then the pack's button: returns the invoice message the bot sent."""
    start(standin, user_id, "/topup")
    menu = standin.messages(user_id)[-1]
    data = next(d for d in menu.button_data() if d.endswith(f":{stars}"))
    assert standin.press_button(user_id, menu.message_id, data).status == 200
    invoice = standin.messages(user_id)[-1]
    assert invoice.invoice is not None, invoice.text
    return invoice


def pay_over_control_api(standin: TelegramStandIn, chat_id: int, message_id: int, user_id: int | None = None) -> dict:
    body = {"chat_id": chat_id, "message_id": message_id}
    if user_id is not None:
        body["user_id"] = user_id
    response = requests.post(f"{standin.url}/_standin/pay", json=body, timeout=30)
    response.raise_for_status()
    return response.json()
