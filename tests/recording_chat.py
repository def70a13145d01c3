"""One recording implementation of the bot's ``registry.Chat`` for every bot test module.

It remembers everything a handler did: new messages (``sent``, with the message id ``reply`` returned),
edits, one ``timeline`` of what the user sees (new messages and edits in order), callback answers and
``callback_answered`` (what the dispatcher checks after a button handler), photos and documents. A test
reads what the user sees now (``text``, ``button_data``, ``button_labels``) and presses buttons by label
(``button``). Assert what a reply means with ``plain`` (the words and numbers without the HTML markup, so
wording and formatting can change) and ``links``; keep raw ``text`` for what is about the markup itself
(escaping user input).

The flags make a module's expectations strict: ``require_text`` fails a reply with blank text, and
``allow_edits``/``allow_photos``/``allow_documents`` set to False fail the test when a handler edits or sends one.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from depu.bot.registry import Button, Keyboard


def to_plain(text: str) -> str:
    """What the user reads in an HTML message: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def links_in(text: str) -> list[str]:
    """The ``href`` of every link in an HTML message, decoded."""
    return [html.unescape(href) for href in re.findall(r'<a\s[^>]*href="([^"]*)"', text)]


@dataclass
class RecordingChat:
    require_text: bool = False  # a reply must have non-blank text
    allow_edits: bool = True  # may the handler edit messages?
    allow_photos: bool = True  # may it send photos?
    allow_documents: bool = True  # may it send documents?
    first_message_id: int = 1  # the id the first reply gets; later replies count up from it
    private_open: bool = True  # has the sender opened a private chat with the bot? (else reply_private fails)

    sent: list[tuple[int, str, Keyboard]] = field(default_factory=list)  # (message id, text, buttons)
    edits: list[tuple[int, str, Keyboard]] = field(default_factory=list)  # (message id, text, buttons)
    timeline: list[tuple[str, Keyboard]] = field(default_factory=list)  # replies and edits, in order
    answers: list[tuple[str | None, bool]] = field(default_factory=list)  # (text, alert)
    callback_answered: bool = False
    photos: list[tuple[bytes, str, str]] = field(default_factory=list)  # (photo, caption, filename)
    documents: list[tuple[bytes, str, str]] = field(default_factory=list)  # (content, filename, caption)
    private: list[tuple[str, Keyboard]] = field(default_factory=list)  # sent to the sender's private chat

    # --- registry.Chat -------------------------------------------------------------------------------------

    def reply(self, text: str, buttons: Keyboard | None = None) -> int:
        if self.require_text:
            assert text.strip()
        message_id = self.first_message_id + len(self.sent)
        self.sent.append((message_id, text, buttons or []))
        self.timeline.append((text, buttons or []))
        return message_id

    def reply_private(self, text: str, buttons: Keyboard | None = None) -> int:
        from depu.bot.private import PrivateChatClosed

        if not self.private_open:
            raise PrivateChatClosed()
        self.private.append((text, buttons or []))
        return 1000 + len(self.private)

    def edit(self, message_id: int, text: str, buttons: Keyboard | None = None) -> None:
        if not self.allow_edits:
            raise AssertionError("no edits here")
        self.edits.append((message_id, text, buttons or []))
        self.timeline.append((text, buttons or []))

    def answer_callback(self, text: str | None = None, alert: bool = False) -> None:
        self.callback_answered = True
        self.answers.append((text, alert))

    def send_photo(self, photo: bytes, caption: str = "", filename: str = "chart.png") -> None:
        if not self.allow_photos:
            raise AssertionError("no photos here")
        self.photos.append((photo, caption, filename))

    def send_document(self, content: bytes, filename: str, caption: str = "") -> None:
        if not self.allow_documents:
            raise AssertionError("no documents here")
        self.documents.append((content, filename, caption))

    # --- what the user sees --------------------------------------------------------------------------------

    @property
    def replies(self) -> list[tuple[str, Keyboard]]:
        """New messages only, as (text, buttons)."""
        return [(text, buttons) for _, text, buttons in self.sent]

    @property
    def reply_texts(self) -> list[str]:
        """The texts of new messages only."""
        return [text for _, text, _ in self.sent]

    @property
    def text(self) -> str:
        """The text of the latest message or edit."""
        return self.timeline[-1][0]

    @property
    def plain(self) -> str:
        """The latest message or edit as the user reads it (no markup)."""
        return to_plain(self.text)

    @property
    def links(self) -> list[str]:
        """Links of the latest message or edit: ``<a href>`` in its text, then its URL buttons."""
        return links_in(self.text) + [button.url for button in self.keyboard if button.url]

    @property
    def keyboard(self) -> list[Button]:
        """The buttons of the latest message or edit, row by row."""
        return [button for row in self.timeline[-1][1] for button in row]

    @property
    def button_data(self) -> list[str]:
        """Callback data of the latest message's (or edit's) callback buttons."""
        return [button.data for button in self.keyboard if button.data]

    @property
    def button_labels(self) -> list[str]:
        return [button.text for button in self.keyboard]

    def button(self, label_part: str) -> str:
        """The callback data of the first button on screen whose label contains ``label_part``."""
        buttons = self.keyboard
        for button in buttons:
            if label_part in button.text:
                return button.data
        raise AssertionError(f"no button {label_part!r} in {[b.text for b in buttons]}")
