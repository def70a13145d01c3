"""Shapes every API shares: the strict base model and the error body."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, GetPydanticSchema
from pydantic_core import core_schema


class Contract(BaseModel):
    """A request or answer body. Strict: JSON types are not coerced (``"5"`` is no integer, ``true`` no
    number), because a hostile or broken client must get a clear 400, not a guess. Unknown fields are
    ignored, so an older server accepts a newer client's extras."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


def _whole(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer, so the contract does too (a client's JSON encoder may write it
    so); 3.5, true and "3" stay refused by the strict check after this."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def whole(**bounds: int) -> Any:
    """An integer field of a request body: what JSON Schema calls an integer (3 or 3.0), within ``bounds``
    (ge, gt, le, lt). The bounds sit in the integer's own schema, so the document shows them as minimum and
    maximum (a Field bound next to a validator would be left out of it)."""
    inner = core_schema.int_schema(strict=True, **bounds)
    return Annotated[int, GetPydanticSchema(lambda _type, _handler: core_schema.no_info_before_validator_function(_whole, inner))]


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
