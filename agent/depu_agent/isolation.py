"""How a renter's own Python file runs on a provider's machine without reaching the agent's credentials.

Two ways, best first:
- Docker, when ``docker info`` works: the script runs in a container with only its GPU (``--gpus device=N``),
  no network, a memory and process cap, and only its own working directory mounted.
- Otherwise a restricted subprocess: a fresh empty working directory, an environment holding only PATH, locale
  and CUDA variables (never the agent token), resource limits (address space, open files, processes, file
  size, CPU seconds, no core dumps), its own session, and, when the agent may switch users (root or
  CAP_SETUID), a different unprivileged user, so the agent's token file (mode 600) cannot be read.

With ``sandbox_uid_base`` set (install.sh does), each GPU slot's job runs under a uid of its own: concurrent
jobs cannot read each other's workspaces and every process a job leaves behind is killed by uid at its end.
Without it all jobs share ``sandbox_user`` and neither holds (pinned by tests/test_abuse_sandbox.py).

Known limit: an agent that runs as an ordinary user without CAP_SETUID runs scripts as itself; then the token
file is readable by the script. install.sh avoids that by giving the service CAP_SETUID/CAP_SETGID and a
separate sandbox user. The agent logs a warning at start when it is in that situation.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox_runtime
from .sandbox_runtime import SandboxRuntime, SandboxUnusable

log = logging.getLogger(__name__)

CAP_SETUID_BIT = 7
ENV_PASSTHROUGH_PREFIXES = ("CUDA_", "NVIDIA_", "LD_LIBRARY_PATH")
OUTPUTS_DIR = "outputs"
SCRIPT_NAME = "script.py"


@functools.lru_cache(maxsize=1)
def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def can_switch_user() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SETUID_BIT & 1)
    except (OSError, ValueError):
        pass
    return False


@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int
    name: str


def sandbox_user(name: str) -> SandboxUser | None:
    """The user scripts run as, or None when the agent cannot switch users (documented limit)."""
    if not can_switch_user():
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        log.warning("sandbox user %r does not exist: scripts would run as the agent's user", name)
        return None
    if entry.pw_uid == os.geteuid():
        return None
    return SandboxUser(entry.pw_uid, entry.pw_gid, name)


def job_user(config, slot: int) -> SandboxUser | None:
    """The identity one job's script runs as: a uid of its own per GPU slot when ``sandbox_uid_base`` is set
    (one job per GPU at a time, so no two running jobs share it), else the shared ``sandbox_user``."""
    if config.sandbox_uid_base and can_switch_user():
        uid = int(config.sandbox_uid_base) + int(slot)
        return SandboxUser(uid, uid, f"uid{uid}")
    return sandbox_user(config.sandbox_user)


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(entry))
                        break
        except (OSError, ValueError):
            continue
    return found


def kill_everything_of(uid: int, rounds: int = 20) -> int:
    """SIGKILL every process running as ``uid`` (repeated: one may fork while we kill); returns how many."""
    if uid == os.geteuid() or uid == 0:
        raise ValueError("refusing to kill the agent's own user or root")
    killed = 0
    for _ in range(rounds):
        victims = processes_of(uid)
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, 9)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
    return killed


_runtimes: dict[tuple[str, str], SandboxRuntime] = {}
_runtimes_lock = threading.Lock()


def runtime_for(user: SandboxUser | None, config) -> SandboxRuntime:
    """The interpreter scripts run with, settled once per agent process (every slot's uid is an equally
    unprivileged stranger to the agent's files, so what one can reach, all can)."""
    if user is None:
        return SandboxRuntime(python=config.sandbox_python or sys.executable)
    key = (config.sandbox_python, config.sandbox_runtime_dir or sandbox_runtime.default_runtime_dir())
    with _runtimes_lock:
        if key not in _runtimes:
            _runtimes[key] = sandbox_runtime.prepare(user, *key)
        return _runtimes[key]


_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
try:  # resolved before any fork: the child only makes the calls
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _drop_privileges() -> None:
    """An agent given CAP_SETUID by systemd (ambient) must not pass it on: clear the ambient set so the
    script's exec starts with no capabilities, and forbid gaining any through setuid binaries (sudo, su)."""
    if _prctl is not None:
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


@dataclass
class Limits:
    time_limit_s: float
    memory_mb: int | None  # None: no address-space limit (CUDA reserves huge virtual ranges)
    max_files: int
    max_processes: int | None
    max_file_mb: int

    def apply(self) -> None:
        """Runs in the child between fork and exec (after the user switch): plain system calls only."""
        _drop_privileges()
        cpu = int(self.time_limit_s) + 30
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_files, self.max_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.memory_mb is not None:
            resource.setrlimit(resource.RLIMIT_AS, (self.memory_mb * 1024 * 1024,) * 2)
        if self.max_processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.max_processes, self.max_processes))


@dataclass
class SandboxPlan:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    preexec_fn: Callable[[], None] | None
    user: SandboxUser | None
    kind: str  # docker | restricted
    outputs: Path
    cleanup: list[list[str]] = field(default_factory=list)
    dedicated_uid: bool = False  # the job's uid is its own: everything running as it belongs to this job


def scrubbed_environment(visible_devices: str, home: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": os.path.join(home, "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for key, value in os.environ.items():
        if key.startswith(ENV_PASSTHROUGH_PREFIXES):
            env[key] = value
    env["CUDA_VISIBLE_DEVICES"] = visible_devices
    return env


def make_workspace(root: str | None, user: SandboxUser | None, script: bytes) -> Path:
    """A fresh directory only the sandbox user can enter, holding the script and an empty outputs/."""
    workspace = Path(tempfile.mkdtemp(prefix="depu-job-", dir=root))
    (workspace / OUTPUTS_DIR).mkdir()
    (workspace / "tmp").mkdir()
    (workspace / SCRIPT_NAME).write_bytes(script)
    for path in (workspace, workspace / OUTPUTS_DIR, workspace / "tmp", workspace / SCRIPT_NAME):
        if user is not None:
            os.chown(path, user.uid, user.gid)
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return workspace


def plan_script(
    *,
    job_id: str,
    script: bytes,
    gpu_index: int,
    on_cpu: bool,
    time_limit_s: float,
    config,
    use_docker: bool | None = None,
) -> SandboxPlan:
    use_docker = uses_docker(config) if use_docker is None else use_docker
    if use_docker:
        return _docker_plan(job_id, script, gpu_index, on_cpu, config)
    user = job_user(config, gpu_index)
    runtime = runtime_for(user, config)
    workspace = make_workspace(config.sandbox_workspace_dir or None, user, script)
    env = scrubbed_environment("" if on_cpu else str(gpu_index), str(workspace))
    for key, value in runtime.environment().items():
        env[key] = os.pathsep.join(part for part in (value, env.get(key)) if part)
    limits = Limits(
        time_limit_s=time_limit_s,
        memory_mb=config.script_memory_mb if on_cpu else None,
        max_files=config.script_max_files,
        max_processes=config.script_max_processes if user is not None else None,
        max_file_mb=config.script_max_file_mb,
    )
    return SandboxPlan(
        argv=[runtime.python, "-s", SCRIPT_NAME],
        env=env,
        cwd=str(workspace),
        preexec_fn=limits.apply,
        user=user,
        kind="restricted",
        outputs=workspace / OUTPUTS_DIR,
        dedicated_uid=bool(config.sandbox_uid_base) and user is not None,
    )


def uses_docker(config) -> bool:
    return config.docker == "always" or (config.docker == "auto" and docker_available())


def self_check(config) -> str | None:
    """Run one real script through the restricted sandbox, exactly as a job would: None when it works, else
    why not. An agent that cannot run scripts must say so at start-up and take no work, rather than fail every
    job it claims. (Docker mode is not checked here: its image is the provider's choice.)"""
    if uses_docker(config):
        return None
    needs_torch = importlib.util.find_spec("torch") is not None
    source = ("import torch\n" if needs_torch else "") + (
        f"open({OUTPUTS_DIR!r} + '/self-check.txt', 'w').write('ok')\n")
    try:
        plan = plan_script(job_id="self-check", script=source.encode(), gpu_index=0, on_cpu=True,
                           time_limit_s=120, config=config, use_docker=False)
    except SandboxUnusable as error:
        return str(error)
    except OSError as error:
        return f"sandbox could not start: cannot create a workspace ({error.strerror or type(error).__name__})"
    try:
        done = subprocess.run(
            plan.argv, env=plan.env, cwd=plan.cwd, preexec_fn=plan.preexec_fn, capture_output=True, timeout=180,
            **({"user": plan.user.uid, "group": plan.user.gid, "extra_groups": []} if plan.user else {}),
        )
        if done.returncode != 0:
            last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
            return f"the sandbox self-check script exited with status {done.returncode}: {last[:300]}"
        if [path.name for path in collect_outputs(plan, 1024)] != ["self-check.txt"]:
            return "the sandbox self-check script could not write its outputs"
    except PermissionError:
        return f"the sandbox user cannot execute {plan.argv[0]}: permission denied"
    except (OSError, subprocess.SubprocessError) as error:
        return f"sandbox could not start: {type(error).__name__}: {error}"[:400]
    finally:
        remove_workspace(plan)
    return None


def _docker_plan(job_id: str, script: bytes, gpu_index: int, on_cpu: bool, config) -> SandboxPlan:
    workspace = make_workspace(None, None, script)
    os.chmod(workspace, 0o777)  # the container's user id is not the agent's
    os.chmod(workspace / OUTPUTS_DIR, 0o777)
    os.chmod(workspace / SCRIPT_NAME, 0o644)
    container = f"depu-job-{job_id}"[:60]
    argv = [
        "docker", "run", "--rm", "--name", container,
        "--network", "none",
        "--memory", f"{config.script_memory_mb}m",
        "--pids-limit", str(config.script_max_processes),
        "--ulimit", f"nofile={config.script_max_files}:{config.script_max_files}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--user", "65534:65534",
        "-e", "PYTHONUNBUFFERED=1", "-e", "HOME=/work",
        "-v", f"{workspace}:/work", "-w", "/work",
    ]
    if not on_cpu:
        argv += ["--gpus", f"device={gpu_index}"]
    argv += [config.docker_image, "python", SCRIPT_NAME]
    return SandboxPlan(
        argv=argv,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=str(workspace),
        preexec_fn=None,
        user=None,
        kind="docker",
        outputs=workspace / OUTPUTS_DIR,
        cleanup=[["docker", "rm", "-f", container]],
    )


def collect_outputs(plan: SandboxPlan, max_total_bytes: int) -> list[Path]:
    """Regular files the script wrote to outputs/: never a symlink or a hard link to something else (which
    could point at the token file), never more than ``max_total_bytes`` together."""
    chosen, total = [], 0
    if not plan.outputs.is_dir():
        return chosen
    for path in sorted(plan.outputs.iterdir()):
        info = os.lstat(path)
        if not path.is_file() or path.is_symlink() or info.st_nlink != 1:
            continue
        if plan.user is not None and info.st_uid != plan.user.uid:
            continue
        if total + info.st_size > max_total_bytes:
            break
        total += info.st_size
        chosen.append(path)
    return chosen


def remove_workspace(plan: SandboxPlan) -> None:
    """End of a job: nothing it started may outlive it (a process that left the group with setsid is still
    found by its uid), then its files go."""
    if plan.dedicated_uid and plan.user is not None:
        kill_everything_of(plan.user.uid)
    for command in plan.cleanup:
        try:
            subprocess.run(command, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("cleanup %s failed: %s", command[:3], type(exc).__name__)
    shutil.rmtree(plan.cwd, ignore_errors=True)
