"""Dashboard sessions and one-time login codes, stored hashed in TokensTable.

Why this shape:
- A session is a random bearer token (``secrets.token_urlsafe``) the page keeps in memory; only its SHA-256
  lives in TokensTable (``kind=dashboard_session``), so a table dump grants nothing. It lasts 15 minutes;
  the page opens a new one from its launch data or asks the user to reopen the dashboard.
- Outside Telegram there is no launch data, so the bot hands out a login code (``kind=dashboard_login``):
  valid for 5 minutes and single-use, enforced by a conditional update that stamps ``used_at`` only if it
  is not yet set, so two tabs racing with the same link get one session between them.
- DynamoDB's TTL deletes expired items lazily (up to days later), so every read checks ``expires_at`` itself.
- Issuing, hashing, checking, single use and revoking are depu.tokens' (one module for every kind of token);
  this module names the two kinds and turns a refusal into words the page can show.
"""
from __future__ import annotations

from dataclasses import dataclass

from depu.tokens import TokenKind, TokenRecord, hash_token

SESSION_TTL = 15 * 60
LOGIN_TTL = 5 * 60
SESSION = TokenKind("dashboard_session", ttl=SESSION_TTL, max_chars=256)
LOGIN = TokenKind("dashboard_login", ttl=LOGIN_TTL, max_chars=256)
SESSION_KIND = SESSION.name
LOGIN_KIND = LOGIN.name
DashboardToken = TokenRecord
"""The record a session or login code names (TokensTable's one model)."""

__all__ = [
    "LOGIN", "LOGIN_KIND", "LOGIN_TTL", "SESSION", "SESSION_KIND", "SESSION_TTL", "DashboardToken", "Session",
    "SessionError", "close_session", "hash_token", "issue_login_code", "open_session", "redeem_login_code",
    "revoke_login_code", "session_for",
]


class SessionError(Exception):
    """A session or login code that does not (or no longer) grant access. The text is safe to show."""


@dataclass(frozen=True)
class Session:
    user_id: int
    expires_at: int


def open_session(user_id: int, *, now: float | None = None) -> tuple[str, Session]:
    """A new session for ``user_id``: the bearer token (shown once, never stored) and its expiry."""
    issued = SESSION.issue(now=now, user_id=int(user_id))
    return issued.token, Session(int(user_id), int(issued.expires_at or 0))


def session_for(token: str | None, *, now: float | None = None) -> Session:
    """The live session ``token`` names, or ``SessionError``."""
    if not SESSION.usable(token):
        raise SessionError("sign in to the dashboard first")
    record = SESSION.find(token)
    if record is None:
        raise SessionError("this dashboard session is not valid; open the dashboard again")
    if not SESSION.live(record, now):
        raise SessionError("this dashboard session has expired; open the dashboard again")
    return Session(int(record.user_id), int(record.expires_at))


def close_session(token: str) -> None:
    """Forget a session (sign out). Closing an unknown or already closed session is not an error."""
    SESSION.revoke_token(token)


def issue_login_code(user_id: int, *, now: float | None = None) -> str:
    """A single-use code the bot puts in a browser login link; valid for ``LOGIN_TTL`` seconds."""
    return LOGIN.issue(now=now, user_id=int(user_id)).token


def revoke_login_code(code: str) -> None:
    """Forget a login code that was never delivered (the bot could not reach the user's private chat)."""
    LOGIN.revoke_token(code)


def redeem_login_code(code: str | None, *, now: float | None = None) -> tuple[str, Session]:
    """Exchange a login code for a session, exactly once, before it expires."""
    if not LOGIN.usable(code):
        raise SessionError("this login link is not valid; ask the bot for a new one with /webapp")
    record = LOGIN.consume(code, now=now)
    if record is None:
        raise SessionError("this login link was already used or has expired; ask the bot for a new one with /webapp")
    return open_session(int(record.user_id), now=now)
