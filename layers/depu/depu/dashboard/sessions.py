"""Dashboard sessions and one-time login codes, stored hashed in TokensTable.

Why this shape:
- A session is a random bearer token (``secrets.token_urlsafe``) the page keeps in memory; only its SHA-256
  lives in TokensTable (``kind=dashboard_session``), so a table dump grants nothing. It lasts 15 minutes;
  the page opens a new one from its launch data or asks the user to reopen the dashboard.
- Outside Telegram there is no launch data, so the bot hands out a login code (``kind=dashboard_login``):
  valid for 5 minutes and single-use, enforced by a conditional update that stamps ``used_at`` only if it
  is not yet set, so two tabs racing with the same link get one session between them.
- DynamoDB's TTL deletes expired items lazily (up to days later), so every read checks ``expires_at`` itself.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError
from pynamodb.models import Model

from depu.config import get_settings

SESSION_KIND = "dashboard_session"
LOGIN_KIND = "dashboard_login"
SESSION_TTL = 15 * 60
LOGIN_TTL = 5 * 60


class SessionError(Exception):
    """A session or login code that does not (or no longer) grant access. The text is safe to show."""


class DashboardToken(Model):
    """A TokensTable item of the dashboard's kinds. Other features keep their own kinds in the same table."""

    class Meta:
        table_name = get_settings().tokens_table

    token_hash = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    user_id = NumberAttribute()
    created_at = NumberAttribute()
    expires_at = NumberAttribute()  # epoch seconds; also the table's TTL attribute
    used_at = NumberAttribute(null=True)


@dataclass(frozen=True)
class Session:
    user_id: int
    expires_at: int


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(kind: str, user_id: int, ttl: int, now: float | None) -> tuple[str, int]:
    issued = int(time.time() if now is None else now)
    expires_at = issued + ttl
    for _ in range(3):  # a collision of 256-bit random values will not happen; the condition proves it
        token = secrets.token_urlsafe(32)
        item = DashboardToken(
            hash_token(token), kind=kind, user_id=int(user_id), created_at=issued, expires_at=expires_at
        )
        try:
            item.save(condition=DashboardToken.token_hash.does_not_exist())
        except PutError as error:
            if not _is_condition_failure(error):
                raise
            continue
        return token, expires_at
    raise RuntimeError("could not store a fresh token")


def open_session(user_id: int, *, now: float | None = None) -> tuple[str, Session]:
    """A new session for ``user_id``: the bearer token (shown once, never stored) and its expiry."""
    token, expires_at = _issue(SESSION_KIND, user_id, SESSION_TTL, now)
    return token, Session(int(user_id), expires_at)


def session_for(token: str | None, *, now: float | None = None) -> Session:
    """The live session ``token`` names, or ``SessionError``."""
    if not token or len(token) > 256:
        raise SessionError("sign in to the dashboard first")
    try:
        item = DashboardToken.get(hash_token(token), consistent_read=True)
    except DoesNotExist:
        raise SessionError("this dashboard session is not valid; open the dashboard again") from None
    current = time.time() if now is None else now
    if item.kind != SESSION_KIND:
        raise SessionError("this dashboard session is not valid; open the dashboard again")
    if item.expires_at <= current:
        raise SessionError("this dashboard session has expired; open the dashboard again")
    return Session(int(item.user_id), int(item.expires_at))


def close_session(token: str) -> None:
    """Forget a session (sign out). Closing an unknown or already closed session is not an error."""
    if not token or len(token) > 256:
        return
    try:
        DashboardToken(hash_token(token)).delete(condition=DashboardToken.kind == SESSION_KIND)
    except DeleteError as error:
        if not _is_condition_failure(error):
            raise


def issue_login_code(user_id: int, *, now: float | None = None) -> str:
    """A single-use code the bot puts in a browser login link; valid for ``LOGIN_TTL`` seconds."""
    code, _ = _issue(LOGIN_KIND, user_id, LOGIN_TTL, now)
    return code


def revoke_login_code(code: str) -> None:
    """Forget a login code that was never delivered (the bot could not reach the user's private chat)."""
    try:
        DashboardToken(hash_token(code)).delete(condition=DashboardToken.kind == LOGIN_KIND)
    except DeleteError as error:
        if not _is_condition_failure(error):
            raise


def redeem_login_code(code: str | None, *, now: float | None = None) -> tuple[str, Session]:
    """Exchange a login code for a session, exactly once, before it expires."""
    if not code or len(code) > 256:
        raise SessionError("this login link is not valid; ask the bot for a new one with /webapp")
    current = int(time.time() if now is None else now)
    try:
        item = DashboardToken(hash_token(code))
        item.update(
            actions=[DashboardToken.used_at.set(current)],
            condition=(
                DashboardToken.token_hash.exists()
                & (DashboardToken.kind == LOGIN_KIND)
                & DashboardToken.used_at.does_not_exist()
                & (DashboardToken.expires_at > current)
            ),
        )
    except UpdateError as error:
        if _is_condition_failure(error):
            raise SessionError("this login link was already used or has expired; ask the bot for a new one with /webapp") from None
        raise
    return open_session(int(item.user_id), now=now)


def _is_condition_failure(error: PutError | UpdateError | DeleteError) -> bool:
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"
