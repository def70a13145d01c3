"""JSON from the outside world, parsed with a nesting limit.

web3's dependencies raise Python's recursion limit to 100,000 on import (py_ecc), after which
``json.loads("[" * 100_000)`` overflows the C stack and kills the process instead of raising. Every body
an outsider can send (Telegram updates, agent calls, fork JSON-RPC, dashboard requests) goes through
``loads`` here, which refuses deep nesting before the parser sees it.
"""
from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class TooDeep(ValueError):
    """The document nests arrays/objects deeper than anything DePU accepts."""


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` if ``text`` nests deeper than ``limit``. Strings are skipped, so brackets inside
    them do not count; a document with few brackets is accepted without scanning."""
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                raise TooDeep(f"JSON nested deeper than {limit} levels")
        elif char in "]}":
            depth -= 1


def loads(body: str | bytes | bytearray, limit: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted input: ``ValueError`` (``TooDeep`` or ``JSONDecodeError``) on bad input,
    never a crash."""
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    check_depth(text, limit)
    return json.loads(text)
