"""The stand-in's state and lifecycle: chats, files and events, the Bot API call path, the HTTP server.

One object plays both sides of a chat: Telegram's Bot API (``methods/``, answered through ``call``) and the
user (``user_side.UserSide``). Tests and the chat CLI read what happened here (``messages``, ``events``,
``calls``); a test may also script Bot API failures (``fail_next``) and files the user sent (``add_file``).
"""
from __future__ import annotations

import itertools
import logging
import mimetypes
import struct
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from local.http_server import ClosingHTTPServer
from local.telegram_standin import methods
from local.telegram_standin.models import ApiError, Call, ChatMessage, LocalUser, StoredFile
from local.telegram_standin.user_side import UserSide
from local.telegram_standin.validation import MAX_UPLOAD, chat_id as chat_id_of

log = logging.getLogger("local.telegram")


class TelegramStandIn(UserSide):
    """The Bot API on ``http://127.0.0.1:<port>/bot<token>/<method>`` plus the user's side of the chat.

    ``accept_foreign_callbacks``: answers to callback queries the stand-in did not deliver are accepted (tests
    that hand-build updates and give them to the handler directly, so the stand-in never saw the query)."""

    def __init__(
        self,
        bot_token: str,
        *,
        port: int = 8081,
        host: str = "127.0.0.1",
        bot_username: str = "DePUDevBot",
        rate_limit: bool = False,
        accept_foreign_callbacks: bool = False,
    ):
        self.bot_token = bot_token
        self.host = host
        self.port = port
        self.bot_username = bot_username
        self.rate_limit = rate_limit
        self.accept_foreign_callbacks = accept_foreign_callbacks
        self.bot_id = int(bot_token.split(":", 1)[0]) if bot_token.split(":", 1)[0].isdigit() else 1
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.commands: list[dict[str, str]] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.chat_actions: list[tuple[int, str]] = []
        self.calls: list[Call] = []  # every Bot API call over HTTP, in order (failed and scripted ones too)
        self.files: dict[str, StoredFile] = {}
        self.open_callbacks: dict[str, int] = {}  # callback query id -> chat id
        self.pending_updates: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._chats: dict[int, dict[int, ChatMessage]] = defaultdict(dict)
        self._next_message_id: dict[int, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._users: dict[int, LocalUser] = {}
        self._events: list[dict[str, Any]] = []
        self._update_ids = itertools.count(100_000_001)
        self._sent_at: dict[int, float] = {}
        self._blocked: set[int] = set()
        self._global_sends: list[float] = []
        self._scripted: dict[str, list[tuple[int, dict[str, Any]]]] = {}
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

    base_url = api_base

    def start(self) -> "TelegramStandIn":
        from local.telegram_standin.http import request_handler

        self._server = ClosingHTTPServer((self.host, self.port), request_handler(self))
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
        with self.lock:
            found = sorted(self._chats.get(chat_id, {}).values(), key=lambda message: message.message_id)
            return [m for m in found if from_bot is None or m.from_bot == from_bot]

    def message(self, chat_id: int, message_id: int) -> ChatMessage:
        with self.lock:
            return self._chats[chat_id][message_id]

    @property
    def chats(self) -> list[int]:
        with self.lock:
            return sorted(self._chats)

    @property
    def texts(self) -> dict[tuple[int, int], str]:
        """What the bot sent, by (chat, message id): the text (or caption) as sent, after edits."""
        with self.lock:
            return {(chat, mid): message.raw_text for chat, messages in self._chats.items()
                    for mid, message in messages.items() if message.from_bot}

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
        with self.lock:
            return len(self._events)

    def file_content(self, file_id: str) -> StoredFile:
        with self.lock:
            return self.files[file_id]

    def file_at(self, file_path: str) -> StoredFile | None:
        with self.lock:
            return next((f for f in self.files.values() if f.file_path == file_path), None)

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # ------------------------------------------------------------------ scripting (tests)
    def fail_next(self, method: str, status: int, body: dict[str, Any], times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get ``status`` and ``body`` instead of an answer."""
        with self.lock:
            self._scripted.setdefault(method, []).extend([(status, body)] * times)

    def add_file(self, file_id: str, file_path: str, content: bytes) -> StoredFile:
        """A file the bot can fetch with getFile, as if a user had sent it."""
        with self.lock:
            name = file_path.rsplit("/", 1)[-1]
            stored = StoredFile(file_id, uuid.uuid4().hex[:12], content, name,
                                mimetypes.guess_type(name)[0] or "application/octet-stream", file_path)
            self.files[file_id] = stored
            return stored

    # ------------------------------------------------------------------ the Bot API
    def handle_api_call(self, method: str, params: dict[str, Any]) -> Any:
        """One Bot API call that came over HTTP: recorded, then a scripted failure or the method's answer."""
        uploads = params.get("__files__", {})
        with self.lock:
            self.calls.append(Call(method, {k: v for k, v in params.items() if k != "__files__"},
                                   {name: (upload[0] or name, upload[1]) for name, upload in uploads.items()}))
            scripted = self._scripted.get(method)
            if scripted:
                status, body = scripted.pop(0)
                raise ApiError(status, str(body.get("description", "")), body=body)
        return self.call(method, params)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """Run one Bot API method (method names are case-insensitive, as in Telegram)."""
        implementation = methods.find(method)
        if implementation is None:
            raise ApiError(404, "Not Found")
        with self.lock:
            result = implementation(self, params)
            self._changed.notify_all()
            return result

    # ------------------------------------------------------------------ helpers for the methods
    def next_message_id(self, chat_id: int) -> int:
        return next(self._next_message_id[chat_id])

    def check_rate(self, chat_id: int) -> None:
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

    def find_message(self, params: dict[str, Any]) -> ChatMessage | None:
        if params.get("inline_message_id"):
            raise ApiError(400, "Bad Request: inline messages are not supported by the local stand-in")
        chat_id = chat_id_of(params)
        try:
            message_id = int(params.get("message_id") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: message identifier is not specified") from None
        return self._chats.get(chat_id, {}).get(message_id)

    def editable(self, params: dict[str, Any]) -> ChatMessage:
        message = self.find_message(params)
        if message is None or message.deleted:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not message.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return message

    def input_file(self, params: dict[str, Any], key: str, folder: str) -> StoredFile:
        """The file of parameter ``key``: uploaded in this request, or the id of a file the stand-in has."""
        upload = params.get("__files__", {}).get(key)
        if upload is not None:
            filename, content, content_type = upload
            if len(content) > MAX_UPLOAD:
                raise ApiError(413, "Request Entity Too Large")
            return self.store_file(content, filename or key, content_type, folder)
        reference = params.get(key)
        if isinstance(reference, str) and reference.startswith("attach://"):
            raise ApiError(400, f"Bad Request: file {reference} not found in the request")
        if isinstance(reference, str) and reference in self.files:
            return self.files[reference]
        if isinstance(reference, str) and reference.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified (the local stand-in "
                                "does not fetch URLs)")
        raise ApiError(400, f"Bad Request: there is no {key} in the request")

    def store_file(self, content: bytes, filename: str, mime_type: str | None, folder: str) -> StoredFile:
        number = len(self.files) + 1
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
        self.files[file_id] = stored
        return stored

    # ------------------------------------------------------------------ recording
    def record_bot_message(self, message: ChatMessage) -> dict[str, Any]:
        self._chats[message.chat_id][message.message_id] = message
        self.event("message", message)
        return self.api_message(message)

    def record_edit(self, message: ChatMessage) -> dict[str, Any]:
        message.edits += 1
        self.event("edited", message)
        api = self.api_message(message)
        api["edit_date"] = int(time.time())
        return api

    def event(self, kind: str, message: ChatMessage) -> None:
        self.add_event({"kind": kind, "chat_id": message.chat_id, "message": message.as_record()})

    def add_event(self, event: dict[str, Any]) -> None:
        """Append to what the chat CLI and tests follow (``events``); ``seq`` numbers them from 1."""
        with self.lock:
            self._events.append({"seq": len(self._events) + 1, **event})
            self._changed.notify_all()

    def chat_api(self, chat_id: int) -> dict[str, Any]:
        if chat_id < 0:
            return {"id": chat_id, "type": "group", "title": "Local group"}
        user = self._users.get(chat_id) or LocalUser(chat_id)
        chat = {"id": chat_id, "type": "private", "first_name": user.first_name}
        if user.username:
            chat["username"] = user.username
        return chat

    def api_message(self, message: ChatMessage) -> dict[str, Any]:
        """The Bot API's Message object for a recorded message."""
        sender = ({"id": self.bot_id, "is_bot": True, "first_name": "DePU", "username": self.bot_username}
                  if message.from_bot else (message.user or LocalUser(message.chat_id)).as_api())
        api: dict[str, Any] = {"message_id": message.message_id, "from": sender,
                               "chat": self.chat_api(message.chat_id), "date": message.date}
        text_key = "caption" if (message.photo or message.document) else "text"
        if message.text:
            api[text_key] = message.text
        if message.photo:
            stored = self.files[message.photo]
            width, height = _png_size(stored.content)
            api["photo"] = [{"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                             "width": width, "height": height, "file_size": len(stored.content)}]
        if message.document:
            api["document"] = dict(message.document)
        if message.buttons:
            api["reply_markup"] = {"inline_keyboard": message.buttons}
        return api


def _png_size(content: bytes) -> tuple[int, int]:
    if content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return width, height
    return 0, 0
