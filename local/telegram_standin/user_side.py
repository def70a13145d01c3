"""The user's side of the chat: what the person in the Telegram app does, turned into real updates.

Each action builds the update JSON Telegram would send and POSTs it to the registered webhook with the
``X-Telegram-Bot-Api-Secret-Token`` header (or keeps it for getUpdates while there is no webhook). A Bot API
call in the webhook's answer body (``{"method": ...}``) is run, as Telegram runs it.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import requests

from local.telegram_html import utf16_length
from local.telegram_standin.models import ApiError, ChatMessage, Delivery, LocalUser

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn

log = logging.getLogger("local.telegram")

_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")


class UserSide:
    """The user's actions (a mixin of ``TelegramStandIn``, whose state they change)."""

    def block_bot(self: TelegramStandIn, chat_id: int, blocked: bool = True) -> None:
        """The user blocks (or unblocks) the bot: sends to the chat then fail with 403, as on Telegram."""
        with self.lock:
            (self._blocked.add if blocked else self._blocked.discard)(chat_id)

    def send_user_message(self: TelegramStandIn, user: LocalUser | int, chat: int | None = None,
                          text: str = "") -> Delivery:
        """The user types ``text`` (commands get ``bot_command`` entities, as Telegram adds them)."""
        person = self._user(user)
        chat_id = person.id if chat is None else chat
        with self.lock:
            message = self._record_user_message(chat_id, person, text=text)
            api_message = self.api_message(message)
        entities = [
            {"type": "bot_command", "offset": utf16_length(text[: found.start()]),
             "length": utf16_length(found.group(0))}
            for found in _COMMAND.finditer(text)
        ]
        if entities:
            api_message["entities"] = entities
        delivery = self.deliver({"message": api_message})
        delivery.message_id = message.message_id
        return delivery

    def send_user_document(
        self: TelegramStandIn,
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
        with self.lock:
            stored = self.store_file(content, filename, mime_type, "documents")
            message = self._record_user_message(chat_id, person, text=caption, document=stored.document_api())
            api_message = self.api_message(message)
        delivery = self.deliver({"message": api_message})
        delivery.message_id = message.message_id
        return delivery

    def press_button(self: TelegramStandIn, chat: int, message_id: int, callback_data: str,
                     user: LocalUser | int | None = None) -> Delivery:
        """The user presses an inline button; only data that the message's keyboard really has can be sent."""
        with self.lock:
            message = self._chats.get(chat, {}).get(message_id)
            if message is None or message.deleted:
                raise ValueError(f"no message {message_id} in chat {chat}")
            if callback_data not in message.button_data():
                raise ValueError(f"message {message_id} has no button with data {callback_data!r}")
            person = self._user(user if user is not None else self._users.get(chat, LocalUser(chat)))
            query_id = str(uuid.uuid4().int >> 64)
            self.open_callbacks[query_id] = chat
            query = {
                "id": query_id,
                "from": person.as_api(),
                "message": self.api_message(message),
                "chat_instance": str(abs(hash((chat, self.bot_id)))),
                "data": callback_data,
            }
        delivery = self.deliver({"callback_query": query})
        delivery.callback_query_id = query_id
        return delivery

    # ------------------------------------------------------------------ delivery
    def post_update(self: TelegramStandIn, update: dict[str, Any]) -> Delivery:
        """POST one update to the webhook as Telegram does, and run a method the answer carries."""
        with self.lock:
            url, secret = self.webhook_url, self.webhook_secret
        if not url:
            return Delivery(update["update_id"], None)
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

    def _user(self: TelegramStandIn, user: LocalUser | int | dict[str, Any]) -> LocalUser:
        if isinstance(user, int):
            user = self._users.get(user) or LocalUser(user)
        elif isinstance(user, dict):
            user = LocalUser(int(user["id"]), user.get("first_name") or "Local", user.get("username"))
        with self.lock:
            self._users[user.id] = user
        return user

    def _record_user_message(self: TelegramStandIn, chat_id: int, person: LocalUser, *, text: str,
                             document: dict[str, Any] | None = None) -> ChatMessage:
        message = ChatMessage(chat_id=chat_id, message_id=self.next_message_id(chat_id), from_bot=False,
                              date=int(time.time()), text=text, raw_text=text, document=document, user=person)
        self._chats[chat_id][message.message_id] = message
        self.event("message", message)
        return message

    def deliver(self: TelegramStandIn, payload: dict[str, Any]) -> Delivery:
        """Deliver an update of ``payload`` (``{"message": ...}``, ``{"callback_query": ...}``, ...) with the next
        update id: to the webhook, or kept for getUpdates while there is none."""
        with self.lock:
            update = {"update_id": next(self._update_ids), **payload}
            if not self.webhook_url:
                self.pending_updates.append(update)
                return Delivery(update["update_id"], None)
        return self.post_update(update)

    def _run_webhook_reply(self: TelegramStandIn, response: requests.Response) -> None:
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
