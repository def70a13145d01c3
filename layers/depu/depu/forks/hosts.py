"""Who may host shadow forks, which approved host builds a given fork, and what happens to a host that lies.

A fork host holds everything a fork is: the users' journal (raw signed transactions included) and the secret
its front admits the proxy with. So an agent's ``fork_host`` capability is only an offer: hosting needs an
operator's approval (``approve``, which scripts/approve_fork_host.py and the local stack call), recorded on the
agent's item where registration and heartbeats never write. A host is *fit* while it is approved, not
suspended and alive; the API gives each new fork to the least loaded fit host (``choose``), records it on the
fork (``Fork.assigned_host``), and the task protocol (depu.forks.tasks) hands a fork's tasks to that host only.

After every build the API checks the fork against mainnet (``check_base``): the hash of the fork's base
block, read from the host's own RPC, must be mainnet's. A host that answers otherwise is suspended
(``suspend``): no more fork tasks, its forks rebuilt on other hosts, its provider told.
"""
from __future__ import annotations

import html
import logging
import time
from collections import Counter
from typing import Any, Iterable

import requests
from pynamodb.exceptions import DoesNotExist, UpdateError

from depu.agents.registry import Agent
from depu.config import get_settings
from depu.forks.models import ACTIVE, ALIVE, Fork

log = logging.getLogger(__name__)

FORK_HOST_CAPABILITY = "fork_host"
HOST_SILENT_S = 90  # no claim or heartbeat for this long: the host is gone (the janitor rebuilds its forks)
CHECK_TIMEOUT_S = 5.0


class HostLied(Exception):
    """The fork the host built is not mainnet's at the base it reported."""


class Unverifiable(Exception):
    """The base could not be checked now (mainnet or the host did not answer): the build does not count."""


# ------------------------------------------------------------------------------------------------ approval
def approve(agent_id: str) -> Agent:
    """Let an agent host forks (an operator's act). Lifts a suspension too: the operator looked into it."""
    agent = _agent(agent_id)
    if FORK_HOST_CAPABILITY not in (agent.capabilities or []):
        raise ValueError(f"agent {agent_id} did not offer the {FORK_HOST_CAPABILITY} capability")
    agent.update(actions=[Agent.fork_host_approved.set(True), Agent.fork_host_approved_at.set(int(time.time())),
                          Agent.fork_host_suspended.remove()], condition=Agent.agent_id.exists())
    return agent


def revoke(agent_id: str) -> Agent:
    """Withdraw an approval: the agent gets no more fork tasks, and the janitor rebuilds its forks elsewhere."""
    agent = _agent(agent_id)
    agent.update(actions=[Agent.fork_host_approved.set(False)], condition=Agent.agent_id.exists())
    return agent


def _agent(agent_id: str) -> Agent:
    try:
        return Agent.get(agent_id, consistent_read=True)
    except DoesNotExist:
        raise ValueError(f"no agent {agent_id}") from None


def may_host(agent: Agent | None) -> bool:
    """Approved by an operator and not suspended (alive or not)."""
    return bool(agent and agent.fork_host_approved and not agent.fork_host_suspended
                and FORK_HOST_CAPABILITY in (agent.capabilities or []))


def why_not(agent: Agent) -> str:
    if agent.fork_host_suspended:
        return "this fork host is suspended: " + agent.fork_host_suspended
    if FORK_HOST_CAPABILITY not in (agent.capabilities or []):
        return "this agent did not register the fork_host capability"
    return "this agent is not an approved fork host (an operator approves fork hosts)"


def is_alive(agent: Agent, now: float | None = None) -> bool:
    last = max(float(agent.last_seen_at or 0), float(agent.fork_seen_at or 0))
    return last >= (time.time() if now is None else now) - HOST_SILENT_S


def is_fit(agent_id: str | None, now: float | None = None) -> bool:
    if not agent_id:
        return False
    try:
        agent = Agent.get(agent_id)
    except DoesNotExist:
        return False
    return may_host(agent) and is_alive(agent, now)


def seen(agent_id: str) -> None:
    """A fork host's claim is its sign of life (a fork-only host sends no rental heartbeats). Kept apart from
    ``last_seen_at``, which the rental matcher reads (a draining agent must stay offline for jobs)."""
    try:
        Agent(agent_id).update(actions=[Agent.fork_seen_at.set(int(time.time()))], condition=Agent.agent_id.exists())
    except UpdateError:
        log.info("fork host %s vanished", agent_id)


# ------------------------------------------------------------------------------------------------ choice
def fit_hosts(now: float | None = None) -> list[Agent]:
    return [agent for agent in Agent.scan(Agent.fork_host_approved == True) if may_host(agent) and is_alive(agent, now)]  # noqa: E712


def load() -> Counter[str]:
    """Live forks per host, counting a fork being built for the host it is assigned to."""
    counts: Counter[str] = Counter()
    for fork in Fork.scan(Fork.status.is_in(*ALIVE)):
        host = fork.host_agent_id or fork.assigned_host
        if host:
            counts[host] += 1
    return counts


def choose(avoid: Iterable[str] = ()) -> str | None:
    """The least loaded fit host, preferring those not in ``avoid`` (hosts that just failed this fork); None
    when no approved host is alive."""
    hosts = fit_hosts()
    if not hosts:
        return None
    counts, avoided = load(), set(avoid)
    return min(hosts, key=lambda agent: (agent.agent_id in avoided, counts[agent.agent_id], agent.agent_id)).agent_id


# ------------------------------------------------------------------------------------------------ checking
def check_base(rpc_url: str, host_secret: str | None, base_block: int, host_agent_id: str | None = None) -> None:
    """The fork at ``rpc_url`` (built by ``host_agent_id``, whose pinned certificate the link must present) must
    carry mainnet's block ``base_block``: same number, same hash. Raises HostLied when it does not,
    Unverifiable when either side did not answer."""
    mainnet = _mainnet_block(base_block)
    if mainnet is None:
        raise HostLied(f"mainnet has no block {base_block}")
    from depu.forks import proxy  # the same forwarding path (and checks) as users' calls

    probe = Fork("base-check", host_rpc_url=rpc_url, host_secrets={rpc_url: host_secret} if host_secret else {},
                 host_agent_id=host_agent_id)
    try:
        answer = proxy.default_proxy()._forward(probe, "eth_getBlockByNumber", [hex(base_block), False], 1)
    except (requests.RequestException, ValueError) as error:
        raise Unverifiable(f"the host's fork did not answer ({type(error).__name__})") from None
    if "error" in answer:
        refusal = answer["error"].get("message") if isinstance(answer["error"], dict) else answer["error"]
        raise Unverifiable(f"the host's fork refused to show its base block: {str(refusal)[:200]}")
    block = answer.get("result")
    if not isinstance(block, dict) or str(block.get("hash", "")).lower() != mainnet.lower():
        raise HostLied(f"its block {base_block} is not mainnet's")


def _mainnet_block(number: int) -> str | None:
    try:
        answer = requests.post(get_settings().chain_rpc_url, timeout=CHECK_TIMEOUT_S, allow_redirects=False, json={
            "jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": [hex(number), False]}).json()
    except (requests.RequestException, ValueError) as error:
        raise Unverifiable(f"mainnet did not answer ({type(error).__name__})") from None
    if not isinstance(answer, dict) or "error" in answer:
        raise Unverifiable("mainnet refused the block query")
    block = answer.get("result")
    return str(block["hash"]) if isinstance(block, dict) and block.get("hash") else None


# ------------------------------------------------------------------------------------------------ suspension
def suspend(agent_id: str, reason: str) -> list[str]:
    """Take a host that lied out of service: no more tasks, its active forks rebuilt on other hosts (a fork
    mid-sync comes back active first and the janitor rebuilds it then), its provider told. Returns the
    forks sent for rebuilding."""
    try:
        agent = Agent.get(agent_id, consistent_read=True)
    except DoesNotExist:
        return []
    agent.update(actions=[Agent.fork_host_suspended.set(reason[:300])], condition=Agent.agent_id.exists())
    log.warning("fork host %s suspended: %s", agent_id, reason)
    from depu.notify import Notice, enqueue

    enqueue(Notice(int(agent.provider_id), f"Your agent <b>{html.escape(agent.name)}</b> no longer hosts shadow forks: "
                   f"{html.escape(reason)}. Its forks move to other hosts. Contact DePU's operators to be reviewed again.",
                   dedupe_key=f"fork-host-suspended:{agent_id}"))
    from depu.forks import janitor

    rebuilt = []
    for fork in Fork.scan(Fork.host_agent_id == agent_id):
        if fork.status == ACTIVE and janitor.rebuild(fork, why="its host was taken out of service"):
            rebuilt.append(fork.fork_id)
    return rebuilt


def describe(agent: Agent) -> dict[str, Any]:
    """What an operator sees of a fork host before approving it."""
    return {"agent_id": agent.agent_id, "name": agent.name, "provider_id": int(agent.provider_id),
            "fork_rpc_base_url": agent.fork_rpc_base_url, "fork_tls_sha256": agent.fork_tls_sha256, "approved": bool(agent.fork_host_approved),
            "suspended": agent.fork_host_suspended, "alive": is_alive(agent),
            "capabilities": list(agent.capabilities or [])}
