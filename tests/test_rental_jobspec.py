"""Job specs end to end: the real agent process (two CPU slots) against the real cloud side, as in
test_rental_e2e. A 2-slot job with a requirements.txt (a wheel built here, served by the provider's
--find-links) is placed on the agent with two free slots, sets up unbilled, runs in the sandbox seeing both
slots and the package, and returns its outputs as one zip; the same requirements again find the agent warm;
a job wider than any machine is never placed; a setup that fails is not billed and says why.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from agent_process import wait_for
from rental_helpers import USER_ID, ensure_user, submit_job
from test_agent_envcache import _package
import test_rental_e2e as e2e
from test_rental_e2e import finished, job_of

pytestmark = pytest.mark.e2e
cloud, agents = e2e.cloud, e2e.agents  # the e2e module's fixtures: the cloud in this process, agent processes

COMMAND = ("python -c 'import json, os, depu_probe; print(json.dumps({\"value\": depu_probe.VALUE, "
           "\"slots\": os.environ[\"DEPU_JOB_SLOTS\"], \"greeting\": os.environ[\"GREETING\"], "
           "\"data\": open(\"inputs/data.csv\").read() if os.path.exists(\"inputs/data.csv\") else None}))' "
           "&& echo one > outputs/one.txt && echo two > outputs/two.txt")


@pytest.fixture
def provider_dirs():
    root = Path(tempfile.mkdtemp(prefix="depu-provider-"))
    os.chmod(root, 0o755)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "wheels"), str(_package(root / "build", "depu-probe", "VALUE = 42\n"))],
                   check=True)
    yield {"find_links": str(root / "wheels"), "env_cache_dir": str(root / "envs")}
    shutil.rmtree(root, ignore_errors=True)


def spec(**fields):
    return {"command": COMMAND, "requirements": "depu-probe==1.2.0\n", "env": {"GREETING": "hello"},
            "gpu_count": 2, **fields}


def test_a_two_slot_job_with_packages_and_an_input_file_sets_up_unbilled_and_returns_one_zip(agents, provider_dirs):
    from depu.jobs import storage

    ensure_user(USER_ID, credits=1000)
    agent = agents("rig-two", settings={"cpu_slots": 2, "package_find_links": provider_dirs["find_links"],
                                        "env_cache_dir": provider_dirs["env_cache_dir"]})
    agent.wait_registered()
    from depu.jobs import service

    job = service.submit(USER_ID, USER_ID, gpu_class="cpu", workload="job", params=spec(), time_limit_s=300,
                         inputs=[("data.csv", b"1,2,3\n")])
    assert job.gpu_count == 2 and job.params["env_hash"]

    done = finished(job.job_id, 120)
    assert done.status == "succeeded", (done.error, agent.log_text()[-3000:])
    assert sorted(done.gpu_indices) == [0, 1]  # both slots, taken at once
    facts = json.loads(next(line for line in done.logs_tail if line.startswith("{")))
    assert facts == {"value": 42, "slots": "0,1", "greeting": "hello", "data": "1,2,3\n"}
    assert "[setup] input data.csv ready" in done.logs_tail
    assert any(line.startswith("[setup]") for line in done.logs_tail), done.logs_tail
    # billing started when the code did, after the setup
    assert done.setup_started_at is not None and done.started_at >= done.setup_started_at
    assert done.result["env_cached"] is False and done.result["outputs_zip"] == "outputs.zip"
    [key] = done.artifacts
    with zipfile.ZipFile(io.BytesIO(storage.get(key))) as archive:
        assert sorted(archive.namelist()) == ["one.txt", "two.txt"]
        assert archive.read("two.txt") == b"two\n"

    # the agent now reports the environment warm; the same requirements start at once
    from depu.agents.registry import Agent

    wait_for(lambda: job.params["env_hash"] in (Agent.get(done.agent_id).env_hashes or []), 15,
             what="the heartbeat to report the environment")
    again = finished(submit_job(USER_ID, gpu_class="cpu", workload="job", params=spec(gpu_count=1),
                                time_limit_s=300).job_id, 90)
    assert again.status == "succeeded", again.error
    assert again.result["env_cached"] is True


def test_a_job_wider_than_the_machine_is_never_placed_and_a_failed_setup_is_not_billed(agents, provider_dirs):
    from depu.jobs import service

    ensure_user(USER_ID, credits=1000)
    agent = agents("rig-narrow", settings={"cpu_slots": 2, "package_find_links": provider_dirs["find_links"],
                                           "env_cache_dir": provider_dirs["env_cache_dir"]})
    agent.wait_registered()
    wide = submit_job(USER_ID, gpu_class="cpu", workload="job", params=spec(gpu_count=3), time_limit_s=120)
    broken = submit_job(USER_ID, gpu_class="cpu", workload="job",
                        params=spec(gpu_count=1, requirements="not-served-anywhere\n"), time_limit_s=120)
    failed = finished(broken.job_id, 90)
    assert failed.status == "failed" and "setup failed (nothing was billed)" in failed.error, failed.error
    assert failed.started_at is None and failed.billed_seconds == 0 and failed.charged == 0
    time.sleep(3)
    assert job_of(wide.job_id).status == "queued" and job_of(wide.job_id).agent_id is None
    service.cancel(USER_ID, wide.job_id)
