"""Bot flows as tables: how a feature says what each button press, typed text or file does at each step.

A flow is a conversation with named steps, stored on the user's profile (``depu.conversation``), and one
table that maps ``(step, input)`` to a small handler. The dispatcher (``depu.bot.dispatch``) does everything
around the handler once, in one place, for every flow: it decodes the versioned callback data, loads the
conversation (one read), finds the table entry, writes the step the handler returns as a conditional write,
and answers whatever matches no entry (an expired or forged button, a step already done, a double tap).
The model is python-telegram-bot's ConversationHandler (entry points, states, fallbacks); what DePU adds is
versioned callback data and a conditional write per step, because a Lambda remembers nothing and two
taps can run at once.

Writing a flow (money top-up, API keys, fork tracing, ...)::

    from depu.bot import flows
    from depu.bot.flows import ANY, DOCUMENT, TEXT, Flow, Turn, button
    from depu.bot.registry import Command, Feature

    def top_up(incoming, chat):                          # an entry point: a plain command handler
        profile_of(incoming)
        flows.begin(incoming.user_id, TOP_UP, "amount")   # the flow starts at step "amount"
        chat.reply("How many credits?", [[TOP_UP.button("10", "amt", 10), TOP_UP.button("Cancel", "x")]])

    def amount(turn: Turn) -> flows.Next:                # (step "amount", button "amt")
        value = turn.int_arg(0, allowed=(10, 50))          # a forged value is answered as an expired button
        return flows.go("confirm", {"amount": value}, then=confirm_screen)

    def confirm_screen(turn: Turn) -> None:             # runs once the write has won: turn.data is merged
        turn.show(f"Pay {turn.data['amount']}?", [[TOP_UP.button("Pay", "pay")]])

    TOP_UP = Flow(
        name="topup", prefix="tu", restart="/top_up",
        steps={
            (ANY, button("x")): cancel,                 # ANY: whatever the step, even with no conversation
            ("amount", button("amt")): amount,
            ("amount", TEXT): typed_amount,             # typed input while the flow waits at "amount"
            ("confirm", button("pay")): pay,
        },
    )
    FEATURE = Feature("money", commands=(Command("top_up", "Buy credits", top_up),), flows=(TOP_UP,))

and add ``money.FEATURE`` to ``depu.bot.features.load`` (an explicit import there).

Rules of the table:
- Buttons carry ``<prefix>:<version>:<action>[:<arg>...]`` (``Flow.button`` builds them, at most 64 bytes).
  ``button(action)`` keys an entry by the action; ``turn.args`` are the parts after it.
- A step name keys an entry that runs only while this flow is the user's active conversation at that step;
  ``ANY`` keys one that runs whatever the step (a stateless button: "open fork 7", "cancel job 3").
- A handler returns what the conversation becomes: ``go(step, data)`` (a conditional write on the version
  read, data merged), ``begin_step(step, data)`` (start this flow, replacing any other), ``end()`` (clear
  it, only if it is still this flow), or ``None`` (no write). An entry point (a command) starts a flow with
  ``begin(user_id, FLOW, step)``. Work that must happen at most once, or a screen
  that shows what was stored, goes in ``then=``: it runs after the write has won, so a double tap runs it
  once. Work in the handler itself runs before the write: a ``UserError`` there leaves the step as it was
  (the user corrects the input and tries again). Inside ``then``, ``turn.advance(step)`` and
  ``turn.finish()`` write again (a submit the service refused goes back a step: ``depu.bot.rental``).
- A handler answers the button with ``turn.answer(text)`` if it has something to say; the dispatcher
  answers it (silently) otherwise. ``Flow(answer_first=True)`` answers before the handler, for slow ones.
- ``raise Refuse(text, alert)`` answers the button with ``text`` and writes nothing; ``turn.arg``/
  ``turn.int_arg`` raise ``StaleButton`` for missing or unexpected parts, answered as an expired button.
- The fallbacks are the dispatcher's, worded from ``Flow.restart``: a button from another release or with
  an unknown action is expired; a step button while no conversation of this flow is active is an expired
  menu; a step button at another step is a step done already; a lost race is "Already done."
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from depu import conversation
from depu.bot.screens import show

if TYPE_CHECKING:
    from depu.chat import Chat, Incoming, Keyboard
    from depu.conversation import Conversation

ANY = "*"  # a table key's step: the entry runs whatever the step is, and with no conversation at all


@dataclass(frozen=True)
class On:
    """The kind of input a table entry takes: a button (with its action), typed text or a document."""

    kind: str  # "button", "text" or "document"
    action: str = ""


def button(action: str) -> On:
    """The table key for a press of a button whose callback data has this action."""
    if ":" in action:
        raise ValueError(f"bad button action {action!r}")
    return On("button", action)


TEXT = On("text")
DOCUMENT = On("document")


@dataclass(frozen=True)
class Next:
    """What a handler makes of the conversation (see the module docstring); build it with ``go``, ``begin``
    or ``end``."""

    step: str | None  # None: the flow ends
    data: Mapping[str, Any] = field(default_factory=dict)
    then: Callable[[Turn], None] | None = None
    start: bool = False  # begin the flow (replacing any other) instead of advancing the active one
    ttl_seconds: int | None = None


def go(step: str, data: Mapping[str, Any] | None = None, *, then: Callable[[Turn], None] | None = None,
       ttl_seconds: int | None = None) -> Next:
    """Move this flow to ``step``, merging ``data``; refused (``Already done.``) if another update moved it
    first. From an ``ANY`` entry (which reads no conversation) it begins the flow at ``step``."""
    return Next(step, dict(data or {}), then, ttl_seconds=ttl_seconds)


def begin_step(step: str, data: Mapping[str, Any] | None = None, *, then: Callable[[Turn], None] | None = None,
               ttl_seconds: int | None = None) -> Next:
    """Start this flow at ``step`` (from a button), replacing whatever flow the user was in."""
    return Next(step, dict(data or {}), then, start=True, ttl_seconds=ttl_seconds)


def end(*, then: Callable[[Turn], None] | None = None) -> Next:
    """Finish this flow (only if it is still the active one); ``then`` still reads the data it gathered."""
    return Next(None, then=then)


def begin(user_id: int, flow: Flow, step: str, data: Mapping[str, Any] | None = None) -> Conversation:
    """Start ``flow`` at ``step`` from an entry point (a command): replaces any flow in progress."""
    return conversation.start(user_id, flow.name, step, dict(data or {}), ttl_seconds=flow.ttl_seconds)


class Refuse(Exception):
    """Answer the button press with ``text`` (a toast, or a popup with ``alert``) and change nothing."""

    def __init__(self, text: str, alert: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.alert = alert


class StaleButton(Exception):
    """The button's parts are not what this flow's buttons carry: answered as an expired button."""


@dataclass
class Turn:
    """One input to a flow, as its handler sees it: the user's ``incoming``, the ``chat`` to answer in, the
    button's ``args`` and this flow's ``conversation`` (None when the user is in no conversation of it)."""

    incoming: Incoming
    chat: Chat
    flow: Flow
    conversation: Conversation | None = None
    args: list[str] = field(default_factory=list)
    action: str = ""  # the button's action ("" for typed text and documents)

    @property
    def user_id(self) -> int:
        return self.incoming.user_id

    @property
    def data(self) -> dict[str, Any]:
        """What earlier steps stored (after the write, in ``then``: including this step's data)."""
        return dict(self.conversation.data) if self.conversation else {}

    def arg(self, index: int) -> str:
        """The button's ``index``-th part after the action; a missing part is an expired button."""
        if index >= len(self.args) or not self.args[index]:
            raise StaleButton()
        return self.args[index]

    def int_arg(self, index: int, allowed: tuple[int, ...] | None = None) -> int:
        """An integer part, optionally one of ``allowed`` (a menu's choices); anything else is expired."""
        value = self.arg(index)
        if not value.isdigit() or (allowed is not None and int(value) not in allowed):
            raise StaleButton()
        return int(value)

    def show(self, text: str, buttons: Keyboard | None = None) -> None:
        """A menu screen: edits the pressed button's message, else sends a new one (``depu.bot.screens``)."""
        show(self.incoming, self.chat, text, buttons)

    def reply(self, text: str, buttons: Keyboard | None = None) -> int | None:
        return self.chat.reply(text, buttons)

    def answer(self, text: str | None = None, alert: bool = False) -> None:
        """Answer the button press now (stops the spinner); the dispatcher answers it otherwise."""
        self.chat.answer_callback(text, alert)

    def advance(self, step: str, data: Mapping[str, Any] | None = None) -> None:
        """From ``then`` only: one more conditional write (a submit that failed goes back a step)."""
        self.conversation = conversation.advance(self.user_id, step, dict(data or {}), flow=self.flow.name,
                                                 ttl_seconds=self.flow.ttl_seconds, current=self.conversation)

    def finish(self) -> None:
        """From ``then`` only: end this flow now."""
        conversation.clear(self.user_id, self.flow.name)
        self.conversation = None


Handler = Callable[[Turn], "Next | None"]


@dataclass(frozen=True)
class Flow:
    """One conversation's table. ``name`` is the flow stored on the profile, ``prefix`` its buttons' callback
    prefix, ``restart`` the command the fallbacks point to, ``answer_first`` answers a button press before
    the handler runs (for handlers that draw charts, so the spinner stops at once)."""

    name: str
    prefix: str
    restart: str
    steps: Mapping[tuple[str, On], Handler]
    ttl_seconds: int = conversation.DEFAULT_TTL_SECONDS
    answer_first: bool = False

    def __post_init__(self) -> None:
        if not self.prefix or ":" in self.prefix:
            raise ValueError(f"bad callback prefix {self.prefix!r}")
        for step, on in self.steps:
            if on.kind != "button" and step == ANY:
                raise ValueError(f"{self.name}: typed text and documents belong to a step, not to ANY")

    def button(self, label: str, action: str, *args: object) -> Button:
        """An inline button for this flow's table: ``<prefix>:1:<action>:<arg>...``."""
        from depu.chat import Button

        return Button(label, data=conversation.encode(self.prefix, action, *args))

    def entry(self, step: str | None, on: On) -> Handler | None:
        """The handler for ``on`` at ``step`` (None: no conversation of this flow), falling back to ``ANY``."""
        if step is not None and (step, on) in self.steps:
            return self.steps[(step, on)]
        return self.steps.get((ANY, on))

    def takes(self, on: On) -> bool:
        """Whether any step of this flow has an entry for ``on`` (is the button one of ours at all?)."""
        return any(key_on == on for _, key_on in self.steps)


if TYPE_CHECKING:
    from depu.chat import Button
