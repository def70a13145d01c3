"""Route an ``Incoming`` to the handler the registry names, and turn failures into useful replies.

Feature modules (``depu.bot.features.FEATURES``) are imported on the first dispatch, not at import time, so
the webhook's cold start does not pay for what a feature imports (web3, say) before it is needed. A feature
that fails to import fails loudly: a bot silently missing its commands is worse than an error.

Every update ends here accepted: a handler's ``UserError`` becomes the reply, any other exception is logged
with the correlation id and the user gets an apology quoting it. Nothing is re-raised, so Telegram does not
resend an update that would fail the same way again.
"""
from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING

from depu.bot import features as feature_list
from depu.bot.registry import Chat, Incoming, Keyboard, Registry, registry
from depu.errors import UserError
from depu.telegram.text import escape

if TYPE_CHECKING:
    from depu.telegram.client import BotApi

log = logging.getLogger(__name__)

EXPIRED_BUTTON = "This button has expired. Send /help to start again."
_loaded = False
_load_lock = threading.Lock()


def load_features() -> Registry:
    """Import every feature module named in ``depu.bot.features.FEATURES`` once, so their handlers are
    registered. An import error propagates: the webhook fails loudly (and alarms) instead of answering
    with half its commands missing."""
    global _loaded
    with _load_lock:
        if not _loaded:
            for name in feature_list.FEATURES:
                importlib.import_module(name)
            _loaded = True
    return registry


class TelegramChat:
    """``registry.Chat`` over the Bot API, bound to the chat (and button press) an update came from."""

    def __init__(self, api: BotApi, incoming: Incoming) -> None:
        self.api = api
        self.incoming = incoming
        self.callback_answered = incoming.callback_id is None

    def reply(self, text: str, buttons: Keyboard | None = None) -> int | None:
        incoming = self.incoming
        # in a group, thread the answer under the command it answers
        reply_to = incoming.message_id if incoming.chat_type != "private" and incoming.callback_id is None else None
        return self.api.send_message(incoming.chat_id, text, buttons, reply_to=reply_to)

    def reply_private(self, text: str, buttons: Keyboard | None = None) -> int | None:
        from depu.bot.private import PrivateChatClosed
        from depu.telegram.client import TelegramError

        try:
            return self.api.send_message(self.incoming.user_id, text, buttons)  # a user's private chat id is their id
        except TelegramError as error:
            # 403 "bot can't initiate conversation with a user" (never started) or "bot was blocked by the user"
            if error.forbidden or (error.error_code == 400 and "chat not found" in error.description.lower()):
                raise PrivateChatClosed() from None
            raise

    def edit(self, message_id: int, text: str, buttons: Keyboard | None = None) -> None:
        self.api.edit_message_text(self.incoming.chat_id, message_id, text, buttons)

    def answer_callback(self, text: str | None = None, alert: bool = False) -> None:
        if self.callback_answered or self.incoming.callback_id is None:
            return
        self.callback_answered = True
        self.api.answer_callback_query(self.incoming.callback_id, text, alert)

    def send_photo(self, photo: bytes, caption: str = "", filename: str = "chart.png") -> None:
        self.api.send_photo(self.incoming.chat_id, photo, caption, filename)

    def send_document(self, content: bytes, filename: str, caption: str = "") -> None:
        self.api.send_document(self.incoming.chat_id, content, filename, caption)


def dispatch(incoming: Incoming, chat: Chat, *, correlation_id: str) -> str:
    """Run the handler for ``incoming``; returns what happened (for logs and tests). Never raises."""
    load_features()
    try:
        outcome = _route(incoming, chat)
    except UserError as exc:
        outcome = "user_error"
        _safely(chat.reply, exc.message)
    except Exception:
        outcome = "failed"
        log.exception("handler failed", extra={"correlation_id": correlation_id})
        _safely(chat.reply, f"Sorry, something went wrong on our side. Please try again later (ref {escape(correlation_id)}).")
    if incoming.callback_id is not None and not getattr(chat, "callback_answered", False):
        # stop the client's spinner even if the handler forgot (or failed)
        _safely(chat.answer_callback)
    return outcome


def _route(incoming: Incoming, chat: Chat) -> str:
    private = incoming.chat_type == "private"
    if incoming.callback_id is not None:
        prefix = (incoming.callback_data or "").split(":", 1)[0]
        handler = registry.callbacks.get(prefix) if prefix else None
        if handler is None:
            chat.answer_callback(EXPIRED_BUTTON)
            return "expired_callback"
        handler(incoming, chat)
        return f"callback:{prefix}"
    if incoming.command is not None:
        command = registry.commands.get(incoming.command)
        if command is None:
            if not private:
                return "ignored"  # in a group, an unknown /command is probably another bot's
            chat.reply(f"I don't know /{escape(incoming.command)}. Try /help to see what I can do.")
            return "unknown_command"
        command.handler(incoming, chat)
        return f"command:{command.name}"
    if incoming.document is not None:
        for handler in registry.documents:
            if handler(incoming, chat) is not False:  # None or True: the handler took the file
                return "document"
        if private:
            chat.reply("I wasn't expecting a file just now. Send /help to see what I can do.")
        return "unexpected_document"
    for text_handler in registry.texts:
        if text_handler(incoming, chat):
            return "text"
    if private and incoming.text:
        chat.reply("Send /help to see what I can do.")
    return "unhandled_text"


def _safely(send, *args) -> None:  # noqa: ANN001 - any Chat method
    """Best effort for the error path itself: if Telegram is down, the log already has the story."""
    try:
        send(*args)
    except Exception:
        log.exception("could not send the error reply")
