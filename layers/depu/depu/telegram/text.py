"""HTML message text: escaping user-provided text and splitting long messages for Telegram's 4096 limit.

Splitting happens on line boundaries so tables and lists stay readable; an HTML tag still open at a cut
(``<pre>`` around a long listing, say) is closed at the end of one part and reopened at the start of the
next, so every part parses on its own.
"""
from __future__ import annotations

import html
import re

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^<>]*)>")


def escape(text: object) -> str:
    """Make any user-provided value safe inside an HTML-mode message."""
    return html.escape(str(text), quote=True)


def _apply_tags(piece: str, stack: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The open-tag stack after ``piece``: (name, opening tag) pairs, outermost first."""
    stack = list(stack)
    for match in _TAG.finditer(piece):
        closing, name = match.group(1), match.group(2).lower()
        if not closing:
            stack.append((name, match.group(0)))
            continue
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] == name:
                del stack[index:]
                break
    return stack


def _closers(stack: list[tuple[str, str]]) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def _openers(stack: list[tuple[str, str]]) -> str:
    return "".join(tag for _, tag in stack)


def _safe_cut(line: str, room: int) -> int:
    """Where to cut an over-long line within ``room`` chars: at a space if one is near, never inside a tag
    or an entity such as ``&amp;``."""
    cut = max(1, room)
    space = line.rfind(" ", 0, cut)
    if space > cut // 2:
        cut = space + 1
    tag_open, tag_close = line.rfind("<", 0, cut), line.rfind(">", 0, cut)
    if tag_open > tag_close and tag_open > 0:
        cut = tag_open
    amp, semi = line.rfind("&", 0, cut), line.rfind(";", 0, cut)
    if amp > semi and cut - amp <= 10 and amp > 0:
        cut = amp
    return max(1, cut)


def _pieces(text: str, limit: int) -> list[str]:
    """Lines (with their newline), over-long lines cut into parts that fit ``limit`` on their own."""
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            cut = _safe_cut(line, limit)
            pieces.append(line[:cut])
            line = line[cut:]
        if line:
            pieces.append(line)
    return pieces


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` characters, on line boundaries where possible.

    Text that fits comes back unchanged as the only part. Tags open across a cut are closed and reopened.
    """
    if len(text) <= limit:
        return [text]
    # leave room for the tags re-opened/closed around a cut (generous for Telegram's shallow nesting)
    budget = max(1, limit - 200) if limit > 400 else limit
    parts: list[str] = []
    prefix_stack: list[tuple[str, str]] = []
    stack: list[tuple[str, str]] = []
    current = ""
    for piece in _pieces(text, budget):
        after = _apply_tags(piece, stack)
        size = len(_openers(prefix_stack)) + len(current) + len(piece) + len(_closers(after))
        if current and size > limit:
            parts.append(_openers(prefix_stack) + current.rstrip("\n") + _closers(stack))
            prefix_stack, current = stack, ""
            after = _apply_tags(piece, stack)
        current += piece
        stack = after
    if current.strip() or not parts:
        parts.append(_openers(prefix_stack) + current + _closers(stack))
    return [part for part in parts if part.strip()] or [text[:limit]]
