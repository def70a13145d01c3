"""Route an ``Incoming`` to what the registry names, run flow steps, and turn failures into useful replies.

This is the one place that, for every flow (``depu.bot.flows``), decodes callback data, loads the user's
conversation (one read), finds the ``(step, input)`` entry, writes the step the handler returns (a
conditional write) and answers what matches no entry: the fallbacks are here and nowhere else.

Feature modules (``depu.bot.features.load``) are imported on the first dispatch, not at import time, so the
webhook's cold start does not pay for what a feature imports (web3, say) before it is needed. A feature that
fails to import fails loudly: a bot silently missing its commands is worse than an error.

Every update ends here accepted: a handler's ``UserError`` becomes the reply, any other exception is logged
with the correlation id and the user gets an apology quoting it. Nothing is re-raised, so Telegram does not
resend an update that would fail the same way again.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from depu.bot.registry import Chat, Incoming, Keyboard, Registry, registry
from depu.errors import UserError
from depu.telegram.text import escape

if TYPE_CHECKING:
    from depu.bot.flows import Flow, Next, Turn
    from depu.conversation import Conversation
    from depu.telegram.client import BotApi

log = logging.getLogger(__name__)

EXPIRED_BUTTON = "This button has expired. Send /help to start again."
ALREADY_DONE = "Already done."
_loaded = False
_load_lock = threading.Lock()


def load_features() -> Registry:
    """Install every feature of ``depu.bot.features.load`` once. An import error propagates: the webhook
    fails loudly (and alarms) instead of answering with half its commands missing."""
    global _loaded
    with _load_lock:
        if not _loaded:
            from depu.bot import features

            for feature in features.load():
                registry.install(feature)
            _loaded = True
    return registry


def expired_button(flow: Flow) -> str:
    return f"This button has expired. Send {flow.restart} for a fresh one."


def expired_menu(flow: Flow) -> str:
    return f"This menu has expired. Send {flow.restart} again."


STEP_DONE = "That step is done already."


class TelegramChat:
    """``registry.Chat`` over the Bot API, bound to the chat (and button press) an update came from."""

    def __init__(self, api: BotApi, incoming: Incoming) -> None:
        self.api = api
        self.incoming = incoming
        self.callback_answered = incoming.callback_id is None

    def reply(self, text: str, buttons: Keyboard | None = None) -> int | None:
        incoming = self.incoming
        # in a group, thread the answer under the command it answers
        reply_to = incoming.message_id if incoming.chat_type != "private" and incoming.callback_id is None else None
        return self.api.send_message(incoming.chat_id, text, buttons, reply_to=reply_to)

    def reply_private(self, text: str, buttons: Keyboard | None = None) -> int | None:
        from depu.bot.private import PrivateChatClosed
        from depu.telegram.client import TelegramError

        try:
            return self.api.send_message(self.incoming.user_id, text, buttons)  # a user's private chat id is their id
        except TelegramError as error:
            # 403 "bot can't initiate conversation with a user" (never started) or "bot was blocked by the user"
            if error.forbidden or (error.error_code == 400 and "chat not found" in error.description.lower()):
                raise PrivateChatClosed() from None
            raise

    def edit(self, message_id: int, text: str, buttons: Keyboard | None = None) -> None:
        self.api.edit_message_text(self.incoming.chat_id, message_id, text, buttons)

    def answer_callback(self, text: str | None = None, alert: bool = False) -> None:
        if self.callback_answered or self.incoming.callback_id is None:
            return
        self.callback_answered = True
        self.api.answer_callback_query(self.incoming.callback_id, text, alert)

    def send_photo(self, photo: bytes, caption: str = "", filename: str = "chart.png") -> None:
        self.api.send_photo(self.incoming.chat_id, photo, caption, filename)

    def send_document(self, content: bytes, filename: str, caption: str = "") -> None:
        self.api.send_document(self.incoming.chat_id, content, filename, caption)


def dispatch(incoming: Incoming, chat: Chat, *, correlation_id: str) -> str:
    """Run the handler for ``incoming``; returns what happened (for logs and tests). Never raises."""
    load_features()
    try:
        outcome = _route(incoming, chat)
    except UserError as exc:
        outcome = "user_error"
        _safely(chat.reply, exc.message)
    except Exception:
        outcome = "failed"
        log.exception("handler failed", extra={"correlation_id": correlation_id})
        _safely(chat.reply, f"Sorry, something went wrong on our side. Please try again later (ref {escape(correlation_id)}).")
    if incoming.callback_id is not None and not getattr(chat, "callback_answered", False):
        # stop the client's spinner even if the handler forgot (or failed)
        _safely(chat.answer_callback)
    return outcome


def _route(incoming: Incoming, chat: Chat) -> str:
    private = incoming.chat_type == "private"
    if incoming.callback_id is not None:
        return _button(incoming, chat)
    if incoming.command is not None:
        command = registry.commands.get(incoming.command)
        if command is None:
            if not private:
                return "ignored"  # in a group, an unknown /command is probably another bot's
            chat.reply(f"I don't know /{escape(incoming.command)}. Try /help to see what I can do.")
            return "unknown_command"
        command.handler(incoming, chat)
        return f"command:{command.name}"
    if incoming.document is not None:
        if _typed(incoming, chat, "document"):
            return "document"
        for handler in registry.documents:
            if handler(incoming, chat) is not False:  # None or True: the handler took the file
                return "document"
        if private:
            chat.reply("I wasn't expecting a file just now. Send /help to see what I can do.")
        return "unexpected_document"
    if incoming.text and _typed(incoming, chat, "text"):
        return "text"
    for text_handler in registry.texts:
        if text_handler(incoming, chat):
            return "text"
    if private and incoming.text:
        chat.reply("Send /help to see what I can do.")
    return "unhandled_text"


def _button(incoming: Incoming, chat: Chat) -> str:
    """A button press: a bare callback by its prefix, else the flow that owns the prefix, else expired."""
    data = incoming.callback_data or ""
    prefix = data.split(":", 1)[0]
    bare = registry.callbacks.get(prefix) if prefix else None
    if bare is not None:
        bare(incoming, chat)
        return f"callback:{prefix}"
    flow = registry.flows.get(prefix) if prefix else None
    if flow is None:
        chat.answer_callback(EXPIRED_BUTTON)
        return "expired_callback"
    from depu import conversation
    from depu.bot.flows import ANY, StaleButton, button

    try:
        _, parts = conversation.decode(data)
    except conversation.CallbackDataError:  # another release's button, or not one of ours at all
        chat.answer_callback(expired_button(flow), alert=True)
        return f"callback:{prefix}"
    action, args = (parts[0], parts[1:]) if parts else ("", [])
    on = button(action)
    if not flow.takes(on):
        chat.answer_callback(expired_button(flow), alert=True)
        return f"callback:{prefix}"
    if flow.answer_first:
        chat.answer_callback()
    current = None
    if any(step != ANY and key_on == on for step, key_on in flow.steps):  # a step's button: where is the user?
        current = _conversation_of(incoming.user_id, flow)
    handler = flow.entry(current.step if current else None, on)
    if handler is None:
        chat.answer_callback(expired_menu(flow) if current is None else STEP_DONE)
        return f"callback:{prefix}"
    try:
        _run(flow, handler, incoming, chat, current, args, action)
    except StaleButton:
        chat.answer_callback(expired_button(flow), alert=True)
    return f"callback:{prefix}"


def _typed(incoming: Incoming, chat: Chat, kind: str) -> bool:
    """Typed text or a document for the step the user's conversation waits at; False if no step takes it."""
    if not any(on.kind == kind for flow in registry.flows.values() for _, on in flow.steps):
        return False  # no flow takes this kind of input: no need to read the conversation
    from depu import conversation
    from depu.bot.flows import DOCUMENT, TEXT

    current = conversation.load(incoming.user_id)
    flow = registry.flow_named(current.flow) if current is not None else None
    handler = flow.entry(current.step, TEXT if kind == "text" else DOCUMENT) if flow and current else None
    if handler is None:
        return False
    _run(flow, handler, incoming, chat, current, [], "")
    return True


def _conversation_of(user_id: int, flow: Flow) -> Conversation | None:
    from depu import conversation

    current = conversation.load(user_id)
    return current if current is not None and current.flow == flow.name else None


def _run(flow: Flow, handler, incoming: Incoming, chat: Chat, current: Conversation | None, args: list[str],
         action: str) -> None:  # noqa: ANN001
    """Run one table entry: the handler, the conditional write of what it returned, then its ``then``."""
    from depu import conversation
    from depu.bot.flows import Refuse, Turn

    turn = Turn(incoming, chat, flow, current, args, action)
    try:
        outcome = handler(turn)
    except Refuse as refusal:
        chat.answer_callback(refusal.text, refusal.alert)
        return
    if outcome is None:
        return
    try:
        turn.conversation = _commit(turn, outcome)
    except conversation.ConversationChanged:  # a double tap: the other update took this step
        chat.answer_callback(ALREADY_DONE)
        return
    except conversation.NoConversation:  # expired between the read and the write
        chat.answer_callback(expired_menu(flow))
        return
    if outcome.then is not None:
        outcome.then(turn)


def _commit(turn: Turn, outcome: Next) -> Conversation | None:
    from depu import conversation

    flow, user_id = turn.flow, turn.user_id
    ttl = outcome.ttl_seconds or flow.ttl_seconds
    if outcome.step is None:
        conversation.clear(user_id, flow.name)
        return turn.conversation  # ``then`` still reads what the flow had gathered
    if outcome.start or turn.conversation is None:
        return conversation.start(user_id, flow.name, outcome.step, dict(outcome.data), ttl_seconds=ttl)
    return conversation.advance(user_id, outcome.step, dict(outcome.data), flow=flow.name, ttl_seconds=ttl,
                                current=turn.conversation)


def _safely(send, *args) -> None:  # noqa: ANN001 - any Chat method
    """Best effort for the error path itself: if Telegram is down, the log already has the story."""
    try:
        send(*args)
    except Exception:
        log.exception("could not send the error reply")
