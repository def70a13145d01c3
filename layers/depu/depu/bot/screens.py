"""How a menu screen is shown: a button press edits the message the button belongs to, so a flow stays one
message; typed input or a document gets a new message (there is nothing of ours to edit)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from depu.bot.registry import Chat, Incoming, Keyboard


def show(incoming: Incoming, chat: Chat, text: str, buttons: Keyboard | None = None) -> None:
    if incoming.callback_id is not None and incoming.message_id is not None:
        chat.edit(incoming.message_id, text, buttons)
    else:
        chat.reply(text, buttons)
