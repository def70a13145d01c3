"""Telegram's HTML parse mode, checked the way the Bot API checks it.

The stand-in rejects what Telegram rejects (unknown tags, unclosed or crossed tags, unknown entities), so a
message that would bounce in production bounces locally first. The chat CLI reuses ``to_plain_text``.
"""
from __future__ import annotations

import re
from html import unescape

# tags the Bot API accepts in parse_mode=HTML (https://core.telegram.org/bots/api#html-style)
SUPPORTED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre",
    "blockquote", "tg-emoji",
}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*(/?)>")
_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z][a-zA-Z0-9]*);")
_NAMED_ENTITIES = {"lt", "gt", "amp", "quot"}


class EntityError(ValueError):
    """The text is not valid Telegram HTML; the message is Telegram's wording after 'can't parse entities: '."""


def parse_html(text: str) -> str:
    """Validate Telegram HTML and return the plain text the user sees (tags removed, entities decoded)."""
    plain: list[str] = []
    stack: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            found = _TAG.match(text, position)
            offset = len(text[:position].encode("utf-8"))
            if not found:
                raise EntityError(f"Unsupported start tag \"\" at byte offset {offset}")
            closing, name, _, _self_closing = found.groups()
            name = name.lower()
            if name not in SUPPORTED_TAGS:
                kind = "end" if closing else "start"
                raise EntityError(f"Unsupported {kind} tag \"{name}\" at byte offset {offset}")
            if closing:
                if not stack:
                    raise EntityError(f"Unexpected end tag at byte offset {offset}")
                if stack[-1] != name:
                    raise EntityError(
                        f"Can't find end tag corresponding to start tag \"{stack[-1]}\""
                    )
                stack.pop()
            else:
                stack.append(name)
            position = found.end()
        elif char == "&":
            found = _ENTITY.match(text, position)
            if found and not found.group(1).startswith("#") and found.group(1) not in _NAMED_ENTITIES:
                offset = len(text[:position].encode("utf-8"))
                raise EntityError(f"Unsupported HTML entity \"&{found.group(1)};\" at byte offset {offset}")
            if found:
                plain.append(unescape(found.group(0)))
                position = found.end()
            else:
                plain.append("&")  # a lone '&' is taken literally, as Telegram does
                position += 1
        elif char == ">":
            plain.append(">")
            position += 1
        else:
            plain.append(char)
            position += 1
    if stack:
        raise EntityError(f"Can't find end tag corresponding to start tag \"{stack[-1]}\"")
    return "".join(plain)


def to_plain_text(text: str, parse_mode: str | None) -> str:
    """What a Telegram client shows, minus the formatting; links keep their address for a terminal."""
    if (parse_mode or "").upper() != "HTML":
        return text
    with_links = re.sub(r"<a\s+href\s*=\s*[\"']([^\"']*)[\"']\s*>(.*?)</a>", _link, text, flags=re.S | re.I)
    try:
        return parse_html(with_links)
    except EntityError:
        return unescape(re.sub(r"<[^>]+>", "", with_links))


def _link(found: re.Match[str]) -> str:
    address, label = unescape(found.group(1)), found.group(2)
    return label if unescape(re.sub(r"<[^>]+>", "", label)) == address else f"{label} ({address})"


def utf16_length(text: str) -> int:
    """Telegram counts lengths and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2
