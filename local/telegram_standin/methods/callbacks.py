"""Answering a pressed inline button."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from local.telegram_standin.methods import bot_method
from local.telegram_standin.models import ApiError
from local.telegram_standin.validation import truthy

if TYPE_CHECKING:
    from local.telegram_standin.standin import TelegramStandIn


@bot_method("answerCallbackQuery")
def answer_callback_query(standin: TelegramStandIn, params: dict[str, Any]) -> bool:
    query_id = str(params.get("callback_query_id") or "")
    if query_id not in standin.open_callbacks and not standin.accept_foreign_callbacks:
        raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
    text = params.get("text")
    if text is not None and len(str(text)) > 200:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
    chat_id = standin.open_callbacks.pop(query_id, None)
    answer = {"callback_query_id": query_id, "chat_id": chat_id, "text": text,
              "show_alert": truthy(params.get("show_alert"))}
    standin.callback_answers.append(answer)
    standin.add_event({"kind": "callback_answer", "chat_id": chat_id,
                       "answer": {"text": text, "show_alert": answer["show_alert"]}})
    return True
