"""A job spec in the renter's own image, through the real job path (``JobRun`` -> podman -> outputs -> outbox
-> presigned PUT to a recording server on 127.0.0.1), with an image this test builds from the host's own
binaries and imports (no registry is reachable here), pinned by its digest.

The container is shown to be as locked down as the sandbox (no capabilities, no-new-privileges, the slot's
uid, no network but loopback, a read-only root); a symlink to the agent's token left in outputs/ is not
uploaded; an image from a registry the provider does not list fails setup unbilled with no pull; a runtime
that cannot start containers is detected by the probe, and then no image digests are reported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

import job_api_recorder
from agent_process import private_uid_base
from job_api_recorder import JobApiRecorder

from depu_agent import containers, gpus, isolation
from depu_agent.config import load_config
from depu_agent.job import JobRun
from depu_agent.outbox import Outbox

pytestmark = [pytest.mark.skipif(not isolation.can_switch_user(),
                                 reason="needs root or CAP_SETUID (the installed agent has it)"),
              pytest.mark.xdist_group("podman")]  # podman's store is shared: its tests take one worker

TOKEN = "depa_" + "Y29udGFpbmVyLXRva2Vu" * 2
SLOT_UID_BASE = private_uid_base(5)
IMAGE_BINARIES = ("/bin/sh", "/bin/cat", "/bin/ls", "/bin/ln", "/bin/echo", "/bin/sleep")


@pytest.fixture
def api():
    with job_api_recorder.serve() as client:
        yield client


@pytest.fixture(scope="module")
def image() -> str:
    """A digest-pinned reference to an image made of a few of the host's binaries and their libraries."""
    name = f"localhost/depu-test-job:{os.getpid()}"
    with tempfile.TemporaryDirectory() as folder:
        tarball = Path(folder) / "rootfs.tar"
        files = set(IMAGE_BINARIES)
        for binary in IMAGE_BINARIES:
            files.update(containers._libraries_of(binary))
        with tarfile.open(tarball, "w") as archive:
            for path in sorted(files):
                archive.add(os.path.realpath(path), arcname=path.lstrip("/"))
        subprocess.run(["podman", "import", str(tarball), name], check=True, capture_output=True, timeout=120)
    digest = subprocess.run(["podman", "images", "--digests", "--format", "{{.Digest}}", name], check=True,
                            capture_output=True, text=True, timeout=60).stdout.strip()
    yield f"localhost/depu-test-job@{digest}"
    subprocess.run(["podman", "rmi", "-f", name], capture_output=True, timeout=60)


@pytest.fixture
def config(tmp_path):
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never", work_dir=str(tmp_path / "work"),
                         cancel_grace_seconds=1, log_interval_seconds=0.1, script_max_processes=64,
                         sandbox_uid_base=SLOT_UID_BASE, container_registries=["localhost"])
    config.write_token(TOKEN)
    config.save(tmp_path / "agent" / "agent.json")
    return config


def run_job(config, api, job_id: str, image: str, command: str, time_limit_s: float = 60):
    job = {"job_id": job_id, "workload": "job", "time_limit_s": time_limit_s, "attempt": 1,
           "params": {"image": image, "command": command, "env": {"GREETING": "hello"}, "requirements": []}}
    outbox = Outbox(Path(config.work_dir) / "outbox", api)
    return JobRun(job, gpus.discover()[0], config, api, outbox).run()


def test_podman_runs_here_and_the_probe_passes(config):
    assert containers.check(config) is None


def test_a_job_in_a_digest_pinned_image_runs_locked_down_and_its_outputs_come_back(config, api, image):
    command = ("cat /proc/self/status; ls /sys/class/net; echo \"greeting=$GREETING\"; "
               "(echo x > /bin/planted && echo root-writable) 2>/dev/null || echo root-read-only; "
               "echo result > outputs/result.txt; ln -s " + config.agent_token_file + " outputs/token-link")
    report = run_job(config, api, "ctr-ok", image, command)
    assert report.action == "complete", report.body
    result = report.body["result"]
    assert result["sandbox"] == "container" and result["image"] == image and result["image_cached"] is True
    assert result["output_files"] == ["result.txt"]
    assert [(item["name"], Path(item["path"]).read_text()) for item in report.uploads] == [("result.txt", "result\n")]
    assert any("token-link" in line for line in result["outputs_left_out"])
    lines = [line.strip() for line in JobApiRecorder.lines]
    status = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in lines if ":" in line}
    assert status["CapEff"] == ["0000000000000000"] and status["CapPrm"] == ["0000000000000000"]
    assert status["NoNewPrivs"] == ["1"]
    assert status["Uid"][0] == str(SLOT_UID_BASE)
    assert "lo" in lines and not [line for line in lines if line.startswith(("eth", "en", "tap", "veth"))]
    assert "greeting=hello" in lines and "root-read-only" in lines and "root-writable" not in lines


def test_an_image_from_a_registry_the_provider_does_not_list_fails_setup_unbilled_without_a_pull(config, api, image):
    foreign = image.replace("localhost/", "registry.example.invalid/", 1)
    report = run_job(config, api, "ctr-foreign", foreign, "echo should-not-run")
    assert report.action == "fail" and report.body["retryable"] is True  # another provider may take it
    assert "nothing was billed" in report.body["error"]
    assert "does not take images from registry.example.invalid" in report.body["error"]
    assert "should-not-run" not in JobApiRecorder.lines


def test_a_container_past_its_time_limit_is_stopped_and_nothing_of_it_is_left(config, api, image):
    report = run_job(config, api, "ctr-slow", image, "sleep 300 & sleep 300", time_limit_s=3)
    assert report.action == "fail" and "time limit" in report.body["error"], report.body
    left = subprocess.run(["podman", "ps", "-a", "--filter", "name=depu-job-ctr-slow", "--format", "{{.Names}}"],
                          capture_output=True, text=True, timeout=60).stdout.split()
    assert left == []
    assert not isolation.processes_of(SLOT_UID_BASE)  # neither sleep outlived the job


def test_a_job_in_an_own_image_that_asks_for_egress_is_refused_not_run_without_it(config, api, image):
    job = {"job_id": "ctr-egress", "workload": "job", "time_limit_s": 60, "attempt": 1,
           "params": {"image": image, "command": "echo should-not-run", "network": "egress"}}
    report = JobRun(job, gpus.discover()[0], config, api, Outbox(Path(config.work_dir) / "outbox", api)).run()
    assert report.action == "fail" and "egress is offered with the default image only" in report.body["error"]
    assert "should-not-run" not in JobApiRecorder.lines


def test_the_digests_podman_holds_are_reported_and_none_without_registries(config, image, tmp_path):
    assert image.split("@", 1)[1] in containers.held_digests(config)
    closed = load_config(tmp_path / "closed.json", environ={}, container_registries=[])
    assert containers.held_digests(closed) == []


def test_the_heartbeat_names_only_well_formed_registries_and_the_held_digests(config, image, tmp_path):
    sloppy = load_config(Path(config.config_path), environ={}, container_registries=["localhost", "Bad Host/x"])
    fields = containers.heartbeat_fields(sloppy)
    assert fields["container_registries"] == ["localhost"] and image.split("@", 1)[1] in fields["image_digests"]
    assert containers.heartbeat_fields(load_config(tmp_path / "none.json", environ={})) == {}


def test_a_runtime_that_cannot_start_containers_is_detected_and_reports_no_digests(config):
    broken = load_config(Path(config.config_path), environ={}, container_oci_runtime="no-such-runtime")
    fault = containers.check(broken)
    assert fault and fault.startswith("podman cannot run a container here")
    assert containers.held_digests(broken) == []


def test_podman_is_installed_for_the_container_path():
    assert shutil.which("podman"), "make deps installs podman (and runc) for the container path"
