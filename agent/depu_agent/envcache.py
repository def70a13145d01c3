"""The Python environments job specs run in: one per requirements.txt, built once and kept by its hash.

A job's code has no network, so its packages are installed before it starts, by the agent, in the job's setup
phase (not billed). Each environment is a small virtual environment over the sandbox runtime (the interpreter
scripts already run with, torch included)::

    <env_cache_dir>/<hash>/pyvenv.cfg      home = the runtime's base interpreter
                          bin/python      a link to it
                          lib/pythonX.Y/site-packages/
                              _depu_runtime.pth   the runtime's own site-packages, after the job's packages
                          .depu-ready     written last: an environment without it is rebuilt

``<hash>`` is what the cloud computes from the same requirements (depu.jobs.spec.env_hash); the agent
reports the ready ones in its heartbeat and the matcher sends it jobs that need them, whose setup is then
instant. Concurrent builds of one hash wait for each other (a lock file), and environments are built where
they stay (entry-point scripts name their real path).

What may be installed is the provider's choice, never the renter's: each line must be a plain name with
optional extras and versions (the cloud checks, and so does the agent: a URL, a path, ``-e`` or a pip option
is refused), packages come only from the provider's ``package_find_links`` and/or ``package_index_url``
(``--no-index`` otherwise), pip runs ``--isolated`` with no config file, and only wheels are accepted
(``--only-binary :all:``): installing a wheel copies files, it runs none of the package's code, so a
requirement cannot run anything on the agent during setup. Its code runs later, in the job's sandbox.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import sandbox_runtime
from .sandbox_runtime import SandboxRuntime

log = logging.getLogger(__name__)

READY = ".depu-ready"
PTH_NAME = "_depu_runtime.pth"
MAX_REQUIREMENTS = 100
# the same grammar as depu.jobs.spec.REQUIREMENT (tests/test_agent_envcache.py holds them equal)
REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?)"
    r"(?P<extras>\s*\[[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\])?"
    r"(?P<spec>\s*(?:===?|>=|<=|~=|!=|<|>)\s*[A-Za-z0-9.*+!_-]+(?:\s*,\s*(?:===?|>=|<=|~=|!=|<|>)\s*[A-Za-z0-9.*+!_-]+)*)?$"
)
_DESCRIBE = """
import json, os, site, sys
base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
print(json.dumps({"base": base, "version": "%d.%d" % sys.version_info[:2],
                  "site": [p for p in site.getsitepackages() if os.path.isdir(p)]}))
"""


class SetupFailed(RuntimeError):
    """The job's environment could not be made; the message says why, in the renter's terms."""


def requirement_lines(lines: list[str] | str) -> list[str]:
    """Normalised requirements (as the cloud normalises them), or SetupFailed for anything but plain ones."""
    raw = lines.splitlines() if isinstance(lines, str) else list(lines)
    clean: list[str] = []
    for line in raw:
        line = str(line).split("#", 1)[0].strip()
        if not line:
            continue
        found = REQUIREMENT.match(line)
        if not found:
            raise SetupFailed(f"requirement {line[:80]!r} refused: only package names with optional versions")
        clean.append(re.sub(r"\s+", "", found.group("name").lower().replace("_", "-") + (found.group("extras") or "")
                            + (found.group("spec") or "")))
    if len(clean) > MAX_REQUIREMENTS:
        raise SetupFailed(f"at most {MAX_REQUIREMENTS} requirements")
    return sorted(dict.fromkeys(clean))


def env_hash(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class PreparedEnv:
    """A ready environment: its folder (bound read-only into the sandbox), its interpreter, and whether it
    was there already (a cache hit)."""

    path: str
    python: str
    hash: str
    hit: bool
    seconds: float


def cache_dir(config) -> Path:
    base = config.sandbox_runtime_dir or sandbox_runtime.default_runtime_dir()
    return Path(config.env_cache_dir or os.path.join(base, "envs"))


def ready_hashes(config) -> list[str]:
    """The environments this machine holds built (what the heartbeat reports)."""
    root = cache_dir(config)
    try:
        return sorted(entry.name for entry in os.scandir(root)
                      if re.fullmatch(r"[0-9a-f]{24}", entry.name) and os.path.exists(os.path.join(entry.path, READY)))
    except OSError:
        return []


def ensure(config, runtime: SandboxRuntime, lines: list[str], on_line: Callable[[str], None]) -> PreparedEnv:
    """The environment for ``lines`` (normalised requirements), built now if this machine has none yet."""
    started = time.monotonic()
    digest = env_hash(lines)
    root = cache_dir(config)
    _private_directory(root)
    final = root / digest
    lock_fd = os.open(root / f".{digest}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if (final / READY).exists():
            os.utime(final)
            return PreparedEnv(str(final), str(final / "bin" / "python"), digest, True,
                               round(time.monotonic() - started, 3))
        shutil.rmtree(final, ignore_errors=True)  # a build that died half-way
        try:
            _build(config, runtime, lines, final, on_line)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
    finally:
        os.close(lock_fd)
    _prune(root, config.max_cached_envs, keep=final)
    return PreparedEnv(str(final), str(final / "bin" / "python"), digest, False, round(time.monotonic() - started, 3))


def _build(config, runtime: SandboxRuntime, lines: list[str], final: Path, on_line: Callable[[str], None]) -> None:
    facts = _describe(runtime)
    site_packages = final / "lib" / f"python{facts['version']}" / "site-packages"
    site_packages.mkdir(parents=True, mode=0o755)
    (final / "bin").mkdir(mode=0o755)
    (final / "pyvenv.cfg").write_text(f"home = {os.path.dirname(facts['base'])}\n"
                                      f"include-system-site-packages = false\nversion = {facts['version']}\n",
                                      encoding="utf-8")
    os.symlink(facts["base"], final / "bin" / "python")
    (site_packages / PTH_NAME).write_text("".join(f"{path}\n" for path in facts["site"]), encoding="utf-8")
    requirements = final / "requirements.txt"
    requirements.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    if lines:
        _install(config, runtime, final, requirements, on_line)
    for directory, _dirs, files in os.walk(final):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                os.chmod(path, (stat.S_IMODE(info.st_mode) | 0o444) & ~0o022)
    (final / READY).write_text(json.dumps({"requirements": lines, "built_at": int(time.time())}), encoding="utf-8")


def pip_argv(config, python: str, requirements: Path) -> list[str]:
    if not (config.package_find_links or config.package_index_url):
        raise SetupFailed("this provider offers no package source (package_find_links / package_index_url), so "
                          "requirements cannot be installed here")
    argv = [sys.executable, "-m", "pip", "--python", python, "install", "--isolated", "--no-input",
            "--disable-pip-version-check", "--no-cache-dir", "--only-binary=:all:", "--no-warn-script-location",
            "--progress-bar", "off"]
    argv += ["--index-url", config.package_index_url] if config.package_index_url else ["--no-index"]
    if config.package_find_links:
        argv += ["--find-links", config.package_find_links]
    return argv + ["-r", str(requirements)]


def _install(config, runtime: SandboxRuntime, final: Path, requirements: Path, on_line: Callable[[str], None]) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PIP_CONFIG_FILE": os.devnull, "LANG": "C.UTF-8",
           "HOME": str(final), **runtime.environment()}
    argv = pip_argv(config, str(final / "bin" / "python"), requirements)
    tail: list[str] = []
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=str(final), start_new_session=True)
    except OSError as error:
        raise SetupFailed(f"cannot run pip: {error.strerror or error}") from error
    deadline = time.monotonic() + config.setup_timeout_seconds
    try:
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), True)
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()[:500]
            if line:
                tail = (tail + [line])[-5:]
                on_line(f"[setup] {line}")
            if time.monotonic() > deadline:
                break
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
            raise SetupFailed(f"installing the requirements took longer than {config.setup_timeout_seconds:g} s")
    if process.returncode != 0:
        why = next((line for line in reversed(tail) if line.startswith("ERROR")), tail[-1] if tail else "no output")
        raise SetupFailed(f"installing the requirements failed: {why[:300]}")


def _describe(runtime: SandboxRuntime) -> dict:
    try:
        done = subprocess.run([runtime.python, "-s", "-c", _DESCRIBE], capture_output=True, timeout=60, check=True,
                              env={"PATH": "/usr/bin:/bin", **runtime.environment()})
        return json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise SetupFailed(f"cannot ask the sandbox interpreter about itself ({type(error).__name__})") from error


def _private_directory(root: Path) -> None:
    """Agent-owned, readable by the sandbox users, writable by nobody else (what jobs execute lives here)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SetupFailed(f"the environment cache {root} must be a directory of the agent's, writable by nobody "
                          "else")
    os.chmod(root, 0o755)


def _prune(root: Path, keep_count: int, keep: Path) -> None:
    """The least recently used environments beyond ``keep_count`` go (none used within the hour)."""
    try:
        ready = [entry for entry in root.iterdir() if (entry / READY).exists() and entry != keep]
        ready.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
    except OSError:
        return
    for entry in ready[max(0, keep_count - 1):]:
        try:
            if entry.stat().st_mtime < time.time() - 3600:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue
