"""Helpers shared by the dashboard tests: invoke the real dashboard Lambda with API Gateway proxy events,
sign launch data the way Telegram does, and seed users and jobs through their real models."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from telegram_harness import FakeLambdaContext, load_function

ROOT = Path(__file__).resolve().parent.parent
_module = None


class FakeContext(FakeLambdaContext):
    """Lambda's context for the dashboard function (the runtime's own context class)."""

    function_name = "depu-DashboardApiFunction"

    def __init__(self) -> None:
        super().__init__(timeout_s=30.0)
        self.log_group_name = "/aws/lambda/depu-DashboardApiFunction"


def handler_module():
    """The dashboard function's app.py, loaded once by the runtime's loader (``telegram_harness``)."""
    global _module
    if _module is None:
        _module = load_function("dashboard_api")
    return _module


def proxy_event(method: str, raw_path: str, *, headers: dict[str, str] | None = None, body: str | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event (payload 1.0) for the ``/dashboard/{proxy+}`` resource."""
    split = urlsplit(raw_path)
    query = dict(parse_qsl(split.query, keep_blank_values=True)) or None
    headers = dict(headers or {})
    return {
        "resource": "/dashboard/{proxy+}",
        "path": split.path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {key: [value] for key, value in headers.items()} or None,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {key: [value] for key, value in (query or {}).items()} or None,
        "pathParameters": {"proxy": split.path.removeprefix("/dashboard/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "test",
            "resourcePath": "/dashboard/{proxy+}",
            "httpMethod": method,
            "requestId": str(uuid.uuid4()),
            "path": f"/local{split.path}",
            "stage": "local",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "pytest"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def invoke(method: str, raw_path: str, *, token: str | None = None, json_body: Any = None,
           headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Call the dashboard Lambda; returns its proxy response with ``json`` added when the body is JSON."""
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    body = None
    if json_body is not None:
        all_headers["Content-Type"] = "application/json"
        body = json_body if isinstance(json_body, str) else json.dumps(json_body)
    response = handler_module().lambda_handler(proxy_event(method, raw_path, headers=all_headers, body=body), FakeContext())
    headers_out = dict(response.get("headers") or {})
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers_out.setdefault(name, values[-1])
    response["headers"] = headers_out
    content_type = headers_out.get("Content-Type", "")
    if content_type.startswith("application/json") and response.get("body"):
        response["json"] = json.loads(response["body"])
    return response


def telegram_user(user_id: int, first_name: str = "Ada") -> dict[str, Any]:
    return {"id": user_id, "first_name": first_name, "username": f"user{user_id}", "language_code": "en"}


def seed_profile(user_id: int, first_name: str = "Ada") -> None:
    from depu.profiles import ensure_profile

    ensure_profile(user_id, first_name=first_name, username=f"user{user_id}")


def seed_running_job(user_id: int, job_id: str, metrics: dict[str, Any] | None = None) -> Any:
    """A running job saved through the jobs model, with the latest GPU metrics an agent heartbeat writes."""
    from depu.jobs.models import Job

    now = int(time.time())
    job = Job(
        job_id,
        user_id=user_id,
        chat_id=user_id,
        created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        status="running",
        lease_expires_at=now + 120,
        agent_id="agent-test",
        gpu_class="A100-80GB",
        workload="matmul",
        params={},
        time_limit_s=600,
        price_per_hour=1000,
        max_cost=200,
        hold_id=f"job-{job_id}",
        gpu_index=0,
        started_at=now - 30,
        progress=0.4,
        metrics=metrics,
    )
    job.save()
    return job


def set_job_metrics(job_id: str, metrics: dict[str, Any]) -> None:
    """What an agent heartbeat does to a running job: replace its latest GPU metrics."""
    from depu.jobs.models import Job

    Job(job_id).update(actions=[Job.metrics.set(metrics)])


def gpu_metrics(util: float, temp: float = 60, power: float = 250, used_mb: float = 40960, total_mb: float = 81920) -> dict[str, Any]:
    return {
        "gpu_index": 0,
        "utilization_pct": util,
        "memory_used_mb": used_mb,
        "memory_total_mb": total_mb,
        "temperature_c": temp,
        "power_w": power,
    }


# ------------------------------------------------------------------------------------------- chain, forks
def seed_chain(head: int, blocks: int = 12, *, now: int | None = None) -> None:
    """Indexed blocks and the indexer's checkpoint, written with the indexer's own header and checkpoint code."""
    from depu.chain import indexer, store

    now = int(time.time()) if now is None else now
    for offset in range(blocks):
        number = head - blocks + 1 + offset
        raw = {"number": hex(number), "hash": f"0x{number:064x}", "parentHash": f"0x{number - 1:064x}",
               "timestamp": hex(now - 12 * (head - number)), "gasUsed": hex(1_000_000 * (1 + offset % 5)),
               "gasLimit": hex(30_000_000), "baseFeePerGas": hex(10**9),
               "transactions": [{"gasPrice": hex(2 * 10**9)} for _ in range(3 + offset)]}
        header = indexer.block_header(raw, [])
        store.table().put_item(Item={"pk": store.BLOCKS, "sk": store.block_key(number), **header, "status": "done"})
    indexer.save_checkpoint(indexer.Checkpoint(head, f"0x{head:064x}"), None)


def seed_fork(user_id: int, fork_id: str, base_block: int, status: str = "active") -> None:
    from depu.forks import chainids
    from depu.forks.models import Fork

    created = datetime.now(timezone.utc).isoformat()
    Fork(fork_id, user_id=user_id, chat_id=user_id, created_at=created, status=status, base_block=base_block,
         expires_at=int(time.time()) + 3600, last_synced_at=created, chain_id=chainids.for_fork(fork_id)).save()


def seed_watch_with_flows(user_id: int, address: str, *, received_wei: int, sent_wei: int, block: int,
                          now: int | None = None) -> None:
    """A /watch on ``address`` plus one block's native transfers into and out of it, aggregated by the
    analytics code the indexer runs."""
    from decimal import Decimal

    from depu.analytics import aggregates, watches

    assert watches.add(user_id, user_id, address, Decimal(0))
    now = int(time.time()) if now is None else now
    other = "0x" + "ab" * 20
    rows = [
        {"shape": "native", "asset": "eth", "sender": other, "recipient": address, "amount": str(received_wei)},
        {"shape": "native", "asset": "eth", "sender": address, "recipient": other, "amount": str(sent_wei)},
    ]
    aggregates.apply_block(block, aggregates.block_deltas(rows, now))
