"""One JSON error shape for every refusal: ``{"error": {"code", "message", "request_id", "details"}}``.

The statuses are the handler's (functions/public_api/app.py); this module only shapes the body.

Domain messages are written for the chat (HTML with <b> and <code>); an API client gets them as plain text.
"""
from __future__ import annotations

import html
import re
from typing import Any

_TAG = re.compile(r"<[^>]+>")


class ApiError(Exception):
    """A refusal with its HTTP status and machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def plain(message: str) -> str:
    """A chat message (HTML) as plain text."""
    return html.unescape(_TAG.sub("", message)).strip()


def body(error: ApiError, request_id: str | None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": error.code, "message": error.message, "request_id": request_id}
    if error.details is not None:
        detail["details"] = error.details
    return {"error": detail}
