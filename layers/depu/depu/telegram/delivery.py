"""Deliver a ``depu.notify.Notice`` to Telegram, within Telegram's rate limits.

Telegram allows about 30 messages a second overall, one a second in a private chat and about 20 a minute in
a group. ``RateLimiter`` spaces sends accordingly; a send that would have to wait longer than the caller can
afford is refused (``RateLimited``), so the notifier reports that record as failed and SQS brings it back
later instead of the function sleeping through its timeout.

The limiter is in-process state. It is exact because the notifier runs with reserved concurrency 1; after a
cold start it begins empty and Telegram's own 429 ``retry_after`` (fed back with ``penalize``) covers the gap.
"""
from __future__ import annotations

import logging
import posixpath
import threading
import time
from collections.abc import Callable

from depu.notify import Notice
from depu.telegram.client import BotApi, TelegramError

log = logging.getLogger(__name__)

GLOBAL_PER_SECOND = 30.0
PRIVATE_CHAT_INTERVAL = 1.0
GROUP_CHAT_INTERVAL = 3.0  # 20 messages a minute
_EDIT_TARGET_GONE = ("message to edit not found", "message can't be edited")


class RateLimited(Exception):
    """No send slot within the time the caller could wait; retry the notice later."""

    def __init__(self, chat_id: int, wait: float) -> None:
        super().__init__(f"chat {chat_id}: next send slot in {wait:.1f}s")
        self.chat_id = chat_id
        self.wait = wait


class RateLimiter:
    """Reserves send slots: at most ``per_second`` overall and one per chat interval (longer for groups,
    whose chat ids are negative). ``clock`` and ``sleep`` are injectable so tests run in fake time."""

    def __init__(
        self,
        per_second: float = GLOBAL_PER_SECOND,
        private_interval: float = PRIVATE_CHAT_INTERVAL,
        group_interval: float = GROUP_CHAT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_chats: int = 10_000,
    ) -> None:
        self.global_interval = 1.0 / per_second
        self.private_interval = private_interval
        self.group_interval = group_interval
        self._clock = clock
        self._sleep = sleep
        self._max_chats = max_chats
        self._next_global = 0.0
        self._next_chat: dict[int, float] = {}
        self._lock = threading.Lock()

    def interval(self, chat_id: int) -> float:
        return self.group_interval if chat_id < 0 else self.private_interval

    @property
    def tracked_chats(self) -> int:
        """How many chats' next slots it remembers: idle ones are forgotten past ``max_chats``, so a warm
        notifier's memory stays bounded however many chats it has served."""
        with self._lock:
            return len(self._next_chat)

    def reserve(self, chat_id: int, max_wait: float) -> float:
        """Book the next slot for ``chat_id``; returns how long to wait for it, or raises ``RateLimited``
        (booking nothing) if that is longer than ``max_wait``."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_global, self._next_chat.get(chat_id, 0.0))
            wait = slot - now
            if wait > max_wait:
                raise RateLimited(chat_id, wait)
            self._next_global = slot + self.global_interval
            self._next_chat[chat_id] = slot + self.interval(chat_id)
            if len(self._next_chat) > self._max_chats:
                self._forget_idle(now)
            return wait

    def acquire(self, chat_id: int, max_wait: float) -> float:
        """Wait for a slot (at most ``max_wait``); returns the time waited."""
        wait = self.reserve(chat_id, max_wait)
        if wait > 0:
            self._sleep(wait)
        return wait

    def penalize(self, chat_id: int | None, retry_after: float) -> None:
        """Telegram said 429: no send to this chat (or to anyone, for ``None``) for ``retry_after`` seconds."""
        with self._lock:
            until = self._clock() + max(0.0, retry_after)
            if chat_id is None:
                self._next_global = max(self._next_global, until)
            else:
                self._next_chat[chat_id] = max(self._next_chat.get(chat_id, 0.0), until)

    def _forget_idle(self, now: float) -> None:
        for chat_id in [chat for chat, ready in self._next_chat.items() if ready <= now]:
            del self._next_chat[chat_id]


def deliver(notice: Notice, api: BotApi, fetch_object: Callable[[str], bytes]) -> int | None:
    """Send one notice; returns the Telegram message id (the edited one for an edit).

    A progress edit whose message is gone is sent as a new message instead, so the news is not lost.
    A user who blocked the bot (403) is logged and skipped: retrying cannot help.
    """
    chat_id = int(notice.chat_id)
    try:
        if notice.photo_key:
            return api.send_photo(chat_id, fetch_object(notice.photo_key), caption=notice.text,
                                  filename=notice.filename or posixpath.basename(notice.photo_key), buttons=notice.buttons)
        if notice.document_key:
            return api.send_document(chat_id, fetch_object(notice.document_key),
                                     filename=notice.filename or posixpath.basename(notice.document_key),
                                     caption=notice.text, buttons=notice.buttons)
        if notice.edit_message_id is not None:
            try:
                api.edit_message_text(chat_id, int(notice.edit_message_id), notice.text, notice.buttons)
                return int(notice.edit_message_id)
            except TelegramError as exc:
                if exc.error_code != 400 or not any(gone in exc.description.lower() for gone in _EDIT_TARGET_GONE):
                    raise
                log.info("message to edit is gone; sending a new one")
        return api.send_message(chat_id, notice.text, notice.buttons)
    except TelegramError as exc:
        if exc.forbidden:
            log.warning("chat refuses messages from the bot; notice dropped", extra={"chat_id": chat_id})
            return None
        raise
