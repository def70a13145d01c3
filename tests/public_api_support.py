"""Calling the public API's Lambda the way API Gateway does, and making users and keys for it."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from tests.dashboard_support import FakeContext, proxy_event

ROOT = Path(__file__).resolve().parent.parent


def handler_module():
    name = "public_api_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "public_api" / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def call(method: str, path: str, *, key: str | None = None, json_body: Any = None, raw_body: str | None = None,
         headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Invoke the function; returns its proxy response with ``json`` added when the body is JSON."""
    all_headers = dict(headers or {})
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    body = raw_body
    if json_body is not None:
        all_headers["Content-Type"] = "application/json"
        body = json.dumps(json_body)
    response = handler_module().lambda_handler(proxy_event(method, path, headers=all_headers, body=body), FakeContext())
    headers_out = dict(response.get("headers") or {})
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers_out.setdefault(name, values[-1])
    response["headers"] = headers_out
    if headers_out.get("Content-Type", "").startswith("application/json") and response.get("body"):
        response["json"] = json.loads(response["body"])
    return response


def user_with_key(user_id: int, scopes: list[str] | None = None, days: int | None = None,
                  credits: int | None = None) -> str:
    from depu.apikeys import keys
    from depu.profiles import ensure_profile

    ensure_profile(user_id, first_name=f"User{user_id}", username=f"user{user_id}")
    if credits is not None:
        from depu import credits as ledger

        ledger.grant(user_id, credits, f"test-grant-{user_id}-{credits}", "test")
    key, _ = keys.create(user_id, "test", scopes, days)
    return key
