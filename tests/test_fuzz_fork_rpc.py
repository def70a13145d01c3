"""Fuzzing the fork RPC proxy (functions/fork_rpc's real handler, moto, a recording fork host on 127.0.0.1)
with arbitrary JSON-RPC requests and batches. Properties: every answer is JSON-RPC (one response object per
request, or a list as long as the batch, each with exactly one of result/error), the HTTP status is one of
200/413/429, and a method outside the allow-list never reaches the host; the journal only ever holds
journaled write methods.

The host is a recorder, not anvil, because the property is about what the proxy forwards; the proxy's
behaviour in front of a real anvil is test_forks_proxy.py's subject.
"""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depu.forks import policy, proxy
from depu.ratelimit import KeyedBuckets
from forks_support import rpc_event
from proof_support import RecordingHost, invoke
from telegram_harness import load_function

USER = 4242
ALLOWED_METHODS = sorted(policy.READS | set(policy.WRITES) | {policy.REVERT})
FORBIDDEN_METHODS = ["anvil_reset", "anvil_setRpcUrl", "anvil_dumpState", "anvil_loadState", "anvil_nodeInfo",
                     "debug_traceTransaction", "eth_subscribe", "eth_newFilter", "personal_sign", "admin_peers",
                     "hardhat_reset", "evm_setAutomine", "txpool_content", "rpc_modules"]
# what the host may legitimately receive: allowed methods in their canonical form, plus the receipt lookup
# the proxy makes after a transaction, and the revert it translates
FORWARDABLE = set(policy.READS) | set(policy.WRITES.values()) | {policy.REVERT, "eth_getTransactionReceipt"}

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=8)
methods = st.one_of(
    st.sampled_from(ALLOWED_METHODS),
    st.sampled_from(FORBIDDEN_METHODS),
    st.sampled_from(ALLOWED_METHODS).map(str.upper),
    st.sampled_from(ALLOWED_METHODS).map(lambda m: m + " "),
    st.sampled_from(ALLOWED_METHODS).map(lambda m: m + "\x00"),
    st.text(max_size=30),
    json_values,
)
requests_ = st.fixed_dictionaries(
    {"method": methods},
    optional={"jsonrpc": st.sampled_from(["2.0", "1.0", 2]) | json_values, "id": json_values,
              "params": st.lists(json_values, max_size=3) | json_values},
) | json_values
bodies = st.one_of(requests_, st.lists(requests_, min_size=0, max_size=8))


@pytest.fixture
def host():
    recorder = RecordingHost().start()
    try:
        yield recorder
    finally:
        recorder.stop()


@pytest.fixture
def rpc(aws, host, monkeypatch):
    from depu.forks import tokens
    from depu.forks.models import ACTIVE, Fork, utcnow_iso

    # no rate limit while fuzzing (the limit has its own test): a fresh proxy with a bottomless bucket
    monkeypatch.setattr(proxy, "_default", proxy.ForkProxy(bucket=KeyedBuckets(rate=1e9, burst=1e9)))
    token, token_hash = tokens.issue("ffuzz001", USER, int(time.time()) + 3600)
    Fork("ffuzz001", user_id=USER, chat_id=USER, created_at=utcnow_iso(), status=ACTIVE, host_rpc_url=host.url,
         rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600, base_block=1, chain_id=1,
         host_agent_id="ag_x").save()
    return load_function("fork_rpc"), token


def is_response(value) -> bool:
    return (isinstance(value, dict) and value.get("jsonrpc") == "2.0" and "id" in value
            and (("result" in value) != ("error" in value))
            and ("error" not in value or (isinstance(value["error"], dict) and isinstance(value["error"].get("code"), int)
                                          and isinstance(value["error"].get("message"), str))))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies)
def test_any_request_gets_json_rpc_and_nothing_forbidden_is_forwarded(rpc, host, body):
    module, token = rpc
    host.methods.clear()
    status, answer = invoke(module, rpc_event(token, json.dumps(body)))
    assert status in (200, 413, 429), (status, answer)
    if isinstance(body, list) and 1 <= len(body) <= policy.MAX_BATCH:
        assert isinstance(answer, list) and len(answer) == len(body), answer
        assert all(is_response(item) for item in answer), answer
        sent = body
    else:
        assert is_response(answer), answer
        sent = [body]
    assert set(host.methods) <= FORWARDABLE, host.methods
    asked = {request.get("method") for request in sent
             if isinstance(request, dict) and isinstance(request.get("method"), str)}
    for method in host.methods:
        if method in ("eth_getTransactionReceipt", policy.REVERT):
            continue
        assert method in asked or method in {policy.WRITES[m] for m in asked if m in policy.WRITES}, \
            (method, asked)
    for request, reply in zip(sent, answer if isinstance(answer, list) else [answer]):
        if isinstance(request, dict) and isinstance(request.get("method"), str) and not policy.is_allowed(request["method"]):
            assert "error" in reply and reply["error"]["code"] in (policy.METHOD_NOT_ALLOWED, policy.INVALID_PARAMS)


def test_journal_only_holds_write_methods_after_fuzzing(rpc, host):
    """Run a fixed mixed batch (reads, writes, forbidden) and read the journal the proxy kept."""
    module, token = rpc
    batch = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate([
        ("eth_chainId", []), ("anvil_reset", []), ("anvil_setBalance", ["0x" + "11" * 20, "0x1"]),
        ("eth_sendTransaction", [{"from": "0x" + "22" * 20}]), ("debug_traceTransaction", ["0x"]),
        ("hardhat_mine", ["0x1"]), ("evm_snapshot", [])])]
    status, answer = invoke(module, rpc_event(token, json.dumps(batch)))
    assert status == 200 and [("error" in a) for a in answer] == [False, True, False, False, True, False, False]
    from depu.forks.models import JournalEntry

    entries = list(JournalEntry.query("ffuzz001"))
    assert [entry.method for entry in entries] == ["anvil_setBalance", "eth_sendTransaction", "anvil_mine", "evm_snapshot"]
    assert "anvil_reset" not in host.methods and "debug_traceTransaction" not in host.methods


@pytest.mark.parametrize("params", [[None], [True], [1.5], [{}], [[]], ["zz"], ["-1"], [-3], []],
                         ids=["null", "bool", "float", "object", "list", "not-a-number", "negative-string", "negative", "none"])
def test_evm_revert_with_a_malformed_snapshot_id_is_invalid_params(rpc, host, params):
    """Found by the fuzz test above: ``evm_revert`` with ``[null]`` crashed the handler (int(None))."""
    module, token = rpc
    host.methods.clear()
    status, answer = invoke(module, rpc_event(token, json.dumps({"jsonrpc": "2.0", "id": 9, "method": "evm_revert",
                                                                 "params": params})))
    assert status == 200 and answer["error"]["code"] == policy.INVALID_PARAMS, answer
    assert host.methods == []
