"""Developer tools on a fork, through the real proxy route in front of a real anvil: filters, bounded traces,
revert reasons and call trees (depu.forks.debug), and ERC-20 funding by slot probing (depu.forks.erc20)."""
from __future__ import annotations

import time

import pytest
import requests
from eth_abi import encode

from depu.forks import debug, erc20, journal, policy, proxy, tokens
from depu.ratelimit import KeyedBuckets
from depu.forks.models import ACTIVE, Fork, utcnow_iso
from forks_support import Anvil, ApiFront
from local.devchain import load_artifact

ALICE = 101
DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first dev account (unlocked)
HOLDER = "0x00000000000000000000000000000000000000aa"
REVERTER = "0x00000000000000000000000000000000000000c1"
CALLER = "0x00000000000000000000000000000000000000c2"
LOOPER = "0x00000000000000000000000000000000000000c3"
REBASING = "0x00000000000000000000000000000000000000c4"


def make_fork(host_url: str, fork_id: str = "fdebug1") -> str:
    token, token_hash = tokens.issue(fork_id, ALICE, int(time.time()) + 3600)
    Fork(fork_id, user_id=ALICE, chat_id=ALICE, created_at=utcnow_iso(), status=ACTIVE, host_rpc_url=host_url,
         rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600, base_block=0, chain_id=31337, host_agent_id="ag_x").save()
    return token


def call(front: ApiFront, token: str, method: str, *params) -> dict:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    return requests.post(f"{front.url}/rpc/{token}", json=body, timeout=60).json()


def value(front: ApiFront, token: str, method: str, *params):
    answer = call(front, token, method, *params)
    assert "error" not in answer, answer
    return answer["result"]


# ------------------------------------------------------------------ hand-assembled contracts
def reverts_with(data: bytes) -> str:
    """Runtime code that reverts with ``data``."""
    code = b""
    for offset in range(0, len(data), 32):
        code += b"\x7f" + data[offset:offset + 32].ljust(32, b"\0") + b"\x61" + offset.to_bytes(2, "big") + b"\x52"
    code += b"\x61" + len(data).to_bytes(2, "big") + b"\x60\x00\xfd"
    return "0x" + code.hex()


def bubbles_from(target: str) -> str:
    """Runtime code that calls ``target`` and reverts with whatever it returned."""
    call_ = b"\x60\x00" * 5 + b"\x73" + bytes.fromhex(target[2:]) + b"\x5a\xf1\x50"
    return "0x" + (call_ + b"\x3d\x60\x00\x60\x00\x3e" + b"\x3d\x60\x00\xfd").hex()


def loops(times: int) -> str:
    return "0x61%04x5b600190038060035700" % times


# balanceOf(a) = 2 * storage[keccak(a . 0)]: balances are shares, as in a rebasing token
REBASING_CODE = "0x60043560005260006020526040600020546002026000526020" + "6000f3"


def error_string(message: str) -> bytes:
    return bytes.fromhex(debug.ERROR_SELECTOR) + encode(["string"], [message])


# ------------------------------------------------------------------ filters
def test_filters_work_through_the_proxy(front, host):
    token = make_fork(host.url)
    blocks = value(front, token, "eth_newBlockFilter")
    pending = value(front, token, "eth_newPendingTransactionFilter")
    dusd = load_artifact("DepuToken")
    sent = value(front, token, "eth_sendTransaction", {"from": DEV, "data": dusd["bytecode"] + encode(
        ["string", "string", "uint8", "uint256"], ["D", "D", 18, 10**24]).hex(), "gas": hex(3_000_000)})
    token_address = host.rpc("eth_getTransactionReceipt", sent)["contractAddress"]
    logs = value(front, token, "eth_newFilter", {"address": token_address})
    transfer = "0xa9059cbb" + encode(["address", "uint256"], [HOLDER, 5]).hex()
    tx = value(front, token, "eth_sendTransaction", {"from": DEV, "to": token_address, "data": transfer})
    [log] = value(front, token, "eth_getFilterChanges", logs)
    assert log["transactionHash"] == tx and int(log["data"], 16) == 5
    assert value(front, token, "eth_getFilterChanges", logs) == []  # changes since the last poll only
    assert [entry["transactionHash"] for entry in value(front, token, "eth_getFilterLogs", logs)] == [tx]
    assert len(value(front, token, "eth_getFilterChanges", blocks)) == 2  # the deploy's block and the transfer's
    assert set(value(front, token, "eth_getFilterChanges", pending)) >= {tx}
    assert value(front, token, "eth_uninstallFilter", logs) is True
    gone = call(front, token, "eth_getFilterChanges", logs)
    assert "filter not found" in gone["error"]["message"]
    assert [e.method for e in journal.entries("fdebug1")] == ["eth_sendTransaction", "eth_sendTransaction"]  # filters are not writes


# ------------------------------------------------------------------ traces
def test_traces_pass_and_a_revert_is_explained_with_a_call_tree(front, host):
    token = make_fork(host.url)
    value(front, token, "anvil_setCode", REVERTER, reverts_with(error_string("not enough DUSD")))
    value(front, token, "anvil_setCode", CALLER, bubbles_from(REVERTER))
    tx = value(front, token, "eth_sendTransaction", {"from": DEV, "to": CALLER, "gas": hex(200_000)})
    assert host.rpc("eth_getTransactionReceipt", tx)["status"] == "0x0"

    frame = value(front, token, "debug_traceTransaction", tx, {"tracer": "callTracer"})
    found = debug.reason(frame)
    assert found.kind == "error" and found.text == 'Error("not enough DUSD")'
    tree = debug.call_tree(frame)
    assert len(tree) == 2 and tree[0].startswith("CALL 0xf39f…2266→0x0000…00c2")
    assert tree[1].startswith("  CALL 0x0000…00c2→0x0000…00c1") and tree[1].endswith('✗ Error("not enough DUSD")')
    prestate = value(front, token, "debug_traceTransaction", tx, {"tracer": "prestateTracer"})
    assert REVERTER in prestate and CALLER in prestate
    top, inner = value(front, token, "trace_transaction", tx)  # parity-style: one item per call
    assert top["transactionHash"] == tx and top["action"]["to"] == CALLER and inner["traceAddress"] == [0]
    block = int(host.rpc("eth_getTransactionReceipt", tx)["blockNumber"], 16)
    assert any(item["transactionHash"] == tx for item in value(front, token, "trace_block", hex(block)))
    called = value(front, token, "debug_traceCall", {"from": DEV, "to": CALLER}, "latest", {"tracer": "callTracer"})
    assert debug.reason(called).text == 'Error("not enough DUSD")'
    assert value(front, token, "debug_traceTransaction", tx)["failed"] is True  # the opcode logger
    # a JavaScript tracer (code run on the host) is refused before anything reaches it
    refused = call(front, token, "debug_traceTransaction", tx, {"tracer": "{step: function() {}, result: function() {}}"})
    assert refused["error"]["code"] == policy.INVALID_PARAMS and "not available on DePU forks" in refused["error"]["message"]


def test_an_oversized_trace_is_cut_off_and_the_fork_keeps_answering(front, host):
    token = make_fork(host.url)
    value(front, token, "anvil_setCode", LOOPER, loops(6000))  # ~4 MB of opcode logs: over TRACE_MAX_BYTES
    started = time.monotonic()
    answer = call(front, token, "debug_traceCall", {"to": LOOPER}, "latest", {})
    assert answer["error"]["code"] == policy.LIMIT_EXCEEDED
    assert f"over {policy.TRACE_MAX_BYTES} bytes" in answer["error"]["message"] and "callTracer" in answer["error"]["message"]
    value(front, token, "anvil_setCode", LOOPER, loops(60000))  # ~40 MB: the host's front cuts it off too
    answer = call(front, token, "debug_traceCall", {"to": LOOPER}, "latest", {})
    assert answer["error"]["code"] == policy.LIMIT_EXCEEDED
    assert time.monotonic() - started < policy.TRACE_TIMEOUT_S
    # the same call traced compactly passes, and the fork still answers reads
    assert value(front, token, "debug_traceCall", {"to": LOOPER}, "latest", {"tracer": "callTracer"})["to"] == LOOPER
    assert value(front, token, "eth_chainId") == hex(31337)


def test_a_trace_past_its_time_limit_is_cut_off(front, host, monkeypatch):
    token = make_fork(host.url)
    value(front, token, "anvil_setCode", LOOPER, loops(3000))
    monkeypatch.setattr(policy, "TRACE_TIMEOUT_S", 0.001)  # no host traces 2 MB in a millisecond
    answer = call(front, token, "debug_traceCall", {"to": LOOPER}, "latest", {})
    assert answer["error"]["code"] == policy.LIMIT_EXCEEDED and "cut off" in answer["error"]["message"]


def test_traces_cost_more_of_the_forks_rate_budget(front, host, monkeypatch):
    monkeypatch.setattr(proxy, "_default", proxy.ForkProxy(bucket=KeyedBuckets(rate=0.001, burst=policy.TRACE_COST * 2)))
    token = make_fork(host.url)
    assert "result" in call(front, token, "trace_block", "latest")
    assert "result" in call(front, token, "trace_block", "latest")
    limited = call(front, token, "trace_block", "latest")
    assert limited["error"]["code"] == policy.LIMIT_EXCEEDED


def test_revert_data_is_decoded_in_words():
    assert debug.decode_revert("0x" + error_string("balance").hex()).text == 'Error("balance")'
    panic = bytes.fromhex(debug.PANIC_SELECTOR) + (0x11).to_bytes(32, "big")
    assert debug.decode_revert(panic.hex()).text == "Panic(0x11): arithmetic overflow or underflow"
    custom = bytes.fromhex(debug.selector_of("ERC20InsufficientBalance(address,uint256,uint256)")) + encode(
        ["address", "uint256", "uint256"], [HOLDER, 1, 2])
    assert debug.decode_revert(custom.hex()).text == f"ERC20InsufficientBalance({HOLDER}, 1, 2)"
    mine = bytes.fromhex(debug.selector_of("TooLate(uint256)")) + encode(["uint256"], [9])
    assert debug.decode_revert(mine.hex()).text.startswith("custom error 0x")
    assert debug.decode_revert(mine.hex(), ["TooLate(uint256)"]).text == "TooLate(9)"
    assert debug.decode_revert("0x").kind == "empty"
    many = {"type": "CALL", "from": DEV, "to": CALLER, "calls": [{"type": "CALL", "from": CALLER, "to": REVERTER}] * 60}
    tree = debug.call_tree(many, limit=10)
    assert len(tree) == 11 and tree[-1] == "… and 51 more calls"


# ------------------------------------------------------------------ ERC-20 funding
def deploy_token(front: ApiFront, token: str, host: Anvil) -> str:
    dusd = load_artifact("DepuToken")
    sent = value(front, token, "eth_sendTransaction", {"from": DEV, "data": dusd["bytecode"] + encode(
        ["string", "string", "uint8", "uint256"], ["DePU Dollar", "DUSD", 18, 10**24]).hex(), "gas": hex(3_000_000)})
    return host.rpc("eth_getTransactionReceipt", sent)["contractAddress"]


def balance_of(host: Anvil, token_address: str, holder: str) -> int:
    return int(host.rpc("eth_call", {"to": token_address, "data": "0x70a08231" + "00" * 12 + holder[2:]}, "latest"), 16)


def test_set_erc20_balance_finds_the_slot_and_journals_one_storage_write(front, host):
    token = make_fork(host.url)
    token_address = deploy_token(front, token, host)
    answer = value(front, token, "depu_setErc20Balance", token_address, HOLDER, hex(123 * 10**18))
    assert balance_of(host, token_address, HOLDER) == 123 * 10**18
    assert answer["slot"] == erc20.slot_key(HOLDER, 4) and answer["balance"] == hex(123 * 10**18)
    entries = journal.entries("fdebug1")
    assert [e.method for e in entries] == ["eth_sendTransaction", "anvil_setStorageAt"]
    assert entries[1].params == [token_address.lower(), answer["slot"], "0x" + (123 * 10**18).to_bytes(32, "big").hex()]
    # the holder can spend it: the balance is the token's own, not a view
    value(front, token, "anvil_impersonateAccount", HOLDER)
    value(front, token, "anvil_setBalance", HOLDER, hex(10**18))
    transfer = "0xa9059cbb" + encode(["address", "uint256"], [DEV, 10**18]).hex()
    sent = value(front, token, "eth_sendTransaction", {"from": HOLDER, "to": token_address, "data": transfer})
    assert host.rpc("eth_getTransactionReceipt", sent)["status"] == "0x1"
    assert balance_of(host, token_address, HOLDER) == 122 * 10**18
    # Tenderly's name for it works too (tools written for it run unchanged), decimal amounts as well
    value(front, token, "tenderly_setErc20Balance", token_address, HOLDER, str(7))
    assert balance_of(host, token_address, HOLDER) == 7


def test_set_erc20_balance_refuses_rebasing_tokens_and_non_tokens_clearly(front, host):
    token = make_fork(host.url)
    value(front, token, "anvil_setCode", REBASING, REBASING_CODE)
    before = len(journal.entries("fdebug1"))
    refused = call(front, token, "depu_setErc20Balance", REBASING, HOLDER, "0x10")
    assert refused["error"]["code"] == policy.INVALID_PARAMS
    assert "rebasing or share-based" in refused["error"]["message"]
    not_token = call(front, token, "depu_setErc20Balance", HOLDER, HOLDER, "0x10")
    assert "not an ERC-20 token" in not_token["error"]["message"]
    for bad in ([REBASING, HOLDER], ["0x12", HOLDER, 1], [REBASING, HOLDER, -1], [REBASING, HOLDER, hex(2**256)]):
        answer = call(front, token, "depu_setErc20Balance", *bad)
        assert answer["error"]["code"] == policy.INVALID_PARAMS, bad
    assert len(journal.entries("fdebug1")) == before  # nothing written


# ------------------------------------------------------------------ what the chat offers (depu.forks.service)
def test_recent_transactions_offer_why_it_reverted_and_funding_refusals_read_clearly(front, host):
    from depu.errors import UserError
    from depu.forks import service

    token = make_fork(host.url)
    value(front, token, "anvil_setCode", REVERTER, reverts_with(error_string("slippage")))
    value(front, token, "anvil_setCode", CALLER, bubbles_from(REVERTER))
    ok = value(front, token, "eth_sendTransaction", {"from": DEV, "to": HOLDER, "value": "0x1"})
    failed = value(front, token, "eth_sendTransaction", {"from": DEV, "to": CALLER, "gas": hex(200_000)})
    recent = service.recent_transactions(ALICE, "fdebug1")
    assert [(tx.tx_hash, tx.reverted) for tx in recent] == [(failed, True), (ok, False)]
    explained = service.why_reverted(ALICE, "fdebug1", failed)
    assert explained.reverted and explained.reason == 'Error("slippage")'
    assert explained.tree[-1].endswith('✗ Error("slippage")') and len(explained.tree) == 2
    assert service.why_reverted(ALICE, "fdebug1", ok).reason is None
    with pytest.raises(UserError, match="No such shadow fork"):
        service.why_reverted(202, "fdebug1", failed)  # another user's fork
    with pytest.raises(UserError, match="not a transaction hash"):
        service.why_reverted(ALICE, "fdebug1", "0x12")
    token_address = deploy_token(front, token, host)
    service.fund_erc20(ALICE, "fdebug1", token_address, HOLDER, "5000")
    assert balance_of(host, token_address, HOLDER) == 5000
    value(front, token, "anvil_setCode", REBASING, REBASING_CODE)
    with pytest.raises(UserError, match="rebasing or share-based"):
        service.fund_erc20(ALICE, "fdebug1", REBASING, HOLDER, "5000")
    with pytest.raises(UserError, match="whole number"):
        service.fund_erc20(ALICE, "fdebug1", token_address, HOLDER, "1.5")


def test_the_mini_apps_fork_section_carries_the_call_tree_of_a_reverted_transaction(front, host):
    from depu.dashboard import overview

    token = make_fork(host.url)
    value(front, token, "anvil_setCode", REVERTER, reverts_with(error_string("deadline passed")))
    value(front, token, "anvil_setCode", CALLER, bubbles_from(REVERTER))
    section = overview.forks_section(ALICE)
    assert "last_revert" not in section["items"][0]  # no transaction yet
    failed = value(front, token, "eth_sendTransaction", {"from": DEV, "to": CALLER, "gas": hex(200_000)})
    [item] = overview.forks_section(ALICE)["items"]
    assert item["last_revert"]["tx_hash"] == failed and item["last_revert"]["reason"] == 'Error("deadline passed")'
    assert item["last_revert"]["tree"][1].endswith('✗ Error("deadline passed")')
    value(front, token, "eth_sendTransaction", {"from": DEV, "to": HOLDER, "value": "0x1"})
    assert "last_revert" not in overview.forks_section(ALICE)["items"][0]  # only the latest transaction counts
    assert overview.forks_section(202)["state"] == "none"  # another user sees nothing of it
