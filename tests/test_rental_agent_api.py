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
    body = register_agent(api, enrol_provider(), vouch=False)
    # its own benchmark passes the pre-check, but only a hardware challenge verifies it
    assert body["gpu_class"] == "h100-80gb" and body["verified"] is False and body["challenge_due"] is True
    assert body["heartbeat_seconds"] == 10 and body["lease_seconds"] == 60
    stored = boto3.client("dynamodb").scan(TableName="depu-TokensTable")["Items"]
    dumped = str(stored)
    assert body["agent_token"] not in dumped  # only hashes are stored


def test_enrolment_token_enrols_one_machine(aws):
    """Single use (tests/test_abuse_provider_tokens.py has the race): a second machine needs a new token."""
    api = AgentApi()
    token = enrol_provider()
    first = register_agent(api, token, name="a")
    status, answer = api.call("/agent/register", {"provider_token": token, "name": "b", "gpus": [], "benchmark": {}})
    assert (status, answer) == (401, {"error": "unauthorized"})
    second = register_agent(api, enrol_provider(), name="b")
    assert first["agent_id"] != second["agent_id"]


def test_fake_gpu_is_registered_unverified_and_gets_no_jobs(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    fake = register_agent(api, enrol_provider(), gpus=[GPU_H100], benchmark={**CPU_BENCHMARK})
    assert fake["verified"] is False and "ran on cpu" in fake["verdict"] and fake["challenge_due"] is False
    submit_job()
    result = run_matcher()
    assert len(result["batchItemFailures"]) == 1  # nobody fits: stays queued for a later try
    status, _ = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, fake["agent_token"])
    assert status == 204


def test_fork_only_hosts_get_no_rental_jobs(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    host = register_agent(api, enrol_provider(), gpus=[], benchmark=CPU_BENCHMARK, capabilities=["fork_host"])
    assert host["verified"] is True and host["gpu_class"] == "cpu"
    job = submit_job(gpu_class="cpu")
    assert len(run_matcher()["batchItemFailures"]) == 1
    assert api.call("/agent/claim", {"free_gpus": [0]}, host["agent_token"])[0] == 204
    renter = register_agent(api, enrol_provider(7002), gpus=[], benchmark=CPU_BENCHMARK)
    from depu.agents import matcher
    from depu.jobs.models import Job

    assert matcher.match(Job.get(job.job_id)).agent_id == renter["agent_id"]  # SQS would redeliver it in 5 s


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
    from depu.jobs import metering
    from depu.jobs.models import Job

    stored = Job.get(job.job_id)
    assert stored.logs_tail == ["a", "b", "c"] and stored.settled and stored.charged == charged
    balance = credits.balance(USER_ID)
    assert balance.held == 0
    assert balance.credits == 1000 + 5000 - charged
    assert credits.balance(7001).earned == credits.provider_earnings(charged, metering.PROVIDER_SHARE_PCT)
    summary = [n for n in notices() if n.get("dedupe_key") == f"job-end:{job.job_id}"]
    assert len(summary) >= 1 and "fp32_tflops" in summary[0]["text"] and "weights.pt" in summary[0]["text"]


# ---------------------------------------------------------------- the published contract

import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SPEC = json.loads((Path(__file__).resolve().parent.parent / "docs" / "agent-api.openapi.json").read_text())
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["provider_token", "name", "gpus", "benchmark", "metrics", "running_jobs", "free_gpus", "wait_seconds",
          "progress", "message", "seq", "lines", "size", "result", "artifacts", "error", "retryable", "job_ids"]
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5) | JSON_VALUES


def test_every_documented_route_is_served_and_every_served_route_documented():
    source = Path(AgentApi().module.__file__).read_text()
    served = set(re.findall(r'@app\.post\("([^"]+)"', source))
    assert served == {re.sub(r"\{(\w+)\}", r"<\1>", path) for path in SPEC["paths"]}


@pytest.fixture
def running(aws):
    """An agent token and the id of a job it is running."""
    api, agent, job, offer = _running_job(aws)
    return agent["agent_token"], job.job_id


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(sorted(SPEC["paths"])), body=BODIES, own_job=st.booleans())
def test_any_body_gets_a_documented_answer_never_a_500(running, path, body, own_job):
    token, job_id = running
    concrete = path.replace("{job_id}", job_id if own_job else "jfuzz")
    status, answer = AgentApi().call(concrete, body, None if path == "/agent/register" else token)
    documented = {int(code) for code in SPEC["paths"][path]["post"]["responses"]}
    assert status in documented, (path, body, status, answer)


def test_progress_message_is_edited_in_place_with_live_metrics_at_most_every_few_seconds(aws):
    from depu.jobs import service
    from depu.jobs.models import Job

    api, agent, job, offer = _running_job(aws)
    service.set_progress_message(job.job_id, 77)
    Job(job.job_id).update(actions=[Job.progress_notified_at.set(0)])
    notices()  # drop what came before
    metrics = [{"gpu_index": 0, "utilization_pct": 88, "memory_used_mb": 4096, "memory_total_mb": 81920,
                "temperature_c": 70, "power_w": 300, "junk": {"x": 1}}]
    for _ in range(3):  # three heartbeats in a row: one edit (the throttle), carrying the live numbers
        api.call("/agent/heartbeat", {"metrics": metrics, "running_jobs": [job.job_id]}, agent["agent_token"])
    api.call(f"/agent/jobs/{job.job_id}/progress", {"progress": 0.4, "message": "epoch 2/5"}, agent["agent_token"])
    edits = [n for n in notices() if n["edit_message_id"] == 77]
    assert len(edits) == 1
    assert "GPU 88%" in edits[0]["text"] and "4.0/80.0 GB" in edits[0]["text"] and "70°C" in edits[0]["text"]
    assert edits[0]["buttons"][0][0]["data"] == f"rj:1:c:{job.job_id}"
    assert Job.get(job.job_id).metrics == {k: float(v) if k != "gpu_index" else v
                                           for k, v in metrics[0].items() if k != "junk"}
    # once the throttle window has passed, the next report edits again, with the progress
    Job(job.job_id).update(actions=[Job.progress_notified_at.set(int(__import__("time").time()) - 10)])
    api.call(f"/agent/jobs/{job.job_id}/progress", {"progress": 0.6, "message": "epoch 3/5"}, agent["agent_token"])
    [edit] = [n for n in notices() if n["edit_message_id"] == 77]
    assert "60%" in edit["text"] and "epoch 3/5" in edit["text"]
