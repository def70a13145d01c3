"""Attacks by fork hosts (issue 12, "vetted hosts only"): each test performs one and shows that it fails.

A fork host would hold a fork's whole journal (users' raw signed transactions) and the secret its front
admits the proxy with, and would answer the user's RPC traffic however it liked. So: only agents an
operator approved host forks; a fork's tasks reach only the host assigned to it; and a host whose fork is
not mainnet's at the base it reported is suspended and its forks go to other hosts. The real agent API runs
behind a local HTTP front (forks_support.ApiFront), the state machines run in moto, mainnet is an anvil.
"""
from __future__ import annotations

import pytest
import requests

from depu.agents.registry import get_agent
from depu.config import get_settings
from depu.forks import janitor, journal, outcomes, service, tasks
from depu.forks.models import Fork, utcnow_iso
from forks_support import Anvil, ApiFront, mined_anvil, notices, register_fork_host, wait_execution, wait_for

USER = 7301
LIAR_PROVIDER = 901
RAW_TX = "0x02f86c0180843b9aca00850ba43b740082520894000000000000000000000000000000000000dead0180c001a0" + "11" * 32


@pytest.fixture(scope="module")
def chains():
    mainnet = mined_anvil(300)
    other = Anvil("--timestamp", "1")  # another chain with the same block numbers and other hashes
    other.rpc("anvil_mine", hex(300))
    yield mainnet, other
    mainnet.stop()
    other.stop()


@pytest.fixture
def api(aws, chains, monkeypatch):
    monkeypatch.setattr(service, "PROVISION_TIMEOUT_S", 20)
    monkeypatch.setattr(service, "REBASE_TIMEOUT_S", 20)
    monkeypatch.setattr(service, "STOP_TIMEOUT_S", 2)
    monkeypatch.setattr(service, "mainnet_head", lambda: None)
    monkeypatch.setenv("CHAIN_RPC_URL", chains[0].url)
    get_settings.cache_clear()
    front = ApiFront(aws.endpoint)
    try:
        yield front
    finally:
        front.stop()


def claim_http(front: ApiFront, token: str, wait: int = 1) -> requests.Response:
    return requests.post(f"{front.url}/agent/forks/claim", json={"wait": wait}, headers={"Authorization": f"Bearer {token}"},
                         timeout=30)


def report_http(front: ApiFront, token: str, task_id: str, body: dict) -> requests.Response:
    return requests.post(f"{front.url}/agent/forks/tasks/{task_id}/result", json=body,
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)


def built(rpc_url: str, base_block: int, task: dict) -> dict:
    """An honest-looking report for ``task``: the chain id is the one the task gave (the fork's own)."""
    return {"ok": True, "rpc_url": rpc_url, "base_block": base_block, "chain_id": task["chain_id"], "entries": [],
            "snapshots": {}}


def active(fork_id: str) -> Fork:
    return wait_for(lambda: (f := Fork.get(fork_id, consistent_read=True)).status == "active" and f, 30, "active")


def test_a_self_declared_fork_host_that_no_operator_approved_gets_no_task_journal_or_secret(api):
    squatter, squatter_token = register_fork_host("self-declared", approve=False)  # says fork_host, nobody agreed
    honest, honest_token = register_fork_host("approved")
    created = service.create_fork(USER, USER, "latest")
    assert created.fork.assigned_host == honest  # the API never assigns a fork to an unapproved agent
    # a raw signed transaction already in the journal (a rebuild hands the journal over): the squatter's prize
    Fork(created.fork.fork_id).update(actions=[Fork.next_seq.set(1)])
    journal.JournalEntry(created.fork.fork_id, 0, method="eth_sendRawTransaction", params=[RAW_TX],
                         outcome=outcomes.of_result("0x1"), created_at=utcnow_iso()).save()

    for _ in range(3):
        refused = claim_http(api, squatter_token)
        assert refused.status_code == 403 and "not an approved fork host" in refused.json()["error"]
        assert RAW_TX not in refused.text and "host_secret" not in refused.text
    assert tasks.claim(squatter, 1) is None  # the task protocol itself refuses it too, not only the route

    task = wait_for(lambda: claim_http(api, honest_token).json()["task"], 20, "the approved host's task")
    assert task["fork_id"] == created.fork.fork_id and task["journal"][0]["params"] == [RAW_TX] and task["host_secret"]
    # and the squatter cannot answer the task it never got
    assert report_http(api, squatter_token, task["task_id"], {"ok": False, "error": "mine"}).status_code == 404


def test_an_approved_host_cannot_claim_a_task_for_a_fork_assigned_to_another_host(api, chains):
    first, first_token = register_fork_host("host-a")
    created = service.create_fork(USER, USER, "latest")  # host-a is the only host: the fork is assigned to it
    second, second_token = register_fork_host("host-b")  # approved too, and idle
    assert created.fork.assigned_host == first

    for _ in range(3):
        assert claim_http(api, second_token).json()["task"] is None
    provision = wait_for(lambda: claim_http(api, first_token).json()["task"], 20, "host-a's task")
    assert report_http(api, second_token, provision["task_id"], built(chains[0].url, 250, provision)).status_code == 404
    assert report_http(api, first_token, provision["task_id"], built(chains[0].url, 250, provision)).status_code == 200
    fork = active(created.fork.fork_id)
    assert fork.host_agent_id == first

    # a sync, and a deletion, go to the fork's own host as well
    service.sync_now(USER, fork.fork_id)
    wait_for(lambda: Fork.get(fork.fork_id).status == "syncing", 20, "syncing")
    assert claim_http(api, second_token).json()["task"] is None
    rebase = wait_for(lambda: claim_http(api, first_token).json()["task"], 20, "host-a's rebase")
    assert rebase["kind"] == "rebase" and rebase["host_secret"] != provision["host_secret"]
    assert claim_http(api, second_token).json()["task"] is None
    # the next fork goes to the least loaded host: host-b
    assert service.create_fork(USER, USER, "latest").fork.assigned_host == second


def test_a_host_that_reports_a_wrong_base_is_suspended_and_the_fork_is_built_by_another_host(api, chains):
    mainnet, other_chain = chains
    liar, liar_token = register_fork_host("liar", provider_id=LIAR_PROVIDER)
    created = service.create_fork(USER, USER, "latest")
    honest, honest_token = register_fork_host("honest")
    task = wait_for(lambda: claim_http(api, liar_token).json()["task"], 20, "the liar's task")
    # it serves a chain of its own and says it is mainnet at block 250
    answer = report_http(api, liar_token, task["task_id"], built(other_chain.url, 250, task))
    assert answer.status_code == 200 and answer.json()["told"]["suspended"] is True
    assert "not mainnet's" in get_agent(liar).fork_host_suspended
    # no more fork tasks for it, and its provider is told
    refused = claim_http(api, liar_token)
    assert refused.status_code == 403 and "suspended" in refused.json()["error"]
    assert notices(5, where=lambda n: n["chat_id"] == LIAR_PROVIDER and "no longer hosts shadow forks" in n["text"])

    # the state machine asks again, and the build goes to the other approved host
    retry = wait_for(lambda: claim_http(api, honest_token).json()["task"], 20, "the honest host's task")
    assert retry["fork_id"] == created.fork.fork_id and retry["host_secret"] != task["host_secret"]
    assert report_http(api, honest_token, retry["task_id"], built(mainnet.url, 250, retry)).status_code == 200
    fork = active(created.fork.fork_id)
    assert (fork.host_agent_id, fork.host_rpc_url, fork.base_block) == (honest, mainnet.url, 250)
    assert other_chain.url not in (fork.host_secrets or {})


def test_a_lying_host_with_no_other_host_ends_the_build_failed_and_the_user_is_told(api, chains):
    liar, liar_token = register_fork_host("liar", provider_id=LIAR_PROVIDER)
    created = service.create_fork(USER, USER, "latest")
    task = wait_for(lambda: claim_http(api, liar_token).json()["task"], 20, "the liar's task")
    report_http(api, liar_token, task["task_id"], built(chains[1].url, 200, task))
    # the state machine asks once more; no approved host is left to poll, and the janitor's sweep answers it
    fork = wait_for(lambda: janitor.sweep() and (f := Fork.get(created.fork.fork_id)).status == "failed" and f, 30, "failed")
    assert fork.failure == "NoForkHost"
    assert wait_execution(fork.create_execution, 30) == "FAILED"
    assert notices(5, where=lambda n: n["chat_id"] == USER and "could not be started (NoForkHost)" in n["text"])


def test_a_host_that_lies_on_a_sync_is_suspended_and_its_forks_are_rebuilt_elsewhere(api, chains):
    mainnet, other_chain = chains
    liar, liar_token = register_fork_host("liar", provider_id=LIAR_PROVIDER)
    forks = []
    for _ in range(2):
        created = service.create_fork(USER, USER, "latest")
        task = wait_for(lambda: claim_http(api, liar_token).json()["task"], 20, "a build")
        assert report_http(api, liar_token, task["task_id"], built(mainnet.url, 200, task)).status_code == 200  # honest so far
        forks.append(active(created.fork.fork_id))
    honest, honest_token = register_fork_host("honest")
    notices(5)

    service.sync_now(USER, forks[0].fork_id)
    rebase = wait_for(lambda: claim_http(api, liar_token).json()["task"], 20, "the rebase")
    assert report_http(api, liar_token, rebase["task_id"], built(other_chain.url, 260, rebase)).json()["told"]["suspended"] is True
    # its other fork moves at once; the one it was syncing once the sync has ended (the janitor's next sweep)
    back = wait_for(lambda: (f := Fork.get(forks[0].fork_id)).status == "active" and f, 30, "sync ended")
    assert back.base_block == 200 and back.host_agent_id == liar  # the lie was not recorded
    assert janitor.sweep().rebuilt == [forks[0].fork_id]
    for _ in forks:
        rebuild = wait_for(lambda: claim_http(api, honest_token).json()["task"], 20, "a rebuild")
        assert rebuild["block"] == "200"
        assert report_http(api, honest_token, rebuild["task_id"], built(mainnet.url, 200, rebuild)).status_code == 200
    for fork in forks:
        assert active(fork.fork_id).host_agent_id == honest
    assert claim_http(api, liar_token).status_code == 403


@pytest.mark.e2e
def test_the_local_stack_approves_its_own_fork_host_through_the_operator_command(aws, chains, tmp_path):
    """`make up` starts an agent with fork_host; the launcher approves it with scripts/approve_fork_host.py."""
    from depu.agents.registry import agents_of_provider
    from depu.forks import hosts
    from local.agent_launcher import LOCAL_PROVIDER_ID, start_local_agent
    from local.moto_server import free_port
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port())).start()
    agent = None
    try:
        agent = start_local_agent(runtime.url, tmp_path, chain_url=chains[0].url, environment={"DEPU_AGENT_VERIFY": "false"})
        assert agent is not None
        approved = wait_for(lambda: [a for a in agents_of_provider(LOCAL_PROVIDER_ID) if hosts.may_host(a)], 90,
                            "the local agent's approval")
        assert approved[0].fork_host_approved_at
    finally:
        if agent:
            agent.stop()
        runtime.stop()
