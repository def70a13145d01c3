"""What the bot answers, in one table built from the features' own declarations.

Each feature module declares one ``Feature``: its ``/commands`` (entry points), its flows (``depu.bot.flows``:
one table per conversation) and its ``/profile`` sections. ``depu.bot.features.load`` imports every feature
module by name (plain import statements, so go-to-definition leads from here to the code) and installs it;
``depu.bot.dispatch`` routes each update through what was installed. Handlers receive an ``Incoming`` (what
the user did) and a ``Chat`` (how to answer) and never see Telegram's raw JSON or an AWS event.

``Registry.command``/``callback``/``text``/``document`` register a bare handler outside any flow (the
webhook's own tests use them); a feature declares a ``Feature`` instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

# the shared types, re-exported for the bot's modules (and their tests) that import them from here
from depu.chat import Button, Chat, Document, Incoming, Keyboard

if TYPE_CHECKING:
    from collections.abc import Sequence

    from depu.bot.flows import Flow
    from depu.bot.sections import Section

__all__ = ["Button", "Chat", "Command", "Document", "Feature", "Handler", "Incoming", "Keyboard", "Registry",
           "registry"]

Handler = Callable[[Incoming, Chat], None]


@dataclass
class Command:
    name: str
    description: str
    handler: Handler
    menu: bool = True  # shown in Telegram's command menu (setMyCommands)


@dataclass(frozen=True)
class Feature:
    """One feature module's declaration: its entry commands, its flow tables and its /profile sections."""

    name: str
    commands: tuple[Command, ...] = ()
    flows: tuple[Flow, ...] = ()
    sections: tuple[Section, ...] = ()


@dataclass
class Registry:
    commands: dict[str, Command] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)  # by callback prefix
    sections: list[Section] = field(default_factory=list)
    features: list[Feature] = field(default_factory=list)
    # bare handlers outside any flow
    callbacks: dict[str, Handler] = field(default_factory=dict)
    documents: list[Handler] = field(default_factory=list)
    texts: list[Callable[[Incoming, Chat], bool]] = field(default_factory=list)

    def install(self, feature: Feature) -> None:
        """Add a feature's commands, flows and sections; installing the same feature again does nothing, and
        a command, callback prefix, flow name or section title that another feature already has is refused."""
        if any(known is feature for known in self.features):
            return
        for command in feature.commands:
            if command.name in self.commands:
                raise ValueError(f"/{command.name} registered twice")
        names = {flow.name for flow in self.flows.values()}
        for flow in feature.flows:
            if flow.prefix in self.flows or flow.prefix in self.callbacks or flow.name in names:
                raise ValueError(f"flow {flow.name!r} or callback prefix {flow.prefix!r} registered twice")
        titles = {section.title for section in self.sections}
        for section in feature.sections:
            if section.title in titles:
                raise ValueError(f"profile section {section.title!r} registered twice")
        self.commands.update({command.name: command for command in feature.commands})
        self.flows.update({flow.prefix: flow for flow in feature.flows})
        self.sections.extend(feature.sections)
        self.features.append(feature)

    def flow_named(self, name: str) -> Flow | None:
        """The flow whose conversation is called ``name`` (what the profile stores)."""
        return next((flow for flow in self.flows.values() if flow.name == name), None)

    def command(self, name: str, description: str, *, menu: bool = True) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if name in self.commands:
                raise ValueError(f"/{name} registered twice")
            self.commands[name] = Command(name, description, handler, menu)
            return handler

        return register

    def callback(self, prefix: str) -> Callable[[Handler], Handler]:
        """A bare button handler for ``<prefix>:...``: it gets the raw callback data (no version, no flow)."""
        def register(handler: Handler) -> Handler:
            if prefix in self.callbacks or prefix in self.flows or ":" in prefix:
                raise ValueError(f"bad or duplicate callback prefix {prefix!r}")
            self.callbacks[prefix] = handler
            return handler

        return register

    def document(self, handler: Handler) -> Handler:
        """A bare handler offered every document no flow step took; it returns False to decline it."""
        self.documents.append(handler)
        return handler

    def text(self, handler: Callable[[Incoming, Chat], bool]) -> Callable[[Incoming, Chat], bool]:
        """A bare plain-text handler offered text no flow step took; it returns True if it took the text."""
        self.texts.append(handler)
        return handler

    def menu(self) -> Sequence[Command]:
        return [command for command in self.commands.values() if command.menu]


registry = Registry()
