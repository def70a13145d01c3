"""The local mainnet other features test against: anvil as chain id 1, DePU's contracts, truthful history."""
from __future__ import annotations

import pytest

from local.devchain import DevChain, load_artifact

pytestmark = pytest.mark.e2e


def test_contracts_balances_and_history_agree_with_the_chain():
    with DevChain(accounts=4) as chain:
        assert int(chain.rpc("eth_chainId"), 16) == 1
        tokens = chain.deploy_defaults()
        assert tokens["USDD"].decimals == 6 and tokens["DUSD"].decimals == 18
        truth = chain.activity(rounds=2, seed=1, per_block=3)
        # balances implied by the recorded history equal the contract's own balances
        for key in ("DUSD", "USDD"):
            token = tokens[key]
            for account in chain.accounts:
                implied = sum(t.amount for t in chain.history if t.token == token.address and t.recipient == account)
                implied -= sum(t.amount for t in chain.history if t.token == token.address and t.sender == account)
                assert chain.balance_of(token, account) == implied
        # every recorded position is a real log of the recorded transaction
        for transfer in truth:
            receipt = chain.rpc("eth_getTransactionReceipt", transfer.tx_hash)
            assert int(receipt["blockNumber"], 16) == transfer.block_number
            if transfer.log_index is not None:
                assert transfer.log_index in [int(log["logIndex"], 16) for log in receipt["logs"]]
        assert "abi" in load_artifact("OddToken") and load_artifact("DepuToken")["bytecode"].startswith("0x60")


def test_snapshot_revert_is_a_reorg_and_history_follows():
    with DevChain(accounts=4) as chain:
        chain.deploy_defaults()
        chain.activity(rounds=1, seed=2, per_block=2)
        snapshot, head = chain.snapshot(), chain.block_number()
        old_hash = chain.activity(rounds=2, seed=3, per_block=2)[-1].block_hash
        chain.revert(snapshot)
        assert chain.block_number() == head and all(t.block_number <= head for t in chain.history)
        new = chain.activity(rounds=2, seed=4, per_block=2)
        assert new[-1].block_number == head + 2 and new[-1].block_hash != old_hash


def test_stop_ends_anvil_and_a_taken_port_is_a_clear_error():
    with DevChain() as first:
        with pytest.raises(RuntimeError, match="taken"):
            DevChain(first.port).start(timeout=10)
        process = first._process
    assert process.poll() is not None and not first.running
