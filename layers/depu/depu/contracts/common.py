"""Shapes every API shares: the strict base model and the error body."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A request or answer body. Strict: JSON types are not coerced (``"5"`` is no integer, ``true`` no
    number), because a hostile or broken client must get a clear 400, not a guess. Unknown fields are
    ignored, so an older server accepts a newer client's extras."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ErrorReply(Contract):
    """Every refusal: ``error`` says what is wrong, in words."""

    error: str


def error_responses(*pairs: tuple[int, str]) -> dict[int, dict[str, Any]]:
    """The ``responses=`` of a route decorator: each refusal status with its description and ErrorReply."""
    return {status: {"description": description, "content": {"application/json": {"model": ErrorReply}}}
            for status, description in pairs}


def answers(success: str, *refusals: tuple[int, str], status: int = 200,
            extra: dict[int, dict[str, Any]] | None = None) -> dict[int, dict[str, Any]]:
    """A route's ``responses=``: its success (``status``, described, its schema taken from the route's return
    type), each refusal with ErrorReply, and ``extra`` ones as written (e.g. a 204 with no content)."""
    return {status: {"description": success}, **error_responses(*refusals), **(extra or {})}
