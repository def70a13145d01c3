"""A local stand-in for the Telegram Bot API, and for the user's Telegram app on the other side of the chat.

Why: the bot must be testable and usable without Telegram's servers or a real bot token. The stand-in answers
the Bot API methods DePU uses with Telegram's response shapes and Telegram's validation errors (token,
message length, callback data size, HTML entities, unmodified edits, optional 429 rate limits), records every
message per chat, and plays the user: it builds real update JSON and POSTs it to the registered webhook with
the ``X-Telegram-Bot-Api-Secret-Token`` header, exactly as Telegram does.

A small JSON control API (``/_standin/...``) lets another process (the chat CLI) say things, press buttons,
send files and follow the bot's answers. It never exposes the bot token or the webhook secret.
"""
from __future__ import annotations

import base64
import itertools
import json
import logging
import mimetypes
import re
import struct
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from local.http_server import ClosingHTTPServer
from local.telegram_html import EntityError, parse_html, utf16_length
from local.telegram_stars import StarsMixin

log = logging.getLogger("local.telegram")

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_UPLOAD = 50 * 1024 * 1024  # bots may upload 50 MB
MAX_DOWNLOAD = 20 * 1024 * 1024  # and download 20 MB through getFile
CHAT_ACTIONS = {
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note",
}
_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_BOT_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)


class ApiError(Exception):
    """A Bot API error, answered as ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class LocalUser:
    """A Telegram user played by the stand-in."""

    id: int
    first_name: str = "Local"
    username: str | None = None
    language_code: str = "en"

    def as_api(self) -> dict[str, Any]:
        user = {"id": self.id, "is_bot": False, "first_name": self.first_name, "language_code": self.language_code}
        if self.username:
            user["username"] = self.username
        return user


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    content: bytes
    file_name: str
    mime_type: str
    file_path: str


@dataclass
class Delivery:
    """What happened to an update the user caused: the webhook's HTTP status (None: no webhook yet)."""

    update_id: int
    status: int | None
    message_id: int | None = None
    callback_query_id: str | None = None
    error: str | None = None


@dataclass
class ChatMessage:
    """One message in a chat, as the stand-in records it (for tests and the chat CLI)."""

    chat_id: int
    message_id: int
    from_bot: bool
    date: int
    text: str = ""  # what the user sees: HTML removed, entities decoded
    raw_text: str = ""  # what the bot sent
    parse_mode: str | None = None
    buttons: list[list[dict[str, str]]] = field(default_factory=list)
    photo: str | None = None  # file id
    document: dict[str, Any] | None = None  # file_id, file_name, mime_type, file_size
    edits: int = 0
    deleted: bool = False
    user: LocalUser | None = None
    invoice: dict[str, Any] | None = None  # an invoice (local/telegram_stars.py): title, currency, total_amount

    def button_data(self) -> list[str]:
        return [button["callback_data"] for row in self.buttons for button in row if "callback_data" in button]

    def as_record(self) -> dict[str, Any]:
        return {
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "from_bot": self.from_bot,
            "date": self.date,
            "text": self.text,
            "html": self.raw_text if (self.parse_mode or "").upper() == "HTML" else None,
            "parse_mode": self.parse_mode,
            "buttons": self.buttons,
            "photo": self.photo,
            "document": self.document,
            "edits": self.edits,
            "deleted": self.deleted,
            "invoice": self.invoice,
        }


class TelegramStandIn(StarsMixin):
    """The Bot API on ``http://127.0.0.1:<port>/bot<token>/<method>`` plus the user's side of the chat."""

    def __init__(
        self,
        bot_token: str,
        *,
        port: int = 8081,
        host: str = "127.0.0.1",
        bot_username: str = "DePUDevBot",
        rate_limit: bool = False,
    ):
        self.bot_token = bot_token
        self.host = host
        self.port = port
        self.bot_username = bot_username
        self.rate_limit = rate_limit
        self.bot_id = int(bot_token.split(":", 1)[0]) if bot_token.split(":", 1)[0].isdigit() else 1
        self.webhook_url: str | None = None
        self._webhook_secret: str | None = None
        self.commands: list[dict[str, str]] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.chat_actions: list[tuple[int, str]] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._chats: dict[int, dict[int, ChatMessage]] = defaultdict(dict)
        self._next_message_id: dict[int, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._users: dict[int, LocalUser] = {}
        self._files: dict[str, StoredFile] = {}
        self._events: list[dict[str, Any]] = []
        self._open_callbacks: dict[str, int] = {}  # callback query id -> chat id
        self._update_ids = itertools.count(100_000_001)
        self._pending_updates: list[dict[str, Any]] = []
        self._sent_at: dict[int, float] = {}
        self._blocked: set[int] = set()
        self._global_sends: list[float] = []
        self._server: ClosingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        port = self._server.server_address[1] if self._server else self.port
        return f"http://{self.host}:{port}"

    @property
    def api_base(self) -> str:
        """What TELEGRAM_API_BASE must be for the bot to talk to this stand-in."""
        return self.url

    def start(self) -> "TelegramStandIn":
        self._server = ClosingHTTPServer((self.host, self.port), _make_request_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="depu-local-telegram", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.close()  # keep-alive connections opened before end too
            self._server = None
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "TelegramStandIn":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading (tests, chat CLI)
    def messages(self, chat_id: int, *, from_bot: bool | None = True) -> list[ChatMessage]:
        with self._lock:
            found = sorted(self._chats.get(chat_id, {}).values(), key=lambda message: message.message_id)
            return [m for m in found if from_bot is None or m.from_bot == from_bot]

    def message(self, chat_id: int, message_id: int) -> ChatMessage:
        with self._lock:
            return self._chats[chat_id][message_id]

    def events(self, chat_id: int | None = None, after: int = 0, wait: float = 0.0) -> list[dict[str, Any]]:
        """Everything that happened after event ``after`` (optionally waiting for something to happen)."""
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                found = [e for e in self._events[after:] if chat_id is None or e["chat_id"] == chat_id]
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def wait_for_bot_message(self, chat_id: int, *, after: int = 0, timeout: float = 10.0) -> ChatMessage:
        """The first bot message (new or edited) in the chat after event ``after``; raises on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(chat_id, after, wait=deadline - time.monotonic()):
                after = event["seq"]
                if event["kind"] in ("message", "edited") and event["message"]["from_bot"]:
                    return self.message(chat_id, event["message"]["message_id"])
        raise TimeoutError(f"no bot message in chat {chat_id} within {timeout} s")

    @property
    def last_event(self) -> int:
        with self._lock:
            return len(self._events)

    def file_content(self, file_id: str) -> StoredFile:
        with self._lock:
            return self._files[file_id]

    # ------------------------------------------------------------------ the user's side
    def block_bot(self, chat_id: int, blocked: bool = True) -> None:
        """The user blocks (or unblocks) the bot: sends to the chat then fail with 403, as on Telegram."""
        with self._lock:
            (self._blocked.add if blocked else self._blocked.discard)(chat_id)

    def send_user_message(self, user: LocalUser | int, chat: int | None = None, text: str = "") -> Delivery:
        """The user types ``text`` (commands get ``bot_command`` entities, as Telegram adds them)."""
        person = self._user(user)
        chat_id = person.id if chat is None else chat
        with self._lock:
            message = self._record_user_message(chat_id, person, text=text)
            api_message = self._api_message(message)
        entities = [
            {"type": "bot_command", "offset": utf16_length(text[: found.start()]),
             "length": utf16_length(found.group(0))}
            for found in _COMMAND.finditer(text)
        ]
        if entities:
            api_message["entities"] = entities
        delivery = self._deliver({"message": api_message})
        delivery.message_id = message.message_id
        return delivery

    def send_user_document(
        self,
        user: LocalUser | int,
        chat: int | None,
        filename: str,
        content: bytes,
        mime_type: str | None = None,
        caption: str = "",
    ) -> Delivery:
        """The user sends a file; the bot gets a ``document`` with a file id it can fetch through getFile."""
        person = self._user(user)
        chat_id = person.id if chat is None else chat
        with self._lock:
            stored = self._store_file(content, filename, mime_type, "documents")
            document = self._document_api(stored)
            message = self._record_user_message(chat_id, person, text=caption, document=document)
            api_message = self._api_message(message)
        delivery = self._deliver({"message": api_message})
        delivery.message_id = message.message_id
        return delivery

    def press_button(self, chat: int, message_id: int, callback_data: str, user: LocalUser | int | None = None) -> Delivery:
        """The user presses an inline button; only data that the message's keyboard really has can be sent."""
        with self._lock:
            message = self._chats.get(chat, {}).get(message_id)
            if message is None or message.deleted:
                raise ValueError(f"no message {message_id} in chat {chat}")
            if callback_data not in message.button_data():
                raise ValueError(f"message {message_id} has no button with data {callback_data!r}")
            person = self._user(user if user is not None else self._users.get(chat, LocalUser(chat)))
            query_id = str(uuid.uuid4().int >> 64)
            self._open_callbacks[query_id] = chat
            query = {
                "id": query_id,
                "from": person.as_api(),
                "message": self._api_message(message),
                "chat_instance": str(abs(hash((chat, self.bot_id)))),
                "data": callback_data,
            }
        delivery = self._deliver({"callback_query": query})
        delivery.callback_query_id = query_id
        return delivery

    def _user(self, user: LocalUser | int | dict[str, Any]) -> LocalUser:
        if isinstance(user, int):
            user = self._users.get(user) or LocalUser(user)
        elif isinstance(user, dict):
            user = LocalUser(int(user["id"]), user.get("first_name") or "Local", user.get("username"))
        with self._lock:
            self._users[user.id] = user
        return user

    def _record_user_message(
        self, chat_id: int, person: LocalUser, *, text: str, document: dict[str, Any] | None = None
    ) -> ChatMessage:
        message = ChatMessage(
            chat_id=chat_id,
            message_id=next(self._next_message_id[chat_id]),
            from_bot=False,
            date=int(time.time()),
            text=text,
            raw_text=text,
            document=document,
            user=person,
        )
        self._chats[chat_id][message.message_id] = message
        self._event("message", message)
        return message

    def _deliver(self, payload: dict[str, Any]) -> Delivery:
        with self._lock:
            update = {"update_id": next(self._update_ids), **payload}
            if not self.webhook_url:
                self._pending_updates.append(update)
                return Delivery(update["update_id"], None)
        return self._post_update(update)

    def _post_update(self, update: dict[str, Any]) -> Delivery:
        with self._lock:
            url, secret = self.webhook_url, self._webhook_secret
            allowed = getattr(self, "allowed_updates", None)
        if not url:
            return Delivery(update["update_id"], None)
        if allowed is not None and not any(kind in update for kind in allowed):
            return Delivery(update["update_id"], None, error="update type not in allowed_updates")
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        try:
            response = requests.post(url, data=json.dumps(update), headers=headers, timeout=60)
        except requests.RequestException as error:
            log.warning("webhook delivery failed: %s", type(error).__name__)
            return Delivery(update["update_id"], None, error=str(error))
        self._run_webhook_reply(response)
        return Delivery(update["update_id"], response.status_code)

    def _run_webhook_reply(self, response: requests.Response) -> None:
        """Telegram runs a Bot API call given in the webhook's response body (``{"method": ...}``)."""
        if response.status_code != 200 or "json" not in response.headers.get("Content-Type", ""):
            return
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict) and isinstance(body.get("method"), str):
            params = {key: value for key, value in body.items() if key != "method"}
            try:
                self.call(body["method"], params)
            except ApiError as error:
                log.warning("method in webhook reply failed: %s", error.description)

    # ------------------------------------------------------------------ the Bot API
    def call(self, method: str, params: dict[str, Any]) -> Any:
        """Run one Bot API method (method names are case-insensitive, as in Telegram)."""
        implementation = getattr(self, f"_api_{method.lower()}", None)
        if implementation is None:
            raise ApiError(404, "Not Found")
        with self._lock:
            result = implementation(params)
            self._changed.notify_all()
            return result

    def _api_getme(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "DePU", "username": self.bot_username,
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    def _api_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        raw, plain, mode = self._text(params, "text", MAX_TEXT, "message text is empty", "message is too long")
        buttons = self._keyboard(params.get("reply_markup"))
        self._check_rate(chat_id)
        message = ChatMessage(chat_id, next(self._next_message_id[chat_id]), True, int(time.time()),
                              text=plain, raw_text=raw, parse_mode=mode, buttons=buttons)
        return self._record_bot_message(message)

    def _api_sendphoto(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        stored = self._input_file(params, "photo", "photos")
        raw, plain, mode = self._caption(params)
        buttons = self._keyboard(params.get("reply_markup"))
        self._check_rate(chat_id)
        message = ChatMessage(chat_id, next(self._next_message_id[chat_id]), True, int(time.time()),
                              text=plain, raw_text=raw, parse_mode=mode, buttons=buttons, photo=stored.file_id)
        return self._record_bot_message(message)

    def _api_senddocument(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        stored = self._input_file(params, "document", "documents")
        raw, plain, mode = self._caption(params)
        buttons = self._keyboard(params.get("reply_markup"))
        self._check_rate(chat_id)
        message = ChatMessage(chat_id, next(self._next_message_id[chat_id]), True, int(time.time()),
                              text=plain, raw_text=raw, parse_mode=mode, buttons=buttons,
                              document=self._document_api(stored))
        return self._record_bot_message(message)

    def _api_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._editable(params)
        if message.photo or message.document:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        raw, plain, mode = self._text(params, "text", MAX_TEXT, "message text is empty", "message is too long")
        buttons = self._keyboard(params.get("reply_markup"))
        if (raw, mode, buttons) == (message.raw_text, message.parse_mode, message.buttons):
            raise ApiError(400, NOT_MODIFIED)
        message.text, message.raw_text, message.parse_mode, message.buttons = plain, raw, mode, buttons
        return self._record_edit(message)

    def _api_editmessagereplymarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._editable(params)
        buttons = self._keyboard(params.get("reply_markup"))
        if buttons == message.buttons:
            raise ApiError(400, NOT_MODIFIED)
        message.buttons = buttons
        return self._record_edit(message)

    def _api_deletemessage(self, params: dict[str, Any]) -> bool:
        message = self._find_message(params)
        if message is None or message.deleted:
            raise ApiError(400, "Bad Request: message to delete not found")
        message.deleted = True
        self._event("deleted", message)
        return True

    def _api_answercallbackquery(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_callbacks:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        text = params.get("text")
        if text is not None and len(str(text)) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        chat_id = self._open_callbacks.pop(query_id)
        answer = {"callback_query_id": query_id, "chat_id": chat_id, "text": text,
                  "show_alert": _truthy(params.get("show_alert"))}
        self.callback_answers.append(answer)
        self._events.append({"seq": len(self._events) + 1, "kind": "callback_answer", "chat_id": chat_id,
                             "answer": {"text": text, "show_alert": answer["show_alert"]}})
        return True

    def _api_getfile(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(stored.content) > MAX_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.content), "file_path": stored.file_path}

    def _api_setmycommands(self, params: dict[str, Any]) -> bool:
        commands = _json_param(params.get("commands"), "commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for item in commands:
            if not isinstance(item, dict) or not _BOT_COMMAND.fullmatch(str(item.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(item.get("description", "")).strip()) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    def _api_getmycommands(self, params: dict[str, Any]) -> list[dict[str, str]]:
        return list(self.commands)

    def _api_setwebhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if url and not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        if secret is not None and not _SECRET_TOKEN.fullmatch(str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook_url = url or None
        self._webhook_secret = str(secret) if secret and url else None
        allowed = _json_param(params.get("allowed_updates"), "allowed_updates")
        if isinstance(allowed, list) and allowed:  # as on Telegram: omitted keeps the previous setting
            self.allowed_updates = [str(kind) for kind in allowed]
        if _truthy(params.get("drop_pending_updates")):
            self._pending_updates.clear()
        if self.webhook_url and self._pending_updates:
            # Telegram keeps updates until a webhook exists, then delivers them in order
            pending, self._pending_updates = self._pending_updates, []
            threading.Thread(target=self._deliver_pending, args=(pending,), name="depu-local-telegram-pending",
                             daemon=True).start()
        return True

    def _deliver_pending(self, updates: list[dict[str, Any]]) -> None:
        for update in updates:
            self._post_update(update)

    def _api_deletewebhook(self, params: dict[str, Any]) -> bool:
        self.webhook_url, self._webhook_secret = None, None
        if _truthy(params.get("drop_pending_updates")):
            self._pending_updates.clear()
        return True

    def _api_getwebhookinfo(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.webhook_url or "", "has_custom_certificate": False,
                "pending_update_count": len(self._pending_updates)}

    def _api_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                "use deleteWebhook to delete the webhook first")
        offset = int(params.get("offset") or 0)
        self._pending_updates = [u for u in self._pending_updates if u["update_id"] >= offset]
        return self._pending_updates[: int(params.get("limit") or 100)]

    def _api_sendchataction(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat_id(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self.chat_actions.append((chat_id, str(params["action"])))
        return True

    # ------------------------------------------------------------------ validation helpers
    @staticmethod
    def _chat_id(params: dict[str, Any]) -> int:
        value = params.get("chat_id")
        if value in (None, ""):
            raise ApiError(400, "Bad Request: chat_id is empty")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None

    @staticmethod
    def _text(params: dict[str, Any], key: str, limit: int, empty: str, too_long: str) -> tuple[str, str, str | None]:
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

    def _caption(self, params: dict[str, Any]) -> tuple[str, str, str | None]:
        if not params.get("caption"):
            return "", "", params.get("parse_mode") or None
        return self._text(params, "caption", MAX_CAPTION, "message caption is empty", "message caption is too long")

    @staticmethod
    def _keyboard(markup: Any) -> list[list[dict[str, str]]]:
        if markup in (None, ""):
            return []
        markup = _json_param(markup, "reply_markup")
        if not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            return []  # reply keyboards, force_reply, remove_keyboard: accepted, not shown
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ApiError(400, "Bad Request: field \"inline_keyboard\" of the InlineKeyboardMarkup should be "
                                "an Array of Arrays")
        keyboard = []
        for row in rows:
            buttons = []
            for button in row:
                if not isinstance(button, dict) or not str(button.get("text") or "").strip():
                    raise ApiError(400, "Bad Request: can't parse inline keyboard button: Text must be non-empty")
                if "callback_data" in button:
                    data = str(button["callback_data"])
                    if not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA:
                        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                    buttons.append({"text": str(button["text"]), "callback_data": data})
                elif "url" in button:
                    url = str(button["url"])
                    if not url.startswith(("http://", "https://", "tg://")):
                        raise ApiError(400, f"Bad Request: inline keyboard button URL '{url}' is invalid: "
                                            "Wrong HTTP URL")
                    buttons.append({"text": str(button["text"]), "url": url})
                else:
                    raise ApiError(400, "Bad Request: can't parse inline keyboard button: Text buttons are "
                                        "unallowed in the inline keyboard")
            keyboard.append(buttons)
        return keyboard

    def _check_rate(self, chat_id: int) -> None:
        """Optional emulation of Telegram's flood control: about 1 message/s per chat, 30/s overall.
        (Also where a blocked bot learns about it: every send to the chat is refused.)"""
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        now = time.monotonic()
        if self.rate_limit:
            last = self._sent_at.get(chat_id)
            self._global_sends = [t for t in self._global_sends if now - t < 1.0]
            if (last is not None and now - last < 1.0) or len(self._global_sends) >= 30:
                retry_after = 1
                raise ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
        self._sent_at[chat_id] = now
        self._global_sends.append(now)

    def _find_message(self, params: dict[str, Any]) -> ChatMessage | None:
        if params.get("inline_message_id"):
            raise ApiError(400, "Bad Request: inline messages are not supported by the local stand-in")
        chat_id = self._chat_id(params)
        try:
            message_id = int(params.get("message_id") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: message identifier is not specified") from None
        return self._chats.get(chat_id, {}).get(message_id)

    def _editable(self, params: dict[str, Any]) -> ChatMessage:
        message = self._find_message(params)
        if message is None or message.deleted:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not message.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return message

    def _input_file(self, params: dict[str, Any], key: str, folder: str) -> StoredFile:
        upload = params.get("__files__", {}).get(key)
        if upload is not None:
            filename, content, content_type = upload
            if len(content) > MAX_UPLOAD:
                raise ApiError(413, "Request Entity Too Large")
            return self._store_file(content, filename or key, content_type, folder)
        reference = params.get(key)
        if isinstance(reference, str) and reference.startswith("attach://"):
            raise ApiError(400, f"Bad Request: file {reference} not found in the request")
        if isinstance(reference, str) and reference in self._files:
            return self._files[reference]
        if isinstance(reference, str) and reference.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified (the local stand-in "
                                "does not fetch URLs)")
        raise ApiError(400, f"Bad Request: there is no {key} in the request")

    def _store_file(self, content: bytes, filename: str, mime_type: str | None, folder: str) -> StoredFile:
        number = len(self._files) + 1
        file_id = f"LOCAL{number:06d}{uuid.uuid4().hex[:16]}"
        extension = filename.rsplit(".", 1)[1] if "." in filename else "bin"
        stored = StoredFile(
            file_id=file_id,
            file_unique_id=uuid.uuid4().hex[:12],
            content=content,
            file_name=filename,
            mime_type=mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream",
            file_path=f"{folder}/file_{number}.{extension}",
        )
        self._files[file_id] = stored
        return stored

    @staticmethod
    def _document_api(stored: StoredFile) -> dict[str, Any]:
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_name": stored.file_name,
                "mime_type": stored.mime_type, "file_size": len(stored.content)}

    # ------------------------------------------------------------------ recording
    def _record_bot_message(self, message: ChatMessage) -> dict[str, Any]:
        self._chats[message.chat_id][message.message_id] = message
        self._event("message", message)
        return self._api_message(message)

    def _record_edit(self, message: ChatMessage) -> dict[str, Any]:
        message.edits += 1
        self._event("edited", message)
        api = self._api_message(message)
        api["edit_date"] = int(time.time())
        return api

    def _event(self, kind: str, message: ChatMessage) -> None:
        self._events.append({"seq": len(self._events) + 1, "kind": kind, "chat_id": message.chat_id,
                             "message": message.as_record()})
        self._changed.notify_all()

    def _chat_api(self, chat_id: int) -> dict[str, Any]:
        if chat_id < 0:
            return {"id": chat_id, "type": "group", "title": "Local group"}
        user = self._users.get(chat_id) or LocalUser(chat_id)
        chat = {"id": chat_id, "type": "private", "first_name": user.first_name}
        if user.username:
            chat["username"] = user.username
        return chat

    def _api_message(self, message: ChatMessage) -> dict[str, Any]:
        sender = ({"id": self.bot_id, "is_bot": True, "first_name": "DePU", "username": self.bot_username}
                  if message.from_bot else (message.user or LocalUser(message.chat_id)).as_api())
        api: dict[str, Any] = {"message_id": message.message_id, "from": sender,
                               "chat": self._chat_api(message.chat_id), "date": message.date}
        text_key = "caption" if (message.photo or message.document) else "text"
        if message.text:
            api[text_key] = message.text
        if message.photo:
            stored = self._files[message.photo]
            width, height = _png_size(stored.content)
            api["photo"] = [{"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                             "width": width, "height": height, "file_size": len(stored.content)}]
        if message.document:
            api["document"] = dict(message.document)
        if message.buttons:
            api["reply_markup"] = {"inline_keyboard": message.buttons}
        return api

    # ------------------------------------------------------------------ control API (chat CLI)
    def control(self, method: str, action: str, query: dict[str, str], body: dict[str, Any]) -> Any:
        if method == "GET" and action == "updates":
            chat = int(query["chat"]) if query.get("chat") else None
            wait = min(float(query.get("wait") or 0), 25.0)
            found = self.events(chat, int(query.get("after") or 0), wait=wait)
            return {"events": found, "last": found[-1]["seq"] if found else int(query.get("after") or 0)}
        if method == "GET" and action == "state":
            with self._lock:
                return {"bot_username": self.bot_username, "webhook_registered": bool(self.webhook_url),
                        "webhook_url": self.webhook_url, "chats": sorted(self._chats),
                        "commands": self.commands, "last_event": len(self._events)}
        if method == "POST" and action in ("say", "document"):
            user = LocalUser(int(body.get("user_id") or body.get("chat_id") or 1),
                             str(body.get("first_name") or "Local"), body.get("username"))
            chat = int(body["chat_id"]) if body.get("chat_id") else None
            if action == "say":
                return _delivery_json(self.send_user_message(user, chat, str(body.get("text") or "")))
            content = base64.b64decode(str(body.get("content_base64") or ""))
            return _delivery_json(self.send_user_document(
                user, chat, str(body.get("filename") or "file.bin"), content, body.get("mime_type"),
                str(body.get("caption") or "")))
        if method == "POST" and action == "pay":
            return self.control_pay(body)
        if method == "POST" and action == "press":
            user_id = body.get("user_id")
            return _delivery_json(self.press_button(int(body["chat_id"]), int(body["message_id"]),
                                                    str(body["data"]), int(user_id) if user_id else None))
        raise UnknownControl(f"{method} /_standin/{action}")


class UnknownControl(LookupError):
    """No such control action."""


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {"update_id": delivery.update_id, "webhook_status": delivery.status, "message_id": delivery.message_id,
            "callback_query_id": delivery.callback_query_id, "error": delivery.error}


def _json_param(value: Any, name: str) -> Any:
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    return value


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _png_size(content: bytes) -> tuple[int, int]:
    if content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return width, height
    return 0, 0


def _parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """Bot API parameters come as JSON, URL-encoded forms or multipart forms (file uploads)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return {}
    if kind == "application/json":
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            raise ApiError(400, "Bad Request: parameters must be a JSON object")
        return parsed
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    if kind == "multipart/form-data":
        message = BytesParser(policy=policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
        )
        params: dict[str, Any] = {}
        files: dict[str, tuple[str | None, bytes, str | None]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if filename is not None:
                files[str(name)] = (filename, payload, part.get_content_type())
            else:
                params[str(name)] = payload.decode(part.get_content_charset() or "utf-8")
        params["__files__"] = files
        return params
    raise ApiError(400, f"Bad Request: unsupported Content-Type {kind}")


def _make_request_handler(standin: TelegramStandIn) -> type[BaseHTTPRequestHandler]:
    class BotApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # see local/runtime.py: no 40 ms stall between headers and body
        server_version = "DePU-telegram-standin"

        def _handle(self) -> None:
            split = urlsplit(self.path)
            path = unquote(split.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path.startswith("/_standin/"):
                return self._control(path[len("/_standin/"):], dict(parse_qsl(split.query)), body)
            if path.startswith("/file/bot"):
                return self._download(path[len("/file/bot"):])
            found = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
            if not found:
                return self._api_error(ApiError(404, "Not Found"))
            token, method = found.groups()
            if token != standin.bot_token:
                return self._api_error(ApiError(401, "Unauthorized"))
            try:
                params = dict(parse_qsl(split.query))
                params.update(_parse_body(self.headers.get("Content-Type", ""), body))
                result = standin.call(method, params)
            except ApiError as error:
                return self._api_error(error)
            except ValueError:
                return self._api_error(ApiError(400, "Bad Request: can't parse request"))
            reply: dict[str, Any] = {"ok": True, "result": result}
            if method.lower() == "setwebhook":
                reply["description"] = "Webhook was set" if standin.webhook_url else "Webhook was deleted"
            elif method.lower() == "deletewebhook":
                reply["description"] = "Webhook was deleted"
            self._json(200, reply)

        def _download(self, rest: str) -> None:
            token, _, file_path = rest.partition("/")
            if token != standin.bot_token:
                return self._json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            with standin._lock:
                stored = next((f for f in standin._files.values() if f.file_path == file_path), None)
            if stored is None:
                return self._json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            self._send(200, stored.content, stored.mime_type)

        def _control(self, action: str, query: dict[str, str], body: bytes) -> None:
            if action.startswith("files/") and self.command == "GET":
                with standin._lock:
                    stored = standin._files.get(action[len("files/"):])
                if stored is None:
                    return self._json(404, {"error": "no such file"})
                return self._send(200, stored.content, stored.mime_type, {"X-File-Name": stored.file_name})
            try:
                payload = json.loads(body) if body else {}
                result = standin.control(self.command, action, query, payload)
            except UnknownControl as error:
                return self._json(404, {"error": f"unknown control request {error}"})
            except KeyError as error:
                return self._json(400, {"error": f"missing field {error}"})
            except (ValueError, TypeError) as error:
                return self._json(400, {"error": str(error)})
            self._json(200, result)

        def _api_error(self, error: ApiError) -> None:
            reply: dict[str, Any] = {"ok": False, "error_code": error.code, "description": error.description}
            if error.parameters:
                reply["parameters"] = error.parameters
            self._json(error.code, reply)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - never log paths: they hold the token
            pass

    return BotApiHandler
