"""The local stack's own secrets: a bot token and a webhook secret, generated once per checkout.

They live in ``.local/secrets.json`` (gitignored, created with mode 600 so no other user can read it even for a
moment) and are handed to moto's Secrets Manager and the Telegram stand-in; they are never printed or logged.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from local.template import ROOT

SECRETS_PATH = ROOT / ".local" / "secrets.json"


@dataclass(frozen=True)
class LocalSecrets:
    bot_token: str
    webhook_secret: str

    def __repr__(self) -> str:  # never show the values, even in a traceback or a debugger's summary
        return "LocalSecrets(bot_token=<hidden>, webhook_secret=<hidden>)"


def generate() -> LocalSecrets:
    bot_id = 1_000_000_000 + secrets.randbelow(8_999_999_999)
    return LocalSecrets(bot_token=f"{bot_id}:{secrets.token_urlsafe(26)}", webhook_secret=secrets.token_urlsafe(32))


def load_or_create(path: Path = SECRETS_PATH) -> LocalSecrets:
    """The checkout's secrets, creating them at first start. A file readable by others is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path} is readable by other users; run `chmod 600 {path}`") from None
        data = json.loads(path.read_text(encoding="utf-8"))
        return LocalSecrets(bot_token=data["bot_token"], webhook_secret=data["webhook_secret"])
    fresh = generate()
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"bot_token": fresh.bot_token, "webhook_secret": fresh.webhook_secret}, handle)
    return fresh
