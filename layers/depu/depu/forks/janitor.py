"""Housekeeping the fork janitor runs every minute: expiry warnings, expiry, rebuilding forks whose host
went silent (the host is a cache: a fork is its base plus its journal, so another host can rebuild it), and
telling users about conflicts their following forks met (the host reports them in ``depu_followStatus``)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pynamodb.exceptions import UpdateError

from depu.forks import hosts, service
from depu.forks.models import ACTIVE, ALIVE, PROVISIONING, SYNCING, Fork
from depu.notify import Notice, enqueue

log = logging.getLogger(__name__)

HOST_SILENT_S = hosts.HOST_SILENT_S


@dataclass
class Sweep:
    warned: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def sweep(now: float | None = None) -> Sweep:
    now = time.time() if now is None else now
    done = Sweep()
    for fork in Fork.scan(Fork.status.is_in(*ALIVE)):
        if fork.expires_at <= now:
            _expire(fork, done)
        elif fork.expires_at - service.WARN_BEFORE_S <= now and not fork.warned:
            _warn(fork, now, done)
        if fork.status in (ACTIVE, SYNCING) and fork.expires_at > now and _host_silent(fork, now):
            _rebuild(fork, done)
        elif fork.status == ACTIVE and fork.follow and fork.expires_at > now:
            _follow_conflicts(fork, done)
    _address_waiting_tasks()
    return done


def _address_waiting_tasks() -> None:
    """Queued fork tasks reach their forks even when no approved host polls: a build with no fit host left
    then fails at once, with the user told, instead of waiting out its timeout."""
    from depu.forks import tasks

    for _ in range(5):
        if not tasks.address_queued(wait=0):
            return


def _expire(fork: Fork, done: Sweep) -> None:
    service.tokens.revoke(fork.rpc_token_hash)
    service.start_delete(fork, "reached the end of its lifetime and was deleted")
    done.expired.append(fork.fork_id)


def _warn(fork: Fork, now: float, done: Sweep) -> None:
    try:
        fork.update(actions=[Fork.warned.set(True)], condition=Fork.warned == False)  # noqa: E712 - attribute condition
    except UpdateError:
        return
    minutes = max(1, int((fork.expires_at - now) // 60))
    enqueue(Notice(int(fork.chat_id), f"Shadow fork <b>{fork.fork_id}</b> expires in {minutes} minutes and will then be deleted.",
                   buttons=[[{"text": "Open fork", "data": f"sf:1:i:{fork.fork_id}"}]], dedupe_key=f"fork-expiry:{fork.fork_id}"))
    done.warned.append(fork.fork_id)


def _follow_conflicts(fork: Fork, done: Sweep) -> None:
    """New conflicts since the user was last told: one notice with the transactions and reasons."""
    status = service.follow_status(fork) or {}
    total = status.get("conflicts_total")
    seen = int(fork.follow_conflicts_seen or 0)
    if not isinstance(total, int) or total <= seen:
        return
    try:
        fork.update(actions=[Fork.follow_conflicts_seen.set(total)], condition=Fork.follow_conflicts_seen == fork.follow_conflicts_seen)
    except UpdateError:
        return  # another sweep told them
    from depu.forks import outcomes

    fresh = [c for c in status.get("conflicts") or [] if isinstance(c, dict) and "seq" in c][-(total - seen):]
    text = (f"Shadow fork <b>{fork.fork_id}</b> follows mainnet; {total - seen} journal entries now behave differently: "
            f"{outcomes.conflicts_text(fresh)}. The fork stays on the new head and usable.")
    enqueue(Notice(int(fork.chat_id), text, buttons=[[{"text": "Open fork", "data": f"sf:1:i:{fork.fork_id}"}]],
                   dedupe_key=f"fork-follow-conflicts:{fork.fork_id}:{total}"))
    done.conflicts.append(fork.fork_id)


def _host_silent(fork: Fork, now: float) -> bool:
    """The fork's host went silent, or may no longer host forks (approval withdrawn, suspended)."""
    if not fork.host_agent_id:
        return False
    from depu.agents.registry import get_agent  # the agents feature owns that table; read-only here

    agent = get_agent(fork.host_agent_id)
    return agent is None or not hosts.may_host(agent) or not hosts.is_alive(agent, now)


def _rebuild(fork: Fork, done: Sweep) -> None:
    if rebuild(fork):
        done.rebuilt.append(fork.fork_id)


def rebuild(fork: Fork, why: str = "its host went silent") -> bool:
    """Hand the fork to the create state machine again, at its current base, with its journal, assigned to
    another fit host (or to none: the build then fails cleanly and the user is told). False if someone else
    moved the fork first."""
    old_host = fork.host_agent_id
    new_host = hosts.choose(avoid=[old_host] if old_host else [])
    try:
        fork.update(
            actions=[Fork.status.set(PROVISIONING), Fork.rebuilds.add(1), Fork.host_rpc_url.remove(), Fork.host_secrets.remove(),
                     Fork.lock_until.set(0), Fork.tried_hosts.set([old_host] if old_host else []),
                     Fork.assigned_host.set(new_host) if new_host else Fork.assigned_host.remove()],
            condition=(Fork.status == fork.status) & (Fork.host_agent_id == fork.host_agent_id),
        )
    except UpdateError:
        return False  # someone else moved it first
    log.info("rebuilding fork %s away from host %s", fork.fork_id, old_host)
    service.start_create(fork, str(int(fork.base_block)), f"was rebuilt on another host after {why}; your journal was replayed",
                         name=f"{fork.fork_id}-rebuild-{int(fork.rebuilds)}")
    return True
