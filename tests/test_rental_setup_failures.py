"""The setup-failure penalty (depu.agents.setup_failures), in the domain against moto: the real matcher,
claim, fail and complete, the reaper's expiry.

A provider that claims a registry (and even the image, to be offered it first) and fails every pull is charged
each time the same job then succeeds on another agent; after IMAGE_STREAK_LIMIT such failures it is offered no
image job (neither by the matcher nor by the claim-time steal) until the cool-off passes, while default-image
jobs still reach it, ranked after agents without a charge. A renter's image that cannot be pulled anywhere
fails the job with the agents' reason and charges no agent; a failure after the code started is not a setup
failure.
"""
from __future__ import annotations

import time

import pytest

from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, submit_job, vouch_for

from depu.agents import matcher, setup_failures
from depu.agents.registry import Agent
from depu.jobs import lifecycle, reaper, service, work
from depu.jobs.leases import MAX_ATTEMPTS, MAX_QUEUE_SECONDS, ONLINE_SECONDS
from depu.jobs.models import Job

REGISTRY = "images.example:5000"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"{REGISTRY}/team/train@{DIGEST}"
PULL_FAILED = "setup failed (nothing was billed): the image could not be pulled: connection refused"
NO_SUCH_IMAGE = "setup failed (nothing was billed): the image could not be pulled: manifest unknown"


@pytest.fixture
def user(aws):
    ensure_user(USER_ID, credits=50_000)
    return USER_ID


def _agent(name: str, *, digests: list[str] | None = None) -> str:
    api = AgentApi()
    status, answer = api.call("/agent/register", {"provider_token": enrol_provider(), "name": name, "gpus": [],
                                                  "capabilities": ["gpu"], "version": "test",
                                                  "benchmark": {"device": "cpu", "fp32_tflops": 0.2,
                                                                "mem_bandwidth_gbs": 10.0, "verified": False}})
    assert status == 201, answer
    vouch_for(answer["agent_id"])
    Agent(answer["agent_id"]).update(actions=[Agent.container_registries.set([REGISTRY]),
                                              *([Agent.image_digests.set(digests)] if digests else [])])
    return answer["agent_id"]


def _record(agent_id: str) -> Agent:
    return Agent.get(agent_id, consistent_read=True)


def _online(agent_id: str, online: bool = True) -> None:
    seen = int(time.time()) - (0 if online else ONLINE_SECONDS + 60)
    Agent(agent_id).update(actions=[Agent.last_seen_at.set(seen)])


def _image_job(image: str = IMAGE) -> Job:
    return submit_job(gpu_class="cpu", workload="job", params={"command": "python train.py", "image": image})


def _current(job: Job) -> Job:
    return Job.get(job.job_id, consistent_read=True)


def _placed_on(job: Job) -> str | None:
    placed = matcher.match(_current(job))
    return placed.agent_id if placed else None


def _claim(agent_id: str, job: Job) -> None:
    offer = work.claim(_record(agent_id), [0], 0)
    assert offer is not None and offer.job.job_id == job.job_id


def _fails_setup(agent_id: str, job: Job, reason: str = PULL_FAILED) -> Job:
    _claim(agent_id, job)
    return work.fail(_record(agent_id), job.job_id, reason, True)


def _succeeds(agent_id: str, job: Job) -> Job:
    _claim(agent_id, job)
    assert lifecycle.code_started(_current(job), agent_id)
    return work.complete(_record(agent_id), job.job_id, {"ok": True}, [])


def test_a_provider_that_fails_every_pull_is_charged_and_after_k_gets_no_image_job_until_the_cool_off(user):
    liar = _agent("liar", digests=[DIGEST])  # claims to hold the image: offered it first while uncharged
    honest = _agent("honest")
    for round_ in range(setup_failures.IMAGE_STREAK_LIMIT):
        job = _image_job()
        _online(honest, round_ == 0)  # once charged the liar ranks last: the honest one is away meanwhile
        assert _placed_on(job) == liar
        failed = _fails_setup(liar, job)
        assert failed.status == "queued" and failed.setup_failed_agents == [liar] and failed.charged in (None, 0)
        _online(honest)
        assert _placed_on(job) == honest
        assert _succeeds(honest, job).status == "succeeded"
        charged = _record(liar)
        assert int(charged.image_setup_streak) == round_ + 1 and setup_failures.is_penalised(charged)
        assert not _record(honest).setup_failures and not setup_failures.is_penalised(_record(honest))
        if round_ == 0:  # charged once: ranked after the honest agent, though it claims the image
            probe = _image_job()
            assert [agent.agent_id for agent in matcher.candidates(_current(probe))] == [honest, liar]
            service.cancel(USER_ID, probe.job_id)

    # K counted failures in a row: the liar is offered no image job, neither by the matcher nor by a steal
    _online(honest, False)
    job = _image_job()
    assert _placed_on(job) is None and _current(job).status == "queued"
    _current(job).update(actions=[Job.lease_expires_at.set(int(time.time()) + MAX_QUEUE_SECONDS - 30)])
    assert work.claim(_record(liar), [0], 0) is None and _current(job).status == "queued"
    # a default-image job still reaches it
    plain = submit_job(gpu_class="cpu", workload="job", params={"command": "true"})
    assert _placed_on(plain) == liar
    service.cancel(USER_ID, plain.job_id)
    service.cancel(USER_ID, job.job_id)

    # the cool-off and the decay are time, read from the record; after the cool-off it may try once more
    record = _record(liar)
    later = float(record.setup_failed_at) + setup_failures.IMAGE_COOL_OFF_SECONDS + 1
    assert setup_failures.refuses_images(record) and not setup_failures.refuses_images(record, later)
    assert not setup_failures.is_penalised(record, float(record.setup_failed_at)
                                           + 5 * setup_failures.PENALTY_HALF_LIFE_SECONDS)
    Agent(liar).update(actions=[Agent.setup_failed_at.set(int(time.time()) - setup_failures.IMAGE_COOL_OFF_SECONDS - 1)])
    retry = _image_job()
    assert _placed_on(retry) == liar
    assert _succeeds(liar, retry).status == "succeeded"  # an image job that worked clears the streak
    assert int(_record(liar).image_setup_streak) == 0


def test_a_renters_image_that_exists_nowhere_fails_the_job_with_the_reason_and_charges_no_agent(user):
    agents = [_agent(f"honest-{index}") for index in range(MAX_ATTEMPTS)]
    job = _image_job(f"{REGISTRY}/team/missing@sha256:" + "ef" * 32)
    for attempt in range(MAX_ATTEMPTS):
        taker = _placed_on(job)
        assert taker in agents
        _fails_setup(taker, job, NO_SUCH_IMAGE)
    final = _current(job)
    assert final.status == "failed" and "manifest unknown" in final.error
    assert not final.charged
    for agent_id in agents:
        record = _record(agent_id)
        assert not record.setup_failures and not record.image_setup_streak and not setup_failures.is_penalised(record)


def test_a_job_nobody_else_can_take_expires_with_its_last_attempts_reason_and_charges_nobody(user):
    only = _agent("only")
    job = _image_job(f"{REGISTRY}/team/missing@sha256:" + "ef" * 32)
    assert _placed_on(job) == only
    _fails_setup(only, job, NO_SUCH_IMAGE)
    assert _placed_on(job) is None  # it failed there; nobody else runs images from the registry
    reaper.sweep(int(_current(job).lease_expires_at) + 1)
    expired = _current(job)
    assert expired.status == "expired"
    assert expired.error.startswith("no provider took the job in time") and "manifest unknown" in expired.error
    assert not _record(only).setup_failures


def test_a_failure_after_the_code_started_is_not_a_setup_failure(user):
    first, second = _agent("first", digests=[DIGEST]), _agent("second")
    job = _image_job()
    assert _placed_on(job) == first
    _claim(first, job)
    assert lifecycle.code_started(_current(job), first)
    requeued = work.fail(_record(first), job.job_id, "your command exited with status 1", True)
    assert requeued.status == "queued" and not requeued.setup_failed_agents
    assert _placed_on(job) == second
    _succeeds(second, job)
    assert not _record(first).setup_failures and not _record(first).image_setup_streak
