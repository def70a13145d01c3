"""The one way the API handlers answer JSON: a status, a body (a dict or a contract model) and headers.

It imports no Pydantic (a model is recognised by its ``model_dump_json``), so the Telegram webhook, whose
cold start has a budget (bench/cold_import.py), can answer through it too."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer. ``None`` is an empty body (204). A model is written in its JSON form, so what goes out
    is exactly what the published contract describes."""
    if body is None:
        text = ""
    elif hasattr(body, "model_dump_json"):  # a contract model (depu.contracts)
        text = body.model_dump_json()
    else:
        text = json.dumps(body)
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=text,
                    headers=dict(headers or {}))


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """``{"error": message, ...}``: the shape of every refusal (contracts.common.ErrorReply)."""
    return json_response(status, {"error": message, **extra}, headers)
