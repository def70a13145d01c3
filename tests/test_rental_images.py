"""Jobs in the user's own image, and warm hosts first (issue 15 §3), in the domain against moto and end to end
with a real agent process running podman.

A spec's image is ``default`` or pinned by digest (a tag is refused, so is requirements.txt with an image of
one's own); such a job goes only to agents that run images from its registry, those holding its digest first,
then those holding its environment; an agent's claims are cleaned and only ever move it up the order.
"""
from __future__ import annotations

import time
import uuid

import pytest

from agent_process import wait_for
from rental_helpers import USER_ID, ensure_user, submit_job
import test_rental_e2e as e2e
import test_agent_containers
from test_rental_e2e import finished

from depu.agents import matcher
from depu.agents.registry import Agent
from depu.errors import UserError
from depu.jobs import lifecycle, spec, work
from depu.jobs.models import Job

cloud, agents = e2e.cloud, e2e.agents  # the e2e module's fixtures: the cloud in this process, agent processes
image = test_agent_containers.image  # the module-scoped, digest-pinned local image
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
REFERENCE = f"images.example:5000/team/train@{DIGEST}"


def parse(**fields):
    return spec.JobSpec.parse({"command": "python train.py", "time_limit_s": 600, **fields})


def test_a_digest_pinned_image_is_accepted_and_names_its_registry_and_digest():
    job = parse(image=REFERENCE)
    assert job.params["image"] == REFERENCE
    assert job.params["image_registry"] == "images.example:5000" and job.params["image_digest"] == DIGEST
    assert "image_digest" not in parse().params and parse().params["image"] == "default"


@pytest.mark.parametrize("fields, says", [
    ({"image": "images.example/team/train:latest"}, "pinned by its digest"),
    ({"image": "images.example/team/train@sha256:abc"}, "pinned by its digest"),
    ({"image": "train@" + DIGEST}, "pinned by its digest"),  # no registry: whose choice would it be?
    ({"image": "Images.Example/team/train@" + DIGEST}, "pinned by its digest"),
    ({"image": ["x"]}, "pinned by its digest"),
    ({"image": REFERENCE, "requirements": "numpy\n"}, "brings its own packages"),
])
def test_an_image_the_spec_cannot_pin_is_refused_saying_why(fields, says):
    with pytest.raises(UserError, match=says):
        parse(**fields)


def _agent(*, registries: list[str] | None = None, digests: list[str] | None = None,
           env_hashes: list[str] | None = None, seen_ago: int = 0) -> Agent:
    now = int(time.time()) - seen_ago
    agent = Agent("ag_" + uuid.uuid4().hex[:12], provider_id=900, gpu_class="cpu", last_seen_at=now,
                  registered_at=now, name="t", gpus=[], gpu_count=1, capabilities=["gpu"], benchmark_score=10,
                  verified=True, busy=0, free_gpus=[0], env_hashes=env_hashes, image_digests=digests,
                  container_registries=registries)
    agent.save()
    return agent


def _job(params: dict) -> Job:
    job = Job("j" + uuid.uuid4().hex[:12], user_id=42, chat_id=42, created_at="2026-12-02T00:00:00",
              status=lifecycle.QUEUED, lease_expires_at=int(time.time()) + 600, gpu_class="cpu", workload="job",
              params={"command": "true", **params}, time_limit_s=300, gpu_count=1, price_per_hour=100, max_cost=9,
              hold_id="h", attempt=0, failed_agents=[])
    job.save()
    return job


def test_an_image_job_goes_only_where_its_registry_runs_and_to_the_holder_of_its_digest_first(aws):
    no_containers = _agent()
    other_registry = _agent(registries=["elsewhere.example"], digests=[DIGEST])
    cold = _agent(registries=["images.example:5000"])
    warm = _agent(registries=["images.example:5000"], digests=[OTHER_DIGEST, DIGEST], seen_ago=5)
    job = _job(parse(image=REFERENCE).params)
    order = [agent.agent_id for agent in matcher.candidates(job)]
    assert order == [warm.agent_id, cold.agent_id]  # warm though seen longer ago; the others never
    assert no_containers.agent_id not in order and other_registry.agent_id not in order
    assert matcher.match(job).agent_id == warm.agent_id


def test_the_image_counts_before_the_environment_and_a_default_job_ignores_images(aws):
    env = "ef" * 12
    env_warm = _agent(registries=["images.example:5000"], env_hashes=[env])
    image_warm = _agent(registries=["images.example:5000"], digests=[DIGEST], seen_ago=5)
    both = _job({**parse(image=REFERENCE).params, "env_hash": env})
    assert [agent.agent_id for agent in matcher.candidates(both)][:2] == [image_warm.agent_id, env_warm.agent_id]
    default = _job({"env_hash": env})  # the default image: any agent, the environment's holder first
    assert matcher.candidates(default)[0].agent_id == env_warm.agent_id


def test_a_heartbeat_stores_only_well_formed_claims_and_a_claim_that_is_false_only_reorders(aws):
    agent = _agent()
    junk = ["sha256:" + "AB" * 32, "md5:" + "0" * 32, 7, "sha256:" + "ab" * 31]
    work.heartbeat(agent, [], [], [0], image_digests=[DIGEST] * 3 + junk + [f"sha256:{i:064x}" for i in range(200)],
                   container_registries=["images.example:5000", "Bad Host", "x" * 300, "ok.example"])
    stored = Agent.get(agent.agent_id, consistent_read=True)
    assert DIGEST in stored.image_digests and len(stored.image_digests) <= 64
    assert all(value.startswith("sha256:") and len(value) == 71 for value in stored.image_digests)
    assert stored.container_registries == ["images.example:5000", "ok.example"]
    # the liar is preferred for the image it claims, and for nothing else: the price and the job are as they were
    job = _job(parse(image=REFERENCE).params)
    assert matcher.match(job).agent_id == agent.agent_id
    placed = Job.get(job.job_id, consistent_read=True)
    assert placed.price_per_hour == 100 and placed.params["image"] == REFERENCE
    # an older agent's heartbeat (no such fields) leaves them; an empty list clears them
    work.heartbeat(stored, [], [], [0])
    assert Agent.get(agent.agent_id, consistent_read=True).image_digests
    work.heartbeat(stored, [], [], [0], image_digests=[], container_registries=[])
    cleared = Agent.get(agent.agent_id, consistent_read=True)
    assert not cleared.image_digests and not cleared.container_registries


@pytest.mark.e2e
def test_a_real_agent_runs_a_job_in_a_pinned_local_image_and_reports_it_warm(agents, image):
    from depu.jobs import service

    ensure_user(USER_ID, credits=1000)
    agent = agents("rig-images", settings={"container_registries": ["localhost"]})
    agent.wait_registered()
    digest = image.split("@", 1)[1]
    [agent_id] = [item.agent_id for item in Agent.scan() if item.name == "rig-images"]
    wait_for(lambda: digest in (Agent.get(agent_id).image_digests or []), 30,
             what="the heartbeat to report the image it holds")
    assert Agent.get(agent_id).container_registries == ["localhost"]
    job = service.submit(USER_ID, USER_ID, gpu_class="cpu", workload="job", time_limit_s=300,
                         params={"image": image, "command": "echo in-the-image; echo done > outputs/done.txt",
                                 "env": {"GREETING": "hi"}})
    done = finished(job.job_id, 120)
    assert done.status == "succeeded", (done.error, agent.log_text()[-3000:])
    assert "in-the-image" in done.logs_tail
    assert done.result["sandbox"] == "container" and done.result["image_cached"] is True
    assert done.result["output_files"] == ["done.txt"]
    foreign = submit_job(USER_ID, gpu_class="cpu", workload="job", time_limit_s=120, params={
        "image": image.replace("localhost/", "other.example/", 1), "command": "true"})
    assert matcher.candidates(Job.get(foreign.job_id)) == []  # nobody here runs images from other.example
