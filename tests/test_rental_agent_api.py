"""The agent API through its real handler against moto: register, auth, claim, report, complete, isolation."""
from __future__ import annotations

import boto3
import requests

from rental_helpers import (
    CPU_BENCHMARK,
    GPU_H100,
    USER_ID,
    AgentApi,
    enrol_provider,
    ensure_user,
    notices,
    register_agent,
    run_matcher,
    submit_job,
)


def _running_job(aws):
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    agent = register_agent(api, enrol_provider())
    job = submit_job()
    assert run_matcher()["batchItemFailures"] == []
    status, body = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])
    assert status == 200, body
    return api, agent, job, body["job"]


def test_register_with_a_bad_provider_token_is_refused(aws):
    api = AgentApi()
    status, body = api.call("/agent/register", {"provider_token": "nope", "name": "x", "gpus": [], "benchmark": {}})
    assert (status, body) == (401, {"error": "unauthorized"})


def test_register_gives_a_hashed_token_and_the_class(aws):
    api = AgentApi()
    body = register_agent(api, enrol_provider())
    assert body["gpu_class"] == "h100-80gb" and body["verified"] is True
    assert body["heartbeat_seconds"] == 10 and body["lease_seconds"] == 60
    stored = boto3.client("dynamodb").scan(TableName="depu-TokensTable")["Items"]
    dumped = str(stored)
    assert body["agent_token"] not in dumped  # only hashes are stored


def test_enrolment_token_is_reusable_for_several_machines(aws):
    api = AgentApi()
    token = enrol_provider()
    first = register_agent(api, token, name="a")
    second = register_agent(api, token, name="b")
    assert first["agent_id"] != second["agent_id"]


def test_fake_gpu_is_registered_unverified_and_gets_no_jobs(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    fake = register_agent(api, enrol_provider(), gpus=[GPU_H100], benchmark={**CPU_BENCHMARK})
    assert fake["verified"] is False and "ran on cpu" in fake["verdict"]
    submit_job()
    result = run_matcher()
    assert len(result["batchItemFailures"]) == 1  # nobody fits: stays queued for a later try
    status, _ = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, fake["agent_token"])
    assert status == 204


def test_wrong_token_is_401_and_sees_no_jobs(aws):
    api, agent, job, offer = _running_job(aws)
    for path, body in [
        ("/agent/claim", {"free_gpus": [0]}),
        ("/agent/heartbeat", {"running_jobs": [job.job_id]}),
        (f"/agent/jobs/{job.job_id}/complete", {"result": {}}),
        (f"/agent/jobs/{job.job_id}/logs", {"seq": 0, "lines": ["x"]}),
    ]:
        for token in (None, "depa_wrong", agent["agent_token"] + "x"):
            status, answer = api.call(path, body, token)
            assert (status, answer) == (401, {"error": "unauthorized"}), (path, token)
    from depu.jobs.models import Job

    assert Job.get(job.job_id).status == "running"  # nothing changed


def test_another_agents_job_is_404(aws):
    api, agent, job, offer = _running_job(aws)
    other = register_agent(api, enrol_provider(7002), name="other")
    for path, body in [
        (f"/agent/jobs/{job.job_id}/progress", {"progress": 0.5}),
        (f"/agent/jobs/{job.job_id}/logs", {"seq": 0, "lines": ["x"]}),
        (f"/agent/jobs/{job.job_id}/artifacts", {"name": "w.pt", "size": 10}),
        (f"/agent/jobs/{job.job_id}/complete", {"result": {}}),
        (f"/agent/jobs/{job.job_id}/fail", {"error": "x", "retryable": False}),
        ("/agent/jobs/jnotthere/complete", {"result": {}}),
    ]:
        status, answer = api.call(path, body, other["agent_token"])
        assert (status, answer) == (404, {"error": "not found"}), path
    status, answer = api.call("/agent/heartbeat", {"running_jobs": [job.job_id]}, other["agent_token"])
    assert answer["cancel"] == [job.job_id]  # "not yours: stop it", and the owner's lease is untouched
    from depu.jobs.models import Job

    assert Job.get(job.job_id).agent_id == agent["agent_id"]


def test_full_run_progress_logs_artifact_complete_and_charge_once(aws):
    api, agent, job, offer = _running_job(aws)
    token = agent["agent_token"]
    assert offer["job_id"] == job.job_id and offer["workload"] == "benchmark" and offer["gpu_index"] == 0
    assert offer["attempt"] == 1 and offer["time_limit_s"] == 300
    status, body = api.call("/agent/heartbeat", {
        "metrics": [{"gpu_index": 0, "utilization_pct": 97, "memory_used_mb": 2048, "memory_total_mb": 81559,
                     "temperature_c": 61, "power_w": 350}],
        "running_jobs": [job.job_id], "free_gpus": []}, token)
    assert status == 200 and body["cancel"] == []
    assert api.call(f"/agent/jobs/{job.job_id}/progress", {"progress": 0.5, "message": "half"}, token)[0] == 200
    assert api.call(f"/agent/jobs/{job.job_id}/logs", {"seq": 0, "lines": ["a", "b"]}, token) == (200, {"accepted": True})
    assert api.call(f"/agent/jobs/{job.job_id}/logs", {"seq": 0, "lines": ["a", "b"]}, token) == (200, {"accepted": False})
    assert api.call(f"/agent/jobs/{job.job_id}/logs", {"seq": 1, "lines": ["c"]}, token)[1] == {"accepted": True}
    status, upload = api.call(f"/agent/jobs/{job.job_id}/artifacts", {"name": "../weights.pt", "size": 5}, token)
    assert status == 200 and upload["key"] == f"jobs/{job.job_id}/artifacts/weights.pt"
    assert requests.put(upload["upload_url"], data=b"12345", timeout=10).status_code == 200
    result = {"fp32_tflops": 47.5}
    status, done = api.call(f"/agent/jobs/{job.job_id}/complete", {"result": result, "artifacts": [upload["key"]]}, token)
    assert status == 200 and done["state"] == "succeeded"
    charged = done["charged"]
    # the agent retries complete (it did not see our answer): same answer, charged once
    assert api.call(f"/agent/jobs/{job.job_id}/complete", {"result": result, "artifacts": [upload["key"]]}, token) == (200, done)
    # an illegal move afterwards is a 409 with the current state
    assert api.call(f"/agent/jobs/{job.job_id}/fail", {"error": "late"}, token) == (409, {"error": "conflict", "state": "succeeded"})

    from depu import credits
    from depu.jobs.models import Job

    stored = Job.get(job.job_id)
    assert stored.logs_tail == ["a", "b", "c"] and stored.settled and stored.charged == charged
    balance = credits.balance(USER_ID)
    assert balance.held == 0
    assert balance.credits == 1000 + 5000 - charged
    assert credits.balance(7001).earned == charged
    summary = [n for n in notices() if n.get("dedupe_key") == f"job-end:{job.job_id}"]
    assert len(summary) >= 1 and "fp32_tflops" in summary[0]["text"] and "weights.pt" in summary[0]["text"]
