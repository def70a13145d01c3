"""Shared pieces of the shadow-fork tests: anvil processes, an HTTP front for the template's real handlers,
fork-host agents registered through the agents feature, and readers for the notify queue and executions."""
from __future__ import annotations

import json
import os
import socket
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
import requests

from deadlines import scaled, wait_for  # wait_for: the fork tests' wait, shared with every e2e test
from local.moto_server import free_port
from telegram_harness import recorded_event

ROOT = Path(__file__).resolve().parent.parent
ANVIL = str(ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil")


class Anvil:
    """A plain anvil on 127.0.0.1 (a stand-in mainnet, or a fork host's process in unit tests)."""

    def __init__(self, *args: str, block_time: float | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [ANVIL, "--host", "127.0.0.1", "--port", str(self.port), "--quiet", *args]
        if block_time:
            command += ["--block-time", str(block_time)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.rpc("eth_chainId")
                return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError("anvil did not start")

    def rpc(self, method: str, *params: Any) -> Any:
        answer = requests.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=10).json()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


class ApiFront:
    """127.0.0.1 HTTP server that routes requests to template.yaml's functions with the local runtime's
    routing and API Gateway events (``LocalRuntime.handle_http``), without its queue pollers and schedules:
    the tests read the notify queue themselves."""

    def __init__(self, endpoint: str):
        from local.runtime import LocalRuntime
        from local.template import LocalTemplate

        runtime = LocalRuntime(LocalTemplate(), endpoint)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle + delayed ACK stall each answer ~40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, payload = runtime.handle_http("POST", self.path, list(self.headers.items()), body, "127.0.0.1")
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def register_fork_host(name: str, provider_id: int = 900, approve: bool = True) -> tuple[str, str]:
    """A fork-host agent registered through the agents feature and (unless ``approve`` is False) approved by
    the operator; returns (agent_id, agent_token)."""
    from depu.agents import registry, tokens
    from depu.forks import hosts

    enrolment = tokens.issue_enrolment_token(provider_id)
    registration = registry.register(
        enrolment, name=name, gpus=[], capabilities=["fork_host"], benchmark={}, version="test",
        fork_rpc_base_url="http://127.0.0.1",
    )
    assert registration is not None
    if approve:
        hosts.approve(registration.agent_id)
    return registration.agent_id, registration.agent_token


def approved_host_item(agent_id: str, provider_id: int = 900) -> None:
    """An approved, live fork host under a fixed id, for tests that play the host's part by hand."""
    import time as _time

    from depu.agents.registry import Agent
    from depu.forks import hosts

    now = int(_time.time())
    Agent(agent_id, provider_id=provider_id, gpu_class="cpu", last_seen_at=now, registered_at=now, name=agent_id,
          gpu_count=1, capabilities=["fork_host"], fork_rpc_base_url="http://127.0.0.1").save()
    hosts.approve(agent_id)


def mined_anvil(blocks: int = 300) -> "Anvil":
    """A stand-in mainnet with some history: an honest host's fork at block N carries this chain's block N."""
    chain = Anvil()
    chain.rpc("anvil_mine", hex(blocks))
    return chain


def notices(timeout: float = 0.0, fork_id: str | None = None,
            where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """Drain the notify queue (the notices the back end asked to deliver); with ``fork_id``, only that fork's
    (an execution of an earlier test, still running in moto after its reset, may post about its own fork), and
    with ``where``, only the notices it accepts."""
    from depu.config import get_settings

    sqs = boto3.client("sqs")
    found, deadline = [], time.monotonic() + scaled(timeout)
    while True:
        answer = sqs.receive_message(QueueUrl=get_settings().notify_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        for message in answer.get("Messages", []):
            notice = json.loads(message["Body"])
            if (fork_id is None or f"<b>{fork_id}</b>" in notice.get("text", "")) and (where is None or where(notice)):
                found.append(notice)
            sqs.delete_message(QueueUrl=get_settings().notify_queue_url, ReceiptHandle=message["ReceiptHandle"])
        if answer.get("Messages"):
            continue
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def execution_status(arn: str) -> str:
    return boto3.client("stepfunctions").describe_execution(executionArn=arn)["status"]


def wait_execution(arn: str, timeout: float = 30.0) -> str:
    return wait_for(lambda: (s := execution_status(arn)) != "RUNNING" and s, timeout, f"execution {arn}")


def rpc_event(token: str, body: str | bytes) -> dict[str, Any]:
    """An API Gateway proxy event for POST /rpc/{token} (the recorded shape, tests/events/)."""
    event = recorded_event("api_gateway_proxy")
    event.update(resource="/rpc/{token}", path=f"/rpc/{token}", multiValueHeaders={}, pathParameters={"token": token},
                 body=body.decode() if isinstance(body, bytes) else body)
    event["requestContext"] = {"resourcePath": "/rpc/{token}", "httpMethod": "POST", "stage": "local",
                               "requestId": "test", "identity": {"sourceIp": "127.0.0.1"}}
    return event


@pytest.fixture
def host():
    """A bare anvil: the fork host's chain, for tests that drive the proxy against it directly."""
    anvil = Anvil()
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture
def front(aws, monkeypatch):
    """The fork RPC proxy served over HTTP on moto, with no fork cache (each test changes forks under it)."""
    from depu.forks import proxy

    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    api = ApiFront(aws.endpoint)
    try:
        yield api
    finally:
        api.stop()
