"""A local stand-in for the Telegram Bot API, and for the user's Telegram app on the other side of the chat.

Why: the bot must be testable and usable without Telegram's servers or a real bot token. The stand-in answers
the Bot API methods DePU uses with Telegram's response shapes and Telegram's validation errors (token,
message length, callback data size, HTML entities, unmodified edits, optional 429 rate limits), records every
message per chat and every call, and plays the user: it builds real update JSON and POSTs it to the
registered webhook with the ``X-Telegram-Bot-Api-Secret-Token`` header, exactly as Telegram does. It is also
the tests' Bot API double (``calls``, ``fail_next``, ``add_file``): there is one fake.

Rooms: ``standin`` (state, the call path, lifecycle), ``methods/`` (one module per group of Bot API methods,
a registry: a new method is a new module), ``validation`` (Telegram's checks), ``user_side`` (the user's
actions and webhook delivery), ``control`` (the chat CLI's JSON API), ``multipart`` (request bodies),
``http`` (the HTTP server's handler).
"""
from __future__ import annotations

from local.telegram_standin.control import UnknownControl
from local.telegram_standin.models import ApiError, Call, ChatMessage, Delivery, LocalUser, StoredFile
from local.telegram_standin.standin import TelegramStandIn

__all__ = ["ApiError", "Call", "ChatMessage", "Delivery", "LocalUser", "StoredFile", "TelegramStandIn",
           "UnknownControl"]
