"""Shared pieces of the proof suites (test_abuse_*, test_fuzz_*, test_faults_*): whole-state snapshots that
show "nothing changed", and the real webhook handler driven with the real feature set.

A snapshot is every item of every DynamoDB table of template.yaml plus every S3 key, read from moto; two
snapshots compare equal only when no byte of stored state moved.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import boto3
import pytest

from conftest import TEST_WEBHOOK_SECRET
from telegram_harness import FakeLambdaContext, api_event, load_function, recorded_event

WEBHOOK_PATH = "/telegram/webhook"


def table_names() -> list[str]:
    return sorted(boto3.client("dynamodb").list_tables()["TableNames"])


def scan(table: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb")
    items, start = [], None
    while True:
        page = client.scan(TableName=table, ConsistentRead=True, **({"ExclusiveStartKey": start} if start else {}))
        items.extend(page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def s3_keys() -> list[str]:
    from depu.config import get_settings

    client = boto3.client("s3")
    keys, token = [], None
    while True:
        page = client.list_objects_v2(Bucket=get_settings().artifacts_bucket, **({"ContinuationToken": token} if token else {}))
        keys.extend(entry["Key"] for entry in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return sorted(keys)
        token = page["NextContinuationToken"]


def snapshot(exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Every table's items (except tables whose name contains one of ``exclude``) and every S3 key."""
    skipped = tuple(exclude)
    state: dict[str, Any] = {
        table: scan(table) for table in table_names() if not any(part in table for part in skipped)
    }
    state["s3"] = s3_keys()
    return state


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed between two snapshots: {table: {"added": [...], "removed": [...]}} (empty when equal)."""
    changed: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        old = {json.dumps(item, sort_keys=True) for item in before.get(name, [])}
        new = {json.dumps(item, sort_keys=True) for item in after.get(name, [])}
        if old != new:
            changed[name] = {"added": sorted(new - old), "removed": sorted(old - new)}
    return changed


def webhook_event(body: str | None, secret: str | None = TEST_WEBHOOK_SECRET,
                  headers: dict[str, str] | None = None) -> dict[str, Any]:
    all_headers = dict(headers or {})
    if secret is not None:
        all_headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return api_event(WEBHOOK_PATH, body, all_headers)


def invoke(module: Any, event: dict[str, Any]) -> tuple[int, Any]:
    """Call a function's real ``lambda_handler``; returns (status, parsed JSON body or raw text)."""
    response = module.lambda_handler(event, FakeLambdaContext())
    text = response.get("body") or ""
    try:
        return response["statusCode"], json.loads(text) if text else None
    except ValueError:
        return response["statusCode"], text


def message(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    """A private-chat text message update from ``user_id``; a leading /command gets its entity."""
    update = recorded_event("telegram_message")
    body = update["message"]
    update["update_id"] = update_id
    body.update(message_id=update_id % 100000 + 1, text=text)
    body["chat"]["id"] = body["from"]["id"] = user_id
    body["from"]["first_name"] = f"u{user_id}"
    if text.startswith("/"):
        body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return update


def button(update_id: int, user_id: int, data: str) -> dict[str, Any]:
    """A callback_query update: ``user_id`` pressed a button carrying ``data``."""
    update = recorded_event("telegram_callback_query")
    query = update["callback_query"]
    update["update_id"] = update_id
    query.update(id=f"cbq-{update_id}", data=data)
    query["from"]["id"] = query["message"]["chat"]["id"] = user_id
    query["from"]["first_name"] = f"u{user_id}"
    return update


class RecordingHost:
    """A stand-in fork host on 127.0.0.1 for proxy tests: answers JSON-RPC like a chain would for the few
    methods it knows (chain id 1, block 0x10, ``True`` for writes) and records every method it was sent, so
    a test can prove what the proxy did or did not forward."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.methods: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                host.methods.append(str(request.get("method")))
                payload = json.dumps({"jsonrpc": "2.0", "id": request.get("id"),
                                      "result": host.answer(request.get("method"))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def answer(method: Any) -> Any:
        if method == "eth_chainId":
            return "0x1"
        if method == "eth_blockNumber":
            return "0x10"
        if method == "evm_snapshot":
            return "0x1"
        if method == "eth_getTransactionReceipt":
            return {"status": "0x1", "blockNumber": "0x11", "gasUsed": "0x5208", "logs": []}
        if method in ("eth_sendTransaction", "eth_sendRawTransaction"):
            return "0x" + "ab" * 32
        return True

    def start(self) -> "RecordingHost":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- fixtures (import them into a test module)
@pytest.fixture
def webhook(aws, telegram, monkeypatch):
    """The real webhook function with every bot feature, answering through ``telegram``."""
    from depu.bot import dispatch as dispatch_module
    from depu.config import get_settings
    from depu.telegram.client import bot_api

    monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
    monkeypatch.setattr(dispatch_module, "_loaded", False)
    get_settings.cache_clear()
    bot_api.cache_clear()
    yield load_function("telegram_webhook")
    bot_api.cache_clear()
    get_settings.cache_clear()
