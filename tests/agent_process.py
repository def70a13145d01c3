"""Start the real provider agent (``python -m depu_agent``) as a separate process for end-to-end tests and
benchmarks, and find or kill it and its job processes. Loopback only; every process is cleaned up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deadlines import scaled, wait_for  # noqa: F401 - wait_for is part of this module's test API

ROOT = Path(__file__).resolve().parent.parent
AGENT_DIR = ROOT / "agent"

FAST_SETTINGS = {
    "heartbeat_seconds": 1,
    "claim_wait_seconds": 1,
    "log_interval_seconds": 0.5,
    "cancel_grace_seconds": 2,
    "backoff_initial_seconds": 0.2,
    "backoff_max_seconds": 2,
    "shutdown_flush_seconds": 5,
    "docker": "never",
}
# install.sh gives a provider's one agent sandbox uids from 470000 up (one per GPU slot). Test agents run many
# at once (and on several pytest workers), and an agent kills every process of its slot's uid when a job
# ends, so each test agent gets a block of uids of its own.
_UID_BLOCK = 8
_agents_started = 0


def _sandbox_uid_base() -> int:
    global _agents_started
    _agents_started += 1
    return 500000 + ((os.getpid() % 20000) * 16 + _agents_started % 16) * _UID_BLOCK


class AgentProcess:
    def __init__(self, api_url: str, directory: Path, name: str, *, enrolment_token: str | None = None,
                 agent_token: str | None = None, settings: dict | None = None):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "config.json"
        self.token_path = directory / "agent_token"
        self.log_path = directory / "agent.log"
        config = {"api_url": api_url, "name": name, "agent_token_file": str(self.token_path),
                  "work_dir": str(directory / "work"), "sandbox_uid_base": _sandbox_uid_base(),
                  **FAST_SETTINGS, **(settings or {})}
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        if agent_token is not None:
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(agent_token)
        env = {key: value for key, value in os.environ.items() if not key.startswith("DEPU_")}
        env["PYTHONPATH"] = str(AGENT_DIR)
        if enrolment_token:
            env["DEPU_AGENT_ENROLMENT_TOKEN"] = enrolment_token
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "depu_agent", "--config", str(self.config_path)],
            cwd=str(AGENT_DIR), env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_registered(self, timeout: float = 60) -> None:
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.token_path.exists() and "serving GPUs" in self.log_text():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"agent did not register in {timeout} s:\n{self.log_text()[-3000:]}")

    def descendants(self) -> list[int]:
        return descendants_of(self.pid)

    def kill_hard(self) -> None:
        """SIGKILL the agent and every process under it, as if the machine lost power."""
        victims = [self.pid, *self.descendants()]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        for pid in self.descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.process.returncode


def descendants_of(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            found.append(child)
            frontier.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def private_uid_base(module_slot: int) -> int:
    """Sandbox uids for one test module in this test process (an xdist worker): a job's end kills every
    process of its uid, so two workers (or two modules) must never share one. Four uids per module slot."""
    return 3_000_000 + (os.getpid() % 100_000) * 16 + module_slot * 4
