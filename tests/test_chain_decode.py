"""Transfer decoding: ours (hex word slicing) against web3.py's ABI event decoding on real logs from anvil,
every non-standard shape classified, and arbitrary logs never crashing the decoder."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depu.chain.decode import TRANSFER_TOPIC, classify, decode_transfer
from local.devchain import DevChain, load_artifact


@pytest.fixture(scope="module")
def chain_logs():
    with DevChain(accounts=6) as chain:
        chain.deploy_defaults()
        truth = chain.activity(rounds=5, seed=21, per_block=5)
        logs = chain.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "topics": [TRANSFER_TOPIC]})
        yield chain, truth, logs


@pytest.mark.e2e
def test_standard_logs_match_web3_event_decoding(chain_logs):
    from web3 import Web3

    chain, truth, logs = chain_logs
    w3 = Web3()
    erc20 = w3.eth.contract(abi=load_artifact("DepuToken")["abi"]).events.Transfer()
    erc721 = w3.eth.contract(abi=load_artifact("DepuCollectible")["abi"]).events.Transfer()
    from web3._utils.method_formatters import log_entry_formatter

    compared = {"standard": 0, "nft": 0}
    for log in logs:
        ours = decode_transfer(log)
        if ours.shape not in compared:
            continue
        event = (erc20 if ours.shape == "standard" else erc721).process_log(log_entry_formatter(log))
        args = event["args"]
        assert ours.sender == args["from"].lower() and ours.recipient == args["to"].lower()
        if ours.shape == "standard":
            assert ours.amount == args["value"] and ours.token_id is None
        else:
            assert ours.token_id == args["tokenId"] and ours.amount is None
        assert ours.log_index == event["logIndex"] and ours.block_number == event["blockNumber"]
        compared[ours.shape] += 1
    assert compared["standard"] >= 10 and compared["nft"] >= 1


@pytest.mark.e2e
def test_every_odd_shape_is_classified_as_the_truth_says(chain_logs):
    chain, truth, logs = chain_logs
    by_position = {(int(log["blockNumber"], 16), int(log["logIndex"], 16)): decode_transfer(log) for log in logs}
    odd = [t for t in truth if t.kind == "odd"]
    assert {t.shape for t in odd} == {"missing_data", "extra_topics", "short_data", "unindexed"}
    for transfer in odd:
        decoded = by_position[(transfer.block_number, transfer.log_index)]
        assert decoded.shape == transfer.shape
        assert decoded.amount == transfer.amount  # recovered exactly when the log carries it, else None
        assert decoded.sender == transfer.sender.lower()


def test_shapes_by_construction():
    word = "00" * 31 + "05"
    address = "0x" + "00" * 12 + "11" * 20
    assert classify([TRANSFER_TOPIC, address, address], "0x" + word)[0] == "standard"
    assert classify([TRANSFER_TOPIC, address, address, "0x" + word], "0x")[0] == "nft"
    assert classify([TRANSFER_TOPIC, address, address], "0x")[0] == "missing_data"
    assert classify([TRANSFER_TOPIC, address, address], "0x" + word[:32])[0] == "short_data"
    assert classify([TRANSFER_TOPIC, address, address, "0x" + word], "0x" + word)[0] == "extra_topics"
    assert classify([TRANSFER_TOPIC, address, address], "0x" + word * 2)[0] == "extra_data"
    assert classify([TRANSFER_TOPIC], "0x" + address[2:] + address[2:] + word)[0] == "unindexed"
    assert decode_transfer({"topics": ["0x" + "00" * 32], "data": "0x", "address": address}) is None
    # exact beyond 2**64 and beyond float precision
    big = 2**255 + 12345
    log = {"address": address, "topics": [TRANSFER_TOPIC, address, address], "data": hex(big)[2:].rjust(64, "0"),
           "blockNumber": "0x1", "blockHash": "0x" + "ab" * 32, "transactionHash": "0x" + "cd" * 32,
           "transactionIndex": "0x0", "logIndex": "0x3"}
    assert decode_transfer(log).amount == big


hex_chars = st.text(alphabet="0123456789abcdefABCDEFxz", max_size=200)
hexish = st.text(alphabet="0123456789abcdefABCDEFxz_ -+", max_size=64)  # what int(..., 16) half-accepts


@settings(max_examples=300, deadline=None)
@given(topics=st.lists(hex_chars.map(lambda s: "0x" + s), max_size=5), data=hex_chars)
def test_arbitrary_transfer_logs_never_crash(topics, data):
    log = {"address": "0x" + "22" * 20, "topics": [TRANSFER_TOPIC] + topics, "data": "0x" + data,
           "blockNumber": "0x1", "blockHash": "0x" + "ab" * 32, "transactionHash": "0x" + "cd" * 32,
           "transactionIndex": "0x0", "logIndex": "0x0"}
    decoded = decode_transfer(log)
    assert decoded is not None
    if decoded.shape in ("standard", "unindexed"):
        assert decoded.amount is not None and decoded.amount >= 0
    elif decoded.shape == "nft":
        assert decoded.token_id is not None and decoded.amount is None
    else:
        assert decoded.amount is None and decoded.token_id is None


def _row_both_ways(log):
    """(fast path row, general path row) for one log, as ``transfer_rows`` would build it."""
    from depu.chain.rows import decoded_row, standard_row

    return standard_row(log, 7, "0x" + "ab" * 32, 1_700_000_000), decoded_row(log, 7, "0x" + "ab" * 32, 1_700_000_000)


@pytest.mark.e2e
def test_standard_row_fast_path_builds_the_general_paths_row_for_every_chain_log(chain_logs):
    chain, truth, logs = chain_logs
    fast_rows = 0
    for log in logs:
        fast, general = _row_both_ways(log)
        if fast is not None:
            fast_rows += 1
            assert fast == general
        else:
            assert general is None or general["shape"] != "standard"
    assert fast_rows > 0 and fast_rows == sum(1 for log in logs if decode_transfer(log).shape == "standard")


@settings(max_examples=400, deadline=None)
@given(topics=st.lists(hex_chars.map(lambda s: "0x" + s), max_size=4), data=hexish,
       address=st.sampled_from(["0x" + "Ab" * 20, "0x" + "22" * 20]))
def test_standard_row_fast_path_agrees_with_the_general_path_on_arbitrary_logs(topics, data, address):
    words = ["0x" + topic[2:].rjust(64, "0")[:64] for topic in topics]
    # arbitrary; one data word; one data word and whole-word topics (the fast path's shape)
    for body, args in ((data, topics), (data.rjust(64, "0")[:64], topics), (data.rjust(64, "0")[:64], words)):
        log = {"address": address, "topics": [TRANSFER_TOPIC] + args, "data": "0x" + body,
               "blockNumber": "0x1", "blockHash": "0x" + "ab" * 32, "transactionHash": "0x" + "cd" * 32,
               "transactionIndex": "0x2", "logIndex": "0x5"}
        fast, general = _row_both_ways(log)
        if fast is not None:
            assert fast == general and general["shape"] == "standard"
        else:  # left to the general path: not standard, or topics that are not whole words
            assert general["shape"] != "standard" or any(len(topic) != 66 for topic in log["topics"][1:])
