"""Request bodies for Powertools' validation: size-limited per route, valid Unicode, nesting-limited JSON.

The resolver's ``json_body_deserializer`` is the one place a body is parsed; Powertools then validates the
parsed value against the route's contract model. Each route has its own byte limit (``limit``: asked at
parse time, for the request being served), checked before anything is decoded (``depu.jsonbody``). Refusals raise ``jsonbody``'s errors, which the handlers map to 413 and 400.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from depu import jsonbody


def limited_json(limit: Callable[[], int], before: Callable[[], None] | None = None) -> Callable[[str], Any]:
    """A deserializer that parses with ``jsonbody.loads`` under the byte limit of the request being served.
    ``before`` runs first and may refuse by raising: a route that authenticates checks its bearer token
    there, so an outsider's body is never parsed, whatever its size (Powertools validates the body before
    the route's own code runs)."""

    def loads(text: str) -> Any:
        if before is not None:
            before()
        return jsonbody.loads(text, max_bytes=limit())

    return loads


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One readable line from Pydantic's errors: ``"free_gpus.0: Input should be a valid integer; ..."``."""
    parts = []
    for error in errors[:5]:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        message = str(error.get("msg") or "invalid")
        if error.get("type") == "json_invalid":
            location, message = [], "body is not JSON"
        elif error.get("type") in ("model_attributes_type", "dict_type", "model_type") and not location:
            message = "body must be a JSON object"
        parts.append(f"{'.'.join(location)}: {message}" if location else message)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more if parts else "the body does not match the API's contract"
