"""Explicit multi-step flow state ("which question did we just ask this user?") and callback-data encoding.

A Lambda remembers nothing between updates, so a flow that asks for several inputs keeps its place on the
user's profile: ``flow`` (e.g. "rent"), ``step`` (e.g. "await_script"), a small JSON ``data`` dict and an
expiry, after which the flow is treated as abandoned. A ``version`` counter makes each step a conditional
write, so two updates racing on the same flow (a double-tapped button) cannot both advance it.

Callback data is ``<prefix>:<version>:<part>:<part>...`` and at most 64 bytes (Telegram's limit). The version
tag lets a handler recognise a button sent by an older release instead of misreading it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pynamodb.exceptions import UpdateError

from depu.profiles import ConversationState, Profile

DEFAULT_TTL_SECONDS = 30 * 60
CALLBACK_VERSION = "1"
CALLBACK_LIMIT_BYTES = 64


class ConversationError(ValueError):
    """A flow step that cannot be applied."""


class NoConversation(ConversationError):
    """No flow is active (never started, finished, expired, or a different flow is active)."""


class ConversationChanged(ConversationError):
    """Another update moved the flow on first (double tap); the caller should re-read and re-decide."""


@dataclass(frozen=True)
class Conversation:
    flow: str
    step: str
    data: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime = datetime.max.replace(tzinfo=timezone.utc)
    version: int = 0

    @property
    def expired(self) -> bool:
        return self.expires_at <= datetime.now(timezone.utc)


def _state(flow: str, step: str, data: dict[str, Any], ttl_seconds: int, version: int) -> ConversationState:
    if not flow or not step:
        raise ValueError("flow and step are required")
    if not isinstance(data, dict):
        raise TypeError("conversation data is a dict")
    return ConversationState(
        flow=flow, step=step, data=data, expires_at=int(time.time()) + int(ttl_seconds), version=version
    )


def _conversation(state: ConversationState) -> Conversation:
    return Conversation(
        flow=state.flow,
        step=state.step,
        data=dict(state.data or {}),
        expires_at=datetime.fromtimestamp(int(state.expires_at), timezone.utc),
        version=int(state.version or 0),
    )


def start(
    user_id: int, flow: str, step: str, data: dict[str, Any] | None = None, ttl_seconds: int = DEFAULT_TTL_SECONDS
) -> Conversation:
    """Begin ``flow`` at ``step``, replacing any flow in progress (the user chose something else)."""
    current = load(user_id, include_expired=True)
    version = current.version + 1 if current else 1
    state = _state(flow, step, dict(data or {}), ttl_seconds, version)
    try:
        Profile(user_id).update(actions=[Profile.conversation.set(state)], condition=Profile.user_id.exists())
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise NoConversation(f"user {user_id} has no profile; send /start first") from error
        raise
    return _conversation(state)


def load(user_id: int, *, include_expired: bool = False) -> Conversation | None:
    """The active flow, or None (none, or expired: an abandoned flow must not capture the next message)."""
    try:
        profile = Profile.get(user_id, consistent_read=True, attributes_to_get=["user_id", "conversation"])
    except Profile.DoesNotExist:
        return None
    if profile.conversation is None:
        return None
    conversation = _conversation(profile.conversation)
    if conversation.expired and not include_expired:
        return None
    return conversation


def advance(
    user_id: int,
    step: str,
    data: dict[str, Any] | None = None,
    *,
    flow: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    current: Conversation | None = None,
) -> Conversation:
    """Move the active flow to ``step``, merging ``data`` into what earlier steps stored and renewing the
    expiry. With ``flow`` given, refuses unless that flow is the active one. The write is conditioned on the
    version read, so of two racing updates exactly one advances; the other gets ``ConversationChanged``.
    ``current`` is the conversation the caller already loaded (the dispatcher reads it once per update);
    the write is then conditioned on that version, so no second read is needed."""
    if current is None or current.expired:
        current = load(user_id)
    if current is None or (flow is not None and current.flow != flow):
        raise NoConversation(f"no active {flow + ' ' if flow else ''}flow for user {user_id}")
    merged = {**current.data, **(data or {})}
    state = _state(current.flow, step, merged, ttl_seconds, current.version + 1)
    try:
        Profile(user_id).update(
            actions=[Profile.conversation.set(state)],
            condition=Profile.conversation.version == current.version,
        )
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise ConversationChanged(f"flow {current.flow} of user {user_id} changed meanwhile") from error
        raise
    return _conversation(state)


def clear(user_id: int, flow: str | None = None) -> None:
    """End the active flow (finished or cancelled). With ``flow`` given, only if that flow is still the active
    one, so finishing an old flow cannot wipe a newer one the user already started."""
    condition = Profile.user_id.exists()
    if flow is not None:
        condition = condition & (Profile.conversation.flow == flow)
    try:
        Profile(user_id).update(actions=[Profile.conversation.remove()], condition=condition)
    except UpdateError as error:
        if error.cause_response_code != "ConditionalCheckFailedException":
            raise


# --- callback data ---------------------------------------------------------------------------------------


class CallbackDataError(ValueError):
    """Callback data that is not ours or not this release's."""


class StaleCallback(CallbackDataError):
    """A button from an older release (different version tag); ask the user to open the menu again."""


def encode(prefix: str, *parts: object) -> str:
    """``prefix:1:part:part`` for an inline button; raises ValueError if it would exceed 64 bytes or a part
    contains ':' (parts are ids and small enums, never user text)."""
    if not prefix or ":" in prefix:
        raise ValueError(f"bad callback prefix {prefix!r}")
    texts = [str(part) for part in parts]
    for text in texts:
        if ":" in text:
            raise ValueError(f"callback part may not contain ':': {text!r}")
    data = ":".join([prefix, CALLBACK_VERSION, *texts])
    if len(data.encode()) > CALLBACK_LIMIT_BYTES:
        raise ValueError(f"callback data over {CALLBACK_LIMIT_BYTES} bytes: {data!r}")
    return data


def decode(data: str) -> tuple[str, list[str]]:
    """``(prefix, parts)`` from ``encode``'s output. Raises ``StaleCallback`` for another version's button
    and ``CallbackDataError`` for anything malformed."""
    if not data or len(data.encode()) > CALLBACK_LIMIT_BYTES:
        raise CallbackDataError("callback data missing or over 64 bytes")
    pieces = data.split(":")
    if len(pieces) < 2 or not pieces[0]:
        raise CallbackDataError(f"malformed callback data {data!r}")
    prefix, version, *parts = pieces
    if version != CALLBACK_VERSION:
        raise StaleCallback(f"callback {prefix!r} has version {version!r}, expected {CALLBACK_VERSION!r}")
    return prefix, parts
