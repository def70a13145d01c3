"""The one visible table of what the bot answers: ``/commands`` and inline-button callbacks.

A feature module registers its handlers with the decorators below; ``depu.bot.dispatch`` looks them up.
Handlers receive an ``Incoming`` (what the user did) and a ``Chat`` (how to answer) and never see Telegram's
raw JSON or an AWS event.

Callback data is ``<prefix>:<payload>`` and at most 64 bytes (Telegram's limit); the prefix names the
handler, the payload is the handler's own short, versioned encoding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence


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
    """How a handler answers. Implemented over the Bot API client; tests can record calls."""

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


Handler = Callable[[Incoming, Chat], None]


@dataclass
class Command:
    name: str
    description: str
    handler: Handler
    menu: bool = True  # shown in Telegram's command menu (setMyCommands)


@dataclass
class Registry:
    commands: dict[str, Command] = field(default_factory=dict)
    callbacks: dict[str, Handler] = field(default_factory=dict)
    documents: list[Handler] = field(default_factory=list)
    texts: list[Callable[[Incoming, Chat], bool]] = field(default_factory=list)

    def command(self, name: str, description: str, *, menu: bool = True) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if name in self.commands:
                raise ValueError(f"/{name} registered twice")
            self.commands[name] = Command(name, description, handler, menu)
            return handler

        return register

    def callback(self, prefix: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if prefix in self.callbacks or ":" in prefix:
                raise ValueError(f"bad or duplicate callback prefix {prefix!r}")
            self.callbacks[prefix] = handler
            return handler

        return register

    def document(self, handler: Handler) -> Handler:
        """Register a handler offered every document the user sends (e.g. a script for /rent_gpu)."""
        self.documents.append(handler)
        return handler

    def text(self, handler: Callable[[Incoming, Chat], bool]) -> Callable[[Incoming, Chat], bool]:
        """Register a plain-text handler (a flow waiting for typed input); it returns True if it took the text."""
        self.texts.append(handler)
        return handler

    def menu(self) -> Sequence[Command]:
        return [command for command in self.commands.values() if command.menu]


registry = Registry()
command = registry.command
callback = registry.callback
document = registry.document
text = registry.text
