"""Setup failures the cloud pins on an agent, and what they cost it in the matcher (docs/scheduling.md).

A job spec's setup (pulling its image, building its environment, fetching its inputs) is unbilled, so a
provider that fails setups on purpose costs it nothing but delays the renter by one attempt each time. Whose
fault a failed setup is cannot be read from the agent's report (it writes the reason itself, and a renter's
image that does not exist fails everywhere). So the rule is what the cloud observes: a retryable failure
before the job's code started is noted on the job (``Job.setup_failed_agents``), and it counts against those
agents only when the same job later succeeds on another agent: the same image, requirements and inputs
worked there, so the renter's job was not the cause. A job that fails everywhere penalises nobody.

What a counted failure costs: ``penalty`` (a count that halves every PENALTY_HALF_LIFE_SECONDS) ranks the
agent after every agent without one; IMAGE_STREAK_LIMIT counted failures of image jobs in a row, with no
image job succeeding on it in between, and it is offered no image job until IMAGE_COOL_OFF_SECONDS have
passed since the last one (then one more try; a success clears the streak).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pynamodb.exceptions import DoesNotExist, UpdateError

from depu.agents.registry import Agent

if TYPE_CHECKING:
    from depu.jobs.models import Job

PENALTY_HALF_LIFE_SECONDS = 24 * 3600
PENALISED_FROM = 0.5  # a decayed count below this no longer ranks the agent last
IMAGE_STREAK_LIMIT = 3
IMAGE_COOL_OFF_SECONDS = 6 * 3600
_WRITE_TRIES = 3


def penalty(agent: Agent, now: float | None = None) -> float:
    """The agent's counted setup failures, each halving in weight every PENALTY_HALF_LIFE_SECONDS."""
    count = float(agent.setup_failures or 0)
    if not count or agent.setup_failed_at is None:
        return 0.0
    age = max(0.0, (time.time() if now is None else now) - float(agent.setup_failed_at))
    return count * 0.5 ** (age / PENALTY_HALF_LIFE_SECONDS)


def is_penalised(agent: Agent, now: float | None = None) -> bool:
    return penalty(agent, now) >= PENALISED_FROM


def refuses_images(agent: Agent, now: float | None = None) -> bool:
    """IMAGE_STREAK_LIMIT counted image setup failures in a row, the last within IMAGE_COOL_OFF_SECONDS."""
    if int(agent.image_setup_streak or 0) < IMAGE_STREAK_LIMIT or agent.setup_failed_at is None:
        return False
    return (time.time() if now is None else now) - float(agent.setup_failed_at) < IMAGE_COOL_OFF_SECONDS


def is_image_job(job: Job) -> bool:
    return bool((job.params or {}).get("image_digest"))


def may_offer_image(agent: Agent, job: Job, now: float | None = None) -> bool:
    """Whether ``agent`` may be offered ``job`` as far as its image goes (the matcher and the claim-time steal
    ask the same): a job in the default image, or one whose registry the agent runs images from, unless its
    image setups keep failing."""
    registry = (job.params or {}).get("image_registry")
    if not registry:
        return True
    return registry in (agent.container_registries or []) and not refuses_images(agent, now)


def job_succeeded(job: Job, on_agent: str, now: float | None = None) -> list[str]:
    """``job`` succeeded on ``on_agent``: count the setup failures it had elsewhere, and clear that agent's
    image streak if it was an image job. Returns the agents charged."""
    now = time.time() if now is None else now
    charged = [agent_id for agent_id in dict.fromkeys(job.setup_failed_agents or []) if agent_id != on_agent]
    for agent_id in charged:
        _count_failure(agent_id, image=is_image_job(job), now=now)
    if is_image_job(job):
        Agent(on_agent).update(actions=[Agent.image_setup_streak.set(0)], condition=Agent.agent_id.exists())
    return charged


def _count_failure(agent_id: str, *, image: bool, now: float) -> None:
    """Add one to the decayed count (read, decay, write back conditioned on what was read: two counts racing
    both land), and one to the image streak."""
    for _ in range(_WRITE_TRIES):
        try:
            agent = Agent.get(agent_id, consistent_read=True)
        except DoesNotExist:
            return
        seen_at = agent.setup_failed_at
        unchanged = Agent.setup_failed_at.does_not_exist() if seen_at is None else Agent.setup_failed_at == seen_at
        actions = [Agent.setup_failures.set(round(penalty(agent, now) + 1, 4)), Agent.setup_failed_at.set(int(now))]
        if image:
            actions.append(Agent.image_setup_streak.add(1))
        try:
            agent.update(actions=actions, condition=unchanged)
            return
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
