"""Enrol and start a local provider agent against the local API, so `make up` has a machine to rent.

The agent is a separate process (``python -m depu_agent`` from agent/), like on a provider's machine. It is
enrolled the way a provider enrols one: the local provider gets an enrolment token (stored only as a hash in
TokensTable), the agent gets it through its environment (never argv, which other users can see) and
exchanges it for its own agent token at registration.

Skipped, with a log line, while the agent package has no ``__main__`` yet.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from local.lifetime import ends_with_this_process
from local.template import ROOT

log = logging.getLogger("local.agent")

AGENT_DIR = ROOT / "agent"
LOCAL_PROVIDER_ID = 4242000  # the local provider's Telegram user id (the chat CLI's user is 4242001)
ENROLMENT_ENV = "DEPU_AGENT_ENROLMENT_TOKEN"


@dataclass
class AgentProcess:
    process: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM first: the agent finishes or hands back its jobs (its shutdown flush), then exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def agent_available() -> bool:
    return (AGENT_DIR / "depu_agent" / "__main__.py").exists()


def provision_local_provider(provider_user_id: int = LOCAL_PROVIDER_ID) -> str:
    """Create the local provider's profile and return a fresh enrolment token for one agent."""
    from depu.agents.tokens import issue_enrolment_token
    from depu.profiles import ensure_profile

    ensure_profile(provider_user_id, first_name="Local provider", username="local_provider")
    return issue_enrolment_token(provider_user_id)


def start_local_agent(
    api_url: str, state_dir: Path, chain_url: str | None = None, environment: dict[str, str] | None = None
) -> AgentProcess | None:
    """Enrol and start one agent (CPU is fine: jobs run on torch's CPU build without a GPU).

    With a local chain it also hosts shadow forks (capability ``fork_host``), forking from that chain."""
    if not agent_available():
        log.warning("agent/depu_agent/__main__.py is not written yet: no local agent started")
        return None
    agent_dir = state_dir / "agent"
    agent_dir.mkdir(parents=True, exist_ok=True)
    config_path = agent_dir / "config.json"
    config_path.write_text(json.dumps({
        "api_url": api_url,
        "name": "local-agent",
        "agent_token_file": str(agent_dir / "agent_token"),
        "work_dir": str(agent_dir / "work"),
        "docker": "never",
        "heartbeat_seconds": 5,
        "capabilities": ["gpu", "fork_host"] if chain_url else ["gpu"],
        "fork_rpc_base_url": "http://127.0.0.1",
    }, indent=1), encoding="utf-8")
    env = {**os.environ, **(environment or {})}
    if chain_url:
        env["DEPU_FORK_UPSTREAM_URL"] = chain_url
    env["PYTHONPATH"] = os.pathsep.join([str(AGENT_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # moto starts empty on every `up`, so yesterday's agent token is unknown: enrol afresh each time
    (agent_dir / "agent_token").unlink(missing_ok=True)
    env[ENROLMENT_ENV] = provision_local_provider()
    log_path = state_dir / "logs" / "agent.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "depu_agent", "--config", str(config_path)],
            cwd=AGENT_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=ends_with_this_process(),
        )
    log.info("local agent started (pid %d), log in %s", process.pid, log_path)
    if chain_url:
        threading.Thread(target=approve_local_fork_host, args=(process,), name="approve-fork-host", daemon=True).start()
    return AgentProcess(process, log_path)


def approve_local_fork_host(process: subprocess.Popen | None = None, provider_user_id: int = LOCAL_PROVIDER_ID,
                            timeout_s: float = 180.0) -> str | None:
    """Approve the local agent as a fork host once it registered, through the operator's own command
    (scripts/approve_fork_host.py): on a deployed stack an operator decides, on the local stack the local
    operator is this launcher. Only agents of the local provider (moto starts empty on every ``up``)."""
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    from depu.agents.registry import agents_of_provider
    from depu.forks.hosts import FORK_HOST_CAPABILITY
    from scripts import approve_fork_host

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            for agent in agents_of_provider(provider_user_id):
                if FORK_HOST_CAPABILITY in (agent.capabilities or []) and not agent.fork_host_approved:
                    if approve_fork_host.main(["approve", agent.agent_id]) == 0:
                        log.info("local agent %s approved as a fork host", agent.agent_id)
                        return agent.agent_id
        except Exception:  # noqa: BLE001 - the stack may be stopping; say so and stop trying
            log.exception("could not approve the local agent as a fork host")
            return None
        time.sleep(0.5)
    log.warning("the local agent did not register in time: it is not approved as a fork host")
    return None
