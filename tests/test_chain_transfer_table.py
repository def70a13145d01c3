"""The backfill's columnar decode (``depu.chain.transfer_table``) builds exactly the table the row path builds
(``rows.transfer_rows`` → ``raw.to_table``): on every log of a real anvil chain (every shape, ETH transfers,
dated by the logs or by the blocks), and on arbitrary logs made to trip the kernels (non-hex words, "_" that
Python's int() accepts, non-ASCII, upper case, removed logs, missing fields); and the answer reader keeps the
JSON-RPC envelope's meaning (errors, ids, a body pyarrow cannot type, one that is not JSON)."""
from __future__ import annotations

from collections import defaultdict

import orjson
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from depu.chain.decode import TRANSFER_TOPIC
from local.devchain import DevChain


def row_path_table(logs, blocks=None, receipts=None):
    """The old way: logs grouped by block, ``transfer_rows`` per block, then ``raw.to_table``."""
    from depu.analytics import raw
    from depu.chain.rows import transfer_rows

    by_block = defaultdict(list)
    for entry in logs:
        by_block[entry["blockHash"]].append(entry)
    rows = []
    if blocks is None:
        for block_hash, entries in by_block.items():
            first = entries[0]
            block = {"number": first["blockNumber"], "hash": block_hash, "timestamp": first["blockTimestamp"],
                     "transactions": []}
            rows += transfer_rows(block, entries, {})
    else:
        for block in blocks:
            rows += transfer_rows(block, by_block.get(block["hash"], []), receipts or {})
    return raw.to_table("transfers", rows)


def get_logs_body(chain, first, last) -> bytes:
    payload = {"jsonrpc": "2.0", "id": 7, "method": "eth_getLogs",
               "params": [{"fromBlock": hex(first), "toBlock": hex(last), "topics": [TRANSFER_TOPIC]}]}
    return requests.post(chain.rpc_url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"},
                         timeout=30).content


@pytest.fixture(scope="module")
def chain():
    with DevChain(accounts=6) as devchain:
        devchain.deploy_defaults()
        devchain.activity(rounds=10, seed=5, per_block=5)
        yield devchain


@pytest.mark.e2e
def test_the_table_is_the_row_paths_for_every_log_of_a_chain(chain):
    from depu.chain.rows import hex_int, transfer_rows
    from depu.chain.transfer_table import read_answer, shape_counts, transfer_table

    head = chain.block_number()
    body = get_logs_body(chain, 0, head)
    answer = read_answer(body)
    assert answer["id"] == 7 and answer["error"] is None
    logs = orjson.loads(body)["result"]
    table = transfer_table(answer["result"])
    assert table.equals(row_path_table(logs))
    assert {"standard", "nft", "missing_data", "extra_topics", "short_data", "unindexed"} <= set(shape_counts(table))

    # dated by the blocks, with ETH transfers: what the full backfill builds
    blocks = [chain.rpc("eth_getBlockByNumber", hex(n), True) for n in range(head + 1)]
    value_txs = [tx["hash"] for block in blocks for tx in block["transactions"] if hex_int(tx["value"]) > 0]
    receipts = {h: chain.rpc("eth_getTransactionReceipt", h) for h in value_txs}
    natives = [row for block in blocks for row in transfer_rows(block, [], receipts)]
    assert natives, "the chain has ETH transfers"
    stamps = {block["hash"]: hex_int(block["timestamp"]) for block in blocks}
    assert transfer_table(answer["result"], stamps, natives).equals(row_path_table(logs, blocks, receipts))
    # logs of a block the stamps do not name are left out, as the row path leaves them
    some = [{**block, "transactions": []} for block in blocks[: len(blocks) // 2]]
    fewer = {block["hash"]: hex_int(block["timestamp"]) for block in some}
    assert transfer_table(answer["result"], fewer).equals(row_path_table(logs, some))


hex_chars = st.text(alphabet="0123456789abcdefABCDEF", min_size=0, max_size=70)
odd_chars = st.text(alphabet="0123456789abcdefxX_ g\u00e9\u212a", min_size=0, max_size=70)


# words a kernel could read differently from Python's int(): "_" where int() takes it (after the prefix, between
# digits) or not, surrounding spaces, a non-ASCII digit int() accepts, upper case
TRICKY_DATA = ["0x_" + "f" * 63, "0x" + "0" * 30 + "_" + "1" * 33, "0x" + "1" * 63 + "_", " 0x" + "1" * 63,
               "0x" + "\u0661" * 64, "0x" + "AB" * 32, "0X" + "ab" * 32]


def word(text: str) -> str:
    return "0x" + text.rjust(64, "0")[:64]


log_entries = st.fixed_dictionaries({
    "address": st.sampled_from(["0x" + "Ab" * 20, "0x" + "22" * 20, "0x" + "\u00c9" * 40]),
    "topics": st.one_of(
        st.lists(hex_chars.map(word), min_size=2, max_size=2).map(lambda t: [TRANSFER_TOPIC] + t),
        st.lists(st.one_of(hex_chars.map(word), odd_chars.map(lambda s: "0x" + s)), max_size=4).map(
            lambda t: [TRANSFER_TOPIC.upper().replace("0X", "0x")] + t),
        st.lists(hex_chars.map(word), min_size=2, max_size=2).map(lambda t: [word("12")] + t),
    ),
    "data": st.one_of(hex_chars.map(word), odd_chars.map(lambda s: "0x" + s), odd_chars.map(lambda s: s.rjust(66)),
                      st.sampled_from(TRICKY_DATA)),
    "removed": st.sampled_from([False, True, None]),
})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(log_entries, st.integers(0, 3)), min_size=1, max_size=12))
def test_the_table_is_the_row_paths_on_arbitrary_logs(entries):
    import pyarrow as pa

    from depu.chain.transfer_table import log_type, transfer_table

    logs = []
    for index, (entry, block) in enumerate(sorted(entries, key=lambda item: item[1])):
        logs.append({**entry, "blockNumber": hex(100 + block), "blockHash": "0x" + f"{block:02x}" * 32,
                     "blockTimestamp": hex(1_700_000_000 + 12 * block), "transactionHash": "0x" + "cd" * 32,
                     "transactionIndex": hex(index // 2), "logIndex": hex(index)})
    table = transfer_table(pa.array(logs, type=log_type()))
    assert table.equals(row_path_table(logs)), (table.to_pylist(), row_path_table(logs).to_pylist())


def test_the_answer_reader_keeps_the_envelopes_meaning():
    from depu.chain.transfer_table import read_answer

    error = read_answer(b'{"jsonrpc":"2.0","id":3,"error":{"code":-32005,"message":"query returned more than 10000 results"}}')
    assert error["id"] == 3 and error["error"]["code"] == -32005 and error["result"] is None
    empty = read_answer(b'{"jsonrpc":"2.0","id":4,"result":[]}')
    assert empty["id"] == 4 and len(empty["result"]) == 0
    assert read_answer(b'{"jsonrpc":"2.0","id":5,"result":null}')["result"] is None
    # fields in another order, extra fields, one left out: pyarrow reads them by name
    shuffled = read_answer(b'{"result":[{"logIndex":"0x1","extra":{"a":1},"topics":["0x01"],"address":"0x02"}],'
                           b'"id":6,"jsonrpc":"2.0"}')
    assert shuffled["id"] == 6 and shuffled["result"].to_pylist() == [
        {"address": "0x02", "topics": ["0x01"], "data": None, "blockHash": None, "blockNumber": None,
         "blockTimestamp": None, "transactionHash": None, "transactionIndex": None, "logIndex": "0x1",
         "removed": None}]
    # a body pyarrow cannot type as logs is read the slow way: the same id, and a clear error for non-logs
    with pytest.raises(ValueError, match="not an eth_getLogs log"):
        read_answer(b'{"jsonrpc":"2.0","id":8,"result":[{"address":"0x01","topics":"0xnot-a-list"}]}')
    assert isinstance(read_answer(b'[{"jsonrpc":"2.0","id":9,"result":[]}]')["result"], type(None))
    with pytest.raises(orjson.JSONDecodeError):
        read_answer(b"<html>502 Bad Gateway</html>")


@pytest.mark.parametrize("data", TRICKY_DATA)
@pytest.mark.parametrize("address", ["0x" + "Ab" * 20, "0x" + "\u00c9" * 40])
def test_words_python_reads_its_own_way_give_the_row_paths_rows(data, address):
    import pyarrow as pa

    from depu.chain.transfer_table import log_type, transfer_table

    topics = [TRANSFER_TOPIC, word("9965507d1a55bcc2695c58ba16fb37d819b0a4dc"), word("A0Ee7A142d267C1f36714E4a8F75612F20a79720")]
    logs = [{"address": address, "topics": topics, "data": data, "blockNumber": "0x1", "blockHash": "0x" + "aa" * 32,
             "blockTimestamp": "0x5", "transactionHash": "0x" + "cd" * 32, "transactionIndex": "0x0",
             "logIndex": hex(index), "removed": removed} for index, removed in enumerate((False, None, True))]
    table = transfer_table(pa.array(logs, type=log_type()))
    assert table.equals(row_path_table(logs)), (table.to_pylist(), row_path_table(logs).to_pylist())
    assert table.num_rows == 2  # the removed log is skipped


@pytest.mark.e2e
def test_the_byte_scanner_reads_each_of_a_chains_answers_as_json_does(chain):
    """Block by block, every answer the scanner takes (one topic count, anvil's layout) equals the JSON
    parse; the others (NFTs beside ERC-20s, no logs at all) are left to it, and the reader still answers."""
    from depu.chain.log_scan import scan_answer
    from depu.chain.transfer_table import _read_answer_slowly, read_answer

    scanned = declined = 0
    for number in range(chain.block_number() + 1):
        body = get_logs_body(chain, number, number)
        slow = _read_answer_slowly(body)
        fast = scan_answer(body)
        if fast is None:
            declined += 1
        else:
            scanned += 1
            assert fast["id"] == slow["id"] == 7 and fast["error"] is None
            assert fast["result"].equals(slow["result"]), number
        assert read_answer(body)["result"].equals(slow["result"])
    assert scanned and declined  # both ways taken on this chain


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet="0xab\u00e9\u212a", max_size=6)), max_size=12),
       st.integers(0, 12), st.integers(0, 12))
def test_the_whole_buffer_ascii_check_never_passes_a_non_ascii_string(strings, start, length):
    """``_ascii_bytes`` stands in for ``string_is_ascii`` on every column: it may decline (the kernels then
    check string by string) but must never pass an array holding a non-ASCII string, sliced or not."""
    import pyarrow as pa

    from depu.chain.transfer_table import _ascii_bytes

    whole = pa.array(strings, pa.string())
    for array in (whole, whole.slice(min(start, len(whole)), length)):
        passed = _ascii_bytes([array])
        if passed:
            assert all(value is None or value.isascii() for value in array.to_pylist())
        if all(value is None or value.isascii() for value in strings):
            assert passed  # nothing non-ASCII anywhere in the buffer: no reason to decline
