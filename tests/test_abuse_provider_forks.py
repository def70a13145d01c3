"""Attacks on shadow forks by and through untrusted fork hosts (issue 12 items 1, 4, 5; issue 11's upstream URL
on anvil's command line). Each test performs the attack against the real pieces (the proxy, the host's front,
real anvil processes, moto) and shows that it fails.

- chain ids: what a user signs on a fork must not be valid on mainnet;
- bounded writes: mining and time jumps, answer sizes, and the journal's order under a slow write;
- host URLs: loopback, private and metadata addresses in every spelling, DNS re-binding, redirects;
- the provider's upstream URL (with its API key) is not readable from /proc.
"""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
import requests
import rlp
from eth_account import Account

from depu.agents import registry
from depu.config import get_settings
from depu.forks import chainids, hosturl, journal, limits, policy, proxy, tasks, tokens
from depu.forks.models import ACTIVE, Fork, utcnow_iso
from depu_agent import forkfront
from depu_agent.forkhost import AnvilFork
from forks_support import ANVIL, ROOT, Anvil, ApiFront

pytestmark = pytest.mark.e2e
FORK_ID = "f00c0ffee"
FORK_CHAIN_ID = chainids.for_fork(FORK_ID)
SECRET = "host-secret-of-the-attack-fork"
RECIPIENT = "0x000000000000000000000000000000000000dEaD"
SLOT_OWNER = "0x00000000000000000000000000000000000051a7"
CAST = str(ROOT / "node_modules" / ".bin" / "cast")
# init code: CHAINID, store it at 0, return those 32 bytes; eth_call without "to" runs it as a creation
CHAINID_INIT = "0x4660005260206000f3"
# the same as runtime code (what anvil_setCode deploys): a contract whose every call returns block.chainid
CHAINID_RUNTIME = "0x4660005260206000f3"
METAMASK_MAX_CHAIN_ID = 4503599627370476  # the largest chain id wallets accept (a safe JavaScript integer bound)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def mainnet():
    """A stand-in mainnet: chain id 1, like the real one."""
    chain = Anvil("--chain-id", "1")
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def fork_host(mainnet):
    """A real fork host's anvil and front for FORK_ID, started as forkhost.ForkHost starts them."""
    anvil = AnvilFork(ANVIL, mainnet.url, 0, "127.0.0.1", "http://127.0.0.1", SECRET, chain_id=FORK_CHAIN_ID)
    try:
        anvil.wait_ready()
        yield anvil
    finally:
        anvil.stop()


def save_fork(host_url: str, chain_id: int = FORK_CHAIN_ID, fork_id: str = FORK_ID) -> tuple[Fork, str]:
    token, token_hash = tokens.issue(fork_id, 31, int(time.time()) + 3600)
    fork = Fork(fork_id, user_id=31, chat_id=31, created_at=utcnow_iso(), status=ACTIVE, host_rpc_url=host_url,
                host_secrets={host_url: SECRET}, rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600,
                base_block=0, chain_id=chain_id, host_agent_id="ag_host")
    fork.save()
    return Fork.get(fork_id), token


@pytest.fixture
def on_fork(aws, fork_host, monkeypatch):
    """(fork item, a fresh proxy) for FORK_ID served by ``fork_host``."""
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    fork, _token = save_fork(fork_host.rpc_url)
    return fork, proxy.ForkProxy()


def call(proxy_: proxy.ForkProxy, method: str, *params) -> dict:
    fork = Fork.get(FORK_ID, consistent_read=True)
    return proxy_.call(fork, {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})


class FakeHost:
    """A 127.0.0.1 HTTP server that answers every POST with ``answer(body, headers) -> (status, headers, bytes)``
    and counts what reached it."""

    def __init__(self, answer: Callable[[bytes, dict], tuple[int, dict, bytes]] | None = None):
        self.requests: list[bytes] = []
        self.connections = 0
        host = self
        reply = answer or (lambda body, headers: (200, {}, b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                host.connections += 1
                super().setup()

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                host.requests.append(body)
                status, headers, payload = reply(body, dict(self.headers))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Transfer-Encoding" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if headers.get("Transfer-Encoding") == "chunked":
                    for start in range(0, len(payload), 1 << 20):
                        piece = payload[start:start + (1 << 20)]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hosts():
    started: list[FakeHost] = []

    def start(answer=None) -> FakeHost:
        started.append(FakeHost(answer))
        return started[-1]

    yield start
    for host in started:
        host.stop()


def signed(account, chain_id: int | None, kind: int = 2, nonce: int = 0) -> str:
    tx = {"to": RECIPIENT, "value": 1, "nonce": nonce, "gas": 21000, "data": b""}
    if kind == 0:
        tx["gasPrice"] = 10**10
    else:
        tx.update(maxFeePerGas=10**10, maxPriorityFeePerGas=1) if kind == 2 else tx.update(gasPrice=10**10, accessList=[])
        tx["type"] = kind
    if chain_id is not None:
        tx["chainId"] = chain_id
    return "0x" + account.sign_transaction(tx).raw_transaction.hex()


def typed(kind: int, fields: list) -> str:
    return "0x" + bytes([kind]).hex() + rlp.encode(fields).hex()


def recipient_balance(anvil: AnvilFork) -> int:
    return int(anvil.value("eth_getBalance", [RECIPIENT, "latest"]), 16)


# ------------------------------------------------------------------------------------------------ chain ids
def test_every_fork_has_its_own_chain_id_far_from_public_chains_and_within_what_wallets_accept():
    ids = {chainids.for_fork(f"f{number:08x}") for number in (0, 1, 42, 0xDEADBEEF, 0xFFFFFFFF)}
    assert len(ids) == 5  # distinct per fork: a transaction signed on one fork does not replay on another
    for chain_id in ids | {chainids.for_fork("not-a-hex-id")}:
        assert str(chain_id).startswith("7357") and len(str(chain_id)) == 14 and chainids.is_forks(chain_id)
        assert chain_id not in (1, 7357, 73571) and chain_id < METAMASK_MAX_CHAIN_ID and chain_id < 2**63
    assert chainids.for_fork("f0000002a") == 73570000000042  # the documented scheme
    assert not chainids.is_forks(1) and not chainids.is_forks(73571)


def test_the_host_runs_the_fork_with_its_chain_id_and_contracts_reading_chainid_see_it(fork_host):
    assert int(fork_host.value("eth_chainId", []), 16) == FORK_CHAIN_ID
    assert int(fork_host.value("eth_call", [{"data": CHAINID_INIT}, "latest"]), 16) == FORK_CHAIN_ID
    reader = "0x00000000000000000000000000000000000c4a1d"
    fork_host.value("anvil_setCode", [reader, CHAINID_RUNTIME])  # a deployed contract reading block.chainid
    assert int(fork_host.value("eth_call", [{"to": reader}, "latest"]), 16) == FORK_CHAIN_ID


def test_the_upstream_url_and_its_api_key_are_not_on_anvils_command_line(mainnet):
    key = "k3y" + secrets.token_hex(16)  # a provider's API key, as upstream URLs carry it
    upstream = mainnet.url.replace("http://", f"http://depu:{key}@")
    account = "0x" + "ab" * 20
    mainnet.rpc("anvil_setBalance", account, hex(12345))
    anvil = AnvilFork(ANVIL, upstream, int(mainnet.rpc("eth_blockNumber"), 16), "127.0.0.1", "http://127.0.0.1",
                      SECRET, chain_id=FORK_CHAIN_ID)
    try:
        anvil.wait_ready()
        assert anvil.value("eth_getBalance", [account, "latest"]) == hex(12345)  # it really forks the upstream
        pid = anvil.process.pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"anvil" in argv and str(FORK_CHAIN_ID).encode() in argv  # the right process
        assert key.encode() not in argv and mainnet.url.encode() not in argv and b"--fork-url" not in argv
        assert key.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        # what a renter's process on the same machine would do: read every command line it can
        for proc in Path("/proc").iterdir():
            try:
                assert key.encode() not in (proc / "cmdline").read_bytes(), proc
            except OSError:
                continue
    finally:
        anvil.stop()


REFUSED_RAW_TRANSACTIONS = {
    "EIP-1559 signed for mainnet": lambda a: signed(a, 1, kind=2),
    "EIP-2930 signed for mainnet": lambda a: signed(a, 1, kind=1),
    "EIP-155 legacy signed for mainnet": lambda a: signed(a, 1, kind=0),
    "unprotected legacy (pre-EIP-155)": lambda a: signed(a, None, kind=0),
    "signed for another DePU fork": lambda a: signed(a, chainids.for_fork("f00000001"), kind=2),
    # a blob transaction in its network form ([body, blobs, commitments, proofs]) for mainnet
    "EIP-4844 for mainnet": lambda a: typed(3, [[1, 0, 1, 10**10, 21000, bytes.fromhex(RECIPIENT[2:]), 1, b"", [], 1, [], 0, 1, 1],
                                                [b"\0" * 32], [b"\0" * 48], [b"\0" * 48]]),
    "EIP-7702 with an authorization for every chain (0)": lambda a: typed(4, [
        FORK_CHAIN_ID, 0, 1, 10**10, 50000, bytes.fromhex(RECIPIENT[2:]), 0, b"", [],
        [[0, bytes.fromhex(RECIPIENT[2:]), 0, 0, 1, 1]], 0, 1, 1]),
    "EIP-7702 with an authorization for mainnet": lambda a: typed(4, [
        FORK_CHAIN_ID, 0, 1, 10**10, 50000, bytes.fromhex(RECIPIENT[2:]), 0, b"", [],
        [[1, bytes.fromhex(RECIPIENT[2:]), 0, 0, 1, 1]], 0, 1, 1]),
    "not RLP": lambda a: "0xdeadbeef",
    "an unknown type": lambda a: typed(0x05, [FORK_CHAIN_ID, 0]),
    "not hex": lambda a: "0xzz",
    "no 0x": lambda a: "02f86c",
}


def test_raw_transactions_signed_for_another_chain_or_for_none_are_refused_and_never_journaled(on_fork, fork_host):
    _fork, proxy_ = on_fork
    user = Account.create()
    fork_host.value("anvil_setBalance", [user.address, hex(10**18)])
    for case, make in REFUSED_RAW_TRANSACTIONS.items():
        answer = call(proxy_, "eth_sendRawTransaction", make(user))
        assert answer["error"]["code"] in (policy.WRONG_CHAIN,), case
        assert answer["error"]["message"], case
    assert "chain id 1, but this fork's chain id is" in call(proxy_, "eth_sendRawTransaction", signed(user, 1))["error"]["message"]
    assert "unprotected" in call(proxy_, "eth_sendRawTransaction", signed(user, None, kind=0))["error"]["message"]
    assert "authorization" in call(proxy_, "eth_sendRawTransaction",
                                   REFUSED_RAW_TRANSACTIONS["EIP-7702 with an authorization for mainnet"](user))["error"]["message"]
    assert journal.entries(FORK_ID) == [] and recipient_balance(fork_host) == 0
    assert fork_host.value("eth_getTransactionCount", [user.address, "latest"]) == "0x0"
    # signed for the fork's own chain id: accepted, applied and journaled (legacy EIP-155 and typed alike)
    for nonce, kind in enumerate((2, 0, 1)):
        answer = call(proxy_, "eth_sendRawTransaction", signed(user, FORK_CHAIN_ID, kind=kind, nonce=nonce))
        assert "error" not in answer, answer
    assert recipient_balance(fork_host) == 3 and [e.method for e in journal.entries(FORK_ID)] == ["eth_sendRawTransaction"] * 3


def test_a_wallet_talking_to_the_fork_signs_for_the_forks_chain_id_and_a_mainnet_signature_is_refused(aws, fork_host, monkeypatch):
    """cast (foundry's wallet CLI; ethers is not in node_modules) asks the fork for its chain id, nonce and fees,
    as any wallet does, and signs: the transaction carries the fork's chain id, never mainnet's."""
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    api = ApiFront(aws.endpoint)
    try:
        _fork, token = save_fork(fork_host.rpc_url)
        url = f"{api.url}/rpc/{token}"
        user = Account.create()
        fork_host.value("anvil_setBalance", [user.address, hex(10**18)])
        key = "0x" + user.key.hex().removeprefix("0x")
        made = subprocess.run([CAST, "mktx", "--rpc-url", url, "--private-key", key, RECIPIENT, "--value", "7"],
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        raw = made.stdout.strip()
        assert chainids.signed_chain_id(raw) == FORK_CHAIN_ID
        sent = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]}, timeout=30).json()
        assert "error" not in sent, sent
        assert recipient_balance(fork_host) == 7
        # the same wallet made to sign for mainnet (chain id 1): refused by the proxy with a clear error
        for_mainnet = subprocess.run([CAST, "mktx", "--chain", "1", "--nonce", "1", "--gas-limit", "21000", "--gas-price", "10gwei", "--priority-gas-price", "1",
                                      "--private-key", key, RECIPIENT, "--value", "7"], capture_output=True, text=True, timeout=60)
        assert for_mainnet.returncode == 0, for_mainnet.stderr
        assert chainids.signed_chain_id(for_mainnet.stdout.strip()) == 1
        refused = requests.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "eth_sendRawTransaction",
                                           "params": [for_mainnet.stdout.strip()]}, timeout=30).json()
        assert refused["error"]["code"] == policy.WRONG_CHAIN and "chain id 1" in refused["error"]["message"]
        assert recipient_balance(fork_host) == 7 and len(journal.entries(FORK_ID)) == 1
    finally:
        api.stop()


def test_a_host_that_runs_the_fork_with_mainnets_chain_id_is_not_accepted(aws, production, monkeypatch):
    monkeypatch.setattr(hosturl, "_lookup", lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 8443))])
    fork, _ = save_fork("https://host.example:8443")
    fork.update(actions=[Fork.pending_task.set({"task_id": f"{FORK_ID}.t1", "kind": "provision", "agent_id": "ag_host", "token": "tt"})])
    report = {"ok": True, "rpc_url": "https://host.example:8443", "base_block": 1, "chain_id": 1, "entries": [], "snapshots": {}}
    with pytest.raises(tasks.BadReport, match="chain id"):
        tasks.finish("ag_host", f"{FORK_ID}.t1", report)


# ------------------------------------------------------------------------------------------------ bounded writes
FAR = 10 * 366 * limits.DAY_S


def test_mining_counts_and_time_jumps_over_the_per_call_caps_are_refused(on_fork, fork_host):
    _fork, proxy_ = on_fork
    head = int(fork_host.value("eth_blockNumber", []), 16)
    now = int(fork_host.value("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    attacks = [
        ("anvil_mine", [hex(limits.MAX_BLOCKS_PER_CALL + 1)]),
        ("hardhat_mine", [hex(10**9)]),
        ("anvil_mine", [hex(10), hex(FAR)]),  # few blocks, but years apart
        ("evm_mine", [{"blocks": limits.MAX_BLOCKS_PER_CALL + 1}]),
        ("evm_mine", [{"timestamp": now + FAR}]),
        ("evm_mine", [now + FAR]),
        ("evm_increaseTime", [FAR]),
        ("evm_increaseTime", [hex(FAR)]),
        ("evm_setNextBlockTimestamp", [now + FAR]),
        ("evm_setNextBlockTimestamp", [hex(now + FAR)]),
    ]
    for method, params in attacks:
        answer = call(proxy_, method, *params)
        assert answer["error"]["code"] == policy.LIMIT_EXCEEDED and "per call" in answer["error"]["message"], (method, params)
    assert call(proxy_, "anvil_mine", "0xnope")["error"]["code"] == policy.INVALID_PARAMS
    assert call(proxy_, "evm_increaseTime", -5)["error"]["code"] == policy.INVALID_PARAMS
    assert int(fork_host.value("eth_blockNumber", []), 16) == head and journal.entries(FORK_ID) == []
    # what a test suite normally does still works
    assert "error" not in call(proxy_, "anvil_mine", hex(100))
    assert "error" not in call(proxy_, "evm_increaseTime", 30 * limits.DAY_S)
    assert "error" not in call(proxy_, "evm_mine")
    assert int(fork_host.value("eth_blockNumber", []), 16) == head + 101


def test_the_per_minute_budget_holds_across_proxy_containers(on_fork, fork_host, monkeypatch):
    monkeypatch.setattr(limits, "MAX_BLOCKS_PER_CALL", 20)
    monkeypatch.setattr(limits, "MAX_BLOCKS_PER_MINUTE", 50)
    minute = [1000]
    monkeypatch.setattr(limits, "current_minute", lambda: minute[0])
    containers = [on_fork[1], proxy.ForkProxy(), proxy.ForkProxy()]  # separate Lambda containers share nothing
    head = int(fork_host.value("eth_blockNumber", []), 16)
    answers = [call(containers[n % 3], "anvil_mine", hex(20)) for n in range(3)]
    assert ["error" in answer for answer in answers] == [False, False, True]
    assert "per minute" in answers[2]["error"]["message"]
    assert "error" not in call(containers[2], "anvil_mine", hex(10))  # 40 + 10 fits exactly
    assert "per minute" in call(containers[1], "evm_mine")["error"]["message"]
    assert int(fork_host.value("eth_blockNumber", []), 16) == head + 50
    minute[0] += 1  # a new minute, a new budget
    assert "error" not in call(containers[1], "anvil_mine", hex(20))
    monkeypatch.setattr(limits, "MAX_JUMP_PER_MINUTE_S", 100 * limits.DAY_S)
    assert "error" not in call(containers[0], "evm_increaseTime", 60 * limits.DAY_S)
    assert "per minute" in call(containers[2], "evm_increaseTime", 60 * limits.DAY_S)["error"]["message"]
    assert int(Fork.get(FORK_ID).budget_blocks) == 20 and int(Fork.get(FORK_ID).budget_seconds) == 60 * limits.DAY_S


def big_answer(size: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x" + "ab" * (size // 2)}).encode()


def test_a_host_cannot_send_the_proxy_an_answer_over_the_cap(aws, fake_hosts, monkeypatch):
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    huge = big_answer(proxy.MAX_ANSWER_BYTES + 10)
    for headers in ({}, {"Transfer-Encoding": "chunked"}):  # a declared length, and none (streamed)
        host = fake_hosts(lambda body, _h, headers=headers: (200, headers, huge))
        fork, _ = save_fork(host.url)
        answer = proxy.ForkProxy().call(fork, {"jsonrpc": "2.0", "id": 3, "method": "eth_getLogs", "params": [{}]})
        assert answer["id"] == 3 and answer["error"]["code"] == policy.LIMIT_EXCEEDED
        assert "over" in answer["error"]["message"] and "eth_getLogs" in answer["error"]["message"]
    # a batch may not add up to more than one response can carry either
    third = big_answer(proxy.MAX_RESPONSE_BYTES // 3)
    host = fake_hosts(lambda body, _h: (200, {}, third))
    fork, token = save_fork(host.url)
    reply = proxy.ForkProxy().handle(token, json.dumps([{"jsonrpc": "2.0", "id": n, "method": "eth_getLogs", "params": [{}]} for n in range(4)]))
    sizes = [len(json.dumps(item)) for item in reply.body]
    assert sum(sizes) <= proxy.MAX_RESPONSE_BYTES
    assert ["error" in item for item in reply.body] == [False, False, True, True], reply.body[0].get("error")


def test_the_host_front_caps_what_anvil_answers(fake_hosts):
    huge = big_answer(forkfront.MAX_ANSWER_BYTES + 10)
    anvil = fake_hosts(lambda body, _h: (200, {"Transfer-Encoding": "chunked"}, huge if b"eth_getLogs" in body else big_answer(10)))
    front = forkfront.ForkFront("127.0.0.1", anvil.url, SECRET)
    try:
        url, auth = f"http://127.0.0.1:{front.port}", {"Authorization": f"Bearer {SECRET}"}
        capped = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": []}, headers=auth, timeout=30)
        assert capped.json()["error"]["code"] == forkfront.LIMIT_EXCEEDED and len(capped.content) < 1000
        assert "result" in requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, headers=auth, timeout=30).json()
    finally:
        front.stop()


def test_a_slow_write_never_lands_after_a_later_one_so_the_journal_stays_the_forks_order(on_fork, fork_host, fake_hosts, monkeypatch):
    """The review's race: a write's lease ran out while it was still on its way (lease 15 s < forward timeout 30 s), a
    later write took the lease and landed, then the slow one landed on top. Here the lease is 1 s and a relay in
    front of the host holds the first write back 2.5 s."""
    monkeypatch.setattr(journal, "LEASE_SECONDS", 1.0)
    slow_marker = b'"0x' + b"0" * 63 + b'1"'

    def relay(body: bytes, headers: dict) -> tuple[int, dict, bytes]:
        if slow_marker in body:
            time.sleep(2.5)  # the deliberately slow write
        forwarded = {name: value for name, value in headers.items() if name in ("Authorization", forkfront.WRITE_SEQ_HEADER)}
        answer = requests.post(fork_host.rpc_url, data=body, headers={**forwarded, "Content-Type": "application/json"}, timeout=30)
        return answer.status_code, {"Content-Type": "application/json"}, answer.content

    relay_host = fake_hosts(relay)
    fork, _ = save_fork(relay_host.url)
    proxy_ = on_fork[1]
    slot = "0x" + "00" * 32
    first: dict = {}
    slow = threading.Thread(target=lambda: first.update(call(proxy.ForkProxy(), "anvil_setStorageAt", SLOT_OWNER, slot, "0x" + "0" * 63 + "1")))
    slow.start()
    time.sleep(1.3)  # the slow write's lease has run out
    second = call(proxy_, "anvil_setStorageAt", SLOT_OWNER, slot, "0x" + "0" * 63 + "2")
    slow.join(timeout=30)
    assert "error" not in second, second
    assert first["error"]["code"] == policy.LIMIT_EXCEEDED and "after a later write" in first["error"]["message"]
    on_the_fork = fork_host.value("eth_getStorageAt", [SLOT_OWNER, slot, "latest"])
    assert int(on_the_fork, 16) == 2  # the later write is the fork's last word
    entries = journal.entries(FORK_ID)
    assert [(int(e.seq), e.params[-1][-1]) for e in entries] == [(1, "2")]
    # journal == fork: a fresh host replaying the journal ends where the fork is
    replica = AnvilFork(ANVIL, fork_host._upstream, 0, "127.0.0.1", "http://127.0.0.1", "replica-secret", chain_id=FORK_CHAIN_ID)
    try:
        replica.wait_ready()
        replica.replay([{"seq": int(e.seq), "method": e.method, "params": e.params} for e in entries])
        assert replica.value("eth_getStorageAt", [SLOT_OWNER, slot, "latest"]) == on_the_fork
    finally:
        replica.stop()


def test_the_front_applies_writes_only_in_increasing_seq_order(fork_host):
    url, auth = fork_host.rpc_url, {"Authorization": f"Bearer {SECRET}"}

    def write(seq: int | str, value: int) -> requests.Response:
        body = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance", "params": [RECIPIENT, hex(value)]}
        return requests.post(url, json=body, headers={**auth, forkfront.WRITE_SEQ_HEADER: str(seq)}, timeout=10)

    assert write(5, 50).status_code == 200
    assert write(5, 51).status_code == 409 and write(3, 30).status_code == 409  # a replay or a late one
    assert write("x", 1).status_code == 400
    assert write(9, 90).status_code == 200 and recipient_balance(fork_host) == 90
    # a rebuilt host starts after the journal it replayed
    assert forkfront.ForkFront("127.0.0.1", fork_host.local_url, "s", last_seq=12).last_seq == 12


# ------------------------------------------------------------------------------------------------ host URLs
FORBIDDEN_HOST_URLS = [
    "https://127.0.0.1:8545", "https://localhost:8545", "https://2130706433:8545", "https://0x7f.1:8545",
    "https://0177.0.0.1:8545", "https://127.1:8545", "https://0x7f000001:8545", "https://017700000001:8545",
    "https://[::1]:8545", "https://[::ffff:127.0.0.1]:8545", "https://[::ffff:7f00:1]:8545", "https://[0:0:0:0:0:ffff:7f00:1]:8545",
    "https://169.254.169.254", "https://2852039166", "https://0xa9.0xfe.0xa9.0xfe", "https://0251.0376.0251.0376",
    "https://[::ffff:169.254.169.254]", "https://[fd00:ec2::254]", "https://[64:ff9b::a9fe:a9fe]", "https://[2002:a9fe:a9fe::1]",
    "https://10.0.0.1", "https://192.168.1.10", "https://172.16.5.4", "https://100.64.0.1", "https://0.0.0.0", "https://[::]",
    "https://224.0.0.1", "https://[ff02::1]", "https://255.255.255.255", "https://[fe80::1]", "https://198.18.0.1",
]


def test_every_spelling_of_a_forbidden_host_address_is_refused(production):
    for url in FORBIDDEN_HOST_URLS:
        with pytest.raises(hosturl.HostUrlRefused, match="public address") as refused:
            hosturl.check_url(url)
        assert "resolves to" in str(refused.value), url
    for url, reason in [("http://93.184.216.34:8545", "https"), ("ftp://93.184.216.34", "https"),
                        ("https://user:pw@93.184.216.34", "credentials"), ("https://", "host name"),
                        ("https://93.184.216.34:99999", "valid URL"), ("https://metadata.google.internal", "does not resolve"),
                        ("https://93.184.216.34", None)]:
        if reason is None:
            assert hosturl.check_url(url) == url  # a public address is fine
        else:
            with pytest.raises(hosturl.HostUrlRefused, match=reason):
                hosturl.check_url(url)


def test_a_name_is_judged_by_every_address_it_resolves_to(production, monkeypatch):
    answers = {"fine.example": ["93.184.216.34"], "meta.example": ["169.254.169.254"],
               "mixed.example": ["93.184.216.34", "10.1.2.3"], "v6meta.example": ["fd00:ec2::254"]}

    def resolve(host, port):
        if host not in answers:
            raise socket.gaierror("no such name")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(hosturl, "_lookup", resolve)
    assert hosturl.check_url("https://fine.example:8443")
    for name in ("meta.example", "mixed.example", "v6meta.example"):
        with pytest.raises(hosturl.HostUrlRefused, match="public address"):
            hosturl.check_url(f"https://{name}:8443")


def test_the_local_stack_keeps_plain_http_on_loopback_and_nothing_else(monkeypatch):
    monkeypatch.setenv("STAGE", "local")
    get_settings.cache_clear()
    try:
        assert hosturl.check_url("http://127.0.0.1:8545") and hosturl.check_url("https://127.0.0.1:8545")
        for url in ("http://169.254.169.254", "http://10.0.0.1:8545", "http://[fd00:ec2::254]", "http://[::ffff:169.254.169.254]"):
            with pytest.raises(hosturl.HostUrlRefused):
                hosturl.check_url(url)
    finally:
        get_settings.cache_clear()


def test_registration_refuses_a_fork_address_that_is_not_public(aws, production):
    from depu.agents import registry, tokens as agent_tokens

    for url in ("https://169.254.169.254", "http://93.184.216.34", "https://0x7f.1", "https://[::ffff:10.0.0.1]"):
        with pytest.raises(registry.RegistrationError, match="fork_rpc_base_url refused"):
            registry.register(agent_tokens.issue_enrolment_token(7), name="evil", gpus=[], capabilities=["fork_host"],
                              benchmark={}, version="t", fork_rpc_base_url=url)
    assert list(registry.Agent.scan()) == []


def test_a_host_cannot_report_a_fork_rpc_url_on_a_forbidden_address(aws, production):
    fork, _ = save_fork("https://93.184.216.34:8443")
    for url in ("https://169.254.169.254:80", "https://2130706433:8545", "http://93.184.216.34:8545", "https://93.184.216.34"):
        fork.update(actions=[Fork.pending_task.set({"task_id": f"{FORK_ID}.t2", "kind": "provision", "agent_id": "ag_host", "token": "tt"})])
        report = {"ok": True, "rpc_url": url, "base_block": 1, "chain_id": FORK_CHAIN_ID, "entries": [], "snapshots": {}}
        with pytest.raises(tasks.BadReport, match="rpc_url refused"):
            tasks.finish("ag_host", f"{FORK_ID}.t2", report)


def test_the_proxy_never_forwards_to_a_stored_forbidden_host_url(aws, production, fake_hosts, monkeypatch):
    """A host URL that slipped in (recorded before these checks, or a name that now resolves elsewhere) is
    checked again at forward time: no connection, a clear error."""
    listener = fake_hosts()
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    for url in (listener.url, f"https://127.0.0.1:{listener.port}", f"https://0x7f.1:{listener.port}",
                f"https://[::ffff:127.0.0.1]:{listener.port}", "https://169.254.169.254:443"):
        fork, _ = save_fork(url)
        answer = proxy.ForkProxy().call(fork, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
        assert answer["error"]["code"] == policy.FORK_UNAVAILABLE and "not allowed" in answer["error"]["message"], url
    assert listener.connections == 0 and listener.requests == []


def test_a_name_that_rebinds_to_loopback_after_the_check_is_refused_at_connect(aws, production, fake_hosts, monkeypatch):
    listener = fake_hosts()
    lookups = []

    def rebinding(host, port):
        lookups.append(host)
        address = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"  # public for the check, then loopback
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(hosturl, "_lookup", rebinding)
    fork, _ = save_fork(f"https://rebind.example:{listener.port}")
    # the host has a pinned certificate (docs/security.md, "The proxy-to-host link"), so the forward gets as far
    # as connecting, where the re-resolved address is refused
    now = int(time.time())
    registry.Agent("ag_host", provider_id=900, gpu_class="cpu", last_seen_at=now, registered_at=now, name="ag_host",
                   gpu_count=1, capabilities=["fork_host"], fork_rpc_base_url="https://rebind.example",
                   fork_tls_sha256="ab" * 32).save()
    answer = proxy.ForkProxy().call(fork, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    assert answer["error"]["code"] == policy.FORK_UNAVAILABLE
    assert len(lookups) >= 2  # the connection resolved the name again, and refused what it found
    assert listener.connections == 0


def test_a_host_redirect_is_not_followed(aws, fake_hosts, monkeypatch):
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    target = fake_hosts()
    for status in (301, 302, 303, 307, 308):
        host = fake_hosts(lambda body, _h, status=status: (status, {"Location": f"{target.url}/steal"}, b""))
        fork, _ = save_fork(host.url)
        answer = proxy.ForkProxy().call(fork, {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                                               "params": [signed(Account.create(), FORK_CHAIN_ID)]})
        assert answer["error"]["code"] == policy.FORK_UNAVAILABLE and "redirect" in answer["error"]["message"], status
        assert len(host.requests) == 1
    assert target.requests == [] and target.connections == 0


def test_a_write_overtaken_by_a_sync_is_not_journaled(on_fork, fork_host, fake_hosts, monkeypatch):
    """A write still on its way when the fork starts syncing (the host has been handed the journal) may land on
    the old anvil, which is about to be replaced: it must not enter the journal the new fork was built without."""
    monkeypatch.setattr(journal, "LEASE_SECONDS", 1.0)

    def relay(body: bytes, headers: dict) -> tuple[int, dict, bytes]:
        time.sleep(1.5)
        forwarded = {name: value for name, value in headers.items() if name in ("Authorization", forkfront.WRITE_SEQ_HEADER)}
        answer = requests.post(fork_host.rpc_url, data=body, headers={**forwarded, "Content-Type": "application/json"}, timeout=30)
        return answer.status_code, {"Content-Type": "application/json"}, answer.content

    relay_host = fake_hosts(relay)
    save_fork(relay_host.url)
    answer: dict = {}
    write = threading.Thread(target=lambda: answer.update(call(on_fork[1], "anvil_setBalance", RECIPIENT, hex(77))))
    write.start()
    time.sleep(1.1)  # the lease ran out; the sync state machine takes the fork and hands its journal to a host
    Fork(FORK_ID).update(actions=[Fork.status.set("syncing")])
    handed = journal.entries(FORK_ID)
    write.join(timeout=30)
    assert answer["error"]["code"] == policy.LIMIT_EXCEEDED and "became syncing" in answer["error"]["message"]
    assert journal.entries(FORK_ID) == handed == []
