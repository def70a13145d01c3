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

Over TLS (the same server presenting a certificate from a CA made in the test, tests/throwaway_pki.py; one
port that answers TLS and plain HTTP alike, recording each request's scheme and each handshake): a registry
whose CA the provider named in ``container_registry_ca_files`` is pulled over verified TLS and the job runs;
a man in the middle presenting a certificate from a CA the agent does not trust is refused, with or without a
CA of the provider's configured, and so is a certificate from the trusted CA for another name than the one
pulled; each of those fails the setup unbilled and retryable, with nothing run, no request served over TLS
and none over plain HTTP (no fallback). The CA setting is checked when the config loads.

Each test pushes an image with its own nonce (its own digests) and removes what podman pulled, so the file
is safe to run twice and beside the other podman tests (one xdist group: podman's store is shared).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

import test_agent_containers
from oci_registry import RegistryServer, build_image
from throwaway_pki import authority
from job_api_recorder import JobApiRecorder
from test_agent_containers import SLOT_UID_BASE, TOKEN, run_job

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


def _config(tmp_path, registries: list[str], insecure: list[str], ca_files: dict[str, str] | None = None):
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never",
                         work_dir=str(tmp_path / "work"), cancel_grace_seconds=1, log_interval_seconds=0.1,
                         script_max_processes=64, sandbox_uid_base=SLOT_UID_BASE, setup_timeout_seconds=120,
                         container_registries=registries, container_insecure_loopback_registries=insecure,
                         container_registry_ca_files=ca_files or {})
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
    assert "pulled-and-ran" in [line.strip() for line in JobApiRecorder.lines]
    assert "greeting=hello" in [line.strip() for line in JobApiRecorder.lines]
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
    assert "should-not-run" not in " ".join(JobApiRecorder.lines) and not report.uploads
    assert not _held(reference)


def test_an_image_from_a_registry_the_provider_does_not_list_sends_it_no_request(tmp_path, api, registry, reference):
    config = _config(tmp_path, ["127.0.0.1:1"], ["127.0.0.1:1"])  # another registry, not this one
    report = run_job(config, api, "pull-unlisted", reference, "echo should-not-run")
    assert report.action == "fail" and report.body["retryable"] is True
    assert f"does not take images from {registry.host}" in report.body["error"]
    assert registry.registry.requests == []  # not even GET /v2/
    assert "should-not-run" not in JobApiRecorder.lines


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
    with containers.pull_transport(config, registry.host) as transport:
        assert transport == ["--tls-verify=false"]
    with containers.pull_transport(config, "images.example") as transport:
        assert transport == ["--tls-verify=true"]


# ---------------------------------------------------------------------------------------------- over TLS

@contextlib.contextmanager
def _tls_registry(context, name: str = "127.0.0.1"):
    """The test registry presenting ``context``'s certificate, holding a fresh image: (server, reference),
    the reference naming the registry as ``name:port``."""
    with RegistryServer(tls=context) as server:
        pinned = f"{name}:{server.port}/{REPOSITORY}@{server.registry.push(REPOSITORY, build_image())}"
        try:
            yield server, pinned
        finally:
            subprocess.run(["podman", "rmi", "-f", pinned], capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path):
    """The provider's own CA (which the agent is told to trust) and a man in the middle's (which it is not)."""
    folder = tmp_path / "pki"
    return authority(folder, "provider"), authority(folder, "attacker"), folder


def _refused_before_any_request(report, server, reference, says: str) -> None:
    """The pull failed on the certificate: unbilled, retryable, nothing ran, nothing held, and the registry
    served no request at all, over TLS or over plain HTTP (podman tried TLS, refused it, and did not fall back)."""
    assert report.action == "fail" and report.body["retryable"] is True, report.body
    error = report.body["error"]
    assert error.startswith("setup failed (nothing was billed): the image could not be pulled"), error
    assert says in error, error
    assert server.registry.handshakes and "ok" not in server.registry.handshakes  # TLS was tried, and refused
    assert server.registry.requests == [] and server.registry.schemes == []  # no https request, no http one
    assert "should-not-run" not in " ".join(JobApiRecorder.lines) and not report.uploads
    assert not _held(reference)


def test_a_registry_signed_by_the_providers_own_ca_is_pulled_over_verified_tls_and_the_job_runs(
        tmp_path, api, pki):
    provider, _attacker, folder = pki
    with _tls_registry(provider.issue(folder, "registry", ips=("127.0.0.1",), dns=("localhost",))) as (server,
                                                                                                      reference):
        config = _config(tmp_path, [server.host], [], {server.host: str(provider.ca_file)})
        report = run_job(config, api, "pull-tls-ok", reference,
                         "cat /depu-nonce > outputs/nonce.txt; echo pulled-over-tls")
        assert report.action == "complete", report.body
        assert report.body["result"]["image"] == reference and report.body["result"]["image_cached"] is False
        digest = reference.rsplit("@", 1)[1]
        assert _asked_for(server, "manifests") == [f"/v2/{REPOSITORY}/manifests/{digest}"]
        assert set(server.registry.schemes) == {"https"} and set(server.registry.handshakes) == {"ok"}
        [(name, path)] = [(item["name"], item["path"]) for item in report.uploads]
        assert name == "nonce.txt" and len(open(path).read()) == 32
        assert "pulled-over-tls" in [line.strip() for line in JobApiRecorder.lines]
        held = subprocess.run(["podman", "image", "inspect", "--format", "{{.Digest}}", reference],
                              capture_output=True, text=True, timeout=60).stdout.strip()
        assert held == digest
        # the same port would have served plain HTTP had podman fallen back, and would have said so
        with urllib.request.urlopen(f"http://{server.host}/v2/", timeout=10) as answer:
            assert answer.status == 200
        assert server.registry.schemes[-1] == "http" and set(server.registry.schemes[:-1]) == {"https"}
    # the trust was the pull's alone: its --cert-dir is gone, and nothing was written for podman at large
    assert list((Path(config.work_dir) / "registry-certs").iterdir()) == []
    assert not os.path.exists(f"/etc/containers/certs.d/{server.host}")


@pytest.mark.parametrize("provider_ca", [True, False], ids=["provider-ca-configured", "system-cas-only"])
def test_a_man_in_the_middle_with_a_certificate_from_an_untrusted_ca_is_refused_without_plain_http_fallback(
        tmp_path, api, pki, provider_ca):
    provider, attacker, folder = pki
    # the attacker's certificate is for exactly the right name: only the signer is wrong
    with _tls_registry(attacker.issue(folder, "mitm", ips=("127.0.0.1",), dns=("localhost",))) as (server,
                                                                                                  reference):
        ca_files = {server.host: str(provider.ca_file)} if provider_ca else {}
        config = _config(tmp_path, [server.host], [], ca_files)
        report = run_job(config, api, "pull-mitm", reference, "echo should-not-run > outputs/ran.txt")
        _refused_before_any_request(report, server, reference, "certificate signed by unknown authority")


@pytest.mark.parametrize("pulled, names, says", [
    ("localhost", {"dns": ("registry.other.test",), "ips": ("127.0.0.1",)},
     "certificate is valid for registry.other.test, not localhost"),
    ("127.0.0.1", {"dns": ("localhost", "registry.other.test")}, "cannot validate certificate for 127.0.0.1"),
    ("127.0.0.1", {"ips": ("127.0.0.2",), "dns": ("localhost",)}, "not 127.0.0.1"),
], ids=["another-hostname", "hostnames-only-for-an-address", "another-address"])
def test_a_certificate_from_the_trusted_ca_for_another_name_than_the_one_pulled_is_refused(
        tmp_path, api, pki, pulled, names, says):
    provider, _attacker, folder = pki
    with _tls_registry(provider.issue(folder, "elsewhere", **names), pulled) as (server, reference):
        host = containers.registry_of(reference)
        config = _config(tmp_path, [host], [], {host: str(provider.ca_file)})
        report = run_job(config, api, "pull-wrong-name", reference, "echo should-not-run > outputs/ran.txt")
        _refused_before_any_request(report, server, reference, says)


def test_a_registry_ca_setting_that_would_not_verify_what_the_provider_meant_is_refused_at_load(tmp_path, pki):
    provider, _attacker, _folder = pki
    ca = str(provider.ca_file)
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    cases = [
        (dict(container_registries=["127.0.0.1:5000"], container_registry_ca_files={"127.0.0.1:5001": ca}),
         "is not in container_registries"),
        (dict(container_registries=["127.0.0.1:5000"], container_insecure_loopback_registries=["127.0.0.1:5000"],
              container_registry_ca_files={"127.0.0.1:5000": ca}), "also in container_insecure_loopback_registries"),
        (dict(container_registries=["images.example"],
              container_registry_ca_files={"images.example": str(tmp_path / "missing.pem")}), "not an existing file"),
        (dict(container_registries=["images.example"], container_registry_ca_files={"images.example": "ca.pem"}),
         "not an existing file"),
        (dict(container_registries=["images.example"], container_registry_ca_files={"images.example": str(tmp_path)}),
         "not an existing file"),
        (dict(container_registries=["images.example"], container_registry_ca_files={"images.example": str(not_pem)}),
         "not a readable PEM CA certificate"),
    ]
    for settings, says in cases:
        with pytest.raises(ConfigError, match=says):
            load_config(tmp_path / "agent.json", environ={}, **settings)
    # the honest settings load, from the file, an override or the environment (JSON or host=path pairs)
    (tmp_path / "file.json").write_text(json.dumps({"container_registries": ["images.example"],
                                                    "container_registry_ca_files": {"images.example": ca}}))
    assert load_config(tmp_path / "file.json", environ={}).container_registry_ca_files == {"images.example": ca}
    for raw in (json.dumps({"images.example": ca}), f"images.example={ca}"):
        loaded = load_config(tmp_path / "env.json", environ={
            "DEPU_AGENT_CONTAINER_REGISTRIES": "images.example", "DEPU_AGENT_CONTAINER_REGISTRY_CA_FILES": raw})
        assert loaded.container_registry_ca_files == {"images.example": ca}
