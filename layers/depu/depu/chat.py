"""The words the bot and the Telegram plumbing share: what a user did (``Incoming``), how to answer
(``Chat``) and inline buttons (``Button``, ``Keyboard``).

This module is the only thing ``depu.telegram`` and ``depu.bot`` both import, so the layers point one way:
``depu.bot`` uses ``depu.telegram`` (the Bot API client, update parsing, text helpers), and ``depu.telegram``
knows nothing of the bot's commands and flows. It imports nothing of DePU's, so it is free on a cold start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Button:
    """An inline keyboard button: callback ``data`` (<= 64 bytes), a ``url``, or a ``web_app_url`` (opens a
    Telegram Mini App; Telegram allows those in private chats only)."""

    text: str
    data: str | None = None
    url: str | None = None
    web_app_url: str | None = None

    def __post_init__(self) -> None:
        if sum(value is not None for value in (self.data, self.url, self.web_app_url)) != 1:
            raise ValueError("a button has exactly one of data, url or web_app_url")
        if self.data is not None and len(self.data.encode()) > 64:
            raise ValueError(f"callback data over 64 bytes: {self.data!r}")


Keyboard = list[list[Button]]


@dataclass(frozen=True)
class Document:
    """A file the user sent (Telegram keeps it; we get its id and fetch it when needed)."""

    file_id: str
    file_name: str
    mime_type: str | None
    file_size: int | None


@dataclass(frozen=True)
class Incoming:
    """What a user did, in DePU's words: a command, a plain message or a button press."""

    update_id: int
    user_id: int
    chat_id: int
    chat_type: str  # private, group, supergroup, channel
    text: str = ""
    command: str | None = None  # lower-case, without "/" and "@BotName"
    args: str = ""  # text after the command, stripped
    callback_id: str | None = None
    callback_data: str | None = None
    message_id: int | None = None  # the message a button belongs to, or the user's message
    document: Document | None = None
    first_name: str = ""
    username: str | None = None
    language_code: str | None = None


class Chat(Protocol):
    """How a handler answers. Implemented over the Bot API client (``depu.bot.dispatch.TelegramChat``);
    tests record the calls."""

    def reply(self, text: str, buttons: Keyboard | None = None) -> int | None:
        """Send a new HTML message to the incoming chat; returns its message id."""

    def reply_private(self, text: str, buttons: Keyboard | None = None) -> int | None:
        """Send a new HTML message to the sender's private chat (from a group: ``depu.bot.private``); raises
        ``depu.bot.private.PrivateChatClosed`` when the sender never opened one."""

    def edit(self, message_id: int, text: str, buttons: Keyboard | None = None) -> None:
        """Replace a message's text and buttons (progress, menus)."""

    def answer_callback(self, text: str | None = None, alert: bool = False) -> None:
        """Acknowledge the button press so the client's spinner stops."""

    def send_photo(self, photo: bytes, caption: str = "", filename: str = "chart.png") -> None: ...

    def send_document(self, content: bytes, filename: str, caption: str = "") -> None: ...
