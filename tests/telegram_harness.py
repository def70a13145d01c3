"""Helpers shared by the function tests: load a function's app.py, Lambda's context, recorded events, and
the Telegram stand-in as the tests' Bot API.

Handlers load and see their context exactly as under the local runtime (``local.runtime.loader``,
``local.runtime.LambdaContext``): one invoker for both. Events start from the recorded shapes in
``tests/events/`` and get what the test is about filled in.
"""
from __future__ import annotations

import copy
import json
import uuid
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from local.runtime import LambdaContext
from local.runtime.loader import add_layers, load_module
from local.telegram_standin import TelegramStandIn
from local.template import Function, LocalTemplate

ROOT = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).resolve().parent / "events"


@lru_cache(maxsize=None)
def _function_specs() -> dict[str, Function]:
    return {spec.code_dir.name: spec for spec in LocalTemplate().functions().values()}


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py afresh under a unique module name (every function's file is app.py)."""
    add_layers()
    return load_module(_function_specs()[name], f"depu_function_{name}")


class FakeLambdaContext(LambdaContext):
    """Lambda's context for a handler a test calls directly (a subclass may set another ``function_name``)."""

    function_name = "depu-TelegramWebhookFunction"

    def __init__(self, memory_mb: int = 512, timeout_s: float = 25.0) -> None:
        super().__init__(type(self).function_name, memory_mb, timeout_s)
        self.log_group_name = "/aws/lambda/depu"
        self.log_stream_name = "test"


def recorded_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/events/<name>.json``."""
    return copy.deepcopy(_recorded(name))


@lru_cache(maxsize=None)
def _recorded(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def api_event(path: str, body: str | None, headers: dict[str, str] | None = None, method: str = "POST") -> dict[str, Any]:
    """An API Gateway proxy event for ``method path`` with ``body`` (the recorded shape, filled in)."""
    event = recorded_event("api_gateway_proxy")
    headers = {"Content-Type": "application/json", **(headers or {})}
    event.update(resource=path, path=path, httpMethod=method, headers=headers, body=body,
                 multiValueHeaders={key: [value] for key, value in headers.items()})
    event["requestContext"].update(requestId=str(uuid.uuid4()), resourcePath=path, httpMethod=method,
                                   path=f"/dev{path}")
    return event


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    """An SQS event source mapping batch with one record per body."""
    records = []
    for index, body in enumerate(bodies):
        record = recorded_event("sqs_record")
        record.update(messageId=str(uuid.uuid4()), receiptHandle=f"handle-{index}", body=body)
        records.append(record)
    return {"Records": records}


def update_json(update: dict[str, Any]) -> str:
    return json.dumps(update)


def bot_api_double(token: str) -> TelegramStandIn:
    """The Telegram stand-in on a free port, started, as the Bot API for a test that calls handlers itself.

    Such tests build updates and hand them to the webhook directly, so the stand-in never delivered the
    callback queries the bot answers: it accepts answers to those."""
    return TelegramStandIn(token, port=0, accept_foreign_callbacks=True).start()
