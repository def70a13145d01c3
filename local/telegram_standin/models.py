"""The stand-in's records: users it plays, files, deliveries to the webhook, chat messages, Bot API calls."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ApiError(Exception):
    """A Bot API error, answered as ``{"ok": false, "error_code": ..., "description": ...}``.

    ``body`` replaces that answer as a whole (a failure a test scripted with ``fail_next``)."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters
        self.body = body

    def answer(self) -> dict[str, Any]:
        if self.body is not None:
            return self.body
        reply: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            reply["parameters"] = self.parameters
        return reply


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

    def document_api(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "file_unique_id": self.file_unique_id, "file_name": self.file_name,
                "mime_type": self.mime_type, "file_size": len(self.content)}


@dataclass
class Delivery:
    """What happened to an update the user caused: the webhook's HTTP status (None: no webhook yet)."""

    update_id: int
    status: int | None
    message_id: int | None = None
    callback_query_id: str | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"update_id": self.update_id, "webhook_status": self.status, "message_id": self.message_id,
                "callback_query_id": self.callback_query_id, "error": self.error}


@dataclass
class Call:
    """One Bot API call as the bot made it: the method name as sent, its parameters and uploaded files."""

    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)


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
        }
