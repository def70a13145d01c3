"""JSON from the outside world: size-limited, valid Unicode, nesting-limited, then parsed.

web3's dependencies raise Python's recursion limit to 100,000 on import (py_ecc), after which
``json.loads("[" * 100_000)`` overflows the C stack and kills the process instead of raising. Every body
an outsider can send (Telegram updates, agent calls, fork JSON-RPC, dashboard requests) goes through
``loads`` here, which, in this order and each in linear time:

1. refuses a body over ``max_bytes`` (``TooLarge``) before looking inside it, so no later step can be made
   to work on more than a route allows;
2. refuses text that is not valid Unicode (``NotUnicode``): bytes that are not UTF-8, or lone surrogates,
   whether raw in the text or written as ``\\ud800`` escapes. Such a string would pass the parser and then
   crash whatever encodes it later (token hashing, DynamoDB, logs) with a 5xx instead of a 400;
3. refuses nesting deeper than ``MAX_DEPTH`` (``TooDeep``) in one pass over the text. An earlier version
   restarted a string match at every quote, so ``[]``×65 + ``"`` + ``\\"``×N took time quadratic in N
   (16 KB: two seconds; 70 KB: a Lambda timeout).

Every refusal is a ``ValueError``, like ``json.JSONDecodeError``, so callers map all of them to a 4xx.
"""
from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
# The ceiling when a caller names no limit. Routes set their own, smaller ones (docs/security.md).
MAX_BYTES = 1024 * 1024

# Outside strings only these characters matter to the depth scan.
_STRUCTURE = re.compile(r'[\[\]{}"]')
# The rest of a string after its opening quote, up to and including the closing quote. Possessive
# quantifiers: the engine never backtracks into it, so a match or a failure costs one pass over the string.
_STRING_REST = re.compile(r'(?:[^"\\]++|\\.)*+"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


class TooDeep(ValueError):
    """The document nests arrays/objects deeper than anything DePU accepts."""


class TooLarge(ValueError):
    """The body is over the route's size limit (the route answers 413)."""


class NotUnicode(ValueError):
    """The body is not valid UTF-8 text, or a string in it holds a lone surrogate."""


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` if ``text`` nests deeper than ``limit``, in one left-to-right pass. Strings are
    skipped, so brackets inside them do not count; a document with few brackets is accepted without scanning.
    An unterminated string ends the scan: the parser refuses that document anyway."""
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    position = 0
    length = len(text)
    while position < length:
        found = _STRUCTURE.search(text, position)
        if found is None:
            return
        char = found.group()
        position = found.end()
        if char == '"':
            rest = _STRING_REST.match(text, position)
            if rest is None:
                return
            position = rest.end()
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise TooDeep(f"JSON nested deeper than {limit} levels")
        else:
            depth -= 1


def check_unicode(value: Any) -> None:
    """Raise ``NotUnicode`` if any string (key or value) in a parsed document holds a lone surrogate.
    ``json.loads`` turns ``"\\ud800"`` into one; a valid escaped pair becomes one astral character."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                raise NotUnicode("the body holds a lone surrogate (text that is not valid Unicode)")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def text_of(body: str | bytes | bytearray, max_bytes: int = MAX_BYTES) -> str:
    """The body as checked text: ``TooLarge`` over ``max_bytes`` (UTF-8), ``NotUnicode`` if it is not UTF-8
    or holds raw lone surrogates. The size is checked before anything is decoded or encoded."""
    if len(body) > max_bytes:  # a str has at least one byte per character: over in characters is over in bytes
        raise TooLarge(f"body over {max_bytes} bytes")
    if isinstance(body, (bytes, bytearray)):
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise NotUnicode("the body is not valid UTF-8") from None
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise NotUnicode("the body holds a lone surrogate (text that is not valid Unicode)") from None
    if size > max_bytes:
        raise TooLarge(f"body over {max_bytes} bytes")
    return body


def loads(body: str | bytes | bytearray, limit: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """``json.loads`` for untrusted input: ``ValueError`` (``TooLarge``, ``NotUnicode``, ``TooDeep`` or
    ``JSONDecodeError``) on bad input, never a crash, and linear time in the size of the body."""
    text = text_of(body, max_bytes)
    check_depth(text, limit)
    value = json.loads(text)
    check_unicode(value)
    return value
