"""Bot API parameters as they arrive: JSON, URL-encoded forms or multipart forms (file uploads)."""
from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

from local.telegram_standin.models import ApiError

Upload = tuple[str | None, bytes, str | None]  # file name, content, content type


def parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, Upload]]:
    """(parameters, uploaded files by field name)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return {}, {}
    if kind == "application/json":
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            raise ApiError(400, "Bad Request: parameters must be a JSON object")
        return parsed, {}
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)), {}
    if kind == "multipart/form-data":
        return _multipart(content_type, body)
    raise ApiError(400, f"Bad Request: unsupported Content-Type {kind}")


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, Upload]]:
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
    )
    params: dict[str, Any] = {}
    files: dict[str, Upload] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[str(name)] = (filename, payload, part.get_content_type())
        else:
            params[str(name)] = payload.decode(part.get_content_charset() or "utf-8")
    return params, files
