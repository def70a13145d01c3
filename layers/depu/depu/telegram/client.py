"""A small Telegram Bot API client over ``requests``: the only code in DePU that talks to Telegram.

Why our own: we need exactly a dozen methods, HTML messages split at 4096 characters, Telegram's
``retry_after`` honoured, transient failures retried, and the bot token kept out of every log line and
exception (the token is part of each URL, so errors are re-raised with it redacted).

The token lives in Secrets Manager and is fetched lazily through Powertools Parameters (cached), so importing
this module costs no AWS call.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import requests

from depu.chat import Button
from depu.config import get_settings
from depu.retry import TELEGRAM_CALL
from depu.telegram import redact
from depu.telegram.text import CAPTION_LIMIT, split_message

log = logging.getLogger(__name__)
redact.install()  # urllib3 would log the token-bearing URL at DEBUG

# most of a Lambda's 30 s: waiting longer for Telegram is better done by the queue's retry
DEFAULT_MAX_SLEEP = TELEGRAM_CALL.maximum
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB


class TelegramError(Exception):
    """A Bot API call failed for good (after retries). ``description`` is Telegram's own words."""

    def __init__(
        self,
        method: str,
        description: str,
        *,
        error_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"Telegram {method} failed ({error_code}): {description}")
        self.method = method
        self.description = description
        self.error_code = error_code
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        return self.error_code == 429

    @property
    def forbidden(self) -> bool:
        """The user blocked the bot, or the bot was removed from the group: nothing to retry."""
        return self.error_code == 403


ButtonLike = Button | dict[str, str]


def inline_keyboard(rows: Sequence[Sequence[ButtonLike]] | None) -> dict[str, Any] | None:
    """Telegram's ``reply_markup`` for rows of ``depu.chat.Button`` (or the dicts a ``Notice`` carries)."""
    if not rows:
        return None
    keyboard: list[list[dict[str, str]]] = []
    for row in rows:
        converted: list[dict[str, str]] = []
        for item in row:
            button = item if isinstance(item, Button) else Button(**item)  # validates data <= 64 bytes
            if button.data is not None:
                converted.append({"text": button.text, "callback_data": button.data})
            elif button.web_app_url is not None:
                converted.append({"text": button.text, "web_app": {"url": button.web_app_url}})  # type: ignore[dict-item]
            else:
                converted.append({"text": button.text, "url": str(button.url)})
        if converted:
            keyboard.append(converted)
    return {"inline_keyboard": keyboard} if keyboard else None


def _fetch_token() -> str:
    from aws_lambda_powertools.utilities import parameters

    return str(parameters.get_secret(get_settings().telegram_bot_token_secret, max_age=300))


class BotApi:
    """Bot API calls with retries. ``token`` and ``base_url`` default to the deployed secret and settings."""

    def __init__(
        self,
        token: str | None = None,
        base_url: str | None = None,
        *,
        session: requests.Session | None = None,
        max_attempts: int = TELEGRAM_CALL.attempts,
        max_sleep: float = DEFAULT_MAX_SLEEP,
        timeout: tuple[float, float] = (3.05, 10.0),  # (connect, read): a 30 s Lambda must outlast retries
        sleep: Callable[[float], None] = time.sleep,
        max_total: float = TELEGRAM_CALL.budget or 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token
        self.base_url = (base_url or get_settings().telegram_api_base).rstrip("/")
        self.session = session or requests.Session()
        self.max_attempts = max(1, max_attempts)
        self.max_sleep = max_sleep
        self.timeout = timeout
        self._sleep = sleep
        self.max_total = max_total  # no retry that would end after this many seconds from the first try
        self._clock = clock
        self.policy = TELEGRAM_CALL.but(attempts=self.max_attempts, maximum=max_sleep, budget=max_total)

    # ------------------------------------------------------------------ plumbing
    @property
    def token(self) -> str:
        if self._token is None:
            self._token = _fetch_token()
        return self._token

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    def call(self, method: str, params: dict[str, Any] | None = None, files: dict[str, Any] | None = None) -> Any:
        """Call ``method`` and return its ``result``. Retries 429 (after ``retry_after``), 5xx and network
        errors by the TELEGRAM_CALL policy, within this client's limits; raises ``TelegramError`` otherwise."""
        url = f"{self.base_url}/bot{self.token}/{method}"
        payload = {key: value for key, value in (params or {}).items() if value is not None}

        def worth_retrying(error: BaseException) -> bool:
            if not isinstance(error, TelegramError):
                return False
            if error.rate_limited:
                return (error.retry_after or 0.0) <= self.max_sleep
            return error.error_code is None or error.error_code >= 500  # None: the network failed

        def wait(error: BaseException, retry: int) -> float:
            if isinstance(error, TelegramError) and error.rate_limited and error.retry_after is not None:
                return error.retry_after
            return self._backoff(retry)

        def log_retry(error: BaseException, retry: int, wait: float) -> None:
            log.warning("telegram %s failed (%s, attempt %d), retrying in %.1fs", method,
                        getattr(error, "error_code", None) or "network", retry, wait)

        retrying = self.policy.retrying(worth_retrying, wait=wait, sleep=self._sleep, clock=self._clock, on_retry=log_retry)
        return retrying(self._attempt, method, url, payload, files)

    def _attempt(self, method: str, url: str, payload: dict[str, Any], files: dict[str, Any] | None) -> Any:
        """One request: the result, or a TelegramError saying what went wrong (code None: the network)."""
        try:
            if files:
                form = {key: _form_value(value) for key, value in payload.items()}
                response = self.session.post(url, data=form, files=files, timeout=self.timeout)
            else:
                response = self.session.post(url, json=payload, timeout=self.timeout)
        except requests.RequestException as exc:
            # the exception text contains the URL, hence the token: keep only a redacted summary
            raise TelegramError(method, f"network error: {type(exc).__name__}") from None
        body = self._json(response)
        if response.status_code == 200 and body.get("ok") is True:
            return body.get("result")
        description = self._redact(str(body.get("description") or response.reason or "no description"))
        code = body.get("error_code") if isinstance(body.get("error_code"), int) else response.status_code
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        if code == 429:
            retry_after = _number(parameters.get("retry_after"), default=1.0)
            raise TelegramError(method, description, error_code=429, retry_after=retry_after)
        raise TelegramError(method, description, error_code=code)

    def _backoff(self, retry: int) -> float:
        return self.policy.delay(retry)

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    # ------------------------------------------------------------------ messages
    def send_message(
        self,
        chat_id: int,
        text: str,
        buttons: Sequence[Sequence[ButtonLike]] | None = None,
        reply_to: int | None = None,
        *,
        preview: bool = False,
    ) -> int:
        """Send an HTML message, split into several if over 4096 characters (buttons on the last part).
        Returns the id of the last message sent."""
        if not text or not text.strip():
            raise ValueError("cannot send an empty message")
        parts = split_message(text)
        message_id = 0
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            params: dict[str, Any] = {
                "chat_id": chat_id,
                "text": part,
                "parse_mode": "HTML",
                "reply_markup": inline_keyboard(buttons) if last else None,
                "link_preview_options": None if preview else {"is_disabled": True},
            }
            if reply_to is not None and index == 0:
                params["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
            result = self.call("sendMessage", params)
            message_id = int(result["message_id"])
        return message_id

    def edit_message_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        buttons: Sequence[Sequence[ButtonLike]] | None = None,
    ) -> None:
        """Replace a message's text and keyboard. Editing to identical content is a no-op, not an error.
        Text over the limit is cut to its first part (an edit cannot become several messages)."""
        params = {
            "chat_id": chat_id,
            "message_id": message_id,
            "text": split_message(text)[0],
            "parse_mode": "HTML",
            "reply_markup": inline_keyboard(buttons),
            "link_preview_options": {"is_disabled": True},
        }
        try:
            self.call("editMessageText", params)
        except TelegramError as exc:
            if exc.error_code == 400 and "message is not modified" in exc.description.lower():
                return
            raise

    def answer_callback_query(self, callback_query_id: str, text: str | None = None, alert: bool = False) -> None:
        params = {"callback_query_id": callback_query_id, "text": text[:200] if text else None, "show_alert": alert}
        try:
            self.call("answerCallbackQuery", params)
        except TelegramError as exc:
            # an answer after Telegram's ~15 s window fails harmlessly; the user just saw a spinner stop
            if exc.error_code == 400 and "query is too old" in exc.description.lower():
                return
            raise

    def send_photo(
        self,
        chat_id: int,
        photo: bytes,
        caption: str = "",
        filename: str = "chart.png",
        buttons: Sequence[Sequence[ButtonLike]] | None = None,
    ) -> int:
        """Upload a photo. A caption over Telegram's 1024 limit follows as its own message."""
        return self._send_file("sendPhoto", "photo", chat_id, photo, filename, caption, buttons)

    def send_document(
        self,
        chat_id: int,
        content: bytes,
        filename: str,
        caption: str = "",
        buttons: Sequence[Sequence[ButtonLike]] | None = None,
    ) -> int:
        return self._send_file("sendDocument", "document", chat_id, content, filename, caption, buttons)

    def _send_file(
        self,
        method: str,
        field: str,
        chat_id: int,
        content: bytes,
        filename: str,
        caption: str,
        buttons: Sequence[Sequence[ButtonLike]] | None,
    ) -> int:
        short_caption = caption if len(caption) <= CAPTION_LIMIT else ""
        params = {
            "chat_id": chat_id,
            "caption": short_caption or None,
            "parse_mode": "HTML" if short_caption else None,
            "reply_markup": inline_keyboard(buttons) if not caption or short_caption else None,
        }
        result = self.call(method, params, files={field: (filename, content)})
        message_id = int(result["message_id"])
        if caption and not short_caption:
            message_id = self.send_message(chat_id, caption, buttons)
        return message_id

    # ------------------------------------------------------------------ files
    def get_file(self, file_id: str) -> dict[str, Any]:
        result = self.call("getFile", {"file_id": file_id})
        if not isinstance(result, dict) or not result.get("file_path"):
            raise TelegramError("getFile", "the file is not available for download")
        return result

    def download_file(self, file_id: str, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
        """The content of a file a user sent (a script, a dataset), refusing anything over ``max_bytes``."""
        info = self.get_file(file_id)
        size = info.get("file_size")
        if isinstance(size, int) and size > max_bytes:
            raise TelegramError("getFile", f"file is {size} bytes, over the {max_bytes} byte limit")
        url = f"{self.base_url}/file/bot{self.token}/{info['file_path']}"
        try:
            with self.session.get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code != 200:
                    raise TelegramError("downloadFile", f"HTTP {response.status_code}", error_code=response.status_code)
                chunks: list[bytes] = []
                received = 0
                for chunk in response.iter_content(64 * 1024):
                    received += len(chunk)
                    if received > max_bytes:
                        raise TelegramError("downloadFile", f"file is over the {max_bytes} byte limit")
                    chunks.append(chunk)
        except requests.RequestException as exc:
            raise TelegramError("downloadFile", f"network error: {type(exc).__name__}") from None
        return b"".join(chunks)

    # ------------------------------------------------------------------ bot setup
    def set_my_commands(self, commands: Iterable[tuple[str, str]]) -> None:
        listed = [{"command": name, "description": description[:256]} for name, description in commands]
        self.call("setMyCommands", {"commands": listed})

    def set_webhook(
        self,
        url: str,
        secret_token: str,
        allowed_updates: Sequence[str] = ("message", "callback_query"),
        *,
        drop_pending_updates: bool = False,
        max_connections: int = 40,
    ) -> None:
        self.call(
            "setWebhook",
            {
                "url": url,
                "secret_token": secret_token,
                "allowed_updates": list(allowed_updates),
                "drop_pending_updates": drop_pending_updates,
                "max_connections": max_connections,
            },
        )

    def delete_webhook(self, drop_pending_updates: bool = False) -> None:
        self.call("deleteWebhook", {"drop_pending_updates": drop_pending_updates})

    def get_webhook_info(self) -> dict[str, Any]:
        return dict(self.call("getWebhookInfo") or {})


def _form_value(value: Any) -> str:
    """A multipart field as the Bot API reads it: JSON for objects and booleans, text for the rest."""
    return json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return max(0.0, float(value))


@lru_cache(maxsize=1)
def bot_api() -> BotApi:
    """The process's client for the deployed bot (tests that change settings call ``bot_api.cache_clear()``)."""
    return BotApi()
