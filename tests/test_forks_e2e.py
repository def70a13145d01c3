"""Shadow forks end to end on the local stack's pieces: a local "mainnet" (local.devchain, anvil with DePU's
contracts and transfer activity), moto running the real state machines, the template's real agent API and
fork RPC handlers behind a local HTTP front, real fork hosts (agent/depu_agent/forkhost.py) running anvil,
and web3.py talking to the fork through its RPC URL."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import requests
from eth_account import Account
from web3 import Web3

from depu.config import get_settings
from depu.forks import chainids, janitor, proxy, service
from depu.forks.models import Fork
from depu_agent.api import ApiClient
from depu_agent.forkhost import ForkHost
from forks_support import ApiFront, notices, register_fork_host, wait_execution, wait_for
from local.devchain import DevChain

pytestmark = pytest.mark.e2e
USER = 4242
RECIPIENT = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture
def mainnet():
    chain = DevChain().start()
    try:
        chain.deploy_defaults()
        chain.activity(rounds=2)
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def stack(aws, mainnet, monkeypatch):
    front = ApiFront(aws.endpoint)
    monkeypatch.setenv("PUBLIC_API_URL", front.url)
    monkeypatch.setenv("CHAIN_RPC_URL", mainnet.rpc_url)
    get_settings.cache_clear()
    monkeypatch.setattr(service, "PROVISION_TIMEOUT_S", 60)
    monkeypatch.setattr(service, "REBASE_TIMEOUT_S", 60)
    monkeypatch.setattr(service, "STOP_TIMEOUT_S", 20)
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    hosts: list[tuple[threading.Event, threading.Thread, ForkHost]] = []

    def start_host(name: str, upstream: str | None = None) -> ForkHost:
        _agent_id, token = register_fork_host(name)
        config = SimpleNamespace(fork_upstream_url=upstream or mainnet.rpc_url, fork_rpc_base_url="http://127.0.0.1", claim_wait_seconds=1)
        host = ForkHost(ApiClient(front.url, token, attempts=2), config)
        stop = threading.Event()
        thread = threading.Thread(target=host.run, args=(stop,), daemon=True)
        thread.start()
        hosts.append((stop, thread, host))
        return host

    def stop_host(host: ForkHost) -> None:
        for stop, thread, candidate in hosts:
            if candidate is host:
                stop.set()
                thread.join(timeout=30)

    try:
        yield SimpleNamespace(front=front, start_host=start_host, stop_host=stop_host, mainnet=mainnet)
    finally:
        for stop, _thread, _host in hosts:
            stop.set()
        for _stop, thread, host in hosts:
            thread.join(timeout=30)
            host.shutdown()
        front.stop()
        assert forks_of(chain_ids_of_forks()) == [], "fork hosts left anvil processes running"


def wait_status(fork_id: str, status: str, timeout: float = 60) -> Fork:
    return wait_for(lambda: (f := Fork.get(fork_id, consistent_read=True)).status == status and f, timeout, f"fork {status}")


def test_create_use_sync_and_delete_a_fork_through_its_rpc_url(stack):
    host = stack.start_host("host-a")
    started = time.monotonic()
    created = service.create_fork(USER, USER, "latest")
    fork = wait_status(created.fork.fork_id, "active")
    w3 = Web3(Web3.HTTPProvider(created.rpc_url, request_kwargs={"timeout": 30}))
    # the fork has its own chain id (never mainnet's 1), and contracts reading block.chainid see it too
    assert w3.eth.chain_id == fork.chain_id == chainids.for_fork(fork.fork_id) and chainids.is_forks(fork.chain_id)
    assert chain_id_seen_by_contracts(w3) == fork.chain_id
    creation_s = time.monotonic() - started
    assert f"<b>{fork.fork_id}</b> is ready at block {fork.base_block}" in notices(10, fork.fork_id)[0]["text"]
    assert fork.base_block == stack.mainnet.block_number()

    # the user funds a fresh account (gas-free, through the bot's service) and sends a signed transaction
    user = Account.create()
    service.fund(USER, fork.fork_id, user.address, "10")
    assert w3.eth.get_balance(user.address) == 10 * 10**18
    tx = {"to": RECIPIENT, "value": 10**18, "nonce": 0, "gas": 21000, "chainId": fork.chain_id,
          "maxFeePerGas": w3.eth.gas_price * 3, "maxPriorityFeePerGas": 1}
    # the same transaction signed for mainnet is refused: nothing signed on a fork may be valid on mainnet
    for_mainnet = user.sign_transaction({**tx, "chainId": 1}).raw_transaction
    refused = requests.post(created.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                                                   "params": ["0x" + for_mainnet.hex()]}, timeout=10).json()
    assert "chain id 1" in refused["error"]["message"]
    tx_hash = w3.eth.send_raw_transaction(user.sign_transaction(tx).raw_transaction)
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 1
    recipient_before = w3.eth.get_balance(RECIPIENT)
    mainnet_recipient = stack.mainnet.w3.eth.get_balance(RECIPIENT)
    assert recipient_before == mainnet_recipient + 10**18

    # mainnet moves on (contract transfers and ETH sends), the fork syncs onto its head
    stack.mainnet.activity(rounds=3, seed=11)
    sent = stack.mainnet.w3.eth.send_transaction({"from": stack.mainnet.accounts[1], "to": RECIPIENT, "value": 7})
    stack.mainnet.w3.eth.wait_for_transaction_receipt(sent, timeout=30)
    head = stack.mainnet.block_number()
    assert head > fork.base_block
    service.sync_now(USER, fork.fork_id)
    synced = wait_for(lambda: (f := Fork.get(fork.fork_id)).status == "active" and f.base_block >= head and f, 60, "sync")
    assert synced.conflict_count == 0, synced.conflicts
    assert "now follows block" in notices(10, fork.fork_id)[0]["text"]
    # the fork's head follows mainnet, mainnet's new activity is visible, and the user's changes are still there
    assert w3.eth.block_number >= head
    assert w3.eth.get_balance(RECIPIENT) == mainnet_recipient + 7 + 10**18
    assert w3.eth.get_balance(user.address) == 10 * 10**18 - 10**18 - 21000 * w3.eth.get_transaction_receipt(tx_hash)["effectiveGasPrice"]
    assert w3.eth.chain_id == fork.chain_id and chain_id_seen_by_contracts(w3) == fork.chain_id  # the rebased anvil too
    assert service.info(USER, fork.fork_id).journal_size == 2
    wait_for(lambda: len(host.forks) == 1, 10, "old anvil retired")

    # delete: the URL stops answering at once, the host stops the fork's anvil, the user is told
    old_host_url = Fork.get(fork.fork_id).host_rpc_url
    service.delete_fork(USER, fork.fork_id)
    answer = requests.post(created.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == -32001
    wait_status(fork.fork_id, "deleted", 30)
    assert "no longer answers" in notices(10, fork.fork_id)[0]["text"]
    wait_for(lambda: not host.forks, 20, "host stopped the fork")
    with pytest.raises(requests.ConnectionError):
        requests.post(old_host_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=5)
    print(f"\nfork creation to first RPC answer: {creation_s:.2f} s")


def test_a_fork_whose_host_dies_comes_back_on_another_host_with_its_journal(stack):
    first = stack.start_host("host-a")
    created = service.create_fork(USER, USER, "latest")
    fork = wait_status(created.fork.fork_id, "active")
    notices(10, fork.fork_id)
    w3 = Web3(Web3.HTTPProvider(created.rpc_url, request_kwargs={"timeout": 30}))
    user = Account.create()
    service.fund(USER, fork.fork_id, user.address, "5")
    signed = user.sign_transaction({"to": RECIPIENT, "value": 2 * 10**18, "nonce": 0, "gas": 21000, "chainId": fork.chain_id,
                                    "maxFeePerGas": w3.eth.gas_price * 3, "maxPriorityFeePerGas": 1})
    w3.eth.send_raw_transaction(signed.raw_transaction)
    snapshot = service.snapshot(USER, fork.fork_id)  # taken on host A; must still work after the rebuild
    # an impersonated account with no key anywhere sends ETH (eth_sendTransaction); its journal must replay too
    whale = Web3.to_checksum_address("0x00000000000000000000000000000000000beef1")
    service.fund(USER, fork.fork_id, whale, "3")
    service.impersonate(USER, fork.fork_id, whale)
    w3.eth.send_transaction({"from": whale, "to": RECIPIENT, "value": 10**18, "gas": 21000})
    expected_recipient = w3.eth.get_balance(RECIPIENT)

    stack.stop_host(first)  # host A goes away with its anvil; nobody tells the API
    assert not first.forks
    second = stack.start_host("host-b")
    swept = janitor.sweep(now=time.time() + janitor.HOST_SILENT_S + 5)  # A's last heartbeat is now too old
    assert swept.rebuilt == [fork.fork_id]
    rebuilt = wait_status(fork.fork_id, "active", 60)
    assert rebuilt.host_agent_id != fork.host_agent_id and rebuilt.base_block == fork.base_block
    assert "rebuilt on another host" in notices(10, fork.fork_id)[0]["text"]
    assert list(second.forks) == [fork.fork_id]
    # same URL, same base, the journal replayed: the funding and the transaction are there
    assert w3.eth.get_balance(RECIPIENT) == expected_recipient
    assert w3.eth.get_transaction_count(user.address) == 1
    assert w3.eth.get_transaction_count(whale) == 1
    assert rebuilt.conflict_count == 0, rebuilt.conflicts
    assert w3.eth.chain_id == fork.chain_id and chain_id_seen_by_contracts(w3) == fork.chain_id  # the rebuilt anvil too
    # the snapshot id still means the same journal position on the new host
    assert service.revert(USER, fork.fork_id, snapshot) is True
    assert w3.eth.get_transaction_count(whale) == 0 and w3.eth.get_transaction_count(user.address) == 1
    assert service.info(USER, fork.fork_id).journal_size == 2  # setBalance and the raw transaction


def test_a_host_that_cannot_fork_ends_the_creation_failed_and_the_user_is_told(stack):
    stack.start_host("host-broken", upstream="http://127.0.0.1:9")  # its upstream chain does not answer
    created = service.create_fork(USER, USER, "latest")
    failed = wait_status(created.fork.fork_id, "failed", 60)
    assert failed.failure == "ForkHostFailed"
    assert wait_execution(failed.create_execution, 30) == "FAILED"
    assert "could not be started (ForkHostFailed)" in notices(10, created.fork.fork_id)[0]["text"]
    answer = requests.post(created.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=10)
    assert answer.status_code == 404


ANVIL_DEV_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil's public test key


def test_a_sync_reports_a_transaction_that_mainnet_made_impossible(stack):
    stack.start_host("host-a")
    created = service.create_fork(USER, USER, "latest")
    fork = wait_status(created.fork.fork_id, "active")
    notices(10, fork.fork_id)
    w3 = Web3(Web3.HTTPProvider(created.rpc_url, request_kwargs={"timeout": 30}))
    dev = Account.from_key(ANVIL_DEV_KEY_0)
    assert dev.address == stack.mainnet.accounts[0]
    nonce = w3.eth.get_transaction_count(dev.address)
    signed = dev.sign_transaction({"to": RECIPIENT, "value": 5, "nonce": nonce, "gas": 21000, "chainId": fork.chain_id,
                                   "maxFeePerGas": w3.eth.gas_price * 3, "maxPriorityFeePerGas": 1})
    assert w3.eth.get_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))["status"] == 1
    spent = stack.mainnet.w3.eth.send_transaction({"from": dev.address, "to": RECIPIENT, "value": 1})  # same nonce, on mainnet
    stack.mainnet.w3.eth.wait_for_transaction_receipt(spent, timeout=30)
    service.sync_now(USER, fork.fork_id)
    synced = wait_for(lambda: (f := Fork.get(fork.fork_id)).status == "active" and f.base_block > fork.base_block and f, 60, "sync")
    assert synced.conflict_count == 1
    [notice] = notices(10, fork.fork_id)
    assert "1 journal entries behave differently" in notice["text"]
    assert "#0 eth_sendRawTransaction: now fails" in notice["text"] and "nonce" in notice["text"].lower()
    assert w3.eth.get_transaction_count(dev.address) == nonce + 1  # mainnet's transaction, not the user's


def test_auto_sync_keeps_the_fork_following_mainnet(stack, monkeypatch):
    monkeypatch.setattr(service, "MIN_SYNC_INTERVAL_S", 1)
    stack.start_host("host-a")
    created = service.create_fork(USER, USER, "latest")
    fork = wait_status(created.fork.fork_id, "active")
    service.fund(USER, fork.fork_id, RECIPIENT, "1")
    service.set_auto_sync(USER, fork.fork_id, True, interval_s=1)
    w3 = Web3(Web3.HTTPProvider(created.rpc_url, request_kwargs={"timeout": 30}))
    for _ in range(2):
        target = stack.mainnet.mine(3)
        wait_for(lambda: (f := Fork.get(fork.fork_id)).base_block >= target and f.status == "active", 60, f"base {target}")
        assert w3.eth.block_number >= target
    assert w3.eth.get_balance(RECIPIENT) >= 10**18
    service.set_auto_sync(USER, fork.fork_id, False)
    loop = f"{Fork.get(fork.fork_id).sync_loop}"
    assert loop == ""


def test_the_real_agent_daemon_hosts_forks_when_it_has_the_fork_host_capability(stack, tmp_path):
    """The agent helper's ``python -m depu_agent`` starts ForkHost itself (capability "fork_host")."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from depu.agents import tokens as agent_tokens
    from forks_support import ROOT

    config = {"api_url": stack.front.url, "name": "daemon-fork-host", "agent_token_file": str(tmp_path / "token"),
              "work_dir": str(tmp_path / "work"), "capabilities": ["fork_host"], "fork_rpc_base_url": "http://127.0.0.1",
              "fork_upstream_url": stack.mainnet.rpc_url,
              "verify": False, "docker": "never", "heartbeat_seconds": 1, "claim_wait_seconds": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEPU_")}
    env.update(PYTHONPATH=str(ROOT / "agent"), DEPU_AGENT_ENROLMENT_TOKEN=agent_tokens.issue_enrolment_token(321))
    log = open(tmp_path / "agent.log", "ab")
    agent = subprocess.Popen([sys.executable, "-m", "depu_agent", "--config", str(tmp_path / "config.json")],
                             cwd=ROOT / "agent", env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the daemon offers fork_host; it hosts only once the operator approved it (scripts/approve_fork_host.py)
        from depu.agents.registry import agents_of_provider
        from scripts import approve_fork_host

        daemon = wait_for(lambda: agents_of_provider(321), 60, "the daemon to register")[0]
        assert approve_fork_host.main(["approve", daemon.agent_id]) == 0
        created = service.create_fork(USER, USER, "latest")
        wait_status(created.fork.fork_id, "active", 90)
        w3 = Web3(Web3.HTTPProvider(created.rpc_url, request_kwargs={"timeout": 30}))
        assert w3.eth.block_number == stack.mainnet.block_number()
        service.delete_fork(USER, created.fork.fork_id)
        wait_status(created.fork.fork_id, "deleted", 30)
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait(timeout=10)
        log.close()
    assert forks_of(chain_ids_of_forks()) == [], "the agent left anvil forks running"


# init code: CHAINID, store it at 0, return those 32 bytes. eth_call without "to" runs it as a contract
# creation, so the answer is what a contract reading block.chainid sees (no write, nothing journaled)
CHAINID_CODE = "0x4660005260206000f3"


def chain_id_seen_by_contracts(w3: Web3) -> int:
    return int.from_bytes(w3.eth.call({"data": CHAINID_CODE}), "big")


def chain_ids_of_forks() -> set[int]:
    """The chain ids of every fork this test created (moto's tables live for one test)."""
    return {int(fork.chain_id) for fork in Fork.scan() if fork.chain_id is not None}


def forks_of(chain_ids: set[int]) -> list[int]:
    """anvil processes still running one of these forks (a fork's anvil runs with ``--chain-id`` its own; the
    upstream URL is never on its command line)."""
    from pathlib import Path

    wanted = {str(chain_id).encode() for chain_id in chain_ids if chain_id != 1}
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        at = argv.index(b"--chain-id") + 1 if b"--chain-id" in argv else len(argv)
        if at < len(argv) and argv[at] in wanted:
            found.append(int(proc.name))
    return found


def test_a_new_fork_follows_mainnet_and_a_conflict_is_told_with_the_transaction_and_reason(stack):
    stack.start_host("host-a")
    created = service.create_fork(USER, USER, "latest")
    fork = wait_status(created.fork.fork_id, "active")
    notices(10, fork.fork_id)
    assert fork.follow is True
    w3 = Web3(Web3.HTTPProvider(created.rpc_url, request_kwargs={"timeout": 30}))
    service.fund(USER, fork.fork_id, RECIPIENT, "1")
    # mainnet moves: the fork follows by itself, its journal replayed on each head
    target = stack.mainnet.mine(2)
    wait_for(lambda: (service.info(USER, fork.fork_id).base_block or 0) >= target, 30, "the fork to follow")
    details = service.info(USER, fork.fork_id)
    assert details.blocks_behind == 0 and details.follow["following"] is True and details.follow["steps"] >= 1
    assert details.follow["upstream_calls_per_block"] is not None
    assert w3.eth.get_balance(RECIPIENT) == stack.mainnet.w3.eth.get_balance(RECIPIENT) + 10**18
    # a transaction mainnet then makes impossible (its nonce spent there) is a conflict, told once, with its reason
    dev = Account.from_key(ANVIL_DEV_KEY_0)
    nonce = w3.eth.get_transaction_count(dev.address)
    signed = dev.sign_transaction({"to": RECIPIENT, "value": 5, "nonce": nonce, "gas": 21000, "chainId": fork.chain_id,
                                   "maxFeePerGas": w3.eth.gas_price * 3, "maxPriorityFeePerGas": 1})
    w3.eth.send_raw_transaction(signed.raw_transaction)
    spent = stack.mainnet.w3.eth.send_transaction({"from": dev.address, "to": RECIPIENT, "value": 1})
    stack.mainnet.w3.eth.wait_for_transaction_receipt(spent, timeout=30)
    wait_for(lambda: (service.info(USER, fork.fork_id).follow or {}).get("conflicts_total") == 1, 30, "the conflict")
    assert janitor.sweep().conflicts == [fork.fork_id]
    [notice] = notices(10, fork.fork_id)
    assert "1 journal entries now behave differently" in notice["text"]
    assert "#1 eth_sendRawTransaction: now fails" in notice["text"] and "nonce" in notice["text"].lower()
    assert janitor.sweep().conflicts == []  # told once
    assert w3.eth.get_transaction_count(dev.address) == nonce + 1 and w3.eth.chain_id == fork.chain_id  # still usable
    # follow off: mainnet moves, the fork stays; on again: it catches up
    service.set_follow(USER, fork.fork_id, False)
    assert Fork.get(fork.fork_id).follow is False
    stayed = service.info(USER, fork.fork_id).base_block
    target = stack.mainnet.mine(2)
    time.sleep(1.5)
    assert service.info(USER, fork.fork_id).base_block == stayed < target
    service.set_follow(USER, fork.fork_id, True)
    wait_for(lambda: (service.info(USER, fork.fork_id).base_block or 0) >= target, 30, "the fork to catch up")
