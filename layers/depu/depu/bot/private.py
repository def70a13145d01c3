"""Private things stay in private chats.

A fork's RPC URL is its bearer credential, a dashboard login link signs in as the user, a job's artifact
links and logs are the renter's own data, a provider token enrols machines: in a group every member would
read them. So a handler that answers with one calls ``send``: in a private chat it simply replies; in a group
the message goes to the user's private chat (``Chat.reply_private``) and the group only reads "sent to you
privately". A user who never opened a private chat with the bot cannot be written to (Telegram answers 403
"bot can't initiate conversation with a user"): the group then gets a deep link,
``t.me/<bot>?start=<payload>``, which opens the private chat, and ``resume`` there, called by /start, runs
what the user asked for again (the secret itself is never in the group, the link, or the payload).
"""
from __future__ import annotations

import dataclasses
import re
from urllib.parse import quote

from depu.bot.registry import Button, Chat, Incoming, Keyboard, registry
from depu.config import get_settings

SENT_PRIVATELY = "🔒 Sent to you privately (in our private chat): it is for your eyes only."
# deep-link payloads (Telegram allows [A-Za-z0-9_-], at most 64 characters) -> the command to run again
_RESUME = re.compile(r"^(webapp|provider|fork|rent|jobs)(?:_([A-Za-z0-9]{1,40}))?$")
_COMMANDS = {"webapp": "webapp", "provider": "provider", "fork": "shadow_fork", "rent": "rent_gpu", "jobs": "jobs"}


class PrivateChatClosed(Exception):
    """The user never opened a private chat with the bot, or blocked it: nothing can be sent there."""


def in_group(incoming: Incoming) -> bool:
    return incoming.chat_type != "private"


def deep_link(payload: str) -> str:
    return f"https://t.me/{quote(get_settings().bot_username)}?start={quote(payload)}"


def send(incoming: Incoming, chat: Chat, text: str, buttons: Keyboard | None = None, *, resume: str,
         closed_hint: str = "") -> int | None:
    """Deliver ``text`` to the user alone. ``resume`` is the deep-link payload that asks again from the
    private chat (see ``_RESUME``); ``closed_hint`` adds what the user should do there. Returns the private
    message's id, or None when only the deep link could be given."""
    if not in_group(incoming):
        return chat.reply(text, buttons)
    try:
        message_id = chat.reply_private(text, buttons)
    except PrivateChatClosed:
        note = ("This is for your eyes only, so I send it to our private chat, and we have none yet. "
                "Tap below to open it; I will answer you there.")
        chat.reply(note + (" " + closed_hint if closed_hint else ""), [[Button("Open a private chat", url=deep_link(resume))]])
        return None
    chat.reply(SENT_PRIVATELY)
    return message_id


def resume(incoming: Incoming, chat: Chat) -> bool:
    """In a private chat, a /start that came from one of ``send``'s deep links runs the command again;
    False for any other payload (referrals, nothing)."""
    match = _RESUME.match(incoming.args.strip())
    if in_group(incoming) or match is None:
        return False
    name = _COMMANDS[match.group(1)]
    command = registry.commands.get(name)
    if command is None:
        return False
    args = match.group(2) or ""
    command.handler(dataclasses.replace(incoming, command=name, args=args, text=f"/{name} {args}".strip()), chat)
    return True
