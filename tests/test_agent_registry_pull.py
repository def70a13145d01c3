"""A job in the renter's own image pulled by digest from a real registry: the test's OCI distribution server
(tests/oci_registry.py) on 127.0.0.1, real podman, the real job path (``JobRun`` -> pull -> container ->
outputs -> presigned PUT to the recording server of tests/test_agent_containers.py).

Shown: the image is pulled over plain HTTP only because the provider named that loopback registry in
``container_insecure_loopback_registries`` (without it podman insists on TLS and the pull fails; a name
that is not loopback there is refused when the config loads); the job runs and its output comes back.
Attacks, each failing the setup unbilled and retryable with nothing run: a registry that serves a manifest
whose bytes are not the digest asked for, one that serves a layer whose content is not its digest; an image
from a registry the provider does not list sends no request to it (the server counts every request). A tag
instead of a digest never reaches an agent: the spec refuses it
(tests/test_rental_images.py::test_an_image_the_spec_cannot_pin_is_refused_saying_why).

Each test pushes an image with its own nonce (its own digests) and removes what podman pulled, so the file
is safe to run twice and beside the other podman tests (one xdist group: podman's store is shared).
"""
from __future__ import annotations

import subprocess

import pytest

import test_agent_containers
from oci_registry import RegistryServer, build_image
from test_agent_containers import SLOT_UID_BASE, TOKEN, Recorder, run_job

from depu_agent import containers, isolation
from depu_agent.config import ConfigError, load_config

pytestmark = [pytest.mark.skipif(not isolation.can_switch_user(),
                                 reason="needs root or CAP_SETUID (the installed agent has it)"),
              pytest.mark.xdist_group("podman")]

REPOSITORY = "depu/registry-test"
api = test_agent_containers.api  # the recording API server fixture


@pytest.fixture
def registry():
    with RegistryServer() as server:
        yield server


@pytest.fixture
def reference(registry):
    """A fresh image held by the registry, as a digest-pinned reference; whatever podman pulled is removed."""
    digest = registry.registry.push(REPOSITORY, build_image())
    pinned = f"{registry.host}/{REPOSITORY}@{digest}"
    yield pinned
    subprocess.run(["podman", "rmi", "-f", pinned], capture_output=True, timeout=60)


def _config(tmp_path, registries: list[str], insecure: list[str]):
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never",
                         work_dir=str(tmp_path / "work"), cancel_grace_seconds=1, log_interval_seconds=0.1,
                         script_max_processes=64, sandbox_uid_base=SLOT_UID_BASE, setup_timeout_seconds=120,
                         container_registries=registries, container_insecure_loopback_registries=insecure)
    config.write_token(TOKEN)
    return config


def _held(reference: str) -> bool:
    return subprocess.run(["podman", "image", "exists", reference], capture_output=True, timeout=60).returncode == 0


def _asked_for(registry, kind: str) -> list[str]:
    return [path for _, path in registry.registry.requests if f"/{kind}/" in path]


def test_a_job_in_an_image_pulled_by_digest_from_a_loopback_registry_runs_and_its_output_comes_back(
        tmp_path, api, registry, reference):
    config = _config(tmp_path, [registry.host], [registry.host])
    report = run_job(config, api, "pull-ok", reference,
                     "echo \"greeting=$GREETING\"; cat /depu-nonce > outputs/nonce.txt; echo pulled-and-ran")
    assert report.action == "complete", report.body
    result = report.body["result"]
    assert result["sandbox"] == "container" and result["image"] == reference and result["image_cached"] is False
    digest = reference.rsplit("@", 1)[1]
    assert _asked_for(registry, "manifests") == [f"/v2/{REPOSITORY}/manifests/{digest}"]  # by digest, no tag
    assert len(_asked_for(registry, "blobs")) == 2  # the config and the one layer
    [(name, path)] = [(item["name"], item["path"]) for item in report.uploads]
    assert name == "nonce.txt" and len(open(path).read()) == 32
    assert "pulled-and-ran" in [line.strip() for line in Recorder.lines]
    assert "greeting=hello" in [line.strip() for line in Recorder.lines]
    held = subprocess.run(["podman", "image", "inspect", "--format", "{{.Digest}}", reference], capture_output=True,
                          text=True, timeout=60).stdout.strip()
    assert held == digest


@pytest.mark.parametrize("tamper, says", [
    ("manifest", "does not match provided manifest digest"),
    ("blob", "digest did not match"),
])
def test_a_registry_that_serves_other_bytes_than_the_digest_is_refused_unbilled_and_nothing_runs(
        tmp_path, api, registry, reference, tamper, says):
    registry.registry.tamper = tamper
    config = _config(tmp_path, [registry.host], [registry.host])
    report = run_job(config, api, f"pull-{tamper}", reference, "echo should-not-run > outputs/ran.txt")
    assert report.action == "fail" and report.body["retryable"] is True, report.body  # another provider may
    assert report.body["error"].startswith("setup failed (nothing was billed): the image could not be pulled")
    assert says in report.body["error"].lower()
    assert _asked_for(registry, "manifests")  # it was asked, and lied
    assert "should-not-run" not in " ".join(Recorder.lines) and not report.uploads
    assert not _held(reference)


def test_an_image_from_a_registry_the_provider_does_not_list_sends_it_no_request(tmp_path, api, registry, reference):
    config = _config(tmp_path, ["127.0.0.1:1"], ["127.0.0.1:1"])  # another registry, not this one
    report = run_job(config, api, "pull-unlisted", reference, "echo should-not-run")
    assert report.action == "fail" and report.body["retryable"] is True
    assert f"does not take images from {registry.host}" in report.body["error"]
    assert registry.registry.requests == []  # not even GET /v2/
    assert "should-not-run" not in Recorder.lines


def test_plain_http_is_not_used_for_a_listed_registry_the_provider_did_not_mark_insecure(
        tmp_path, api, registry, reference):
    config = _config(tmp_path, [registry.host], [])
    report = run_job(config, api, "pull-tls", reference, "echo should-not-run")
    assert report.action == "fail" and report.body["retryable"] is True
    assert "could not be pulled" in report.body["error"] and "tls" in report.body["error"].lower()
    assert _asked_for(registry, "manifests") == []  # podman spoke TLS to it, and no plain request followed
    assert not _held(reference)


@pytest.mark.parametrize("name", ["registry.example:5000", "10.0.0.5:5000", "127.0.0.1.example", "localhost.evil",
                                  "0.0.0.0:5000"])
def test_a_plain_http_registry_that_is_not_loopback_is_refused_when_the_config_loads(tmp_path, name):
    with pytest.raises(ConfigError, match="is not a loopback registry"):
        load_config(tmp_path / "agent.json", environ={}, container_insecure_loopback_registries=[name])
    assert load_config(tmp_path / "ok.json", environ={},
                       container_insecure_loopback_registries=["localhost:5000", "127.0.0.1:8"])


def test_the_store_is_read_back_after_a_pull_and_a_digest_it_does_not_hold_is_refused(tmp_path, registry):
    config = _config(tmp_path, [registry.host], [registry.host])
    missing = f"{registry.host}/{REPOSITORY}@sha256:" + "0" * 64
    with pytest.raises(containers.SetupFailed, match="not the sha256:0{64} asked for"):
        containers.confirm_digest(containers.base_command(config), missing)
    assert containers.pull_transport(config, registry.host) == ["--tls-verify=false"]
    assert containers.pull_transport(config, "images.example") == ["--tls-verify=true"]
