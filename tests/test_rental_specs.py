"""The job spec in the domain: what it accepts and refuses, what it holds, how many slots it takes (and that
racing placements never overfill an agent), warm agents first, and setup that is bounded and never billed."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from moto_serializable import serialize_dynamodb
from rental_helpers import USER_ID, ensure_user, submit_job

from depu.agents import matcher
from depu.agents.registry import Agent
from depu.errors import UserError
from depu.jobs import leases, lifecycle, service, spec, work
from depu.jobs.models import Job


def parse(**fields):
    return spec.JobSpec.parse({"command": "python train.py", "time_limit_s": 600, **fields})


def test_a_spec_is_normalised_into_what_the_agent_receives():
    job = parse(requirements="Numpy>=1.2 # fast\n\ntorch\n", env={"EPOCHS": 3}, gpu_count=2, image="default")
    assert job.params == {"requirements": ["numpy>=1.2", "torch"], "env": {"EPOCHS": "3"}, "gpu_count": 2,
                          "image": "default", "command": "python train.py", "env_hash": job.env_hash}
    assert parse().params.get("env_hash") is None  # nothing to install: no environment to warm


@pytest.mark.parametrize("fields, says", [
    ({"image": "images.example/me/mine:latest"}, "default image"),
    ({"env": {"HF_TOKEN": "x"}}, "secret"),
    ({"env": {"AWS_SECRET_ACCESS_KEY": "x"}}, "secret"),
    ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "set by the sandbox"),
    ({"env": {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}}, "set by the sandbox"),
    ({"env": {"1BAD": "x"}}, "letters, digits"),
    ({"gpu_count": 0}, "gpu_count"),
    ({"gpu_count": spec.MAX_GPUS_PER_JOB + 1}, "gpu_count"),
    ({"gpu_count": True}, "gpu_count"),
    ({"gpu_count": 1.5}, "gpu_count"),
    ({"requirements": "x @ https://example.org/x.whl"}, "URLs, paths and pip options"),
    ({"requirements": "--extra-index-url https://example.org/simple\nnumpy"}, "line 1"),
    ({"requirements": "numpy\n-e git+https://example.org/r.git"}, "line 2"),
    ({"command": "  "}, "command"),
    ({"command": None}, "command or a script"),
    ({"shell": "bash"}, "Unknown job field"),
    ({"time_limit_s": 10}, "time limit"),
])
def test_a_spec_refuses_what_it_cannot_honour_saying_why(fields, says):
    with pytest.raises(UserError, match=says):
        parse(**fields)


def test_a_spec_over_the_machine_size_holds_nothing_and_a_two_gpu_job_holds_twice(aws):
    from depu import credits

    ensure_user(USER_ID, credits=1000)
    before = credits.balance(USER_ID)
    with pytest.raises(UserError, match="gpu_count"):
        submit_job(USER_ID, gpu_class="cpu", workload="job",
                   params={"command": "true", "gpu_count": spec.MAX_GPUS_PER_JOB + 1}, time_limit_s=600)
    assert credits.balance(USER_ID) == before
    one = submit_job(USER_ID, gpu_class="cpu", workload="job", params={"command": "true"}, time_limit_s=3600)
    two = submit_job(USER_ID, gpu_class="cpu", workload="job", params={"command": "true", "gpu_count": 2},
                     time_limit_s=3600)
    assert two.gpu_count == 2 and two.max_cost == 2 * one.max_cost


def _agent(slots: int, env_hashes: list[str] | None = None, seen_ago: int = 0) -> Agent:
    now = int(time.time()) - seen_ago
    agent = Agent("ag_" + uuid.uuid4().hex[:12], provider_id=900, gpu_class="cpu", last_seen_at=now,
                  registered_at=now, name="t", gpus=[], gpu_count=slots, capabilities=["gpu"], benchmark_score=10,
                  verified=True, busy=0, free_gpus=list(range(slots)), env_hashes=env_hashes)
    agent.save()
    return agent


def _job(gpu_count: int, env_hash: str | None = None) -> Job:
    job = Job("j" + uuid.uuid4().hex[:12], user_id=42, chat_id=42, created_at="2026-12-02T00:00:00",
              status=lifecycle.QUEUED, lease_expires_at=int(time.time()) + 600, gpu_class="cpu", workload="job",
              params={"command": "true", **({"env_hash": env_hash} if env_hash else {})}, time_limit_s=300,
              gpu_count=gpu_count, price_per_hour=100, max_cost=9, hold_id="h", attempt=0, failed_agents=[])
    job.save()
    return job


def test_racing_two_slot_jobs_never_overfill_a_three_slot_agent(aws, monkeypatch):
    serialize_dynamodb(monkeypatch)
    agent = _agent(3)
    jobs = [_job(2) for _ in range(4)]
    assigned: list[str] = []

    def try_assign(job: Job) -> None:
        try:
            lifecycle.assign(job, Agent.get(agent.agent_id, consistent_read=True))
            assigned.append(job.job_id)
        except (lifecycle.Conflict, lifecycle.AgentFull):
            pass

    threads = [threading.Thread(target=try_assign, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(assigned) == 1
    assert int(Agent.get(agent.agent_id, consistent_read=True).busy) == 2
    [job] = [Job.get(job_id) for job_id in assigned]
    lifecycle.claim(job, agent.agent_id, 0, [0, 1])
    assert job.gpu_indices == [0, 1] and job.started_at is None and job.setup_started_at is not None
    lifecycle.release(job, agent.agent_id)  # both slots come back
    assert int(Agent.get(agent.agent_id, consistent_read=True).busy) == 0


def test_the_matcher_needs_enough_free_slots_and_prefers_a_warm_agent(aws):
    digest = "ab" * 12
    narrow = _agent(1)
    cold = _agent(2)
    warm = _agent(2, env_hashes=[digest], seen_ago=5)  # seen longer ago: without warmth it would come last
    wide = _job(2, digest)
    order = [agent.agent_id for agent in matcher.candidates(wide)]
    assert narrow.agent_id not in order
    assert order[:2] == [warm.agent_id, cold.agent_id]
    assert matcher.match(wide).agent_id == warm.agent_id
    assert [agent.agent_id for agent in matcher.candidates(_job(3))] == []  # wider than any machine here


def test_setup_past_its_bound_fails_the_job_unbilled_and_code_start_starts_billing(aws):
    ensure_user(USER_ID, credits=1000)
    agent = _agent(1)
    slow = submit_job(USER_ID, gpu_class="cpu", workload="job", params={"command": "true"}, time_limit_s=600)
    lifecycle.assign(slow, agent)
    lifecycle.claim(slow, agent.agent_id, 0)
    past = int(time.time()) - leases.SETUP_LIMIT_SECONDS - leases.TIME_LIMIT_GRACE_SECONDS - 5
    slow.update(actions=[Job.setup_started_at.set(past)])
    assert work.heartbeat(Agent.get(agent.agent_id), [], [slow.job_id], [0]) == [slow.job_id]
    slow.refresh()
    assert slow.status == "failed" and "setup took longer" in slow.error and slow.charged == 0

    quick = submit_job(USER_ID, gpu_class="cpu", workload="job", params={"command": "true"}, time_limit_s=600)
    agent = Agent.get(agent.agent_id, consistent_read=True)
    lifecycle.assign(quick, agent)
    lifecycle.claim(quick, agent.agent_id, 0)
    with pytest.raises(work.BadRequest):
        work.progress(agent, quick.job_id, 0.0, "x", phase="billing")
    work.progress(agent, quick.job_id, 0.0, "setting up", phase="setup")
    assert Job.get(quick.job_id).started_at is None
    work.progress(agent, quick.job_id, 0.0, "running", phase="running")
    first = Job.get(quick.job_id).started_at
    assert first is not None
    work.progress(agent, quick.job_id, 0.5, "still running", phase="running")
    assert Job.get(quick.job_id).started_at == first  # started once


def test_input_files_are_for_job_specs_only_and_within_their_caps(aws):
    from depu import credits

    ensure_user(USER_ID, credits=1000)
    before = credits.balance(USER_ID)
    with pytest.raises(UserError, match="Only your own jobs"):
        service.submit(USER_ID, USER_ID, gpu_class="cpu", workload="benchmark", params={}, time_limit_s=300,
                       inputs=[("a.csv", b"1")])
    for files, says in (([("a.csv", b"1")] * 2, "both named"), ([("a", b"")], "1 byte"),
                        ([(f"f{i}", b"1") for i in range(spec.MAX_INPUT_FILES + 1)], "at most"),
                        ([("big", b"0" * (spec.MAX_INPUT_FILE_BYTES + 1))], "MB")):
        with pytest.raises(UserError, match=says):
            spec.clean_inputs(files)
    assert credits.balance(USER_ID) == before


def test_live_logs_and_the_setup_phase_reach_the_progress_message_at_most_every_few_seconds(aws):
    from rental_helpers import AgentApi, CPU_BENCHMARK, notices, register_agent, run_matcher

    from depu.agents.tokens import issue_enrolment_token

    ensure_user(7001)
    ensure_user(USER_ID, credits=1000)
    api = AgentApi()
    agent = register_agent(api, issue_enrolment_token(7001), name="laptop", gpus=[], benchmark=CPU_BENCHMARK)
    job = submit_job(USER_ID, gpu_class="cpu", workload="job", params={"command": "python train.py"},
                     time_limit_s=600)
    service.set_progress_message(job.job_id, 78)
    run_matcher()
    status, body = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])
    assert status == 200 and body["job"]["workload"] == "job" and body["job"]["gpu_indices"] == [0]
    api.call(f"/agent/jobs/{job.job_id}/progress", {"progress": 0, "message": "setting up", "phase": "setup"},
             agent["agent_token"])
    Job(job.job_id).update(actions=[Job.progress_notified_at.set(0)])
    notices()  # drop what came before
    for seq in range(3):  # three chunks in a row: one edit (the throttle), with the latest lines
        api.call(f"/agent/jobs/{job.job_id}/logs", {"seq": seq, "lines": [f"[setup] step {seq}"]}, agent["agent_token"])
    [edit] = [n for n in notices() if n["edit_message_id"] == 78]
    assert "[setup] step 0" in edit["text"] and "not billed" in edit["text"]
    Job(job.job_id).update(actions=[Job.progress_notified_at.set(int(time.time()) - 10)])
    api.call(f"/agent/jobs/{job.job_id}/progress", {"progress": 0.1, "message": "running", "phase": "running"},
             agent["agent_token"])
    [edit] = [n for n in notices() if n["edit_message_id"] == 78]
    assert "not billed" not in edit["text"] and "[setup] step 2" in edit["text"]
    assert Job.get(job.job_id).started_at is not None
