"""How a renter's own Python file runs on a provider's machine without reaching the agent's credentials.

Two ways, best first:
- Docker, when ``docker info`` works: the script runs in a container with only its GPU (``--gpus device=N``),
  no network, a memory and process cap, and only its own working directory mounted.
- Otherwise bubblewrap (``bwrap``): the agent switches to the job's sandbox uid and execs bwrap, which puts the
  script in new user, PID, network, IPC, UTS, cgroup and mount namespaces (``--die-with-parent``, no nested
  user namespaces). Its file system is an empty tmpfs holding read-only binds of /usr (and the /lib links), a
  few files of /etc, the interpreter's folders, its slot's GPU device nodes, a fresh /proc of its own PID
  namespace, a small /tmp, and its workspace read-write: never /var/lib/depu-agent, the agent's config or
  token, another job's workspace or the host's processes. It has no network at all (only its own loopback);
  a job spec that asked for egress, on a machine whose provider allows it, gets one way out: the agent's
  filtering proxy (``depu_agent.egress``), through a unix socket bound into the sandbox read-only, still in a
  network namespace of its own with no route anywhere.
  Around that: an environment holding only PATH, locale and CUDA variables, resource limits (address space,
  open files, processes, file size, CPU seconds, no core dumps), no capabilities, no-new-privileges.
  When the script's first process exits, bwrap exits and its PID namespace's init dies with it, and the
  kernel kills every process left in the namespace: nothing the job started (setsid, double fork, a
  fork-and-exit loop) survives it. Outputs are collected only once the namespace is gone (``SandboxPlan.ended``).
- Without bwrap, scripts are refused (the start-up self-check says "bubblewrap (bwrap) is not installed")
  unless ``allow_unisolated_scripts`` asks for the old restricted subprocess: the above without namespaces.

With ``sandbox_uid_base`` set (install.sh does), each GPU slot's job runs under a uid of its own (concurrent
jobs cannot even signal each other); without it all jobs share ``sandbox_user`` and the namespaces alone keep
them apart.

Known limit: an agent that runs as an ordinary user without CAP_SETUID runs scripts (and bwrap) as itself;
the token file is outside the sandbox's file system, but the separation then rests on the namespaces alone.
install.sh avoids that by giving the service CAP_SETUID/CAP_SETGID and a separate sandbox uid range.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import pwd
import resource
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import egress, sandbox_runtime
from .sandbox_runtime import SandboxRuntime, SandboxUnusable

log = logging.getLogger(__name__)

CAP_SETUID_BIT = 7
ENV_PASSTHROUGH_PREFIXES = ("CUDA_", "NVIDIA_", "LD_LIBRARY_PATH")
OUTPUTS_DIR = "outputs"
INPUTS_DIR = "inputs"
SCRIPT_NAME = "script.py"
BWRAP_MISSING = ("bubblewrap (bwrap) is not installed: renters' scripts cannot be isolated (apt-get install "
                 "bubblewrap, or set allow_unisolated_scripts to run them without namespaces)")
SANDBOX_END_SECONDS = 10.0  # from bwrap's exit to the last process of its namespace gone (milliseconds, usually)
SANDBOX_TMP_BYTES = 256 * 1024 * 1024
# what of /etc a Python program needs to start and find its libraries (nothing that names the host's users)
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
             "/etc/nsswitch.conf", "/etc/ssl/certs")
SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
CONTAINER_UID = 65534  # Docker mode without per-slot uids: nobody


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
        python = config.sandbox_python or sys.executable
        with _runtimes_lock:
            if (python, "") not in _runtimes:
                source = sandbox_runtime.describe(python)
                _runtimes[(python, "")] = SandboxRuntime(python=source.executable,
                                                        roots=sandbox_runtime.roots_of(source))
            return _runtimes[(python, "")]
    key = (config.sandbox_python, config.sandbox_runtime_dir or sandbox_runtime.default_runtime_dir())
    with _runtimes_lock:
        if key not in _runtimes:
            _runtimes[key] = sandbox_runtime.prepare(user, *key)
        return _runtimes[key]


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def gpu_device_nodes(gpu_index: int) -> list[str]:
    """The device nodes a job on GPU ``gpu_index`` needs: its own /dev/nvidia<minor> (NVML's minor number, which
    need not equal the index) and the shared control nodes, those present on this machine."""
    minor = gpu_index
    try:
        from .gpus import _nvml

        nvml = _nvml()
        if nvml is not None:
            minor = int(nvml.nvmlDeviceGetMinorNumber(nvml.nvmlDeviceGetHandleByIndex(gpu_index)))
    except Exception:  # no NVML or an old driver: the index is the usual minor number
        pass
    names = [f"/dev/nvidia{minor}", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
             "/dev/nvidia-modeset"]
    return [name for name in names if os.path.exists(name)]


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
    owner_uid: int | None = None  # whom the outputs must belong to (the script's uid, inside or outside)
    info_fds: tuple[int, int] | None = None  # bwrap --info-fd pipe (read, write) until the sandbox starts
    init_pidfd: int | None = None  # a pidfd on the PID namespace's init, once bwrap has said which it is
    started: bool = False

    @property
    def supervised(self) -> bool:
        return self.kind == "bwrap"

    def start(self, **child_options):
        """Start the script (a ``runner.ChildProcess`` with ``child_options``: on_line, output caps) exactly as
        planned, and learn which process is its PID namespace's init while bwrap still holds it."""
        from .runner import ChildProcess

        child = ChildProcess(
            self.argv, env=self.env, cwd=self.cwd, preexec_fn=self.preexec_fn,
            user=self.user.uid if self.user else None, group=self.user.gid if self.user else None,
            pass_fds=(self.info_fds[1],) if self.info_fds else (), supervised=self.supervised, **child_options)
        try:
            child.start()
            self.started = True
        finally:
            if self.info_fds:
                os.close(self.info_fds[1])
        if self.info_fds:
            self._watch_init()
        return child

    def _watch_init(self) -> None:
        read_fd, self.info_fds = self.info_fds[0], None
        data = b""
        with os.fdopen(read_fd, "rb") as stream:  # bwrap writes it right after clone and closes it
            data = stream.read(64 * 1024)
        try:
            init = int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            return  # bwrap failed before it made the namespace: nothing of the job runs
        try:
            self.init_pidfd = os.pidfd_open(init)
        except ProcessLookupError:
            return  # already gone: so is the namespace

    def ended(self, timeout_s: float = SANDBOX_END_SECONDS) -> bool:
        """True once no process of this job is left: for bwrap, when its PID namespace's init has exited (the
        kernel kills and reaps every other process of a namespace before its init's exit completes)."""
        if self.init_pidfd is not None:
            waiter = select.poll()  # (not select(): a descriptor number may be above 1023)
            waiter.register(self.init_pidfd, select.POLLIN)
            if not waiter.poll(timeout_s * 1000):
                return False
            os.close(self.init_pidfd)
            self.init_pidfd = None
        if self.dedicated_uid and self.user is not None:
            deadline = time.monotonic() + timeout_s
            while processes_of(self.user.uid):
                kill_everything_of(self.user.uid)
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True

    def close(self) -> None:
        for fd in (*(self.info_fds or ()), self.init_pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.info_fds = self.init_pidfd = None


class SandboxNotEnded(RuntimeError):
    """A job's processes were still there after its end: its outputs are not collected."""


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


def make_workspace(root: str | None, user: SandboxUser | None, script: bytes, *, uid: int | None = None,
                   gid: int | None = None, with_inputs: bool = False) -> Path:
    """A fresh directory only the script's uid can enter, holding the script and an empty outputs/ (and, for
    a job spec, inputs/: its input files are placed there by the agent before its code starts)."""
    workspace = Path(tempfile.mkdtemp(prefix="depu-job-", dir=root))
    folders = [OUTPUTS_DIR, "tmp"] + ([INPUTS_DIR] if with_inputs else [])
    for folder in folders:
        (workspace / folder).mkdir()
    (workspace / SCRIPT_NAME).write_bytes(script)
    if user is not None:
        uid, gid = user.uid, user.gid
    for path in (workspace, *(workspace / folder for folder in folders), workspace / SCRIPT_NAME):
        if uid is not None:
            os.chown(path, uid, gid)
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return workspace


def _protected_paths(config) -> list[str]:
    token_dir = os.path.dirname(os.path.abspath(config.agent_token_file))
    return [os.path.realpath(path) for path in
            (config.agent_token_file, token_dir, config.work_dir, config.config_path or token_dir) if path]


def bwrap_argv(config, runtime: SandboxRuntime, workspace: Path, gpu_index: int, on_cpu: bool,
               info_fd: int, *, program: list[str] | None = None, gpu_indices: list[int] | None = None,
               extra_roots: tuple[str, ...] = (), egress_folder: str | None = None) -> list[str]:
    """bubblewrap's command line: new namespaces, an empty root, and only what the interpreter needs (and,
    for an egress job, its proxy's folder, read-only: the socket and the bridge)."""
    binary = bwrap_path()
    if binary is None:
        raise SandboxUnusable(BWRAP_MISSING)
    argv = [binary, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--hostname", "depu-sandbox", "--info-fd", str(info_fd)]
    bound: list[str] = []
    for tree in SYSTEM_TREES:
        if os.path.islink(tree):
            argv += ["--symlink", os.readlink(tree), tree]
        elif os.path.isdir(tree):
            argv += ["--ro-bind", tree, tree]
            bound.append(tree)
    for path in ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(SANDBOX_TMP_BYTES),
             "--tmpfs", "/tmp"]
    protected = _protected_paths(config)
    library_dirs = [part for part in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if part]
    for root in (*runtime.roots, *extra_roots, *library_dirs):
        if not os.path.isabs(root):
            continue
        real = os.path.realpath(root)
        if any(real == done or real.startswith(done.rstrip("/") + "/") for done in bound):
            continue
        if any(secret == real or secret.startswith(real.rstrip("/") + "/") for secret in protected):
            raise SandboxUnusable(f"the interpreter's folder {root} also holds the agent's token, config or work "
                                  "folder: install the agent's Python elsewhere (install.sh uses /opt/depu-agent)")
        argv += ["--ro-bind-try", root, root]
        bound.append(real)
    if not on_cpu:
        nodes = dict.fromkeys(node for index in (gpu_indices or [gpu_index]) for node in gpu_device_nodes(index))
        for node in nodes:
            argv += ["--dev-bind", node, node]
        argv += ["--ro-bind-try", "/sys", "/sys"]  # the driver's libraries read the PCI topology (as under Docker)
    if egress_folder:
        argv += ["--ro-bind", egress_folder, egress.SANDBOX_FOLDER]
    argv += ["--bind", str(workspace), str(workspace), "--chdir", str(workspace)]
    return argv + ["--", *(program or [runtime.python, "-s", SCRIPT_NAME])]


def plan_script(
    *,
    job_id: str,
    script: bytes,
    gpu_index: int,
    on_cpu: bool,
    time_limit_s: float,
    config,
    use_docker: bool | None = None,
    gpu_uuid: str | None = None,
    job: JobProgram | None = None,
) -> SandboxPlan:
    """How a script (or, with ``job``, a job spec's command or script in its environment, on all its GPUs)
    runs in the sandbox."""
    use_docker = uses_docker(config) if use_docker is None else use_docker
    if use_docker:
        if job is not None:
            raise SandboxUnusable("job specs run in the bubblewrap sandbox; this agent is set to use Docker")
        return _docker_plan(job_id, script, gpu_index, on_cpu, config)
    isolated = bwrap_path() is not None or not config.allow_unisolated_scripts
    if isolated and bwrap_path() is None:
        raise SandboxUnusable(BWRAP_MISSING)
    if job is not None and job.egress_folder and not isolated:
        raise SandboxUnusable("egress needs the bubblewrap sandbox (its own network namespace)")
    user = job_user(config, gpu_index)
    runtime = runtime_for(user, config)
    workspace = make_workspace(config.sandbox_workspace_dir or None, user, script, with_inputs=job is not None)
    # inside bwrap the script sees its GPU's device node only, so the index would be wrong: the uuid is not
    env = scrubbed_environment("" if on_cpu else (gpu_uuid or str(gpu_index)), str(workspace))
    for key, value in runtime.environment().items():
        env[key] = os.pathsep.join(part for part in (value, env.get(key)) if part)
    program, extra_roots, indices = None, (), None
    if job is not None:
        program, extra_roots, indices = job.program(runtime), job.roots, job.gpu_indices
        env.update(job.environment(env))
    limits = Limits(
        time_limit_s=time_limit_s,
        memory_mb=config.script_memory_mb if on_cpu else None,
        max_files=config.script_max_files,
        max_processes=config.script_max_processes if user is not None else None,
        max_file_mb=config.script_max_file_mb,
    )
    argv, info_fds = program or [runtime.python, "-s", SCRIPT_NAME], None
    if isolated:
        info_fds = os.pipe()
        try:
            argv = bwrap_argv(config, runtime, workspace, gpu_index, on_cpu, info_fds[1], program=program,
                              gpu_indices=indices, extra_roots=extra_roots,
                              egress_folder=job.egress_folder if job is not None else None)
        except SandboxUnusable:
            for fd in info_fds:
                os.close(fd)
            shutil.rmtree(workspace, ignore_errors=True)
            raise
    return SandboxPlan(
        argv=argv,
        env=env,
        cwd=str(workspace),
        preexec_fn=limits.apply,
        user=user,
        kind="bwrap" if isolated else "restricted",
        outputs=workspace / OUTPUTS_DIR,
        dedicated_uid=bool(config.sandbox_uid_base) and user is not None,
        owner_uid=user.uid if user is not None else os.geteuid(),
        info_fds=info_fds,
    )


@dataclass(frozen=True)
class JobProgram:
    """What a job spec adds to a script's sandbox: a shell command or the script, run by its environment's
    interpreter (on PATH as ``python``), its non-secret variables, and every GPU it was given (each one's
    device node bound, all of them in CUDA_VISIBLE_DEVICES)."""

    command: str | None
    gpu_indices: list[int]
    visible_devices: str
    variables: dict[str, str]
    python: str | None = None  # the environment's interpreter (None: the runtime's)
    env_root: str | None = None  # the environment's folder, bound read-only
    egress_folder: str | None = None  # the job's egress proxy's folder (None: no network at all)

    @property
    def roots(self) -> tuple[str, ...]:
        return (self.env_root,) if self.env_root else ()

    def program(self, runtime: SandboxRuntime) -> list[str]:
        code = ["/bin/sh", "-c", self.command] if self.command else [self.python or runtime.python, "-s", SCRIPT_NAME]
        return egress.bridge_program(runtime.python, code) if self.egress_folder else code

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = {name: value for name, value in self.variables.items()
               if name not in base and not name.startswith(("LD_", "PYTHON", "CUDA_", "NVIDIA_", "DEPU_"))}
        bin_dir = os.path.dirname(self.python) if self.python else None
        env["PATH"] = os.pathsep.join(part for part in (bin_dir, base.get("PATH")) if part)
        env["CUDA_VISIBLE_DEVICES"] = self.visible_devices
        env["DEPU_JOB_SLOTS"] = ",".join(str(index) for index in self.gpu_indices)
        if self.egress_folder:
            env.update(egress.sandbox_environment())
        return env


def uses_docker(config) -> bool:
    return config.docker == "always" or (config.docker == "auto" and docker_available())


def self_check(config) -> str | None:
    """Run one real script through the sandbox, exactly as a job would: None when it works, else why not. An
    agent that cannot run scripts must say so at start-up and take no work, rather than fail every job it
    claims. (Docker mode is not checked here: its image is the provider's choice.)"""
    if uses_docker(config):
        return None
    if bwrap_path() is None:
        if not config.allow_unisolated_scripts:
            return BWRAP_MISSING
        log.warning("bubblewrap (bwrap) is not installed and allow_unisolated_scripts is set: renters' scripts "
                    "share this machine's network, processes and file system view")
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
    from .runner import StopRequest

    lines: list[str] = []
    try:
        child = plan.start(on_line=lines.append)
        outcome = child.wait(180, StopRequest(), 1)
        if outcome.returncode != 0:
            last = (outcome.stderr_tail or ["no output"])[-1]
            if plan.kind == "bwrap" and last.startswith("bwrap:"):
                return f"bubblewrap cannot make the sandbox here ({last[:300]})"
            return f"the sandbox self-check script exited with status {outcome.returncode}: {last[:300]}"
        with tempfile.TemporaryDirectory() as kept:
            if [name for name, _path in collect_outputs(plan, Path(kept), 1024)] != ["self-check.txt"]:
                return "the sandbox self-check script could not write its outputs"
    except PermissionError:
        return f"the sandbox user cannot execute {plan.argv[0]}: permission denied"
    except (OSError, subprocess.SubprocessError, SandboxNotEnded) as error:
        return f"sandbox could not start: {type(error).__name__}: {error}"[:400]
    finally:
        remove_workspace(plan)
    return None


def _docker_plan(job_id: str, script: bytes, gpu_index: int, on_cpu: bool, config) -> SandboxPlan:
    """The container runs as the slot's uid (or nobody), which owns its workspace (mode 700): never a
    world-writable folder whose outputs/ another local user, or the container, could swap for a link. The
    workspace lives in the agent's work folder, which the Docker daemon sees (a systemd unit's PrivateTmp is
    invisible to it)."""
    user = job_user(config, gpu_index)
    uid, gid = (user.uid, user.gid) if user is not None else (CONTAINER_UID, CONTAINER_UID)
    root = config.sandbox_workspace_dir or os.path.join(config.work_dir, "containers")
    os.makedirs(root, mode=0o711, exist_ok=True)
    workspace = make_workspace(root, None, script, uid=uid, gid=gid)
    container = f"depu-job-{job_id}"[:60]
    argv = [
        "docker", "run", "--rm", "--name", container,
        "--network", "none",
        "--memory", f"{config.script_memory_mb}m",
        "--pids-limit", str(config.script_max_processes),
        "--ulimit", f"nofile={config.script_max_files}:{config.script_max_files}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--user", f"{uid}:{gid}",
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
        owner_uid=uid,
    )


_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
COPY_CHUNK = 1 << 20


def collect_outputs(plan: SandboxPlan, destination: Path, max_total_bytes: int,
                    max_files: int = 64, left_out: list[str] | None = None) -> list[tuple[str, Path]]:
    """Copy the regular files the script wrote to outputs/ into ``destination`` (the agent's own folder) and
    return (name, copy) pairs. Only once every process of the job has gone (nothing can swap a file while it is
    read); every name is opened relative to the workspace's directory descriptor with O_NOFOLLOW, so a symlink
    (to the token file, or outputs/ itself swapped for a link to a folder) is never followed; a file must be
    regular, have one link (a hard link to someone else's file is refused) and belong to the script's uid; the
    bytes copied are those of the descriptor that was checked. At most ``max_files`` files and
    ``max_total_bytes`` together; ``left_out`` (when given) gets a line for each entry not collected and why."""
    skipped = left_out if left_out is not None else []
    if plan.started and not plan.ended():
        raise SandboxNotEnded("processes of the job were still running after it ended; outputs not collected")
    chosen: list[tuple[str, Path]] = []
    try:
        workspace_fd = os.open(plan.cwd, _OPEN_DIRECTORY)
    except OSError:
        return chosen
    try:
        outputs_fd = os.open(OUTPUTS_DIR, _OPEN_DIRECTORY, dir_fd=workspace_fd)
    except OSError:  # gone, or not a directory any more (a link to one is not followed)
        os.close(workspace_fd)
        return chosen
    total = 0
    try:
        for name in sorted(os.listdir(outputs_fd)):
            if len(chosen) >= max_files:
                skipped.append(f"{name}: more than {max_files} files")
                continue
            try:
                fd = os.open(name, _OPEN_FILE, dir_fd=outputs_fd)
            except OSError:  # a symlink (ELOOP), a fifo that would block, gone
                skipped.append(f"{name}: not a regular file")
                continue
            with os.fdopen(fd, "rb") as source:
                info = os.fstat(source.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                    skipped.append(f"{name}: not a regular file of the job's")
                    continue
                if plan.owner_uid is not None and info.st_uid != plan.owner_uid:
                    skipped.append(f"{name}: not a regular file of the job's")
                    continue
                if total + info.st_size > max_total_bytes:
                    skipped.append(f"{name}: over the job's output cap of {max_total_bytes} bytes")
                    continue
                target = destination / name
                copied = _copy_at_most(source, target, info.st_size)
                total += copied
                chosen.append((name, target))
    finally:
        os.close(outputs_fd)
        os.close(workspace_fd)
    return chosen


def _copy_at_most(source, target: Path, limit: int) -> int:
    """Copy at most ``limit`` bytes of an open file into a new file of the agent's (never through a link)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    copied = 0
    with os.fdopen(fd, "wb") as sink:
        while copied < limit:
            chunk = source.read(min(COPY_CHUNK, limit - copied))
            if not chunk:
                break
            sink.write(chunk)
            copied += len(chunk)
    return copied


def remove_workspace(plan: SandboxPlan) -> None:
    """End of a job: nothing it started may outlive it (bwrap's PID namespace is gone; without it, a process
    that left the group with setsid is still found by its uid), then its files go."""
    if plan.started:
        plan.ended()
    plan.close()
    if plan.dedicated_uid and plan.user is not None:
        kill_everything_of(plan.user.uid)
    for command in plan.cleanup:
        try:
            subprocess.run(command, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("cleanup %s failed: %s", command[:3], type(exc).__name__)
    shutil.rmtree(plan.cwd, ignore_errors=True)
