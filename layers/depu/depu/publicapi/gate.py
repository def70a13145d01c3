"""Who may make a request, decided before any route runs: body size, the key, its scope, its throttle.

Deciding it here, from the method and path alone, means no route can forget a check, and an outsider's
request is refused before its body is parsed or validated. The area of a path is its first segment after
``/v1`` (``AREAS``); GET and HEAD read, every other method writes.
"""
from __future__ import annotations

import base64
import binascii

from depu import jsonbody
from depu.apikeys import keys, scopes, throttle

MAX_BODY_BYTES = 2 * 1024 * 1024  # a job's script (1 MiB) as base64 with its spec, and nothing bigger
PUBLIC_PATHS = frozenset({"/v1/openapi.json"})
AREAS = {
    "jobs": scopes.JOBS,
    "uploads": scopes.JOBS,  # a job's input files
    "forks": scopes.FORKS,
    "analytics": scopes.ANALYTICS,
    "exports": scopes.ANALYTICS,
    "profile": scopes.PROFILE,
    "credits": scopes.PROFILE,
}
READS = frozenset({"GET", "HEAD", "OPTIONS"})

# why a request was refused; the handler turns each into its HTTP status (functions/public_api/app.py)
NO_KEY, NOT_ALLOWED, TOO_LARGE, THROTTLED, UNREADABLE = "unauthorized", "forbidden", "payload_too_large", \
    "rate_limited", "invalid_request"


class Refused(Exception):
    """The request may not go on: ``reason`` is one of the names above, ``message`` says why in plain words."""

    def __init__(self, reason: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


def bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value and value.isascii() else None


def area_of(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0] != "v1":
        return None
    return AREAS.get(parts[1])


def admit(method: str, path: str, authorization: str | None, body_bytes: int) -> keys.Caller | None:
    """The caller, None for a public path; ``Refused`` when the request may not go on."""
    if body_bytes > MAX_BODY_BYTES:
        raise Refused(TOO_LARGE, f"The request body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB.")
    if path in PUBLIC_PATHS and method.upper() in READS:
        return None
    caller = keys.authenticate(bearer(authorization))
    if caller is None:
        raise Refused(NO_KEY, "Send a live API key: Authorization: Bearer dpk_... "
                              "(make one in the chat: /api_keys, also reached from /profile).")
    area = area_of(path)
    write = method.upper() not in READS
    if area is not None and not caller.may(area, write):
        wanted = f"the {area} scope" if area != scopes.PROFILE else "a key"
        raise Refused(NOT_ALLOWED, f"This key may not {'change' if write else 'read'} {area}: it needs "
                                         f"{wanted}{' without read-only' if write else ''}.")
    verdict = throttle.take(caller.record)
    if verdict.revoked:
        raise Refused(NO_KEY, "This API key was revoked.")
    if not verdict.allowed:
        raise Refused(THROTTLED, f"Too many requests with this key; retry in {verdict.retry_after_s} s.",
                      retry_after_s=verdict.retry_after_s)
    return caller


def readable_body(raw: str, is_base64: bool) -> None:
    """A body is UTF-8 JSON (or nothing): anything else is a clear 400 here, not a failure in the validator.
    Parsed with DePU's depth-limited reader, so a deeply nested body is refused before Python's own parser
    (which recurses) sees it."""
    if not raw:
        return
    try:
        text = base64.b64decode(raw, validate=True).decode("utf-8") if is_base64 else raw
        jsonbody.loads(text, max_bytes=MAX_BODY_BYTES)
    except (binascii.Error, UnicodeDecodeError, jsonbody.NotUnicode):
        raise Refused(UNREADABLE, "The body is not UTF-8 text.") from None
    except jsonbody.TooLarge:
        raise Refused(TOO_LARGE, f"The request body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB.") from None
    except ValueError:
        raise Refused(UNREADABLE, "The body is not JSON (or nests too deeply).") from None
