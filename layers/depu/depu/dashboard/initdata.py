"""Verify the ``initData`` Telegram hands a Mini App, so the dashboard knows who opened it.

Telegram signs the launch data with a key derived from the bot token:
``secret = HMAC_SHA256(key="WebAppData", msg=bot_token)`` and
``hash = hex(HMAC_SHA256(key=secret, msg=data_check_string))``, where the data-check string is every field
except ``hash``, sorted by key, written ``key=value`` and joined by newlines. Only someone holding the bot
token can produce a matching hash, so a verified ``user.id`` is the Telegram user who opened the app.

``auth_date`` bounds replay: data older than ``max_age`` (or from the future, beyond a little clock skew) is
refused even when its signature is good.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

DEFAULT_MAX_AGE = 3600  # seconds an initData stays acceptable after Telegram issued it
CLOCK_SKEW = 60  # seconds an auth_date may lie in the future (clocks differ a little)
MAX_INIT_DATA_LENGTH = 8192  # Telegram's launch data is a few hundred bytes; refuse anything absurd


class InitDataError(ValueError):
    """The launch data cannot be trusted. ``str(error)`` is safe to show the user."""


@dataclass(frozen=True)
class WebAppUser:
    """Who opened the Mini App, as Telegram vouches for them."""

    id: int
    first_name: str
    username: str | None
    language_code: str | None
    auth_date: int


def _secret_key(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def data_check_string(fields: dict[str, str]) -> str:
    """Telegram's canonical form: all fields but ``hash``, sorted by key, ``key=value`` joined by newlines."""
    return "\n".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "hash")


def sign(fields: dict[str, str], bot_token: str) -> str:
    """The hash Telegram would put on ``fields`` (used to verify, and by tests and the local stand-in to
    produce launch data exactly as Telegram does)."""
    return hmac.new(_secret_key(bot_token), data_check_string(fields).encode(), hashlib.sha256).hexdigest()


def parse_fields(init_data: str) -> dict[str, str]:
    """The query string's fields, refusing duplicates (an ambiguous field could be read two ways)."""
    if not isinstance(init_data, str) or not init_data.strip():
        raise InitDataError("no Telegram launch data")
    if len(init_data) > MAX_INIT_DATA_LENGTH:
        raise InitDataError("Telegram launch data is too long")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(init_data, keep_blank_values=True, strict_parsing=False):
        if key in fields:
            raise InitDataError(f"Telegram launch data repeats the field {key!r}")
        fields[key] = value
    return fields


def verify(init_data: str, bot_token: str, *, now: float | None = None, max_age: int = DEFAULT_MAX_AGE) -> WebAppUser:
    """The user ``init_data`` vouches for, or ``InitDataError`` saying why it is refused."""
    fields = parse_fields(init_data)
    received = fields.get("hash", "")
    if not received:
        raise InitDataError("Telegram launch data is not signed")
    expected = sign(fields, bot_token)
    if not hmac.compare_digest(expected.encode(), received.lower().encode()):
        raise InitDataError("Telegram launch data has a bad signature")
    try:
        auth_date = int(fields.get("auth_date", ""))
    except ValueError:
        raise InitDataError("Telegram launch data has no valid auth_date") from None
    current = time.time() if now is None else now
    if auth_date > current + CLOCK_SKEW:
        raise InitDataError("Telegram launch data is dated in the future")
    if current - auth_date > max_age:
        raise InitDataError("Telegram launch data has expired; reopen the dashboard from the bot")
    try:
        user = json.loads(fields.get("user", ""))
        user_id = int(user["id"])
    except (ValueError, TypeError, KeyError):
        raise InitDataError("Telegram launch data names no user") from None
    if isinstance(user.get("id"), bool) or user_id <= 0:
        raise InitDataError("Telegram launch data names no user")
    return WebAppUser(
        id=user_id,
        first_name=str(user.get("first_name") or ""),
        username=str(user["username"]) if user.get("username") else None,
        language_code=str(user["language_code"]) if user.get("language_code") else None,
        auth_date=auth_date,
    )


def build(user: dict[str, object], bot_token: str, *, auth_date: int | None = None, **extra: str) -> str:
    """Launch data signed like Telegram signs it: for tests and the local Telegram stand-in only (the real
    Telegram builds it in production)."""
    from urllib.parse import urlencode

    fields = {
        "query_id": extra.pop("query_id", "AAH-local-query"),
        "user": json.dumps(user, separators=(",", ":")),
        "auth_date": str(int(time.time()) if auth_date is None else auth_date),
        **extra,
    }
    fields["hash"] = sign(fields, bot_token)
    return urlencode(fields)
