"""The job lifecycle against moto: only legal transitions, terminal states final, never two owners, and an
agent's busy count always equal to the jobs in its hands, whatever order the moves come in."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moto_serializable import serialize_dynamodb
from depu.agents.registry import Agent
from depu.jobs import lifecycle
from depu.jobs.leases import MAX_ATTEMPTS
from depu.jobs.models import Job

USER = 42
FAR_FUTURE = int(time.time()) + 10**7


def make_agent(gpu_class: str = "h100-80gb", gpus: int = 1, verified: bool = True) -> Agent:
    now = int(time.time())
    agent = Agent(
        "ag_" + uuid.uuid4().hex[:12], provider_id=900, gpu_class=gpu_class, last_seen_at=now, registered_at=now,
        name="t", gpus=[], gpu_count=gpus, capabilities=["gpu"], benchmark_score=10, verified=verified, busy=0, free_gpus=list(range(gpus)),
    )
    agent.save()
    return agent


def make_job(gpu_class: str = "h100-80gb") -> Job:
    job = Job(
        "j" + uuid.uuid4().hex[:12], user_id=USER, chat_id=USER, created_at="2026-11-25T00:00:00",
        status=lifecycle.QUEUED, lease_expires_at=int(time.time()) + 600, gpu_class=gpu_class, workload="benchmark",
        params={}, time_limit_s=300, price_per_hour=100, max_cost=9, hold_id="h", attempt=0, failed_agents=[],
    )
    job.save()
    return job


def test_the_table_is_what_the_docstring_draws():
    assert set(lifecycle.TRANSITIONS) == set(lifecycle.STATES)
    for state in lifecycle.TERMINAL:
        assert lifecycle.TRANSITIONS[state] == frozenset()
    assert lifecycle.TRANSITIONS[lifecycle.QUEUED] == {"assigned", "cancelled", "expired"}
    assert lifecycle.TRANSITIONS[lifecycle.ASSIGNED] == {"running", "queued", "cancelled"}
    assert lifecycle.TRANSITIONS[lifecycle.RUNNING] == {"succeeded", "failed", "queued", "cancelled"}


# owner-only moves name either the job's current owner or another agent, so legal moves are common
OPS = st.one_of(
    st.tuples(st.just("assign"), st.integers(0, 1)),
    st.tuples(st.just("claim"), st.booleans()),
    st.tuples(st.just("complete"), st.booleans()),
    st.tuples(st.just("fail"), st.booleans(), st.booleans()),
    st.tuples(st.just("release"), st.booleans()),
    st.tuples(st.just("cancel"), st.sampled_from([USER, USER + 1])),
    st.tuples(st.just("offer_expired")),
    st.tuples(st.just("lease_lost")),
    st.tuples(st.just("expire")),
)


def _actor(op: tuple, job: Job, agents: list[Agent]) -> str:
    """The agent an owner-only move comes from: the owner when op[1] is True, else a non-owner."""
    if op[1] and job.agent_id:
        return job.agent_id
    return next(a.agent_id for a in agents if a.agent_id != job.agent_id)


def _apply(op: tuple, job: Job, agents: list[Agent]) -> str | None:
    name = op[0]
    actor = _actor(op, job, agents) if name in ("claim", "complete", "fail", "release") else None
    if name == "assign":
        lifecycle.assign(job, agents[op[1]])
    elif name == "claim":
        lifecycle.claim(job, actor, 0)
    elif name == "complete":
        lifecycle.complete(job, actor, {"ok": True}, [])
    elif name == "fail":
        lifecycle.fail(job, actor, "boom", op[2])
    elif name == "release":
        lifecycle.release(job, actor)
    elif name == "cancel":
        lifecycle.cancel(job, op[1])
    elif name == "offer_expired":
        lifecycle.offer_expired(job, FAR_FUTURE)
    elif name == "lease_lost":
        lifecycle.lease_lost(job, FAR_FUTURE)
    elif name == "expire":
        lifecycle.expire(job, FAR_FUTURE)
    return actor


EVERY_MOVE = [("assign", 1), ("claim", True), ("complete", True), ("fail", True, True), ("release", True),
              ("cancel", USER), ("offer_expired",), ("lease_lost",), ("expire",), ("assign", 0)]
RUN = [("assign", 0), ("claim", True)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=14))
# every terminal state, then every move from it (random sequences reach these rarely)
@example(ops=RUN + [("complete", True)] + EVERY_MOVE)
@example(ops=RUN + [("fail", True, False)] + EVERY_MOVE)
@example(ops=RUN + [("cancel", USER)] + EVERY_MOVE)
@example(ops=[("expire",)] + EVERY_MOVE)
@example(ops=RUN + [("lease_lost",), ("assign", 1), ("claim", True), ("lease_lost",), ("assign", 0), ("claim", True),
                    ("lease_lost",)] + EVERY_MOVE)
def test_random_move_sequences_keep_every_invariant(aws, ops):
    agents = [make_agent() for _ in range(2)]
    job = make_job()
    for op in ops:
        before = Job.get(job.job_id, consistent_read=True)
        actor = _actor(op, before, agents) if op[0] in ("claim", "complete", "fail", "release") else None
        try:
            _apply(op, Job.get(job.job_id, consistent_read=True), agents)
            moved = True
        except (lifecycle.Conflict, lifecycle.AgentFull):
            moved = False
        after = Job.get(job.job_id, consistent_read=True)
        busy = {agent.agent_id: int(Agent.get(agent.agent_id, consistent_read=True).busy) for agent in agents}

        if not moved:  # a refused move changes nothing
            assert (after.status, after.agent_id, after.attempt) == (before.status, before.agent_id, before.attempt)
        else:
            assert lifecycle.is_legal(before.status, after.status), (op, before.status, after.status)
        if before.status in lifecycle.TERMINAL:
            assert after.status == before.status and not moved
        # owner-only moves succeed only for the owner
        if moved and actor is not None:
            assert before.agent_id == actor
        if moved and op[0] == "cancel":
            assert op[1] == USER
        # one owner at most, and the slot accounting matches it exactly
        if after.status in lifecycle.HOLDS_AGENT_SLOT:
            assert after.agent_id is not None
            assert busy == {a.agent_id: int(a.agent_id == after.agent_id) for a in agents}
        else:
            assert sum(busy.values()) == 0
        if after.status == lifecycle.QUEUED:
            assert after.agent_id is None
        assert 0 <= int(after.attempt) <= MAX_ATTEMPTS


def test_racing_assigns_give_the_job_to_exactly_one_agent(aws, monkeypatch):
    serialize_dynamodb(monkeypatch)
    agents = [make_agent() for _ in range(6)]
    job = make_job()
    winners: list[str] = []
    barrier = threading.Barrier(len(agents))

    def try_assign(agent: Agent) -> None:
        mine = Job.get(job.job_id, consistent_read=True)
        barrier.wait()
        try:
            lifecycle.assign(mine, agent)
            winners.append(agent.agent_id)
        except (lifecycle.Conflict, lifecycle.AgentFull):
            pass

    threads = [threading.Thread(target=try_assign, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stored = Job.get(job.job_id, consistent_read=True)
    assert len(winners) == 1 and stored.agent_id == winners[0] and stored.status == "assigned"
    assert sum(int(Agent.get(a.agent_id).busy) for a in agents) == 1


def test_a_one_gpu_agent_never_gets_two_jobs_at_once(aws, monkeypatch):
    serialize_dynamodb(monkeypatch)
    agent = make_agent(gpus=1)
    jobs = [make_job() for _ in range(5)]
    assigned: list[str] = []

    def try_assign(job: Job) -> None:
        try:
            lifecycle.assign(job, agent)
            assigned.append(job.job_id)
        except (lifecycle.Conflict, lifecycle.AgentFull):
            pass

    threads = [threading.Thread(target=try_assign, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(assigned) == 1
    assert int(Agent.get(agent.agent_id, consistent_read=True).busy) == 1


def test_unverified_or_other_class_agents_cannot_be_assigned(aws):
    job = make_job()
    with pytest.raises(lifecycle.AgentFull):
        lifecycle.assign(job, make_agent(verified=False))
    with pytest.raises(lifecycle.AgentFull):
        lifecycle.assign(Job.get(job.job_id), make_agent(gpu_class="t4-16gb"))
    assert Job.get(job.job_id).status == "queued"


def test_a_renewed_lease_beats_the_reaper(aws):
    jobs = [make_job(), make_job()]
    stale = []
    for job in jobs:
        lifecycle.assign(job, make_agent())
        lifecycle.claim(job, job.agent_id, 0)
        job.update(actions=[Job.lease_expires_at.set(int(time.time()) - 5)])  # the lease ran out
        stale.append(Job.get(job.job_id, consistent_read=True))  # what the reaper read
    now = int(time.time())
    # job 0's agent heartbeats just before the reaper writes; job 1's agent stays silent
    assert lifecycle.renew_lease(Job.get(jobs[0].job_id), jobs[0].agent_id)
    with pytest.raises(lifecycle.Conflict):
        lifecycle.lease_lost(stale[0], now)
    lifecycle.lease_lost(stale[1], now)
    assert Job.get(jobs[0].job_id).status == "running"
    assert Job.get(jobs[1].job_id).status == "queued"
    assert Job.get(jobs[1].job_id).failed_agents == [jobs[1].agent_id]
