"""The interpreter and libraries a renter's script runs with, placed where the sandbox user can reach them.

A script runs as an unprivileged sandbox uid, so every directory above its interpreter, the standard library,
the virtual environment's packages and its workspace must be searchable by that uid. The agent's own
environment often is not: a checkout in a mode-700 folder (``mktemp -d``, root's home), or a base interpreter
under /root (pyenv). Rather than loosen permissions the provider chose, the agent first tries its interpreter
as it is and, when the sandbox user cannot use it, mirrors what a script needs into a directory that only the
agent can write and everybody can read::

    <runtime_dir>/<fingerprint>/base/  the base installation (only when the sandbox user cannot run it):
                                       bin/pythonX.Y, lib/libpython*, the standard library without its
                                       site-packages (a virtual environment never sees those)
    <runtime_dir>/<fingerprint>/venv/  pyvenv.cfg, bin/python, and the environment's site-packages

Files are hard links (no copy, the same bytes) where the file system allows, else copies. A file that others
could write is always copied, never linked, so a script can never write through a link into the agent's own
packages. The fingerprint covers where the sources are and what their top-level listings hold: installing or
upgrading a package gives a new mirror. Mirrors are built under a temporary name and renamed into place, so
agents starting together share one and never see half of one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 120
STALE_MIRROR_SECONDS = 7 * 24 * 3600
_DESCRIBE = """
import importlib.util, json, sys, sysconfig
paths = sysconfig.get_paths()
print(json.dumps({
    "executable": sys.executable,
    "base_executable": getattr(sys, "_base_executable", sys.executable),
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "version": "%d.%d" % sys.version_info[:2],
    "stdlib": paths["stdlib"],
    "platstdlib": paths["platstdlib"],
    "site_packages": sorted({paths["purelib"], paths["platlib"]}) if sys.prefix != sys.base_prefix else [],
    "libdir": sysconfig.get_config_var("LIBDIR") or "",
    "has_torch": importlib.util.find_spec("torch") is not None,
}))
"""


class SandboxUnusable(RuntimeError):
    """The sandbox user cannot run scripts on this machine; the message says why, in the provider's terms."""


@dataclass(frozen=True)
class Interpreter:
    """What the agent learnt about a Python by asking it (as the agent's own user)."""

    executable: str
    base_executable: str
    prefix: str
    base_prefix: str
    version: str
    stdlib: str
    platstdlib: str
    site_packages: tuple[str, ...]
    libdir: str
    has_torch: bool

    @property
    def is_venv(self) -> bool:
        return bool(self.site_packages)


@dataclass(frozen=True)
class SandboxRuntime:
    """The interpreter a job's script starts with, and the library path its base needs (mirrors only)."""

    python: str
    library_path: str | None = None
    mirror: str | None = None
    # The folders the interpreter reads (its prefixes, standard library, packages, or the mirror): what a
    # bubblewrap sandbox binds read-only, and nothing more of the agent's file system.
    roots: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        return {"LD_LIBRARY_PATH": self.library_path} if self.library_path else {}


def describe(python: str) -> Interpreter:
    try:
        done = subprocess.run([python, "-s", "-c", _DESCRIBE], capture_output=True, timeout=PROBE_TIMEOUT_SECONDS,
                              env={"PATH": "/usr/bin:/bin"}, check=True)
        facts = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise SandboxUnusable(f"cannot run the sandbox interpreter {python}: {_why(error)}") from error
    facts["site_packages"] = tuple(facts["site_packages"])
    return Interpreter(**facts)


def probe(user, python: str, *, imports: tuple[str, ...] = ("json",), environment: dict[str, str] | None = None) -> str | None:
    """None if ``user`` can start ``python`` and import ``imports``; else why not, for a provider to act on."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1", **(environment or {})}
    who = f"the sandbox user (uid {user.uid})"
    try:
        done = subprocess.run(
            [python, "-s", "-c", "import " + ", ".join(imports)], env=env, cwd="/", user=user.uid, group=user.gid,
            extra_groups=[], capture_output=True, timeout=PROBE_TIMEOUT_SECONDS,
        )
    except PermissionError:
        return f"{who} cannot execute {python}: permission denied"
    except FileNotFoundError:
        return f"{who} cannot execute {python}: not found"
    except (OSError, subprocess.SubprocessError) as error:
        return f"{who} cannot execute {python}: {_why(error)}"
    if done.returncode != 0:
        last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        return f"{who} cannot import {', '.join(imports)} with {python}: {last[:300]}"
    return None


def prepare(user, configured_python: str, runtime_dir: str) -> SandboxRuntime:
    """The runtime ``user`` can run scripts with: the interpreter itself when it can, else a mirror of it."""
    source = describe(configured_python or sys.executable)
    imports = ("json", "torch") if source.has_torch else ("json",)
    problem = probe(user, source.executable, imports=imports)
    if problem is None:
        return SandboxRuntime(python=source.executable, roots=roots_of(source))
    log.info("%s; mirroring the interpreter into %s", problem, runtime_dir)
    started = time.monotonic()
    runtime = _mirror(source, user, Path(runtime_dir))
    still = probe(user, runtime.python, imports=imports, environment=runtime.environment())
    if still is not None:
        raise SandboxUnusable(f"{problem}; the mirror in {runtime.mirror} did not help: {still}")
    log.info("scripts run with %s (mirror ready in %.1f s)", runtime.python, time.monotonic() - started)
    return runtime


def roots_of(source: Interpreter, *, base_only: bool = False) -> tuple[str, ...]:
    """Every folder ``source`` reads at start-up and import time, as given and resolved (a venv's folder may be a
    link, its python a link into the base installation)."""
    base = [source.base_prefix, source.stdlib, source.libdir, os.path.dirname(os.path.realpath(source.base_executable))]
    own = [] if base_only else [source.prefix, source.platstdlib, *source.site_packages,
                                os.path.dirname(os.path.realpath(source.executable))]
    found: list[str] = []
    for path in base + own:
        for variant in (path, os.path.realpath(path)):
            if variant and os.path.isdir(variant) and variant not in found:
                found.append(variant)
    return tuple(found)


def default_runtime_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"depu-sandbox-runtime-{os.geteuid()}")


# ---------------------------------------------------------------------------------------------- the mirror


def _mirror(source: Interpreter, user, root: Path) -> SandboxRuntime:
    _own_private_directory(root)
    base_usable = probe(user, source.base_executable) is None
    fingerprint = _fingerprint(source, base_usable)
    final = root / fingerprint
    if not final.is_dir():
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            _build(source, building, final, base_usable)
            os.chmod(building, 0o755)
            os.rename(building, final)
        except OSError as error:
            shutil.rmtree(building, ignore_errors=True)
            if not final.is_dir():  # a concurrent agent renaming its own copy first is fine
                raise SandboxUnusable(f"cannot build the sandbox runtime in {root}: {_why(error)}") from error
    os.utime(final)
    _remove_stale(root, keep=final)
    return _runtime_in(final, source, base_usable)


def _runtime_in(mirror: Path, source: Interpreter, base_usable: bool) -> SandboxRuntime:
    library_path = None if base_usable else str(mirror / "base" / "lib")
    roots = (str(mirror),) + (roots_of(source, base_only=True) if base_usable else ())
    if source.is_venv:
        return SandboxRuntime(str(mirror / "venv" / "bin" / "python"), library_path, str(mirror), roots)
    return SandboxRuntime(str(mirror / "base" / "bin" / f"python{source.version}"), library_path, str(mirror),
                          roots)


def _build(source: Interpreter, target: Path, final: Path, base_usable: bool) -> None:
    """Fill ``target``, which is renamed to ``final`` once complete (so paths written inside name ``final``)."""
    base_python = os.path.realpath(source.base_executable)
    if not base_usable:
        base = target / "base"
        _place_file(Path(base_python), base / "bin" / f"python{source.version}")
        libdir = Path(source.libdir)
        if libdir.is_dir():
            for library in libdir.glob("libpython*"):
                _place_file(library, base / "lib" / library.name)
        skip = {Path(source.stdlib) / "site-packages", Path(source.platstdlib) / "site-packages"}
        for stdlib in {source.stdlib, source.platstdlib}:
            _mirror_tree(Path(stdlib), base / os.path.relpath(stdlib, source.base_prefix), skip)
        base_python = str(final / "base" / "bin" / f"python{source.version}")
    if source.is_venv:
        venv = target / "venv"
        (venv / "bin").mkdir(parents=True, mode=0o755)
        (venv / "pyvenv.cfg").write_text(
            f"home = {os.path.dirname(base_python)}\ninclude-system-site-packages = false\n"
            f"version = {source.version}\n", encoding="utf-8")
        os.symlink(base_python, venv / "bin" / "python")
        for packages in source.site_packages:
            _mirror_tree(Path(packages), venv / os.path.relpath(packages, source.prefix), set())
    for directory, _dirs, _files in os.walk(target):
        os.chmod(directory, 0o755)


def _mirror_tree(source: Path, target: Path, skip: set[Path]) -> None:
    for directory, dirnames, filenames in os.walk(source):
        here = Path(directory)
        dirnames[:] = [name for name in dirnames if here / name not in skip]
        place = target / here.relative_to(source)
        place.mkdir(parents=True, exist_ok=True, mode=0o755)
        for name in filenames + [name for name in dirnames if (here / name).is_symlink()]:
            _place_file(here / name, place / name)


def _place_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    info = os.lstat(source)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
        return
    if not stat.S_ISREG(info.st_mode):
        return
    writable_by_others = info.st_mode & 0o022 or info.st_uid not in (0, os.geteuid())
    if not writable_by_others:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or protected_hardlinks: copy instead
            pass
    shutil.copyfile(source, target, follow_symlinks=False)
    os.chmod(target, stat.S_IMODE(info.st_mode) & ~0o022)


def _fingerprint(source: Interpreter, base_usable: bool) -> str:
    digest = hashlib.sha256(json.dumps([source.executable, os.path.realpath(source.base_executable), base_usable,
                                        source.version]).encode())
    roots = list(source.site_packages) + ([] if base_usable else [source.stdlib, source.platstdlib, source.libdir])
    for root in sorted(set(roots)):
        try:
            with os.scandir(root) as entries:
                listing = sorted((entry.name, entry.stat(follow_symlinks=False).st_mtime_ns) for entry in entries)
        except OSError:
            listing = []
        digest.update(json.dumps([root, listing]).encode())
    return "py" + source.version.replace(".", "") + "-" + digest.hexdigest()[:16]


def _own_private_directory(root: Path) -> None:
    """``root`` exists, belongs to the agent and nobody else can write to it (it holds what scripts execute)."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
        info = os.lstat(root)
    except OSError as error:
        raise SandboxUnusable(f"cannot create the sandbox runtime directory {root}: {_why(error)}") from error
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxUnusable(
            f"the sandbox runtime directory {root} must be a directory owned by the agent's user and writable by "
            "nobody else; remove it or set sandbox_runtime_dir")
    os.chmod(root, 0o755)


def _remove_stale(root: Path, keep: Path) -> None:
    """Other agents' mirrors stay while in use (each start touches its own); old ones and dead builds go."""
    cutoff = time.time() - STALE_MIRROR_SECONDS
    for entry in root.iterdir():
        if entry == keep:
            continue
        try:
            old = entry.stat().st_mtime < (time.time() - 3600 if entry.name.startswith(".building-") else cutoff)
        except OSError:
            continue
        if old:
            shutil.rmtree(entry, ignore_errors=True)


def _why(error: BaseException) -> str:
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, subprocess.CalledProcessError):
        tail = (error.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        return f"exit status {error.returncode}" + (f": {tail[-1][:200]}" if tail else "")
    if isinstance(error, subprocess.TimeoutExpired):
        return f"no answer within {error.timeout:.0f} s"
    return getattr(error, "strerror", None) or type(error).__name__
