"""Sending, editing and deleting messages, and chat actions."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from local.telegram_standin import validation
from local.telegram_standin.methods import bot_method
from local.telegram_standin.models import ApiError, ChatMessage

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
CHAT_ACTIONS = {
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note",
}


@bot_method("sendMessage")
def send_message(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    chat_id = validation.chat_id(params)
    raw, plain, mode = validation.text(params, "text", validation.MAX_TEXT, "message text is empty",
                                       "message is too long")
    buttons = validation.keyboard(params.get("reply_markup"))
    standin.check_rate(chat_id)
    message = ChatMessage(chat_id, standin.next_message_id(chat_id), True, int(time.time()),
                          text=plain, raw_text=raw, parse_mode=mode, buttons=buttons)
    return standin.record_bot_message(message)


@bot_method("sendPhoto")
def send_photo(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    chat_id = validation.chat_id(params)
    stored = standin.input_file(params, "photo", "photos")
    raw, plain, mode = validation.caption(params)
    buttons = validation.keyboard(params.get("reply_markup"))
    standin.check_rate(chat_id)
    message = ChatMessage(chat_id, standin.next_message_id(chat_id), True, int(time.time()),
                          text=plain, raw_text=raw, parse_mode=mode, buttons=buttons, photo=stored.file_id)
    return standin.record_bot_message(message)


@bot_method("sendDocument")
def send_document(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    chat_id = validation.chat_id(params)
    stored = standin.input_file(params, "document", "documents")
    raw, plain, mode = validation.caption(params)
    buttons = validation.keyboard(params.get("reply_markup"))
    standin.check_rate(chat_id)
    message = ChatMessage(chat_id, standin.next_message_id(chat_id), True, int(time.time()),
                          text=plain, raw_text=raw, parse_mode=mode, buttons=buttons,
                          document=stored.document_api())
    return standin.record_bot_message(message)


@bot_method("editMessageText")
def edit_message_text(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    message = standin.editable(params)
    if message.photo or message.document:
        raise ApiError(400, "Bad Request: there is no text in the message to edit")
    raw, plain, mode = validation.text(params, "text", validation.MAX_TEXT, "message text is empty",
                                       "message is too long")
    buttons = validation.keyboard(params.get("reply_markup"))
    if (raw, mode, buttons) == (message.raw_text, message.parse_mode, message.buttons):
        raise ApiError(400, NOT_MODIFIED)
    message.text, message.raw_text, message.parse_mode, message.buttons = plain, raw, mode, buttons
    return standin.record_edit(message)


@bot_method("editMessageReplyMarkup")
def edit_message_reply_markup(standin: TelegramStandIn, params: dict[str, Any]) -> dict[str, Any]:
    message = standin.editable(params)
    buttons = validation.keyboard(params.get("reply_markup"))
    if buttons == message.buttons:
        raise ApiError(400, NOT_MODIFIED)
    message.buttons = buttons
    return standin.record_edit(message)


@bot_method("deleteMessage")
def delete_message(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    message = standin.find_message(params)
    if message is None or message.deleted:
        raise ApiError(400, "Bad Request: message to delete not found")
    message.deleted = True
    standin.event("deleted", message)
    return True


@bot_method("sendChatAction")
def send_chat_action(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    chat_id = validation.chat_id(params)
    if params.get("action") not in CHAT_ACTIONS:
        raise ApiError(400, "Bad Request: wrong parameter action in request")
    standin.chat_actions.append((chat_id, str(params["action"])))
    return True
