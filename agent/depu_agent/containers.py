"""A job spec in the renter's own container image, run with podman, on a provider that offers it.

The provider opts in by listing the registries it accepts images from (``container_registries``); a job names
its image pinned by digest (``registry/path@sha256:<64 hex>``, no tags: what runs is exactly what was asked
for). The image is looked up locally first (a warm host runs it at once: the digests podman holds go into the
heartbeat and the matcher prefers such hosts), else pulled from its registry, which must be on the list.

The container gets what the bubblewrap sandbox gives a job and no more: no network (``--network=none``), a
read-only root file system with a small /tmp, no capabilities, no-new-privileges, the slot's unprivileged uid,
a process and open-file cap, only the job's GPUs' device nodes, and its workspace mounted at the same path
(outputs are collected from it by the same O_NOFOLLOW, owner-checked copy as for the sandbox).

Why the explicit OCI runtime and ulimits: on a cgroup v1 ("hybrid") host crun refuses to start ("cgroups in
hybrid mode not supported"), runc works; and podman's default rlimits (open files and processes at 1048576)
are above what an agent in a container may set, so the job's own caps are always passed. ``check`` proves the
whole command line works by running a probe image built from the host's own /bin/sh, before any job is taken.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import is_loopback_registry
from .envcache import SetupFailed
from .isolation import OUTPUTS_DIR, SandboxPlan, gpu_device_nodes, job_user, make_workspace

log = logging.getLogger(__name__)

ENGINE = "podman"
CONTAINER_UID = 65534  # without per-slot uids: nobody
PROBE_IMAGE = "localhost/depu-probe:1"
PROBE_OUTPUT = "probe-ok"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# registry host[:port] / path @ sha256:digest, the form the cloud's job spec accepts
REFERENCE = re.compile(r"^(?P<registry>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?(?::[0-9]{1,5})?)"
                       r"/(?P<path>[a-z0-9]+(?:[._/-][a-z0-9]+){0,30})@(?P<digest>sha256:[0-9a-f]{64})$")
REGISTRY = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}(:[0-9]{1,5})?$")
QUERY_SECONDS = 30


@dataclass(frozen=True)
class ImageReady:
    reference: str
    hit: bool  # held on this machine already (no pull)


def engine_path() -> str | None:
    return shutil.which(ENGINE)


def registry_of(reference: str) -> str | None:
    found = REFERENCE.match(reference or "")
    return found.group("registry") if found else None


def offered(config) -> bool:
    """The provider lists registries it accepts images from and podman is installed: worth checking."""
    return bool(config.container_registries) and engine_path() is not None


def base_command(config) -> list[str]:
    return [engine_path() or ENGINE, f"--runtime={config.container_oci_runtime}"]


def held_digests(config) -> list[str]:
    """The digests of the images this machine's podman holds (a real query; empty without a working
    runtime). Reported in the heartbeat: the matcher prefers this agent for jobs naming one of them."""
    if not offered(config) or check(config) is not None:
        return []
    try:
        answer = subprocess.run([*base_command(config), "images", "--digests", "--format", "{{.Digest}}"],
                                capture_output=True, text=True, timeout=QUERY_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if answer.returncode != 0:
        return []
    return sorted({line.strip() for line in answer.stdout.splitlines() if DIGEST.match(line.strip())})[:64]


def heartbeat_fields(config) -> dict[str, list[str]]:
    """What the heartbeat says about containers: the registries this agent runs images from (none unless the
    probe passed) and the image digests it holds. Omitted entirely when the provider offers no containers."""
    if not offered(config):
        return {}
    if check(config) is not None:
        return {"container_registries": [], "image_digests": []}
    # only well-formed names: one the API's contract refuses would cost every heartbeat, not just the offer
    registries = sorted({name for name in config.container_registries if REGISTRY.match(name)})[:16]
    return {"container_registries": registries, "image_digests": held_digests(config)}


def check(config) -> str | None:
    """Run the probe image exactly as a job's container runs (cached per runtime): None when it works, else
    why not. An agent whose check fails offers no registries, so it is never sent an image job."""
    return _check(engine_path(), config.container_oci_runtime, int(config.script_max_files),
                  int(config.script_max_processes))


@functools.lru_cache(maxsize=4)
def _check(engine: str | None, oci_runtime: str, max_files: int, max_processes: int) -> str | None:
    if engine is None:
        return f"{ENGINE} is not installed: container images cannot run here"
    base = [engine, f"--runtime={oci_runtime}"]
    try:
        _import_probe_image(base)
        with tempfile.TemporaryDirectory(prefix="depu-probe-") as folder:
            os.chown(folder, CONTAINER_UID, CONTAINER_UID)
            answer = subprocess.run(
                [*base, "run", "--rm", *hardening(max_files, max_processes), "--user",
                 f"{CONTAINER_UID}:{CONTAINER_UID}", "-v", f"{folder}:{folder}", "-w", folder, PROBE_IMAGE,
                 "/bin/sh", "-c", f"echo {PROBE_OUTPUT} > probe.txt && cat probe.txt"],
                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{ENGINE} cannot run a container here: {type(error).__name__}: {error}"[:400]
    if answer.returncode != 0 or answer.stdout.strip() != PROBE_OUTPUT:
        last = (answer.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{ENGINE} cannot run a container here: {last[:300]}"
    return None


def _import_probe_image(base: list[str]) -> None:
    """A tiny image made of the host's own /bin/sh and the libraries it loads: no registry needed."""
    if subprocess.run([*base, "image", "exists", PROBE_IMAGE], capture_output=True, timeout=QUERY_SECONDS).returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="depu-probe-rootfs-") as folder:
        tarball = Path(folder) / "rootfs.tar"
        with tarfile.open(tarball, "w") as archive:
            for path in sorted({"/bin/sh", "/bin/cat", *_libraries_of("/bin/sh"), *_libraries_of("/bin/cat")}):
                archive.add(os.path.realpath(path), arcname=path.lstrip("/"))
        subprocess.run([*base, "import", str(tarball), PROBE_IMAGE], capture_output=True, check=True, timeout=120)


def _libraries_of(binary: str) -> list[str]:
    answer = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=QUERY_SECONDS)
    return sorted({word for line in answer.stdout.splitlines() for word in line.split() if word.startswith("/")})


def hardening(max_files: int, max_processes: int) -> list[str]:
    """What every job container gets: nothing to reach, nothing to gain, nothing to keep."""
    return ["--network=none", "--read-only", "--cap-drop=all", "--security-opt=no-new-privileges",
            "--pull=never", f"--pids-limit={max_processes}",
            f"--ulimit=nofile={max_files}:{max_files}", f"--ulimit=nproc={max_processes}:{max_processes}"]


def ensure_image(config, reference: str, on_line: Callable[[str], None]) -> ImageReady:
    """The job's image on this machine: held already, or pulled from an allowed registry (its digest is in
    the reference, so podman verifies what it pulled). ``SetupFailed`` says why not."""
    registry = registry_of(reference)
    if registry is None:
        raise SetupFailed("the image must be registry/path@sha256:<digest>")
    if registry not in config.container_registries:
        raise SetupFailed(f"this provider does not take images from {registry}")
    fault = check(config)
    if fault:
        raise SetupFailed(fault)
    base = base_command(config)
    if subprocess.run([*base, "image", "exists", reference], capture_output=True,
                      timeout=QUERY_SECONDS).returncode == 0:
        return ImageReady(reference, hit=True)
    on_line(f"[depu] setup: pulling {reference}")
    try:
        with pull_transport(config, registry) as transport:
            answer = subprocess.run([*base, "pull", "--quiet", *transport, reference],
                                    capture_output=True, text=True, timeout=config.setup_timeout_seconds)
    except subprocess.TimeoutExpired as error:
        raise SetupFailed(f"pulling the image took over {config.setup_timeout_seconds:g} s") from error
    except OSError as error:  # the provider's CA file went away or cannot be read since the config loaded
        raise SetupFailed(f"the registry's CA certificate could not be read: {error}"[:400]) from error
    if answer.returncode != 0:
        last = (answer.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupFailed(f"the image could not be pulled: {last[:300]}")
    confirm_digest(base, reference)
    return ImageReady(reference, hit=False)


@contextlib.contextmanager
def pull_transport(config, registry: str) -> Iterator[list[str]]:
    """How podman reaches ``registry``, for one pull: TLS verified (podman's default), except a loopback
    registry the provider named in ``container_insecure_loopback_registries``, pulled over plain HTTP by this
    pull's own flag (no registries.conf edit that would outlive the job or reach other pulls).

    A registry with a CA in ``container_registry_ca_files`` is also trusted to present a certificate signed by
    that CA: its file is copied, alone, as ``ca.crt`` into a fresh folder under the agent's work dir that this
    pull names with ``--cert-dir`` and that is removed afterwards. Alone, because podman reads every ``*.crt``,
    ``*.cert`` and ``*.key`` in that folder (a folder of the provider's would hand it whatever else lies there);
    per pull, so nothing under /etc/containers changes and no other pull or process gains that trust."""
    if registry in config.container_insecure_loopback_registries and is_loopback_registry(registry):
        yield ["--tls-verify=false"]
        return
    ca_file = config.container_registry_ca_files.get(registry)
    if not ca_file:
        yield ["--tls-verify=true"]
        return
    root = Path(config.work_dir) / "registry-certs"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="pull-", dir=root))
    try:
        (folder / "ca.crt").write_bytes(Path(ca_file).read_bytes())
        yield ["--tls-verify=true", f"--cert-dir={folder}"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def confirm_digest(base: list[str], reference: str) -> None:
    """What podman now holds under ``reference`` has the digest asked for: podman checks the manifest it
    fetched by digest, and this reads it back from the store rather than trusting the pull's exit status."""
    wanted = reference.rsplit("@", 1)[1]
    answer = subprocess.run([*base, "image", "inspect", "--format", "{{.Digest}}", reference],
                            capture_output=True, text=True, timeout=QUERY_SECONDS)
    held = answer.stdout.strip() if answer.returncode == 0 else ""
    if held != wanted:
        subprocess.run([*base, "rmi", "-f", reference], capture_output=True, timeout=QUERY_SECONDS)
        raise SetupFailed(f"the pulled image's digest is {held or 'unknown'}, not the {wanted} asked for")


def plan_container(config, *, job_id: str, script: bytes, reference: str, program: list[str],
                   variables: dict[str, str], gpu_indices: list[int], visible_devices: str,
                   on_cpu: bool) -> SandboxPlan:
    """The podman command line for one job; its workspace is a fresh folder owned by the slot's uid."""
    user = job_user(config, gpu_indices[0])
    uid, gid = (user.uid, user.gid) if user is not None else (CONTAINER_UID, CONTAINER_UID)
    workspace = make_workspace(config.sandbox_workspace_dir or None, None, script, uid=uid, gid=gid,
                               with_inputs=True)
    name = f"depu-job-{job_id}"[:60]
    argv = [*base_command(config), "run", "--rm", "--name", name,
            *hardening(config.script_max_files, config.script_max_processes),
            "--user", f"{uid}:{gid}", "-v", f"{workspace}:{workspace}", "-w", str(workspace)]
    if not on_cpu:
        for node in dict.fromkeys(node for index in gpu_indices for node in gpu_device_nodes(index)):
            argv.append(f"--device={node}")
    environment = {**variables, "HOME": str(workspace), "TMPDIR": "/tmp", "PYTHONUNBUFFERED": "1",
                   "CUDA_VISIBLE_DEVICES": visible_devices,
                   "DEPU_JOB_SLOTS": ",".join(str(index) for index in gpu_indices)}
    for key, value in environment.items():
        argv += ["-e", f"{key}={value}"]
    argv += [reference, *program]
    return SandboxPlan(
        argv=argv, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd=str(workspace), preexec_fn=None,
        user=None, kind="container", outputs=workspace / OUTPUTS_DIR,
        cleanup=[[*base_command(config), "rm", "-f", name]], owner_uid=uid)
