"""Real developer clients on a DePU fork URL, through the whole local stack (moto's state machines, the
template's handlers, a real fork host following mainnet): ethers v6 (node) and Foundry's cast, each doing
chain id, send, deploy, call, trace, filters, snapshot/revert, and a sync (follow mode) that keeps state."""
from __future__ import annotations

import json
import subprocess

import pytest
from eth_abi import encode
from eth_account import Account

import test_forks_e2e
from depu.forks import service
from forks_support import ROOT, wait_for
from local.devchain import ARTIFACTS

pytestmark = pytest.mark.e2e
USER = 5151
CAST = str(ROOT / "node_modules" / ".bin" / "cast")
mainnet = test_forks_e2e.mainnet
stack = test_forks_e2e.stack


def following_fork(stack):
    stack.start_host("host-clients")
    created = service.create_fork(USER, USER, "latest")
    fork = test_forks_e2e.wait_status(created.fork.fork_id, "active")
    assert fork.follow is True  # new forks follow mainnet by default
    developer = Account.create()
    service.fund(USER, fork.fork_id, developer.address, "100")
    return created, fork, developer


def test_ethers_on_a_fork_url(stack):
    created, fork, developer = following_fork(stack)
    run = subprocess.run(
        ["node", str(ROOT / "tests" / "fork_ethers_client.mjs"), created.rpc_url, stack.mainnet.rpc_url,
         "0x" + developer.key.hex(), str(ARTIFACTS / "DepuToken.json")],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["chainId"] == fork.chain_id and seen["sendStatus"] == 1
    assert seen["balance"] == str(10**24) and seen["eventBeforeSync"] and seen["eventAfterSync"]
    assert seen["traceTo"] == seen["token"].lower() and seen["traceInput"] == "0xa9059cbb"  # transfer(...)
    assert seen["reverted"] is True and seen["bbAfterRevert"] == "0"
    assert seen["followedTo"] >= fork.base_block + 3
    assert seen["balanceAfterSync"] == str(10**24 - 7) and seen["codeAfterSync"]
    assert "@TODO" not in run.stdout + run.stderr  # ethers logs this when a filter poll fails


def cast(*args: str, url: str) -> str:
    run = subprocess.run([CAST, args[0], "--rpc-url", url, *args[1:]], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"cast {' '.join(args)}: {run.stderr[-2000:]}"
    return run.stdout.strip()


def test_cast_on_a_fork_url(stack):
    created, fork, developer = following_fork(stack)
    url, key = created.rpc_url, "0x" + developer.key.hex()
    assert int(cast("chain-id", url=url)) == fork.chain_id
    sent = json.loads(cast("send", "--private-key", key, "--json", "0x000000000000000000000000000000000000dEaD",
                           "--value", "1000", url=url))
    assert int(sent["status"], 16) == 1
    artifact = json.loads((ARTIFACTS / "DepuToken.json").read_text())
    code = artifact["bytecode"] + encode(["string", "string", "uint8", "uint256"], ["Cast Dollar", "CSD", 18, 10**24]).hex()
    deployed = json.loads(cast("send", "--private-key", key, "--json", "--create", code, url=url))
    token = deployed["contractAddress"]
    assert int(cast("call", token, "balanceOf(address)(uint256)", developer.address, url=url).split()[0]) == 10**24
    blocks = json.loads(cast("rpc", "eth_newBlockFilter", url=url))
    logs = json.loads(cast("rpc", "eth_newFilter", json.dumps([{"address": token}]), "--raw", url=url))
    moved = json.loads(cast("send", "--private-key", key, "--json", token, "transfer(address,uint256)",
                            "0x00000000000000000000000000000000000000aa", "7", url=url))
    [log] = json.loads(cast("rpc", "eth_getFilterChanges", logs, url=url))
    assert log["transactionHash"] == moved["transactionHash"]
    assert moved["blockHash"] in json.loads(cast("rpc", "eth_getFilterChanges", blocks, url=url))
    trace = json.loads(cast("rpc", "debug_traceTransaction", json.dumps([moved["transactionHash"], {"tracer": "callTracer"}]),
                            "--raw", url=url))
    assert trace["to"].lower() == token.lower() and trace["input"].startswith("0xa9059cbb")
    snapshot = json.loads(cast("rpc", "evm_snapshot", url=url))
    cast("send", "--private-key", key, token, "transfer(address,uint256)", "0x00000000000000000000000000000000000000bb", "9", url=url)
    assert json.loads(cast("rpc", "evm_revert", snapshot, url=url)) is True
    assert int(cast("call", token, "balanceOf(address)(uint256)", "0x00000000000000000000000000000000000000bb", url=url).split()[0]) == 0
    # mainnet moves on; the fork follows, keeping the deploy and the transfer
    target = stack.mainnet.mine(3)
    wait_for(lambda: json.loads(cast("rpc", "depu_followStatus", url=url))["base_block"] >= target, 30, "follow")
    assert int(cast("call", token, "balanceOf(address)(uint256)", "0x00000000000000000000000000000000000000aa", url=url).split()[0]) == 7
    assert int(cast("balance", "0x000000000000000000000000000000000000dEaD", url=url)) >= 1000
    # the log filter cast created before the sync still answers, and sees a new transfer
    again = json.loads(cast("send", "--private-key", key, "--json", token, "transfer(address,uint256)",
                            "0x00000000000000000000000000000000000000aa", "1", url=url))
    assert [entry["transactionHash"] for entry in json.loads(cast("rpc", "eth_getFilterChanges", logs, url=url))] == [again["transactionHash"]]
