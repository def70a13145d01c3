"""Helpers for GPU rental tests (and the agent's end-to-end test): enrol a provider, register an agent, call
the agent API's real handler, submit a job as a user, and run the matcher and lease reaper the way Lambda
would (SQS messages received from moto, processed, deleted unless reported as failures)."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import boto3

from local.runtime import sqs_event
from local.template import LocalTemplate
from telegram_harness import FakeLambdaContext, api_event, load_function

PROVIDER_ID = 7001
USER_ID = 8001

GPU_H100 = {"index": 0, "uuid": "GPU-h100-0", "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559,
            "driver": "550.54", "cuda_capability": "9.0"}
H100_BENCHMARK = {"device": "NVIDIA H100 80GB HBM3", "fp32_tflops": 48.0, "bf16_tflops": 600.0, "mem_bandwidth_gbs": 2900.0,
                  "verified": True}
CPU_BENCHMARK = {"device": "cpu (8 threads)", "fp32_tflops": 0.4, "bf16_tflops": 0.1, "mem_bandwidth_gbs": 20.0, "verified": True}


@lru_cache(maxsize=None)
def function(name: str):
    """functions/<name>/app.py, imported once per test process (handlers read settings per call)."""
    return load_function(name)


class AgentApi:
    """The real AgentApiFunction handler, called with API Gateway proxy events."""

    def __init__(self) -> None:
        self.module = function("agent_api")

    def call(self, path: str, body: Any = None, token: str | None = None, method: str = "POST") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        raw = body if isinstance(body, str) or body is None else json.dumps(body)
        response = self.module.lambda_handler(api_event(path, raw, headers, method), FakeLambdaContext())
        text = response.get("body") or ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return response["statusCode"], parsed


def ensure_user(user_id: int = USER_ID, credits: int | None = None) -> None:
    """A profile with the starter credits (plus ``credits`` more if given)."""
    from depu import credits as ledger
    from depu.profiles import ensure_profile

    ensure_profile(user_id, first_name=f"user{user_id}")
    if credits:
        ledger.grant(user_id, credits, f"test-topup-{user_id}-{credits}", "test top-up")


def enrol_provider(provider_id: int = PROVIDER_ID) -> str:
    """A provider enrolment token, as /provider would issue."""
    from depu.agents.tokens import issue_enrolment_token

    ensure_user(provider_id)
    return issue_enrolment_token(provider_id)


def register_agent(
    api: AgentApi,
    provider_token: str,
    *,
    name: str = "rig",
    gpus: list[dict[str, Any]] | None = None,
    benchmark: dict[str, Any] | None = None,
    capabilities: list[str] | None = None,
    vouch: bool = True,
) -> dict[str, Any]:
    """Register through the real API; returns its 201 body (agent_id, agent_token, ...). Rental agents
    declare the "gpu" capability, CPU-only ones included.

    A registered agent is unverified until it passes a hardware challenge, which no H100 here can. With
    ``vouch`` (the default) an agent whose own report passed the pre-check is then stored as if it had passed
    one, so tests of the rental flow get a working agent; tests/test_abuse_provider_verification.py runs the
    real challenges."""
    capabilities = ["gpu"] if capabilities is None else capabilities
    status, body = api.call(
        "/agent/register",
        {
            "provider_token": provider_token,
            "name": name,
            "gpus": [GPU_H100] if gpus is None else gpus,
            "capabilities": capabilities,
            "benchmark": H100_BENCHMARK if benchmark is None else benchmark,
            "version": "test",
        },
    )
    assert status == 201, body
    if vouch and body.get("challenge_due"):
        vouch_for(body["agent_id"])
        body = {**body, "verified": True, "verdict": "passed (test fixture)"}
    return body


def vouch_for(agent_id: str) -> None:
    """Store ``agent_id`` as having passed its hardware challenge (a fixture; see register_agent)."""
    import time

    from depu.agents.registry import Agent

    Agent(agent_id).update(actions=[
        Agent.verified.set(True), Agent.verdict.set("passed (test fixture)"), Agent.challenges_passed.add(1),
        Agent.challenge_due_at.set(int(time.time()) + 6 * 3600),
    ])


def submit_job(
    user_id: int = USER_ID,
    *,
    gpu_class: str = "h100-80gb",
    workload: str = "benchmark",
    params: dict[str, Any] | None = None,
    time_limit_s: int = 300,
    script: bytes | None = None,
):
    """Submit as the user would through /rent_gpu (holds credits, saves, enqueues); returns the Job."""
    from depu.jobs import service

    return service.submit(
        user_id, user_id, gpu_class=gpu_class, workload=workload, params=params or {}, time_limit_s=time_limit_s,
        script=script,
    )


def job_queue_url() -> str:
    from depu.config import get_settings

    return get_settings().job_queue_url


def run_matcher(max_messages: int = 10) -> dict[str, Any]:
    """Receive visible JobQueue messages and run the real matcher handler on them, deleting the ones it did
    not report as failures (what Lambda's SQS event source does)."""
    sqs = boto3.client("sqs")
    received = sqs.receive_message(
        QueueUrl=job_queue_url(), MaxNumberOfMessages=max_messages, AttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages", [])
    if not received:
        return {"batchItemFailures": [], "received": 0}
    event = sqs_event(received, LocalTemplate().arn("JobQueue"))  # what the event source mapping passes
    matcher = function("matcher")
    result = matcher.lambda_handler(event, FakeLambdaContext())
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    for message in received:
        if message["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=job_queue_url(), ReceiptHandle=message["ReceiptHandle"])
    return {**result, "received": len(received)}


def run_reaper(now: int | None = None) -> dict[str, list[str]]:
    """The reaper's sweep at ``now`` (defaults to the real clock); the handler itself for the real clock."""
    if now is None:
        return function("lease_reaper").lambda_handler({}, FakeLambdaContext())
    from dataclasses import asdict

    from depu.jobs import reaper

    return asdict(reaper.sweep(now))


def notices() -> list[dict[str, Any]]:
    """Every message waiting on the notify queue (removed as read)."""
    from depu.config import get_settings

    sqs = boto3.client("sqs")
    found = []
    while True:
        batch = sqs.receive_message(QueueUrl=get_settings().notify_queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return found
        for message in batch:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=get_settings().notify_queue_url, ReceiptHandle=message["ReceiptHandle"])
