"""The fork host's authenticated front (agent/depu_agent/forkfront.py) and the host secret's path through the
cloud: a fresh secret in every provision/rebase claim, filed under the reported RPC URL, presented by the
proxy on every forward, kept out of the state machines' history. Real anvil processes, moto state machines."""
from __future__ import annotations

import json

import boto3
import pytest
import requests

from depu.forks import proxy, service, tasks
from depu.forks.models import Fork
from depu_agent import forkfront
from depu_agent.forkhost import AnvilFork
from forks_support import ANVIL, Anvil, approved_host_item, wait_for

pytestmark = pytest.mark.e2e
ACCOUNT = "0x" + "22" * 20
FORK_CHAIN_ID = 73570000000001
SET_BALANCE = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance", "params": [ACCOUNT, "0x64"]}


@pytest.fixture
def upstream():
    chain = Anvil()
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def two_forks(upstream):
    forks = []
    try:
        for secret in ("secret-of-fork-a", "secret-of-fork-b"):
            forks.append(AnvilFork(ANVIL, upstream.url, 0, "127.0.0.1", "http://127.0.0.1", secret=secret, chain_id=FORK_CHAIN_ID))
        for fork in forks:
            fork.wait_ready()
        yield forks
    finally:
        for fork in forks:
            fork.stop()


def balance(fork: AnvilFork) -> str:
    return fork.value("eth_getBalance", [ACCOUNT, "latest"])  # straight to anvil, on 127.0.0.1


def test_only_the_forks_own_secret_passes_its_front(two_forks):
    fork_a, fork_b = two_forks
    refused = {
        "no Authorization": {},
        "a wrong secret": {"Authorization": "Bearer secret-of-fork-x"},
        "another fork's secret": {"Authorization": "Bearer secret-of-fork-b"},
        "the secret without its scheme": {"Authorization": "secret-of-fork-a"},
        "another scheme": {"Authorization": "Basic secret-of-fork-a"},
        "a prefix of the secret": {"Authorization": "Bearer secret-of-fork-"},
        "the secret plus more": {"Authorization": "Bearer secret-of-fork-aa"},
        "non-ASCII": {"Authorization": "Bearer secret-of-fork-\u00e4".encode("latin-1")},
    }
    session = requests.Session()  # one keep-alive connection: a refusal must not poison the next request
    for case, headers in refused.items():
        answer = session.post(fork_a.rpc_url, json=SET_BALANCE, headers=headers, timeout=10)
        assert answer.status_code == 401, case
        assert answer.json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": answer.json()["error"]["message"]}}, case
    assert balance(fork_a) == "0x0" and balance(fork_b) == "0x0"

    obeyed = session.post(fork_a.rpc_url, json=SET_BALANCE, headers={"Authorization": "Bearer secret-of-fork-a"}, timeout=10)
    assert obeyed.status_code == 200 and "error" not in obeyed.json()
    assert balance(fork_a) == "0x64" and balance(fork_b) == "0x0"  # only fork A changed
    batch = [{"jsonrpc": "2.0", "id": n, "method": "eth_chainId", "params": []} for n in range(3)]
    answered = session.post(fork_b.rpc_url, json=batch, headers={"Authorization": "bearer secret-of-fork-b"}, timeout=10).json()
    assert [item["id"] for item in answered] == [0, 1, 2]  # the body is forwarded as is; the scheme is case-free


def test_oversized_or_unsized_bodies_never_reach_anvil(two_forks):
    fork_a, _ = two_forks
    auth = {"Authorization": "Bearer secret-of-fork-a", "Content-Type": "application/json"}
    padded = (json.dumps(SET_BALANCE) + " " * forkfront.MAX_BODY_BYTES).encode()  # valid JSON, over the limit
    answer = requests.post(fork_a.rpc_url, data=padded, headers=auth, timeout=30)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == -32600
    unauthorised = requests.post(fork_a.rpc_url, data=padded, timeout=30)
    assert unauthorised.status_code == 401  # a stranger learns nothing more from a big body

    def chunks():
        yield json.dumps(SET_BALANCE).encode()

    chunked = requests.post(fork_a.rpc_url, data=chunks(), headers=auth, timeout=30)  # no Content-Length
    assert chunked.status_code == 411
    assert balance(fork_a) == "0x0"
    fits = json.dumps(SET_BALANCE).encode().ljust(forkfront.MAX_BODY_BYTES)
    assert requests.post(fork_a.rpc_url, data=fits, headers=auth, timeout=30).status_code == 200
    assert balance(fork_a) == "0x64"


def test_a_stopped_fork_answers_nobody(two_forks):
    fork_a, _ = two_forks
    session = requests.Session()
    auth = {"Authorization": "Bearer secret-of-fork-a"}
    assert session.post(fork_a.rpc_url, json=SET_BALANCE, headers=auth, timeout=10).status_code == 200
    fork_a.stop()
    # the session's kept-alive connection is answered 503 and closed; a new connection is refused
    kept = session.post(fork_a.rpc_url, json=SET_BALANCE, headers=auth, timeout=10)
    assert kept.status_code == 503
    with pytest.raises(requests.ConnectionError):
        requests.post(fork_a.rpc_url, json=SET_BALANCE, headers=auth, timeout=5)


def test_a_host_without_a_secret_refuses_to_serve(upstream):
    with pytest.raises(ValueError):
        AnvilFork(ANVIL, upstream.url, 0, "127.0.0.1", "http://127.0.0.1", secret="", chain_id=FORK_CHAIN_ID)


def test_a_host_without_a_chain_id_refuses_to_start_a_fork(upstream):
    for missing in (None, 0, "73570000000001", True):
        with pytest.raises(ValueError, match="chain id"):
            AnvilFork(ANVIL, upstream.url, 0, "127.0.0.1", "http://127.0.0.1", secret="s", chain_id=missing)


# ---------------------------------------------------------------- the secret's path through the cloud
@pytest.fixture
def fast(aws, upstream, monkeypatch):
    from depu.config import get_settings

    monkeypatch.setattr(service, "PROVISION_TIMEOUT_S", 20)
    monkeypatch.setattr(service, "REBASE_TIMEOUT_S", 20)
    monkeypatch.setattr(service, "mainnet_head", lambda: None)
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    monkeypatch.setenv("CHAIN_RPC_URL", upstream.url)  # the fronts pass reads to it: the base check sees its blocks
    get_settings.cache_clear()
    approved_host_item("ag_front_host")
    return aws


def claim(kind: str) -> tasks.ClaimedTask:
    task = wait_for(lambda: tasks.claim("ag_front_host", 1), 20, f"a {kind} task")
    assert task.kind == kind
    return task


def report(front: forkfront.ForkFront, chain_id: int) -> dict:
    return {"ok": True, "rpc_url": f"http://127.0.0.1:{front.port}", "base_block": 0, "chain_id": chain_id, "entries": [], "snapshots": {}}


def history_text(arn: str) -> str:
    sfn = boto3.client("stepfunctions")
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    described = sfn.describe_execution(executionArn=arn)
    return json.dumps(events, default=str) + json.dumps(described, default=str)


def test_each_claim_carries_a_fresh_secret_that_the_proxy_presents(fast, upstream):
    fronts = []
    try:
        created = service.create_fork(77, 77, "latest")
        provision = claim("provision")
        assert len(provision.host_secret) >= 40 and provision.host_secret not in repr(provision)
        first = forkfront.ForkFront("127.0.0.1", upstream.url, provision.host_secret)
        fronts.append(first)
        assert provision.chain_id == created.fork.chain_id  # the host is told the fork's own chain id
        tasks.finish("ag_front_host", provision.task_id, report(first, provision.chain_id))
        fork = wait_for(lambda: (f := Fork.get(created.fork.fork_id)).status == "active" and f, 20, "active")
        assert fork.host_secrets == {fork.host_rpc_url: provision.host_secret}
        reads = proxy.ForkProxy()
        chain_id = {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []}
        assert reads.call(fork, chain_id) == {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}

        service.sync_now(77, fork.fork_id)
        rebase = claim("rebase")
        assert rebase.host_secret and rebase.host_secret != provision.host_secret  # rotated
        second = forkfront.ForkFront("127.0.0.1", upstream.url, rebase.host_secret)
        fronts.append(second)
        assert rebase.chain_id == created.fork.chain_id
        tasks.finish("ag_front_host", rebase.task_id, report(second, rebase.chain_id))
        # until the state machine switches the URL, the proxy still reaches the old front with its old secret
        both = Fork.get(fork.fork_id, consistent_read=True)
        assert both.host_secrets == {fork.host_rpc_url: provision.host_secret, f"http://127.0.0.1:{second.port}": rebase.host_secret}
        synced = wait_for(lambda: (f := Fork.get(fork.fork_id)).status == "active" and f.host_rpc_url.endswith(f":{second.port}") and f,
                          20, "synced")
        first.stop()
        assert reads.call(synced, chain_id)["result"] == "0x7a69"

        # a host that does not know the secret (here: the proxy holding a stale one) is refused, not obeyed
        stale = Fork.get(fork.fork_id)
        stale.host_secrets = {stale.host_rpc_url: provision.host_secret}
        answer = reads.call(stale, {"jsonrpc": "2.0", "id": 8, "method": "eth_blockNumber", "params": []})
        assert answer["error"]["code"] == -32003

        # the secrets never reach the state machines' input, output or history
        executions = [fork.create_execution] + [
            item["executionArn"] for item in boto3.client("stepfunctions").list_executions(
                stateMachineArn=fast_sync_arn())["executions"]]
        for arn in executions:
            text = history_text(arn)
            assert provision.host_secret not in text and rebase.host_secret not in text, arn

        # deleting the fork forgets them
        service.delete_fork(77, fork.fork_id)
        stop = claim("stop")
        assert not stop.host_secret
        tasks.finish("ag_front_host", stop.task_id, {"ok": True, "stopped": True})
        gone = wait_for(lambda: (f := Fork.get(fork.fork_id)).status == "deleted" and f, 20, "deleted")
        assert gone.host_secrets is None
    finally:
        for front in fronts:
            front.stop()


def fast_sync_arn() -> str:
    from depu.config import get_settings

    return get_settings().fork_sync_state_machine_arn
