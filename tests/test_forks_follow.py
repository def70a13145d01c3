"""Follow mode on a fork host (agent/depu_agent/forkfollow.py): real anvils, the host's front and RPC cache.
Every new head moves the fork: an empty journal advances, a journal is rebased onto the head; heads are
coalesced; snapshot and filter ids clients hold keep working; a replayed transaction that mainnet made
impossible is reported as a conflict and the fork stays usable."""
from __future__ import annotations

import itertools
import threading

import pytest
import requests
from eth_account import Account

from depu_agent.forkcache import UpstreamCache, cacheable
from depu_agent.forkfollow import Follower, step
from depu_agent.forkhost import AnvilFork
from forks_support import ANVIL, Anvil, wait_for

pytestmark = pytest.mark.e2e
SECRET = "follow-test-secret"
CHAIN_ID = 73570000000077
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil's public test key 0
DEV = Account.from_key(DEV_KEY).address
RECIPIENT = "0x000000000000000000000000000000000000dEaD"
SOMEONE = "0x00000000000000000000000000000000000000aa"


@pytest.fixture
def mainnet():
    chain = Anvil()
    chain.rpc("anvil_mine", hex(20))
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def hosted(mainnet):
    """One fork on a host-like setup: the RPC cache in front of mainnet, an AnvilFork behind its front."""
    cache = UpstreamCache(mainnet.url)
    fork = AnvilFork(ANVIL, cache.url, int(mainnet.rpc("eth_blockNumber"), 16), "127.0.0.1", "http://127.0.0.1", SECRET,
                     chain_id=CHAIN_ID)
    fork.wait_ready()
    fork.replay([])
    fork.front.follow.update({"following": True, "base_block": fork.block})
    try:
        yield fork, cache
    finally:
        fork.stop()
        cache.stop()


class Client:
    """Talks to the fork's front as the DePU proxy does: the host secret, and a seq on every write."""

    def __init__(self, fork: AnvilFork):
        self.fork = fork
        self.session = requests.Session()
        self.seqs = itertools.count()

    def call(self, method: str, *params, write: bool = False) -> dict:
        headers = {"Authorization": f"Bearer {SECRET}"}
        if write:
            headers["X-DePU-Write-Seq"] = str(next(self.seqs))
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        return self.session.post(self.fork.rpc_url, json=body, headers=headers, timeout=30).json()

    def value(self, method: str, *params, write: bool = False):
        answer = self.call(method, *params, write=write)
        assert "error" not in answer, answer
        return answer["result"]


def head(chain: Anvil) -> int:
    return int(chain.rpc("eth_blockNumber"), 16)


def signed_transfer(nonce: int, value: int = 5) -> str:
    tx = {"to": RECIPIENT, "value": value, "nonce": nonce, "gas": 21000, "chainId": CHAIN_ID, "maxFeePerGas": 10**10,
          "maxPriorityFeePerGas": 1}
    return "0x" + Account.from_key(DEV_KEY).sign_transaction(tx).raw_transaction.hex()


def test_an_empty_journal_advances_with_the_head_and_keeps_its_filters(mainnet, hosted):
    fork, cache = hosted
    client = Client(fork)
    blocks = client.value("eth_newBlockFilter")
    mainnet.rpc("anvil_setBalance", SOMEONE, hex(77))
    mainnet.rpc("evm_mine")
    calls_before = cache.upstream_calls
    done = step(fork, head(mainnet), cache.url, cache)
    assert done["mode"] == "advance" and done["block"] == head(mainnet) == fork.block
    assert int(client.value("eth_blockNumber"), 16) == head(mainnet)
    assert client.value("eth_getBalance", SOMEONE, "latest") == hex(77)  # mainnet's new state
    assert client.value("eth_chainId") == hex(CHAIN_ID)  # still the fork's own chain id
    assert 0 < done["upstream_calls"] <= cache.upstream_calls - calls_before  # (reads after it fetch lazily)
    assert client.value("eth_getFilterChanges", blocks) == []  # the filter survived the move (it answers, empty)
    status = client.value("depu_followStatus")
    assert status["base_block"] == head(mainnet) and status["steps"] == 1 and status["last_mode"] == "advance"
    assert status["upstream_calls_last_step"] == done["upstream_calls"]


def test_a_journal_is_rebased_onto_every_head_with_its_snapshots_and_filters(mainnet, hosted):
    fork, cache = hosted
    client = Client(fork)
    client.value("anvil_setBalance", SOMEONE, hex(10**18), write=True)
    snapshot = client.value("evm_snapshot", write=True)
    client.value("eth_sendRawTransaction", signed_transfer(0), write=True)
    logs = client.value("eth_newFilter", {"address": SOMEONE})
    first_process = fork.anvil
    for _ in range(3):
        mainnet.rpc("evm_mine")
        done = step(fork, head(mainnet), cache.url, cache)
        assert done["mode"] == "rebase" and not done["conflicts"]
    assert fork.anvil is not first_process or fork.spare is not None  # served by another anvil than before
    assert fork.block == head(mainnet)
    # the user's changes are on the new head: the balance, and the transaction (replayed, mined on top)
    assert client.value("eth_getBalance", SOMEONE, "latest") == hex(10**18)
    assert int(client.value("eth_getTransactionCount", DEV, "latest"), 16) == 1
    assert int(client.value("eth_blockNumber"), 16) > head(mainnet)
    assert client.value("eth_getFilterChanges", logs) == []  # the filter id the client holds still answers
    # the snapshot id handed out before three rebases still means the same journal position
    assert client.value("evm_revert", snapshot, write=True) is True
    assert int(client.value("eth_getTransactionCount", DEV, "latest"), 16) == 0
    assert [entry["method"] for entry in fork.front.entries()[0]] == ["anvil_setBalance"]
    mainnet.rpc("evm_mine")
    step(fork, head(mainnet), cache.url, cache)
    assert client.value("eth_getBalance", SOMEONE, "latest") == hex(10**18)
    assert int(client.value("eth_getTransactionCount", DEV, "latest"), 16) == 0  # the reverted tx stays gone


def test_a_transaction_mainnet_made_impossible_is_a_conflict_and_the_fork_stays_usable(mainnet, hosted):
    fork, cache = hosted
    client = Client(fork)
    sent = client.value("eth_sendRawTransaction", signed_transfer(0), write=True)
    assert sent.startswith("0x")
    spent = mainnet.rpc("eth_sendTransaction", {"from": DEV, "to": RECIPIENT, "value": "0x1"})  # nonce 0, on mainnet
    # anvil answers the hash before its automine block is sealed: the head that spends the nonce comes after
    wait_for(lambda: mainnet.rpc("eth_getTransactionReceipt", spent), 10, "mainnet's block")
    done = step(fork, head(mainnet), cache.url, cache)
    [conflict] = done["conflicts"]
    assert conflict["seq"] == 0 and conflict["method"] == "eth_sendRawTransaction" and conflict["block"] == head(mainnet)
    assert conflict["reason"].startswith("now fails") and "nonce" in conflict["reason"].lower()
    status = client.value("depu_followStatus")
    assert status["conflicts_total"] == 1 and status["conflicts"][0]["seq"] == 0
    # usable: on mainnet's head, writable, and the same conflict is not reported again at the next head
    assert int(client.value("eth_getTransactionCount", DEV, "latest"), 16) == 1
    assert client.value("eth_sendRawTransaction", signed_transfer(1), write=True).startswith("0x")
    mainnet.rpc("evm_mine")
    again = step(fork, head(mainnet), cache.url, cache)
    assert again["conflicts"] == [] and int(client.value("eth_getTransactionCount", DEV, "latest"), 16) == 2


def test_the_follower_coalesces_heads_and_writes_during_a_step_are_kept(mainnet, hosted):
    fork, cache = hosted
    client = Client(fork)
    client.value("anvil_setBalance", SOMEONE, hex(1), write=True)
    follower = Follower(lambda: {"f1": fork}, lambda: head(mainnet), cache.url, cache, poll_seconds=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, args=(stop,), daemon=True)
    thread.start()
    try:
        mainnet.rpc("anvil_mine", hex(5))  # five heads at once: coalesced into a step to the newest
        target = head(mainnet)
        wait_for(lambda: fork.block == target, 20, "the fork to follow")
        # anvil mines the five one by one, so a poll may land on one in between (seen at load 10): at most two
        # steps, never one per head
        assert 1 <= fork.front.follow["steps"] <= 2
        for number in range(5):  # writes keep landing while the fork follows new heads
            client.value("anvil_setBalance", SOMEONE, hex(number + 2), write=True)
            mainnet.rpc("evm_mine")
        target = head(mainnet)
        wait_for(lambda: fork.block == target, 20, "the fork to follow")
        wait_for(lambda: client.value("eth_getBalance", SOMEONE, "latest") == hex(6), 10, "the last write on the head")
        fork.front.follow["following"] = False  # switched off: mainnet moves, the fork stays
        mainnet.rpc("evm_mine")
        stopped_at = fork.block
        wait_for(lambda: follower.head == head(mainnet), 10, "the follower to see the head")
        assert fork.block == stopped_at
    finally:
        stop.set()
        thread.join(timeout=10)


def test_the_rpc_cache_keeps_only_what_cannot_change(mainnet):
    assert cacheable("eth_getBalance", [SOMEONE, "0x10"]) and cacheable("eth_getStorageAt", [SOMEONE, "0x0", "0x10"])
    assert not cacheable("eth_getBalance", [SOMEONE, "latest"]) and not cacheable("eth_blockNumber", [])
    assert cacheable("eth_getBlockByNumber", ["0x3", False]) and not cacheable("eth_getBlockByNumber", ["latest", False])
    cache = UpstreamCache(mainnet.url)
    try:
        body = {"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance", "params": [DEV, "0x5"]}
        first = requests.post(cache.url, json=body, timeout=10).json()
        again = requests.post(cache.url, json=[body, {**body, "id": 4, "params": [DEV, "latest"]}], timeout=10).json()
        assert again[0] == first and again[1]["id"] == 4
        assert (cache.upstream_calls, cache.hits) == (2, 1)  # the fixed one once, the moving one each time
        wrong_path = cache.url.rsplit("/", 1)[0] + "/guess"
        assert requests.post(wrong_path, json=body, timeout=10).status_code == 404  # the key's path is secret
    finally:
        cache.stop()


def test_a_step_prefetches_what_the_fork_read_in_batches(mainnet, hosted):
    fork, cache = hosted
    client = Client(fork)
    for index in range(12):  # a journal touching a dozen accounts the upstream knows
        client.value("anvil_setBalance", "0x" + f"{index + 1:040x}", hex(index), write=True)
    client.value("eth_sendRawTransaction", signed_transfer(0), write=True)
    mainnet.rpc("evm_mine")
    step(fork, head(mainnet), cache.url, cache)  # the first step at a new block learns what the fork reads
    mainnet.rpc("evm_mine")
    done = step(fork, head(mainnet), cache.url, cache)
    # many of the reads went out in a few batches before the replay (without: one round trip each)
    assert done["upstream_calls"] >= 20 and done["upstream_round_trips"] <= done["upstream_calls"] * 0.6, done
    assert int(client.value("eth_getTransactionCount", DEV, "latest"), 16) == 1
    assert client.value("eth_getBalance", "0x" + f"{12:040x}", "latest") == hex(11)
