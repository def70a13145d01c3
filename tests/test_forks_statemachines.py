"""The three fork state machines, executed by moto from statemachines/*.asl.json, driven through the real
task protocol (depu.forks.tasks: claim from ForkTaskQueue, finish with SendTaskSuccess/SendTaskFailure).
Here the test plays the fork host's part with hand-written reports; test_forks_e2e runs a real host."""
from __future__ import annotations

import json
import subprocess

import pytest

from depu.forks import chainids, journal, outcomes, service, tasks
from depu.forks.models import Fork
from forks_support import ROOT, approved_host_item, mined_anvil, notices, wait_execution, wait_for

USER = 31
HOST = "ag_host_a"


@pytest.mark.parametrize("name", ["fork_create", "fork_sync", "fork_delete"])
def test_definitions_pass_asl_validator(name):
    done = subprocess.run([str(ROOT / "node_modules" / ".bin" / "asl-validator"), "--json-path", f"statemachines/{name}.asl.json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def mainnet():
    """The chain the API checks every fork's base block against; the hand-written reports name it as the
    host's RPC URL, so the test's "host" serves mainnet's own blocks (honestly)."""
    chain = mined_anvil()
    _mainnet_url[:] = [chain.url]
    yield chain
    chain.stop()


_mainnet_url: list[str] = []


@pytest.fixture
def fast(aws, mainnet, monkeypatch):
    from depu.config import get_settings

    monkeypatch.setattr(service, "PROVISION_TIMEOUT_S", 20)
    monkeypatch.setattr(service, "REBASE_TIMEOUT_S", 20)
    monkeypatch.setattr(service, "STOP_TIMEOUT_S", 2)
    monkeypatch.setattr(service, "mainnet_head", lambda: None)
    monkeypatch.setenv("CHAIN_RPC_URL", mainnet.url)
    get_settings.cache_clear()
    approved_host_item(HOST)
    return aws


def claim(kind: str, agent: str = HOST) -> tasks.ClaimedTask:
    task = wait_for(lambda: tasks.claim(agent, 1), 20, f"a {kind} task")
    assert task.kind == kind
    return task


def report(base_block: int, entries=(), snapshots=None, chain_id: int | None = None) -> dict:
    """A host's report; ``chain_id`` is what the task told the host (a fork's own), as a real host reports it."""
    return {"ok": True, "rpc_url": _mainnet_url[0], "base_block": base_block, "chain_id": chain_id,
            "entries": list(entries), "snapshots": snapshots or {}}


def create_active(block: str = "100") -> Fork:
    created = service.create_fork(USER, USER, block)
    task = claim("provision")
    assert (task.fork_id, task.block, task.journal) == (created.fork.fork_id, block, [])
    tasks.finish(HOST, task.task_id, report(int(block), chain_id=task.chain_id))
    wait_for(lambda: Fork.get(created.fork.fork_id).status == "active", 20, "active")
    return Fork.get(created.fork.fork_id)


def test_create_records_the_host_and_tells_the_user(fast):
    fork = create_active("100")
    assert (fork.host_agent_id, fork.host_rpc_url, fork.base_block, fork.chain_id) == (HOST, _mainnet_url[0], 100, chainids.for_fork(fork.fork_id))
    assert chainids.is_forks(fork.chain_id)
    assert wait_execution(fork.create_execution) == "SUCCEEDED"
    [notice] = notices(5, fork.fork_id)
    assert notice["chat_id"] == USER and f"<b>{fork.fork_id}</b> is ready at block 100" in notice["text"]
    assert notice["buttons"] == [[{"text": "Open fork", "data": f"sf:1:i:{fork.fork_id}"}]]
    assert fork.pending_task is None


def test_a_failing_host_is_retried_once_then_the_execution_fails_and_the_user_is_told(fast):
    created = service.create_fork(USER, USER, "latest")
    for attempt in range(2):
        task = claim("provision")
        told = tasks.finish(HOST, task.task_id, {"ok": False, "error": "anvil <could not> fork"})
        assert told == {"failed": "anvil &lt;could not&gt; fork"}
    fork = wait_for(lambda: (f := Fork.get(created.fork.fork_id)).status == "failed" and f, 20, "failed")
    assert fork.failure == "ForkHostFailed"
    arn = f"{fast_arn('ForkCreate')}:{fork.fork_id}-create"
    assert wait_execution(arn) == "FAILED"
    [notice] = notices(5, fork.fork_id)
    assert "could not be started (ForkHostFailed)" in notice["text"]


def fast_arn(kind: str) -> str:
    from depu.config import get_settings

    arn = getattr(get_settings(), f"fork_{kind.lower().replace('fork', '')}_state_machine_arn")
    return arn.replace(":stateMachine:", ":execution:")


def test_no_host_times_out_into_failed(fast, monkeypatch):
    monkeypatch.setattr(service, "PROVISION_TIMEOUT_S", 2)
    created = service.create_fork(USER, USER, "latest")
    arn = f"{fast_arn('ForkCreate')}:{created.fork.fork_id}-create"
    assert wait_execution(arn, 30) == "FAILED"
    assert Fork.get(created.fork.fork_id).failure == "States.Timeout"
    assert "could not be started (States.Timeout)" in notices(5, created.fork.fork_id)[0]["text"]
    # the stale task message is answered as gone when a host finally claims it
    assert tasks.claim(HOST, 1) is None


def test_sync_now_rebases_records_the_new_base_and_reports_conflicts(fast):
    fork = create_active("100")
    notices(5)
    receipt = {"status": "0x1", "gasUsed": "0x5208", "logs": []}
    Fork(fork.fork_id).update(actions=[Fork.next_seq.set(2)])
    journal.record(fork.fork_id, 0, "anvil_setBalance", ["0x00000000000000000000000000000000000000aa", "0x1"], outcomes.of_result(None))
    journal.record(fork.fork_id, 1, "eth_sendRawTransaction", ["0x02f8"], outcomes.of_receipt(receipt))
    service.sync_now(USER, fork.fork_id)
    task = claim("rebase")
    assert [e["method"] for e in task.journal] == ["anvil_setBalance", "eth_sendRawTransaction"]
    assert Fork.get(fork.fork_id).status == "syncing"
    tasks.finish(HOST, task.task_id, report(130, [{"seq": 0, "result": None}, {"seq": 1, "error": {"message": "nonce too low"}}], chain_id=task.chain_id))
    synced = wait_for(lambda: (f := Fork.get(fork.fork_id)).status == "active" and f.base_block == 130 and f, 20, "new base")
    assert synced.conflict_count == 1
    assert json.loads(synced.conflicts) == [{"seq": 1, "method": "eth_sendRawTransaction", "reason": "now fails: nonce too low"}]
    [notice] = notices(5, fork.fork_id)
    assert "now follows block 130" in notice["text"] and "#1 eth_sendRawTransaction: now fails: nonce too low" in notice["text"]
    # the journal now records what the entry does on the new base, so the next sync does not repeat it
    assert journal.entries(fork.fork_id)[1].outcome == {"kind": "error", "message": "nonce too low"}


def test_the_auto_sync_loop_rebases_until_switched_off(fast, monkeypatch):
    monkeypatch.setattr(service, "MIN_SYNC_INTERVAL_S", 1)
    fork = create_active("100")
    notices(5)
    service.set_auto_sync(USER, fork.fork_id, True, interval_s=1)
    loop = Fork.get(fork.fork_id).sync_loop
    for block in (110, 120):
        task = claim("rebase")
        tasks.finish(HOST, task.task_id, report(block, chain_id=task.chain_id))
        wait_for(lambda: Fork.get(fork.fork_id).base_block == block and Fork.get(fork.fork_id).status == "active", 20, "rebased")
    service.set_auto_sync(USER, fork.fork_id, False)
    arn = f"{fast_arn('ForkSync')}:{loop}"
    assert wait_execution(arn, 30) == "SUCCEEDED"
    assert notices(1, fork.fork_id) == []  # rebases without conflicts are silent in the loop


def test_delete_proceeds_when_no_host_answers_and_tells_the_user(fast):
    fork = create_active("100")
    notices(5)
    service.delete_fork(USER, fork.fork_id)
    gone = wait_for(lambda: (f := Fork.get(fork.fork_id)).status == "deleted" and f, 30, "deleted")
    assert gone.host_rpc_url is None and gone.rpc_token_hash is None
    assert "Its RPC URL no longer answers" in notices(5, fork.fork_id)[0]["text"]
    # a second delete is refused clearly, and the fork can no longer be reached by its owner's commands
    with pytest.raises(Exception, match="already being deleted"):
        service.delete_fork(USER, fork.fork_id)


def test_other_users_cannot_see_or_touch_a_fork(fast):
    fork = create_active("100")
    for action in (lambda: service.info(USER + 1, fork.fork_id), lambda: service.delete_fork(USER + 1, fork.fork_id),
                   lambda: service.sync_now(USER + 1, fork.fork_id)):
        with pytest.raises(Exception, match="No such shadow fork"):
            action()


def test_a_report_for_another_hosts_task_is_not_found(fast):
    service.create_fork(USER, USER, "latest")
    task = claim("provision")
    with pytest.raises(tasks.TaskNotFound):
        tasks.finish("ag_someone_else", task.task_id, report(1, chain_id=task.chain_id))


def test_quota_limits_live_forks(fast):
    for _ in range(service.MAX_ALIVE_FORKS):
        service.create_fork(USER, USER, "latest")
    with pytest.raises(Exception, match="limit is 3"):
        service.create_fork(USER, USER, "latest")


def test_a_write_in_flight_when_a_sync_starts_is_in_the_replayed_journal(fast):
    import threading
    import time

    fork = create_active("100")
    _current, seq, lease = journal.begin_write(fork.fork_id)  # a user's write is being forwarded right now
    service.sync_now(USER, fork.fork_id)
    wait_for(lambda: Fork.get(fork.fork_id).status == "syncing", 20, "syncing")

    def land() -> None:
        time.sleep(1.0)
        journal.record(fork.fork_id, seq, "evm_mine", [], outcomes.of_result("0x0"), lease=lease)  # within its lease
        journal.end_write(fork.fork_id, lease)

    threading.Thread(target=land).start()
    task = claim("rebase")
    assert [(e["seq"], e["method"]) for e in task.journal] == [(seq, "evm_mine")]
