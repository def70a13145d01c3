"""Telegram's checks on Bot API parameters, with Telegram's error descriptions."""
from __future__ import annotations

import json
import re
from typing import Any

from local.telegram_html import EntityError, parse_html, utf16_length
from local.telegram_standin.models import ApiError

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_UPLOAD = 50 * 1024 * 1024  # bots may upload 50 MB
MAX_DOWNLOAD = 20 * 1024 * 1024  # and download 20 MB through getFile


def chat_id(params: dict[str, Any]) -> int:
    value = params.get("chat_id")
    if value in (None, ""):
        raise ApiError(400, "Bad Request: chat_id is empty")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "Bad Request: chat not found") from None


def text(params: dict[str, Any], key: str, limit: int, empty: str, too_long: str) -> tuple[str, str, str | None]:
    """(what the bot sent, what the user sees, parse mode); HTML must parse as Telegram parses it."""
    raw = params.get(key)
    raw = "" if raw is None else str(raw)
    mode = params.get("parse_mode") or None
    plain = raw
    if mode and str(mode).upper() == "HTML":
        try:
            plain = parse_html(raw)
        except EntityError as error:
            raise ApiError(400, f"Bad Request: can't parse entities: {error}") from None
    elif mode and str(mode) not in ("Markdown", "MarkdownV2"):
        raise ApiError(400, f"Bad Request: unsupported parse_mode \"{mode}\"")
    if not plain.strip():
        raise ApiError(400, f"Bad Request: {empty}")
    if utf16_length(plain) > limit:
        raise ApiError(400, f"Bad Request: {too_long}")
    return raw, plain, mode


def caption(params: dict[str, Any]) -> tuple[str, str, str | None]:
    if not params.get("caption"):
        return "", "", params.get("parse_mode") or None
    return text(params, "caption", MAX_CAPTION, "message caption is empty", "message caption is too long")


def keyboard(markup: Any) -> list[list[dict[str, str]]]:
    """The inline keyboard of ``reply_markup`` (other keyboards are accepted and not shown)."""
    if markup in (None, ""):
        return []
    markup = json_param(markup, "reply_markup")
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        return []  # reply keyboards, force_reply, remove_keyboard: accepted, not shown
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(400, "Bad Request: field \"inline_keyboard\" of the InlineKeyboardMarkup should be "
                            "an Array of Arrays")
    return [[_button(button) for button in row] for row in rows]


def _button(button: Any) -> dict[str, str]:
    if not isinstance(button, dict) or not str(button.get("text") or "").strip():
        raise ApiError(400, "Bad Request: can't parse inline keyboard button: Text must be non-empty")
    if "callback_data" in button:
        data = str(button["callback_data"])
        if not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA:
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return {"text": str(button["text"]), "callback_data": data}
    if "url" in button:
        url = str(button["url"])
        if not url.startswith(("http://", "https://", "tg://")):
            raise ApiError(400, f"Bad Request: inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
        return {"text": str(button["text"]), "url": url}
    raise ApiError(400, "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the "
                        "inline keyboard")


def json_param(value: Any, name: str) -> Any:
    """A parameter that is JSON when it comes in a form (and already parsed in a JSON body)."""
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    return value


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


BOT_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
