"""The fork RPC proxy (functions/fork_rpc through the template's route) in front of a real anvil:
authentication, the method allow-list, limits, and the journal it keeps of every write."""
from __future__ import annotations

import json
import time

import pytest
import requests

from depu.forks import journal, outcomes, policy, proxy, tokens
from depu.ratelimit import KeyedBuckets
from depu.forks.models import ACTIVE, SYNCING, Fork, JournalEntry, utcnow_iso
from forks_support import Anvil, ApiFront

ALICE = 101
BOB = 202
DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first dev account (unlocked)
SOMEONE = "0x00000000000000000000000000000000000000aa"


@pytest.fixture
def host():
    anvil = Anvil()
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture
def front(aws, monkeypatch):
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    api = ApiFront(aws.endpoint)
    try:
        yield api
    finally:
        api.stop()


def make_fork(user_id: int, host_url: str, fork_id: str = "ftest01", status: str = ACTIVE) -> str:
    token, token_hash = tokens.issue(fork_id, user_id, int(time.time()) + 3600)
    Fork(fork_id, user_id=user_id, chat_id=user_id, created_at=utcnow_iso(), status=status, host_rpc_url=host_url,
         rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600, base_block=0, chain_id=31337, host_agent_id="ag_x").save()
    return token


def rpc(front: ApiFront, token: str, method: str, *params, raw: bytes | None = None):
    body = raw if raw is not None else json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    return requests.post(f"{front.url}/rpc/{token}", data=body, headers={"Content-Type": "application/json"}, timeout=30)


def test_reads_pass_and_unknown_methods_are_refused_with_a_json_rpc_error(front, host):
    token = make_fork(ALICE, host.url)
    answer = rpc(front, token, "eth_chainId")
    assert answer.status_code == 200 and answer.json() == {"jsonrpc": "2.0", "id": 7, "result": hex(31337)}
    for method in ("anvil_reset", "anvil_setRpcUrl", "anvil_dumpState", "eth_sign", "debug_traceTransaction", "admin_peers"):
        refused = rpc(front, token, method).json()
        assert refused["error"] == {"code": -32601, "message": "method not allowed on DePU forks"}, method
    assert not JournalEntry.count("ftest01")


def test_unknown_foreign_and_revoked_tokens_are_401(front, host):
    token = make_fork(ALICE, host.url)
    for bad in ("dpf_" + "x" * 43, "nonsense", token[:-1]):
        answer = rpc(front, bad, "eth_chainId")
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == policy.UNAUTHORIZED
    # a token that points at a fork whose current token is another one (rotated) is refused too
    stale, _ = tokens.issue("ftest01", ALICE, int(time.time()) + 3600)
    assert rpc(front, stale, "eth_chainId").status_code == 401
    tokens.revoke(tokens.hash_token(token))
    assert rpc(front, token, "eth_chainId").status_code == 401


def test_oversized_bodies_bad_json_and_big_batches_are_refused(front, host):
    token = make_fork(ALICE, host.url)
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"data": "0x" + "00" * policy.MAX_BODY_BYTES}]})
    answer = rpc(front, token, "", raw=big.encode())
    assert answer.status_code == 413 and answer.json()["error"]["code"] == policy.INVALID_REQUEST
    assert rpc(front, token, "", raw=b"{not json").json()["error"]["code"] == policy.PARSE_ERROR
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber", "params": []} for i in range(policy.MAX_BATCH + 1)]
    assert rpc(front, token, "", raw=json.dumps(batch).encode()).json()["error"]["code"] == policy.INVALID_REQUEST
    answer = rpc(front, token, "", raw=json.dumps(batch[:3] + [{"id": 9, "method": "anvil_reset", "params": []}]).encode()).json()
    assert [item["id"] for item in answer] == [0, 1, 2, 9]
    assert all("result" in item for item in answer[:3]) and answer[3]["error"]["code"] == -32601


def test_rate_limit_answers_429_after_the_burst(front, host, monkeypatch):
    bucket = KeyedBuckets(rate=0.001, burst=3)
    assert [bucket.take("f") for _ in range(4)] == [True, True, True, False]
    assert bucket.take("g")  # per fork
    monkeypatch.setattr(proxy, "_default", proxy.ForkProxy(bucket=KeyedBuckets(rate=0.001, burst=2)))
    token = make_fork(ALICE, host.url)
    assert [rpc(front, token, "eth_chainId").status_code for _ in range(3)] == [200, 200, 429]
    assert rpc(front, token, "eth_chainId").json()["error"]["code"] == policy.LIMIT_EXCEEDED


def test_writes_are_journaled_in_order_with_their_outcomes(front, host):
    token = make_fork(ALICE, host.url)
    assert rpc(front, token, "hardhat_setBalance", SOMEONE, hex(5 * 10**18)).json()["result"] is None
    sent = rpc(front, token, "eth_sendTransaction", {"from": DEV, "to": SOMEONE, "value": hex(10**18)}).json()
    assert sent["result"].startswith("0x")
    assert rpc(front, token, "eth_getBalance", SOMEONE, "latest").json()["result"] == hex(6 * 10**18)
    # a write the fork rejects changes nothing and is not journaled
    rejected = rpc(front, token, "eth_sendRawTransaction", "0xdeadbeef").json()
    assert "error" in rejected
    entries = journal.entries("ftest01")
    assert [(int(e.seq), e.method) for e in entries] == [(0, "anvil_setBalance"), (1, "eth_sendTransaction")]
    assert entries[1].outcome["kind"] == "tx" and entries[1].outcome["status"] == 1 and entries[1].outcome["gas_used"] == 21000


def test_snapshot_ids_are_journal_positions_and_revert_drops_the_reverted_entries(front, host):
    token = make_fork(ALICE, host.url)
    rpc(front, token, "anvil_setBalance", SOMEONE, hex(1))
    snapshot = rpc(front, token, "evm_snapshot").json()["result"]
    assert snapshot == "0x1"
    rpc(front, token, "anvil_setBalance", SOMEONE, hex(2))
    rpc(front, token, "evm_mine")
    assert [e.method for e in journal.entries("ftest01")] == ["anvil_setBalance", "evm_snapshot", "anvil_setBalance", "evm_mine"]
    assert rpc(front, token, "evm_revert", snapshot).json()["result"] is True
    assert rpc(front, token, "eth_getBalance", SOMEONE, "latest").json()["result"] == hex(1)
    assert [e.method for e in journal.entries("ftest01")] == ["anvil_setBalance"]
    assert rpc(front, token, "evm_revert", snapshot).json()["result"] is False  # spent, like anvil's own ids
    assert Fork.get("ftest01").host_snapshots == {}


def test_writes_wait_while_syncing_but_reads_still_answer(front, host):
    token = make_fork(ALICE, host.url, status=SYNCING)
    assert "result" in rpc(front, token, "eth_blockNumber").json()
    refused = rpc(front, token, "anvil_setBalance", SOMEONE, hex(1)).json()
    assert refused["error"]["code"] == policy.LIMIT_EXCEEDED and "syncing" in refused["error"]["message"]
    assert not journal.entries("ftest01")


def test_deleted_forks_and_dead_hosts_answer_clear_errors(front, host):
    token = make_fork(ALICE, "http://127.0.0.1:9")  # nothing listens there
    answer = rpc(front, token, "eth_blockNumber").json()
    assert answer["error"]["code"] == policy.FORK_UNAVAILABLE
    Fork("ftest01").update(actions=[Fork.status.set("deleted")])
    assert rpc(front, token, "eth_blockNumber").status_code == 404


def test_outcome_comparison_names_the_difference():
    ok = outcomes.of_receipt({"status": "0x1", "gasUsed": "0x5208", "logs": []})
    assert outcomes.differs("eth_sendRawTransaction", ok, dict(ok)) is None
    assert outcomes.differs("eth_sendRawTransaction", ok, outcomes.of_receipt({"status": "0x0", "gasUsed": "0x5208", "logs": []})) == "now reverts"
    assert "nonce too low" in outcomes.differs("eth_sendRawTransaction", ok, outcomes.of_error({"message": "nonce too low"}))
    assert outcomes.differs("evm_snapshot", outcomes.of_result("0x0"), outcomes.of_result("0x3")) is None
    assert outcomes.conflicts_text([{"seq": 3, "method": "eth_sendRawTransaction", "reason": "a<b"}]) == "#3 eth_sendRawTransaction: a&lt;b"
