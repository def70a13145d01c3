"""The byte scanner (``depu.chain.log_scan``) and the vectorised amounts (``depu.chain.amounts``) give exactly
what the general paths give: the scanner the JSON parse of the same body (or None, and then the reader parses
it), the amounts ``str(int(word[2:], 16))`` word for word. Bodies are written as nodes write them (orjson: no
whitespace) and then bent (whitespace, escapes, non-ASCII, another key order per log, a removed log, a field
that is not a string), since every bend must be declined, never misread."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depu.chain.decode import TRANSFER_TOPIC

FIELDS = ("address", "topics", "data", "blockHash", "blockNumber", "blockTimestamp", "transactionHash",
          "transactionIndex", "logIndex", "removed")


def hex_word(value: int) -> str:
    return "0x" + f"{value:064x}"


def a_log(index: int, topics: int = 3, value: int = 10**15) -> dict:
    return {"address": "0x" + f"{index % 7:02x}" * 20,
            "topics": [TRANSFER_TOPIC] + [hex_word(index * 31 + t) for t in range(topics - 1)],
            "data": hex_word(value), "blockHash": "0x" + f"{index // 3:02x}" * 32, "blockNumber": hex(index // 3),
            "blockTimestamp": hex(1_700_000_000 + index // 3), "transactionHash": "0x" + f"{index:02x}" * 32,
            "transactionIndex": hex(index % 3), "logIndex": hex(index), "removed": False}


def body_of(logs, answer_id=7) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": answer_id, "result": logs})


def both(body: bytes):
    from depu.chain.log_scan import scan_answer
    from depu.chain.transfer_table import _read_answer_slowly

    return scan_answer(body), _read_answer_slowly(body)


def assert_same(fast, slow):
    assert fast["id"] == slow["id"] and fast["error"] is None and slow["error"] is None
    assert fast["result"].type == slow["result"].type
    assert fast["result"].equals(slow["result"]), (fast["result"].to_pylist()[:2], slow["result"].to_pylist()[:2])


@pytest.mark.parametrize("topics", [0, 1, 3, 4])
def test_regular_answers_are_scanned_exactly(topics):
    fast, slow = both(body_of([a_log(i, topics, value=i * 10**20) for i in range(40)], answer_id=12345))
    assert fast is not None
    assert_same(fast, slow)


def test_fields_a_node_leaves_out_or_orders_its_own_way_are_read_by_name():
    # another node's order (geth's: no blockTimestamp, blockHash after the indexes), no "removed"
    order = ("address", "topics", "data", "blockNumber", "transactionHash", "transactionIndex", "blockHash",
             "logIndex")
    logs = [{key: a_log(i)[key] for key in order} for i in range(5)]
    fast, slow = both(body_of(logs))
    assert fast is not None
    assert_same(fast, slow)
    assert fast["result"].field("blockTimestamp").null_count == 5


def test_an_empty_answer_is_an_empty_array():
    fast, slow = both(body_of([]))
    assert fast is not None and len(fast["result"]) == 0 and fast["result"].type == slow["result"].type


def bent_bodies() -> dict[str, bytes]:
    logs = [a_log(i) for i in range(6)]
    regular = body_of(logs)
    reordered = [dict(reversed(list(logs[0].items())))] + logs[1:]
    return {
        "whitespace after a comma": regular.replace(b'"],"data"', b'"], "data"', 1),
        "pretty-printed": orjson.dumps({"jsonrpc": "2.0", "id": 7, "result": logs}, option=orjson.OPT_INDENT_2),
        "an escaped character": regular.replace(b'"0x0000', b'"\\u0030x0000', 1),
        "non-ASCII": body_of([{**logs[0], "address": "0x" + "\u00c9" * 40}] + logs[1:]),
        "a removed log": body_of(logs[:3] + [{**logs[3], "removed": True}] + logs[4:]),
        "one log with four topics": body_of(logs[:2] + [a_log(9, 4)] + logs[2:]),
        "one log with another key order": body_of(logs[1:] + reordered[:1]),
        "a log with an extra field": body_of(logs + [{**logs[0], "extra": "0x1"}]),
        "a log without a field": body_of(logs + [{k: v for k, v in logs[0].items() if k != "data"}]),
        "a number where a string goes": body_of(logs + [{**logs[0], "logIndex": 5}]),
        "a null value": body_of([{**logs[0], "data": None}] + logs[1:]),
        "an error object": b'{"jsonrpc":"2.0","id":7,"error":{"code":-32005,"message":"query returned more than"}}',
        "the id after the result": orjson.dumps({"jsonrpc": "2.0", "result": logs, "id": 7}),
        "a string id": orjson.dumps({"jsonrpc": "2.0", "id": "7", "result": logs}),
        "a batch": b"[" + regular + b"]",
        "a result that is not a list": b'{"jsonrpc":"2.0","id":7,"result":null}',
        "trailing bytes": regular + b"\n",
        "a quote inside the skeleton's place": regular.replace(b'","topics":["', b'","topic":["', 1),
    }


@pytest.mark.parametrize("name", list(bent_bodies()))
def test_every_irregular_body_is_left_to_the_json_parse(name):
    from depu.chain.log_scan import scan_answer
    from depu.chain.transfer_table import _read_answer_slowly, read_answer

    body = bent_bodies()[name]
    assert scan_answer(body) is None
    try:
        slow = _read_answer_slowly(body)
    except ValueError:
        with pytest.raises(ValueError):
            read_answer(body)
        return
    answer = read_answer(body)
    assert answer["id"] == slow["id"] and answer["error"] == slow["error"]
    assert (answer["result"] is None) == (slow["result"] is None)
    if slow["result"] is not None:
        assert answer["result"].equals(slow["result"])


hexish = st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=12).map(lambda s: "0x" + s)
printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=70)
values = st.one_of(hexish, printable, st.sampled_from(["", "0x", "0x{}", "0x,\"a\":1", "]", "}"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({name: values for name in FIELDS if name not in ("topics", "removed")}),
                min_size=1, max_size=8),
       st.integers(0, 4), st.sampled_from([False, None, True]), st.data())
def test_the_scanner_never_misreads_a_body(logs, topics, removed, data):
    """Arbitrary printable strings (braces, commas, escapes) in every field: what the scanner takes equals
    the JSON parse, and plain shapes are taken."""
    for entry in logs:
        entry["topics"] = data.draw(st.lists(values, min_size=topics, max_size=topics))
        if removed is not None:
            entry["removed"] = removed
    body = body_of(logs)
    fast, slow = both(body)
    plain = removed is not True and not any(set(v) & set('"\\{}') for e in logs for v in
                                            [*e["topics"], *(e[k] for k in e if k not in ("topics", "removed"))])
    plain = plain and len({tuple(entry) for entry in logs}) == 1  # one key order (hypothesis may shuffle it)
    if plain:
        assert fast is not None
    if fast is not None:
        assert_same(fast, slow)


def row_amounts(words):
    found = []
    for word in words:
        try:
            found.append(str(int(word[2:], 16)))
        except ValueError:
            found.append(None)
    return found


uint256 = st.one_of(st.integers(0, 2**64 - 1), st.integers(2**64, 2**256 - 1), st.sampled_from([0, 2**64 - 1, 2**64, 2**256 - 1]))
odd_words = st.sampled_from(["0x_" + "f" * 63, "0x" + "0" * 30 + "_" + "1" * 33, " 0x" + "1" * 63, "0x" + "1" * 63 + " ",
                             "0x" + "g" * 64, "0x" + "\u0661" * 64, "0X" + "ab" * 32, "0x" + "0" * 47 + "_" + "1" * 16])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(uint256.map(hex_word), uint256.map(lambda v: hex_word(v).upper().replace("0X", "0x")),
                          odd_words), min_size=1, max_size=40), st.booleans())
def test_amounts_are_the_row_paths_word_for_word(words, gathered):
    import pyarrow as pa

    from depu.chain.amounts import amounts

    array = pa.array(words, pa.string())
    if gathered:  # words that do not follow each other in the buffer (a take, a filter)
        array = pa.array(["0x" + "1" * 64] + words, pa.string()).take(pa.array(range(len(words), 0, -1)))
        words = words[::-1]
    found, refused = amounts(array)
    expected = row_amounts(words)
    assert found.to_pylist() == expected
    assert refused == [index for index, value in enumerate(expected) if value is None]
