"""Turn a raw Telegram update into a ``depu.chat.Incoming`` (or ``None``: nothing for the bot to do).

Telegram's JSON is trusted for nothing: every field is type-checked, so a surprising update is ignored
instead of crashing the webhook. Only a body that is not an update at all (not JSON, not an object, no
integer ``update_id``) raises ``MalformedUpdate``; the webhook answers that with 400 and everything else,
ignored or handled, with 200 so Telegram does not resend it.

What is ignored, and why:
- ``edited_message``: editing an old ``/rent_gpu`` must not run it (and charge) again;
- ``channel_post``/``edited_channel_post``: channels have no user to own profiles, jobs or credits;
- ``my_chat_member``/``chat_member`` and every other kind: membership changes need no answer;
- messages from bots or without a sender (anonymous admins), and commands addressed to another bot.
"""
from __future__ import annotations

import re
from typing import Any

from depu import jsonbody
from depu.chat import Document, Incoming

MAX_CALLBACK_DATA = 64
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,64})(?:@([A-Za-z0-9_]{1,64}))?(?=\s|$)")


class MalformedUpdate(ValueError):
    """The body is not a Telegram update (the webhook answers 400)."""


def parse_body(body: str | bytes | None) -> dict[str, Any]:
    """The update object in a webhook body, or ``MalformedUpdate``."""
    if body is None or (isinstance(body, (str, bytes)) and not body.strip()):
        raise MalformedUpdate("empty body")
    try:
        raw = jsonbody.loads(body)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedUpdate(f"body is not JSON: {type(exc).__name__}") from None
    _check_envelope(raw)
    return raw


def _check_envelope(raw: Any) -> None:
    if not isinstance(raw, dict):
        raise MalformedUpdate("an update is a JSON object")
    if not _is_int(raw.get("update_id")):
        raise MalformedUpdate("an update has an integer update_id")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> int | None:
    return value if _is_int(value) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_update(raw: Any, bot_username: str | None = None) -> Incoming | None:
    """``Incoming`` for a message or button press meant for us; ``None`` for anything to ignore.

    ``bot_username`` (default: settings) decides whether ``/cmd@Name`` is addressed to this bot.
    """
    _check_envelope(raw)
    if bot_username is None:
        from depu.config import get_settings

        bot_username = get_settings().bot_username
    update_id: int = raw["update_id"]
    if "message" in raw:
        return _message(update_id, _dict(raw["message"]), bot_username)
    if "callback_query" in raw:
        return _callback(update_id, _dict(raw["callback_query"]))
    return None


def _sender(payload: dict[str, Any]) -> dict[str, Any] | None:
    sender = _dict(payload.get("from"))
    if not _is_int(sender.get("id")) or sender.get("is_bot") is True:
        return None
    return sender


def _chat(payload: dict[str, Any]) -> tuple[int, str] | None:
    chat = _dict(payload.get("chat"))
    chat_id, chat_type = _int(chat.get("id")), _str(chat.get("type"))
    if chat_id is None or chat_type is None:
        return None
    return chat_id, chat_type


def _message(update_id: int, message: dict[str, Any], bot_username: str) -> Incoming | None:
    sender, chat = _sender(message), _chat(message)
    if sender is None or chat is None:
        return None
    text = _str(message.get("text")) or _str(message.get("caption")) or ""
    command, args = None, ""
    found = _COMMAND.match(text)
    if found:
        addressee = found.group(2)
        if addressee is not None and addressee.lower() != bot_username.lower():
            return None  # /help@OtherBot: someone else's command
        command, args = found.group(1).lower(), text[found.end():].strip()
    return Incoming(
        update_id=update_id,
        user_id=sender["id"],
        chat_id=chat[0],
        chat_type=chat[1],
        text=text,
        command=command,
        args=args,
        message_id=_int(message.get("message_id")),
        document=_document(message.get("document")),
        first_name=_str(sender.get("first_name")) or "",
        username=_str(sender.get("username")),
        language_code=_str(sender.get("language_code")),
    )


def _document(value: Any) -> Document | None:
    document = _dict(value)
    file_id = _str(document.get("file_id"))
    if not file_id:
        return None
    return Document(
        file_id=file_id,
        file_name=_str(document.get("file_name")) or "document",
        mime_type=_str(document.get("mime_type")),
        file_size=_int(document.get("file_size")),
    )


def _callback(update_id: int, query: dict[str, Any]) -> Incoming | None:
    sender = _sender(query)
    callback_id = _str(query.get("id"))
    if sender is None or not callback_id:
        return None
    data = _str(query.get("data"))
    if data is None or len(data.encode("utf-8", "surrogatepass")) > MAX_CALLBACK_DATA:
        data = ""  # a game button or forged data: dispatch answers it as an expired button
    message = _dict(query.get("message"))
    chat = _chat(message)
    # a button on an inline-mode message has no chat: answer in the private chat with the user
    chat_id, chat_type = chat if chat is not None else (sender["id"], "private")
    return Incoming(
        update_id=update_id,
        user_id=sender["id"],
        chat_id=chat_id,
        chat_type=chat_type,
        callback_id=callback_id,
        callback_data=data,
        message_id=_int(message.get("message_id")),
        first_name=_str(sender.get("first_name")) or "",
        username=_str(sender.get("username")),
        language_code=_str(sender.get("language_code")),
    )
