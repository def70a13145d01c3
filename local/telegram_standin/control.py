"""The control API (``/_standin/<action>``): how another process (the chat CLI) plays the user.

It says things, presses buttons, sends files and follows what happens. It never exposes the bot token or the
webhook secret. Actions are a registry like the Bot API's methods: ``@control_action("POST", "say")``.
"""
from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Callable

from local.telegram_standin.models import LocalUser

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn

ControlHandler = Callable[["TelegramStandIn", dict[str, str], dict[str, Any]], Any]

_actions: dict[tuple[str, str], ControlHandler] = {}


class UnknownControl(LookupError):
    """No such control action."""


def control_action(method: str, action: str) -> Callable[[ControlHandler], ControlHandler]:
    def register(handler: ControlHandler) -> ControlHandler:
        _actions[(method, action)] = handler
        return handler

    return register


def control(standin: TelegramStandIn, method: str, action: str, query: dict[str, str], body: dict[str, Any]) -> Any:
    handler = _actions.get((method, action))
    if handler is None:
        raise UnknownControl(f"{method} /_standin/{action}")
    return handler(standin, query, body)


def _user(body: dict[str, Any]) -> LocalUser:
    return LocalUser(int(body.get("user_id") or body.get("chat_id") or 1), str(body.get("first_name") or "Local"),
                     body.get("username"))


def _chat(body: dict[str, Any]) -> int | None:
    return int(body["chat_id"]) if body.get("chat_id") else None


@control_action("GET", "updates")
def updates(standin: TelegramStandIn, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    chat = int(query["chat"]) if query.get("chat") else None
    wait = min(float(query.get("wait") or 0), 25.0)
    found = standin.events(chat, int(query.get("after") or 0), wait=wait)
    return {"events": found, "last": found[-1]["seq"] if found else int(query.get("after") or 0)}


@control_action("GET", "state")
def state(standin: TelegramStandIn, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    with standin.lock:
        return {"bot_username": standin.bot_username, "webhook_registered": bool(standin.webhook_url),
                "webhook_url": standin.webhook_url, "chats": standin.chats,
                "commands": standin.commands, "last_event": standin.last_event}


@control_action("POST", "say")
def say(standin: TelegramStandIn, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    return standin.send_user_message(_user(body), _chat(body), str(body.get("text") or "")).as_json()


@control_action("POST", "document")
def document(standin: TelegramStandIn, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    content = base64.b64decode(str(body.get("content_base64") or ""))
    return standin.send_user_document(_user(body), _chat(body), str(body.get("filename") or "file.bin"), content,
                                      body.get("mime_type"), str(body.get("caption") or "")).as_json()


@control_action("POST", "press")
def press(standin: TelegramStandIn, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    user_id = body.get("user_id")
    return standin.press_button(int(body["chat_id"]), int(body["message_id"]), str(body["data"]),
                                int(user_id) if user_id else None).as_json()
