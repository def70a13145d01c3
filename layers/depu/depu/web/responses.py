"""The one way the API handlers answer JSON: a status, a body (a dict or a contract model) and headers."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import BaseModel


def json_response(status: int, body: BaseModel | Mapping[str, Any] | None,
                  headers: Mapping[str, str] | None = None, *, exclude_none: bool = False) -> Response:
    """A JSON answer. ``None`` is an empty body (204). A model is written in its JSON form, so what goes out
    is exactly what the published contract describes (``exclude_none``: absent fields are left out, for
    answers whose keys say which case they are)."""
    if body is None:
        text = ""
    elif isinstance(body, BaseModel):
        text = body.model_dump_json(exclude_none=exclude_none)
    else:
        text = json.dumps(body)
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=text,
                    headers=dict(headers or {}))


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """``{"error": message, ...}``: the shape of every refusal (contracts.common.ErrorReply)."""
    return json_response(status, {"error": message, **extra}, headers)
