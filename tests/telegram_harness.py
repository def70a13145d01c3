"""Helpers shared by the Telegram function tests: load a function's app.py, build Lambda events/context."""
from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py under a unique module name (every function's file is app.py)."""
    module_name = f"depu_function_{name}"
    sys.modules.pop(module_name, None)
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class FakeLambdaContext:
    function_name = "depu-TelegramWebhookFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:depu-TelegramWebhookFunction"
    log_group_name = "/aws/lambda/depu"
    log_stream_name = "test"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 25_000


def api_event(path: str, body: str | None, headers: dict[str, str] | None = None, method: str = "POST") -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/dev{path}",
            "stage": "dev",
            "identity": {"sourceIp": "91.108.6.1"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"handle-{index}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764000000000"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:depu-NotifyQueue",
                "awsRegion": "us-east-1",
            }
            for index, body in enumerate(bodies)
        ]
    }


def update_json(update: dict[str, Any]) -> str:
    return json.dumps(update)
