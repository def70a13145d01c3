"""``/profile`` sections: each feature adds its own lines to the user's profile (rentals, forks, watches)
by declaring a ``Section`` in its ``Feature``, so /profile need not know about rentals, forks or analytics.

A section renders HTML for one user; it owns its empty state ("No rentals yet."). These are the bot's words,
so they live here and not in ``depu.profiles`` (which keeps the data).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

SectionRenderer = Callable[[int], str]


@dataclass(frozen=True)
class Section:
    order: int  # shown in ascending order
    title: str
    render: SectionRenderer


def render_sections(user_id: int, sections: Iterable[Section] | None = None) -> list[tuple[str, str]]:
    """Every section's ``(title, html)``, in order (default: every installed feature's). An empty one shows
    "Nothing yet."; a failing one shows that it is unavailable instead of breaking the whole /profile."""
    if sections is None:
        from depu.bot.registry import registry

        sections = registry.sections
    rendered: list[tuple[str, str]] = []
    for section in sorted(sections, key=lambda section: (section.order, section.title)):
        try:
            body = section.render(user_id).strip() or "Nothing yet."
        except Exception:  # one feature's bug must not hide the balance
            log.exception("profile section %s failed", section.title)
            body = "Unavailable right now."
        rendered.append((section.title, body))
    return rendered
