"""The fork-host task protocol, between the state machines' task-token messages and the hosts that do them.

A state machine puts ``{task, fork_id, block, task_token}`` on ForkTaskQueue and waits. The queue is only a
mailbox: a claim from any approved host moves its messages onto their forks, each addressed to one host
(``Fork.task_host`` and ``pending_task``, found through the ``by_task_host`` index): a build to the fork's
assigned host (depu.forks.hosts chose it, least loaded, when the fork was created or sent for rebuilding), a
rebase or a stop to the host serving the fork. A host takes only the tasks addressed to it, so it receives a
journal only for the forks assigned to it, and an agent no operator approved receives nothing. The API keeps
the task token on the fork and gives the host only a task id, the base and the journal. The host answers
with ``finish``, which checks the fork's base against mainnet (a host that lies is suspended), turns the raw
replay report into the fork's new base and its conflicts and calls SendTaskSuccess/SendTaskFailure. A host
that dies mid-task leaves the state machine to time out (a build then fails with the user told; the janitor
rebuilds a serving fork whose host went silent on another host).

Every provision or rebase claim also carries a fresh **host secret** (kept in ``pending_task`` until the host
reports). The host's front admits only requests bearing it; ``finish`` files it under the reported RPC URL in
``Fork.host_secrets``, keeping the current URL's secret during a rebase, so whichever URL the proxy reads it
finds that URL's secret, even between ``finish`` and the state machine's switch to the new URL. A rebuild or
a move to another host therefore always rotates the secret. It never enters the state machines' input,
output or history.
"""
from __future__ import annotations

import html
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from pynamodb.exceptions import UpdateError

from depu.config import get_settings

from depu.forks import chainids, hosts, hosturl, journal, outcomes
from depu.forks.models import ACTIVE, DELETED, DELETING, FAILED, PROVISIONING, SYNCING, Fork

log = logging.getLogger(__name__)

PROVISION, REBASE, STOP = "provision", "rebase", "stop"
MAX_CLAIM_WAIT_S = 10  # plus at most one write lease (15 s) stays under the API's 29 s
HOST_FAILED_ERROR = "ForkHostFailed"
NO_HOST_ERROR = "NoForkHost"
GONE_ERROR = "ForkGone"


class TaskNotFound(Exception):
    """No such task, or it belongs to another host (both answer 404: a host learns nothing of others)."""


class TaskExpired(Exception):
    """The state machine stopped waiting (timed out or finished): the host should drop what it built."""


class BadReport(ValueError):
    """The host's report is malformed."""


@dataclass
class ClaimedTask:
    task_id: str
    kind: str
    fork_id: str
    block: str
    journal: list[dict[str, Any]]
    host_secret: str = ""
    chain_id: int | None = None
    follow: bool = False

    def to_dict(self) -> dict[str, Any]:
        task = {"task_id": self.task_id, "kind": self.kind, "fork_id": self.fork_id, "block": self.block, "journal": self.journal}
        if self.kind in (PROVISION, REBASE):
            task["follow"] = self.follow
        if self.chain_id is not None:
            task["chain_id"] = self.chain_id
        if self.host_secret:
            task["host_secret"] = self.host_secret
        return task

    def __repr__(self) -> str:  # never print the secret
        return f"ClaimedTask({self.task_id!r}, {self.kind!r}, {self.fork_id!r}, block={self.block!r}, journal={len(self.journal)})"


def _sqs():
    return boto3.client("sqs")


def _sfn():
    return boto3.client("stepfunctions")


def to_stop(agent_id: str, running: list[str]) -> list[str]:
    """Which of the forks a host runs it should stop: gone, failed, or now served by another host."""
    stop = []
    for fork_id in running[:100]:
        try:
            fork = Fork.get(str(fork_id))
        except Fork.DoesNotExist:
            stop.append(fork_id)
            continue
        if fork.status in (DELETED, DELETING, FAILED) or (fork.status == ACTIVE and fork.host_agent_id != agent_id):
            stop.append(fork_id)
    return stop


def claim(agent_id: str, wait_seconds: float) -> ClaimedTask | None:
    """One task addressed to this host, or None after up to ``wait_seconds``. Every claim also moves what
    the state machines queued onto the forks, each addressed to its host (``_address``); a host then takes
    only its own (``_take``). An agent that may not host forks gets nothing, whatever it asks."""
    from depu.agents.registry import get_agent

    if not hosts.may_host(get_agent(agent_id)):
        return None
    deadline = time.monotonic() + max(0, min(int(wait_seconds), MAX_CLAIM_WAIT_S))
    while True:
        task = _take(agent_id)
        if task:
            return task
        wait = min(max(int(deadline - time.monotonic()), 0), 1)
        arrived = address_queued(wait=wait)
        if time.monotonic() >= deadline:
            return _take(agent_id) if arrived else None
        if not arrived and not wait:
            time.sleep(0.2)  # under a second left: no long poll, but no busy loop either


def address_queued(wait: int = 0) -> int:
    """Move up to ten queued task messages onto their forks (``pending_task``, ``task_host``); returns how
    many arrived. A message whose fork has no fit host is answered at once, so its state machine moves on
    (the janitor runs this too, so that happens even while no approved host is polling)."""
    settings = get_settings()
    answer = _sqs().receive_message(QueueUrl=settings.fork_task_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
    messages = answer.get("Messages", [])
    for message in messages:
        try:
            _address(message)
        except Exception:  # noqa: BLE001 - the message reappears after its visibility timeout
            log.exception("could not address a fork task")
            continue
        _sqs().delete_message(QueueUrl=settings.fork_task_queue_url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages)


def _address(message: dict[str, Any]) -> None:
    try:
        body = json.loads(message["Body"])
        kind, fork_id, token = body["task"], body["fork_id"], body["task_token"]
    except (ValueError, KeyError, TypeError):
        log.error("dropping a malformed fork task message")
        return
    fork = _fork(fork_id)
    if not _still_wanted(kind, fork, token):
        return
    host = _host_for(kind, fork)
    if host is None:
        if kind == PROVISION:
            _fail(token, NO_HOST_ERROR, "no approved fork host is available")
        else:
            _fail(token, HOST_FAILED_ERROR if kind == REBASE else GONE_ERROR, "the fork's host is not available")
        return
    pending = {"task_id": f"{fork_id}.{uuid.uuid4().hex[:12]}", "kind": kind, "agent_id": host, "token": token,
               "block": str(body.get("block") or "latest")}
    actions = [Fork.pending_task.set(pending), Fork.task_host.set(host)]
    if kind == PROVISION:
        actions.append(Fork.assigned_host.set(host))
    fork.update(actions=actions)


def _fork(fork_id: str) -> Fork | None:
    try:
        return Fork.get(fork_id, consistent_read=True)
    except Fork.DoesNotExist:
        return None


def _still_wanted(kind: str, fork: Fork | None, token: str) -> bool:
    expected = {PROVISION: (PROVISIONING,), REBASE: (SYNCING,), STOP: None}.get(kind, ())
    if fork is None or (expected is not None and fork.status not in expected):
        _fail(token, GONE_ERROR, f"the fork is {fork.status if fork else 'missing'}")
        return False
    return True


def _host_for(kind: str, fork: Fork) -> str | None:
    """Who does this task: a build goes to the fork's assigned host while it is fit, else to the least loaded
    fit host (one that has not failed this fork, if any); a rebase and a stop go to the host serving the fork."""
    if kind == PROVISION:
        if hosts.is_fit(fork.assigned_host) and fork.assigned_host not in (fork.tried_hosts or []):
            return fork.assigned_host
        return hosts.choose(avoid=fork.tried_hosts or [])
    host = fork.host_agent_id or (fork.assigned_host if kind == STOP else None)
    return host if hosts.is_fit(host) else None


def _take(agent_id: str) -> ClaimedTask | None:
    """Take one task addressed to this host (a conditional write: it is taken once)."""
    for listed in Fork.by_task_host.query(agent_id, limit=5):
        fork = _fork(listed.fork_id)  # the index lags the table: act on the item as it is now
        if fork is None or fork.task_host != agent_id:
            continue
        pending = dict(fork.pending_task or {})
        kind = pending.get("kind")
        if pending.get("agent_id") != agent_id or not _still_wanted(kind, fork, pending.get("token", "")):
            _drop_address(fork, agent_id)
            continue
        if kind in (PROVISION, REBASE):
            pending["host_secret"] = secrets.token_urlsafe(32)
        try:
            fork.update(actions=[Fork.pending_task.set(pending), Fork.task_host.remove()],
                        condition=Fork.task_host == agent_id)
        except UpdateError:
            continue  # taken meanwhile, or readdressed
        entries = []
        if kind in (PROVISION, REBASE):
            fork = _after_writes(fork)
            entries = [{"seq": int(e.seq), "method": e.method, "params": e.params} for e in journal.entries(fork.fork_id)]
        return ClaimedTask(pending["task_id"], kind, fork.fork_id, pending.get("block") or "latest", entries,
                           pending.get("host_secret", ""), _chain_id(fork) if kind != STOP else None, bool(fork.follow))
    return None


def _drop_address(fork: Fork, agent_id: str) -> None:
    try:
        fork.update(actions=[Fork.task_host.remove()], condition=Fork.task_host == agent_id)
    except UpdateError:
        pass


def _chain_id(fork: Fork) -> int:
    """The fork's chain id, which the host must start anvil with; a fork recorded before forks had their own
    (still waiting for its first host) gets one now."""
    if fork.chain_id is None:
        fork.update(actions=[Fork.chain_id.set(chainids.for_fork(fork.fork_id))], condition=Fork.chain_id.does_not_exist())
    return int(fork.chain_id)


def _after_writes(fork: Fork) -> Fork:
    """The fork once a write that began before it left ``active`` has landed in the journal (no new write can
    begin now), so the journal handed to the host is complete. Bounded by the write lease."""
    deadline = time.time() + journal.LEASE_SECONDS + 1
    while float(fork.lock_until or 0) > time.time() and time.time() < deadline:
        time.sleep(0.05)
        fork = Fork.get(fork.fork_id, consistent_read=True)
    return fork


def finish(agent_id: str, task_id: str, report: dict[str, Any], allowed_url_host: str | None = None) -> dict[str, Any]:
    """Record a host's answer to a task and resume the waiting state machine; returns what it was told."""
    fork_id = task_id.split(".", 1)[0]
    try:
        fork = Fork.get(fork_id, consistent_read=True)
    except Fork.DoesNotExist:
        raise TaskNotFound() from None
    pending = fork.pending_task or {}
    if pending.get("task_id") != task_id or pending.get("agent_id") != agent_id:
        raise TaskNotFound()
    token = pending["token"]
    if not report.get("ok"):
        reason = html.escape(str(report.get("error") or "the host could not do it"))[:300]
        output: dict[str, Any] = _host_failed(fork, agent_id, pending, reason)
    elif pending["kind"] == STOP:
        output = {"stopped": bool(report.get("stopped", True))}
        _succeed(token, output)
    else:
        try:
            output = _replayed(fork, agent_id, report, allowed_url_host, pending)
        except hosts.HostLied as lie:
            reason = f"the fork it built is not mainnet's ({lie})"
            hosts.suspend(agent_id, reason)
            output = {**_host_failed(fork, agent_id, pending, reason), "suspended": True}
        except hosts.Unverifiable as unchecked:
            output = _host_failed(fork, agent_id, pending, f"its fork could not be checked against mainnet: {unchecked}")
        else:
            _succeed(token, output)
    _done(fork, task_id, pending.get("receipt"))
    return output


def _host_failed(fork: Fork, agent_id: str, pending: dict[str, Any], reason: str) -> dict[str, Any]:
    """The host could not do the task (or lied): a build is offered to another host next (the create state
    machine asks once more), a rebase leaves the fork as it was."""
    if pending.get("kind") == PROVISION:
        fork.update(actions=[Fork.tried_hosts.set(sorted({*(fork.tried_hosts or []), agent_id}))])
    _fail(pending["token"], HOST_FAILED_ERROR, reason)
    return {"failed": reason}


def _replayed(fork: Fork, agent_id: str, report: dict[str, Any], allowed_url_host: str | None,
              pending: dict[str, Any]) -> dict[str, Any]:
    rpc_url = str(report.get("rpc_url") or "")
    try:
        hosturl.check_url(rpc_url, require_port=True)
    except hosturl.HostUrlRefused as refused:
        raise BadReport(f"rpc_url refused: {refused}") from None
    parts = urlsplit(rpc_url)
    if allowed_url_host and parts.hostname != allowed_url_host:
        raise BadReport("rpc_url must be on the host's declared fork address")
    try:
        base_block = int(report["base_block"])
        chain_id = int(report["chain_id"])
        replay = {int(item["seq"]): item for item in report.get("entries", [])}
        snapshots = {str(int(seq)): value for seq, value in (report.get("snapshots") or {}).items()}
    except (KeyError, TypeError, ValueError) as error:
        raise BadReport(f"malformed report: {error}") from None
    if fork.chain_id is not None and chain_id != int(fork.chain_id):
        raise BadReport(f"the fork runs with chain id {chain_id}, not its own {int(fork.chain_id)}")
    requested = str(pending.get("block") or "latest")
    if pending.get("kind") == PROVISION and requested.isdigit() and int(requested) != base_block:
        raise hosts.HostLied(f"it was asked for block {requested} and reported {base_block}")
    hosts.check_base(rpc_url, pending.get("host_secret"), base_block, host_agent_id=agent_id)
    conflicts, changed = [], {}
    for entry in journal.entries(fork.fork_id):
        replayed = replay.get(int(entry.seq))
        if replayed is None:
            conflicts.append({"seq": int(entry.seq), "method": entry.method, "reason": "was not replayed"})
            continue
        outcome = outcomes.of_report(replayed)
        reason = outcomes.differs(entry.method, entry.outcome, outcome)
        if reason:
            conflicts.append({"seq": int(entry.seq), "method": entry.method, "reason": reason})
            changed[int(entry.seq)] = outcome
    journal.update_outcomes(fork.fork_id, changed)
    fork.update(actions=[Fork.host_snapshots.set(snapshots), Fork.host_secrets.set(_secrets_after(fork, pending, rpc_url))])
    return {
        "host_agent_id": agent_id,
        "rpc_url": rpc_url,
        "base_block": str(base_block),
        "chain_id": str(chain_id),
        "replayed": str(len(replay)),
        "conflict_count": str(len(conflicts)),
        "conflicts_json": json.dumps(conflicts),
        "conflicts_text": outcomes.conflicts_text(conflicts),
    }


def _secrets_after(fork: Fork, pending: dict[str, Any], rpc_url: str) -> dict[str, str]:
    """The new URL's secret, plus (during a rebase) the current URL's, which keeps serving until the state
    machine switches the fork over; older ones are dropped."""
    kept = {}
    current = fork.host_rpc_url
    if pending.get("kind") == REBASE and current and current in (fork.host_secrets or {}):
        kept[current] = fork.host_secrets[current]
    if pending.get("host_secret"):
        kept[rpc_url] = pending["host_secret"]
    return kept


def _done(fork: Fork, task_id: str, receipt: str | None) -> None:
    fork.update(actions=[Fork.pending_task.remove()])
    if receipt:
        try:
            _sqs().delete_message(QueueUrl=get_settings().fork_task_queue_url, ReceiptHandle=receipt)
        except Exception:  # noqa: BLE001 - the message may have become visible again; its token is spent
            log.info("fork task message already gone")


def _succeed(token: str, output: dict[str, Any]) -> None:
    client = _sfn()
    try:
        client.send_task_success(taskToken=token, output=json.dumps(output))
    except (client.exceptions.TaskTimedOut, client.exceptions.InvalidToken, client.exceptions.TaskDoesNotExist):
        raise TaskExpired() from None


def _fail(token: str, error: str, cause: str) -> None:
    client = _sfn()
    try:
        client.send_task_failure(taskToken=token, error=error, cause=cause)
    except (client.exceptions.TaskTimedOut, client.exceptions.InvalidToken, client.exceptions.TaskDoesNotExist):
        log.info("fork task already finished")
