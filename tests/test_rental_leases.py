"""Leases, retries, cancel and metering end to end through the real agent API, matcher and reaper handlers."""
from __future__ import annotations

import time

from rental_helpers import (
    GPU_H100,
    H100_BENCHMARK,
    PROVIDER_ID,
    USER_ID,
    AgentApi,
    enrol_provider,
    ensure_user,
    notices,
    register_agent,
    run_matcher,
    run_reaper,
    submit_job,
)

from depu import credits
from depu.jobs import metering
from depu.jobs.leases import MAX_ATTEMPTS, MAX_QUEUE_SECONDS, OFFER_SECONDS
from depu.jobs.models import Job


def _claim(api: AgentApi, agent: dict) -> dict | None:
    status, body = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])
    assert status in (200, 204), body
    return body["job"] if status == 200 else None


def _alive(api: AgentApi, *agents: dict) -> None:
    for agent in agents:
        api.call("/agent/heartbeat", {"running_jobs": [], "free_gpus": [0]}, agent["agent_token"])


def _lease_runs_out(job_id: str) -> int:
    """The moment just after the job's current lease (what the reaper will see a minute later)."""
    return int(Job.get(job_id, consistent_read=True).lease_expires_at) + 1


def _track_record(agent: dict, leases_completed: int) -> None:
    """What the cloud has seen the agent do (its reliability), which ranks it; its own benchmark never does."""
    from depu.agents.registry import Agent

    Agent(agent["agent_id"]).update(actions=[Agent.jobs_done.set(leases_completed)])


def test_matcher_prefers_the_more_reliable_idle_agent_then_balances_load(aws):
    api = AgentApi()
    ensure_user(USER_ID, credits=10_000)
    slow = register_agent(api, enrol_provider(), name="slow", benchmark={**H100_BENCHMARK, "fp32_tflops": 99.0})
    fast = register_agent(api, enrol_provider(), name="fast", benchmark={**H100_BENCHMARK, "fp32_tflops": 55.0})
    two_gpu = register_agent(api, enrol_provider(), name="two", gpus=[GPU_H100, {**GPU_H100, "index": 1, "uuid": "GPU-1"}],
                             benchmark={**H100_BENCHMARK, "fp32_tflops": 30.0})
    _track_record(fast, 3)
    _track_record(two_gpu, 6)  # "slow" claims the most TFLOP/s and has done nothing: that ranks it last
    first = submit_job()
    run_matcher()
    assert Job.get(first.job_id).agent_id == two_gpu["agent_id"]  # idle and most reliable
    second = submit_job()
    run_matcher()
    assert Job.get(second.job_id).agent_id == fast["agent_id"]  # "two" is half busy now: idle reliable one next
    third = submit_job()
    run_matcher()
    assert Job.get(third.job_id).agent_id == slow["agent_id"]  # balance: every machine gets work
    fourth = submit_job()
    run_matcher()
    assert Job.get(fourth.job_id).agent_id == two_gpu["agent_id"]  # its second GPU
    fifth = submit_job()
    result = run_matcher()
    assert Job.get(fifth.job_id).status == "queued" and len(result["batchItemFailures"]) == 1  # all full


def test_silent_agent_loses_the_job_to_another_agent_and_the_user_pays_once(aws):
    api = AgentApi()
    ensure_user(USER_ID, credits=10_000)
    first = register_agent(api, enrol_provider(), name="first", benchmark={**H100_BENCHMARK, "fp32_tflops": 55.0})
    job = submit_job()
    run_matcher()
    offer = _claim(api, first)
    assert offer and offer["attempt"] == 1
    second = register_agent(api, enrol_provider(7002), name="second")

    # "first" stops heartbeating for its job (it still answers for itself, so it is online)
    _alive(api, first)
    swept = run_reaper(_lease_runs_out(job.job_id))
    assert swept["retried"] == [job.job_id]
    told = [n for n in notices() if "moves to another provider (its provider went silent)" in n["text"]]
    assert len(told) == 1 and told[0]["chat_id"] == USER_ID

    # the job goes to the second agent, never back to the one it was lost on
    run_matcher()
    stored = Job.get(job.job_id)
    assert stored.agent_id == second["agent_id"] and stored.failed_agents == [first["agent_id"]]
    assert _claim(api, first) is None
    retry = _claim(api, second)
    assert retry["job_id"] == job.job_id and retry["attempt"] == 2

    # the silent agent wakes up: its job is no longer its own
    status, body = api.call("/agent/heartbeat", {"running_jobs": [job.job_id]}, first["agent_token"])
    assert body["cancel"] == [job.job_id]
    assert api.call(f"/agent/jobs/{job.job_id}/complete", {"result": {}}, first["agent_token"])[0] == 404

    Job(job.job_id).update(actions=[Job.started_at.set(int(time.time()) - 120)])  # the retry ran 120 s
    status, done = api.call(f"/agent/jobs/{job.job_id}/complete", {"result": {"ok": 1}}, second["agent_token"])
    assert status == 200 and done["state"] == "succeeded"
    expected = -(-2500 * 120 // 3600)  # per second at 2500 credits/h, rounded up: 84
    assert done["charged"] in (expected, expected + 1)  # the clock may tick a second during the test
    assert credits.balance(USER_ID).credits == 11_000 - done["charged"] and credits.balance(USER_ID).held == 0
    assert credits.balance(7002).earned == credits.provider_earnings(done["charged"], metering.PROVIDER_SHARE_PCT)
    assert credits.balance(PROVIDER_ID).earned == 0  # the lost attempt earns nothing


def test_after_max_attempts_the_job_fails_the_user_is_told_and_nothing_is_charged(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    agents = [register_agent(api, enrol_provider(7100 + i), name=f"a{i}") for i in range(MAX_ATTEMPTS + 1)]
    job = submit_job()
    assert credits.balance(USER_ID).held > 0
    owners = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        _alive(api, *agents)
        run_matcher()
        owner = next(a for a in agents if a["agent_id"] == Job.get(job.job_id).agent_id)
        assert owner["agent_id"] not in owners  # a new agent every time
        assert _claim(api, owner)["attempt"] == attempt
        owners.append(owner["agent_id"])
        run_reaper(_lease_runs_out(job.job_id))
    stored = Job.get(job.job_id)
    assert stored.status == "failed" and "agent lost" in stored.error and stored.charged == 0
    assert credits.balance(USER_ID) == credits.Balance(1000, 0, 0)
    summary = [n for n in notices() if n.get("dedupe_key") == f"job-end:{job.job_id}"]
    assert len(summary) == 1 and "failed" in summary[0]["text"]
    run_matcher()
    assert Job.get(job.job_id).status == "failed"  # final: nobody can take it again


def test_unclaimed_offer_returns_to_the_queue_and_unmatched_jobs_expire(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    agent = register_agent(api, enrol_provider())
    job = submit_job()
    run_matcher()
    assert Job.get(job.job_id).status == "assigned"
    assert run_reaper(int(time.time()) + OFFER_SECONDS + 1)["offers_returned"] == [job.job_id]
    assert Job.get(job.job_id).status == "queued" and Job.get(job.job_id).failed_agents == []

    lonely = submit_job(gpu_class="t4-16gb")  # nobody serves this class
    assert len(run_matcher()["batchItemFailures"]) >= 1
    swept = run_reaper(int(time.time()) + MAX_QUEUE_SECONDS + 1)
    assert lonely.job_id in swept["expired"]
    assert Job.get(lonely.job_id).status == "expired" and Job.get(lonely.job_id).charged == 0
    assert credits.balance(USER_ID).held == 0 and credits.balance(USER_ID).credits == 1000
    del agent


def test_cancel_reaches_the_agent_on_its_next_heartbeat_and_charges_only_time_used(aws):
    api = AgentApi()
    ensure_user(USER_ID, credits=10_000)
    agent = register_agent(api, enrol_provider())
    job = submit_job(time_limit_s=3600)
    run_matcher()
    _claim(api, agent)
    Job(job.job_id).update(actions=[Job.started_at.set(int(time.time()) - 36)])
    from depu.jobs import service

    service.cancel(USER_ID, job.job_id)
    status, body = api.call("/agent/heartbeat", {"running_jobs": [job.job_id], "free_gpus": []}, agent["agent_token"])
    assert body["cancel"] == [job.job_id]
    assert api.call(f"/agent/jobs/{job.job_id}/complete", {"result": {}}, agent["agent_token"]) == (
        409, {"error": "conflict", "state": "cancelled"})
    stored = Job.get(job.job_id)
    assert stored.charged in (25, 26)  # 36-37 s at 2500/h, not the 2500 held
    assert credits.balance(USER_ID).held == 0
    # the agent's GPU is free again
    next_job = submit_job()
    run_matcher()
    assert Job.get(next_job.job_id).agent_id == agent["agent_id"]


def test_graceful_release_requeues_without_counting_an_attempt(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    agent = register_agent(api, enrol_provider())
    job = submit_job()
    run_matcher()
    _claim(api, agent)
    status, body = api.call("/agent/release", {"job_ids": [job.job_id, "jnotmine"]}, agent["agent_token"])
    assert (status, body) == (200, {"released": [job.job_id]})
    stored = Job.get(job.job_id)
    assert stored.status == "queued" and stored.attempt == 0 and stored.failed_agents == []
    _alive(api, agent)  # restarted: its first heartbeat brings it back online
    run_matcher()
    assert _claim(api, agent)["attempt"] == 1  # the same agent may take it again after a restart


def test_a_released_job_goes_straight_to_another_agent_never_back_to_the_draining_one(aws):
    from depu.agents.registry import get_agent, is_online

    api = AgentApi()
    ensure_user(USER_ID, credits=10_000)
    leaving = register_agent(api, enrol_provider(), name="leaving", benchmark={**H100_BENCHMARK, "fp32_tflops": 99.0})
    job = submit_job()
    run_matcher()
    assert Job.get(job.job_id).agent_id == leaving["agent_id"]  # the only one yet
    _claim(api, leaving)
    staying = register_agent(api, enrol_provider(7002), name="staying")
    assert api.call("/agent/release", {"job_ids": [job.job_id]}, leaving["agent_token"]) == (200, {"released": [job.job_id]})
    assert not is_online(get_agent(leaving["agent_id"]))
    # the requeued job is offered to the other agent at once, not to the idle, draining one
    assert run_matcher()["batchItemFailures"] == []
    assert Job.get(job.job_id).agent_id == staying["agent_id"]
    assert _claim(api, staying)["attempt"] == 1
    # alone, a draining agent gets nothing either: the job waits in the queue
    second = submit_job()
    assert len(run_matcher()["batchItemFailures"]) == 1
    assert Job.get(second.job_id).status == "queued" and Job.get(second.job_id).agent_id is None
    # a fresh start (its first heartbeat) makes it a candidate again
    _alive(api, leaving)
    from depu.agents import matcher

    assert matcher.match(Job.get(second.job_id)).agent_id == leaving["agent_id"]  # SQS redelivers in 5 s


def test_retryable_failure_moves_on_final_failure_charges_the_time_used(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    a = register_agent(api, enrol_provider(), name="a")
    b = register_agent(api, enrol_provider(7002), name="b")
    _track_record(a, 2)  # a ranks first
    job = submit_job()
    run_matcher()
    _claim(api, a)
    assert api.call(f"/agent/jobs/{job.job_id}/fail", {"error": "CUDA OOM", "retryable": True}, a["agent_token"]) == (
        200, {"state": "queued"})
    run_matcher()
    assert Job.get(job.job_id).agent_id == b["agent_id"]
    _claim(api, b)
    Job(job.job_id).update(actions=[Job.started_at.set(int(time.time()) - 72)])
    assert api.call(f"/agent/jobs/{job.job_id}/fail", {"error": "SyntaxError", "retryable": False}, b["agent_token"]) == (
        200, {"state": "failed"})
    stored = Job.get(job.job_id)
    assert stored.charged in (50, 51)
    assert credits.balance(7002).earned == credits.provider_earnings(stored.charged, metering.PROVIDER_SHARE_PCT)
    assert credits.balance(PROVIDER_ID).earned == 0


def test_a_job_past_its_time_limit_is_stopped_by_the_cloud(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    agent = register_agent(api, enrol_provider())
    job = submit_job(time_limit_s=300)
    run_matcher()
    _claim(api, agent)
    Job(job.job_id).update(actions=[Job.started_at.set(int(time.time()) - 400)])
    body = api.call("/agent/heartbeat", {"running_jobs": [job.job_id]}, agent["agent_token"])[1]
    assert body["cancel"] == [job.job_id]
    stored = Job.get(job.job_id)
    assert stored.status == "failed" and stored.error == "time limit exceeded"
    assert stored.charged == stored.max_cost == 209  # the whole limit, never more than was held


def test_unsettled_ends_are_settled_by_the_sweep(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    agent = register_agent(api, enrol_provider())
    job = submit_job()
    run_matcher()
    _claim(api, agent)
    from depu.jobs import lifecycle

    lifecycle.complete(Job.get(job.job_id), agent["agent_id"], {}, [])  # the Lambda died before settling
    assert credits.balance(USER_ID).held > 0
    # the scheduled handler (real clock) leaves a just-finished job to the call that is settling it
    assert run_reaper()["settled"] == []
    swept = run_reaper(int(time.time()) + 120)
    assert swept["settled"] == [job.job_id]
    assert credits.balance(USER_ID).held == 0 and Job.get(job.job_id).settled
    assert run_reaper(int(time.time()) + 120)["settled"] == []


def test_an_idle_agent_takes_a_job_that_waited_in_the_queue_without_the_matcher(aws):
    api = AgentApi()
    ensure_user(USER_ID)
    job = submit_job()
    other_class = submit_job(gpu_class="t4-16gb")
    assert len(run_matcher()["batchItemFailures"]) == 2  # nobody online yet; SQS backs off
    agent = register_agent(api, enrol_provider())
    from depu.jobs.leases import MAX_QUEUE_SECONDS
    from depu.jobs.work import STEAL_AFTER_SECONDS

    def queued_for(seconds: int) -> None:  # as if submitted ``seconds`` ago (a loaded machine is slow to here)
        for queued in (job, other_class):
            Job(queued.job_id).update(actions=[
                Job.lease_expires_at.set(int(time.time()) + MAX_QUEUE_SECONDS - seconds)])

    queued_for(-60)  # fresh: left to the matcher's best-fit choice
    assert _claim(api, agent) is None
    queued_for(STEAL_AFTER_SECONDS + 5)  # they have waited a while now
    offer = _claim(api, agent)
    assert offer["job_id"] == job.job_id and Job.get(job.job_id).status == "running"
    assert Job.get(other_class.job_id).status == "queued"  # never another class's job


def test_a_submit_that_fails_halfway_leaves_nothing_held_or_queued(aws, monkeypatch):
    from depu.jobs import service

    ensure_user(USER_ID)

    def queue_down(job_id: str, delay_seconds: int = 0) -> None:
        raise ConnectionError("SQS unavailable")

    monkeypatch.setattr(service, "enqueue", queue_down)
    import pytest

    with pytest.raises(ConnectionError):
        submit_job()
    [job] = list(Job.by_user.query(USER_ID))
    assert job.status == "cancelled"  # never matched, never charged
    assert credits.balance(USER_ID) == credits.Balance(1000, 0, 0)
