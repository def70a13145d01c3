"""Which agent gets a queued job (see docs/scheduling.md for the algorithm and its cost per decision).

Candidates are the agents of the job's GPU class heard from within ONLINE_SECONDS (one Query on by_gpu_class,
its range key bounding last_seen_at), keeping the verified rental agents with a free slot that the job has not failed
on before, that report no fault (an agent whose sandbox cannot run a script says so in its heartbeat) and that
owe no hardware challenge (a due one is answered on idle GPUs, so it gets no new work until then). They are
ranked by load (busy / GPUs, lowest first, which spreads work across machines), then by reliability (challenges
passed and leases completed against those failed and lost: what the cloud observed, never what the agent
reports), then most recently seen. The first is offered the job with one
conditional transaction (job queued -> assigned, agent busy < GPUs); if that agent filled up meanwhile the next
one is tried. Nobody fits: the job stays queued and SQS offers it again after a backoff.

A job spec that asks for egress (``params.network``) goes only to an agent whose provider allows it (its
registration's and heartbeats' ``egress``) and whose own host list, if it has one, wholly holds the job's
(depu.agents.egress_fit: a job without a list goes only to providers without one); one without network may go
to any.

A job spec may take several GPUs of one machine (``gpu_count``): only an agent with that many free slots of
the class is a candidate, and it takes them all at once. A job whose requirements an agent holds built (its
heartbeat's ``env_hashes``) goes to such a warm agent first: its setup is then instant. A job in the user's own
image (``image_registry``/``image_digest``) goes only to agents that run images from that registry (heartbeat
``container_registries``: reported only when the agent's container probe passed), those holding the image
(``image_digests``) first. Both are preferences an agent reports about itself: a false claim only moves it up
the order, and the job then pulls by digest or builds its environment like anywhere else.

Setup failures the cloud pins on an agent (depu.agents.setup_failures: a retryable failure before the job's
code started, counted once the same job succeeded elsewhere) rank it after every agent without one, before
any other preference; after several image setups in a row counted so, it gets no image job for a while.
"""
from __future__ import annotations

import time

from depu.agents import egress_fit, setup_failures
from depu.agents.challenges import is_due
from depu.agents.registry import RENTAL_CAPABILITY, Agent
from depu.jobs import lifecycle
from depu.jobs.leases import ONLINE_SECONDS
from depu.jobs.models import Job


def candidates(job: Job, now: float | None = None) -> list[Agent]:
    """Agents that could take ``job`` now, best first."""
    now = now or time.time()
    excluded = set(job.failed_agents or [])
    slots = lifecycle.slots_of(job)
    wanted_env = (job.params or {}).get("env_hash")
    wanted_image = (job.params or {}).get("image_digest")
    fit = [
        agent
        for agent in Agent.by_gpu_class.query(job.gpu_class, Agent.last_seen_at >= int(now - ONLINE_SECONDS))
        if agent.verified
        and not agent.fault
        and RENTAL_CAPABILITY in (agent.capabilities or [])
        and int(agent.busy or 0) + slots <= int(agent.gpu_count)
        and agent.agent_id not in excluded
        and not is_due(agent, now)
        and egress_fit.takes(agent, job.params)
        and setup_failures.may_offer_image(agent, job, now)
    ]

    def cold(agent: Agent) -> bool:
        return bool(wanted_env) and wanted_env not in (agent.env_hashes or [])

    def image_cold(agent: Agent) -> bool:
        return bool(wanted_image) and wanted_image not in (agent.image_digests or [])

    return sorted(fit, key=lambda agent: (setup_failures.is_penalised(agent, now), image_cold(agent), cold(agent),
                                          agent.load, -agent.reliability, -int(agent.last_seen_at)))


def match(job: Job, now: float | None = None) -> Agent | None:
    """Assign ``job`` to the best agent; None if nobody fits right now (or the job is no longer queued)."""
    if job.status != lifecycle.QUEUED:
        return None
    for agent in candidates(job, now):
        try:
            lifecycle.assign(job, agent)
        except lifecycle.AgentFull:
            continue
        except lifecycle.Conflict:
            return None
        return agent
    return None
