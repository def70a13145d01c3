"""Transfer rows as Arrow columns: an ``eth_getLogs`` answer parsed and decoded with no Python object per log.

A history backfill reads tens of megabytes of logs per thousand busy blocks. Parsed into Python dicts and
decoded row by row, the client's CPU (under the GIL) costs more than the node's work; here the answer's body
is read in place from its bytes when it has a node's regular layout (``depu.chain.log_scan``, numpy) and
otherwise by pyarrow's JSON reader (both C++ that releases the GIL, so chunks in other threads read at the
same time), and the standard ERC-20 Transfers, nearly every log, are decoded by Arrow kernels straight into the columns
the raw Parquet parts hold (``depu.analytics.raw.TRANSFER_COLUMNS``). Only two things stay in Python: hex
quantities (each distinct value once: a chunk has few distinct block numbers and log indexes) and the
uint256 amounts of 64 bits or more (``depu.chain.amounts``: one ``int(…, 16)`` each, the row path's call;
smaller ones by numpy and Arrow's exact uint64 cast).

Every other log (NFTs, odd shapes, anything not strictly hex) goes through the general row path
(``depu.chain.rows``), so the table is exactly ``raw.to_table("transfers", transfer_rows(...))`` of the same
logs, in the same order; tests compare the two on every log of a DevChain.

Needs pyarrow and numpy (the parquet-deps layer): imported by the functions that use it, never at import time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from depu.chain.decode import STANDARD, TRANSFER_TOPIC
from depu.chain.log_schema import STRING_FIELDS as _STRING_FIELDS
from depu.chain.log_schema import log_type

if TYPE_CHECKING:
    import pyarrow as pa

_ORDER = "__order"  # a log's place in the answer, so decoded logs of both paths keep the node's order
_GROUP = "__group"  # 0: a block's ETH transfers, 1: its logs (the order transfer_rows gives them)


def read_answer(body: bytes) -> dict[str, Any]:
    """A JSON-RPC answer whose result is a list of logs: ``{"id", "error", "result"}``, result an Arrow
    StructArray of ``log_type()``. The usual body is read by ``depu.chain.log_scan``; any other by
    pyarrow's JSON reader. A body pyarrow cannot read as that is parsed by orjson instead, with the
    same answer; a body that is not JSON raises orjson's error, logs that are not logs a ValueError."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    from depu.chain.log_scan import scan_answer

    scanned = scan_answer(body)  # the regular shape, read from its bytes; None: parse it as JSON
    if scanned is not None:
        return scanned
    schema = pa.schema([pa.field("result", pa.list_(log_type()))])
    try:
        table = pa_json.read_json(
            pa.BufferReader(body),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _read_answer_slowly(body)
    if table.num_rows != 1:
        return _read_answer_slowly(body)
    names = set(table.column_names)
    answer: dict[str, Any] = {
        "id": table.column("id")[0].as_py() if "id" in names else None,
        "error": table.column("error")[0].as_py() if "error" in names else None,
        "result": None,
    }
    results = table.column("result").combine_chunks()
    if results.null_count == 0:
        answer["result"] = _only_log_fields(results.flatten())
    return answer


def _only_log_fields(logs: "pa.StructArray") -> "pa.StructArray":
    """The logs without the fields a node adds beyond a log's (pyarrow infers those), so every answer's
    array has one type and answers concatenate."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fields = list(log_type())
    if logs.type.num_fields == len(fields):
        return logs
    mask = pc.is_null(logs) if logs.null_count else None
    return pa.StructArray.from_arrays([logs.field(f.name) for f in fields], fields=fields, mask=mask)


def _read_answer_slowly(body: bytes) -> dict[str, Any]:
    import orjson
    import pyarrow as pa

    parsed = orjson.loads(body)
    if not isinstance(parsed, dict):
        return {"id": None, "error": None, "result": None}
    logs = parsed.get("result")
    if isinstance(logs, list):
        for entry in logs:
            _check_log(entry)
    result = pa.array(logs, type=log_type()) if isinstance(logs, list) else None
    return {"id": parsed.get("id"), "error": parsed.get("error"), "result": result}


def _check_log(entry: Any) -> None:
    """pyarrow would take a string for a list of characters: refuse what is not a log, clearly."""
    def fail(what: str) -> None:
        raise ValueError(f"the node's answer holds something that is not an eth_getLogs log: {what}")

    if not isinstance(entry, dict):
        fail(repr(entry)[:80])
    topics = entry.get("topics")
    if topics is not None and not (isinstance(topics, list) and all(isinstance(t, str) for t in topics)):
        fail(f"topics {topics!r:.80}")
    for name in _STRING_FIELDS:
        if not isinstance(entry.get(name), (str, type(None))):
            fail(f"{name} {entry.get(name)!r:.80}")
    if not isinstance(entry.get("removed"), (bool, type(None))):
        fail(f"removed {entry.get('removed')!r:.80}")


def _hex_ints(strings: "pa.Array") -> "pa.Array":
    """Hex quantities as int64, each distinct value converted once (Python's int(), as the row path)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if strings.null_count:
        raise ValueError("a log without a block number, transaction index or log index")
    encoded = pc.dictionary_encode(strings)
    values = pa.array([int(value, 16) for value in encoded.dictionary.to_pylist()], pa.int64())
    return values.take(encoded.indices)


def _address_of_topic(topics: "pa.Array", index: int) -> "pa.Array":
    import pyarrow.compute as pc

    word = pc.list_element(topics, index)  # ASCII (checked): bytes are characters
    return pc.ascii_lower(pc.binary_replace_slice(word, 2, 26, ""))  # "0x" + the word's last 40 characters


def _ascii_bytes(arrays: "Sequence[pa.Array]") -> bool:
    """True when every byte of these string arrays' character data, from their first string's start to their
    last string's end (null slots and unreferenced bytes between included), is ASCII: then each string is.
    One numpy pass over the bytes instead of a kernel per column; False (the caller checks string by string)
    for anything else, e.g. another string type. An answer read from its bytes (``log_scan``) always passes."""
    import numpy as np
    import pyarrow as pa

    for array in arrays:
        if not isinstance(array, pa.StringArray):
            return False
        if not len(array):
            continue
        _, offsets, data = array.buffers()
        if data is None:
            continue
        bounds = np.frombuffer(offsets, np.int32, count=array.offset + len(array) + 1)
        first, last = int(bounds[array.offset]), int(bounds[-1])
        if last > first and np.frombuffer(data, np.uint8, count=last - first, offset=first).max() >= 0x80:
            return False
    return True


def _candidates(logs: "pa.StructArray") -> "pa.Array":
    """Positions of the logs that look like what ``rows.standard_row`` builds: 3 topics, Transfer's topic0,
    whole-word topics, one data word; not removed (the general path skips those). Every string checked is
    ASCII as well, so the kernels' lower-casing and slicing equal Python's ``str`` methods on it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(logs):
        return pa.array([], pa.uint64())
    topics = logs.field("topics")
    three = pc.fill_null(pc.equal(pc.list_value_length(topics), 3), False)
    if pc.all(three).as_py():
        subset, positions = logs, None
    else:  # list_element needs every list long enough: look at the 3-topic logs alone
        positions = pc.indices_nonzero(three)
        subset = logs.take(positions)
        topics = subset.field("topics")
    if not len(subset):
        return pa.array([], pa.uint64())
    data, address = subset.field("data"), subset.field("address")
    words = [pc.list_element(topics, index) for index in range(3)]
    checks = [
        pc.equal(pc.ascii_lower(words[0]), TRANSFER_TOPIC),
        pc.equal(pc.binary_length(words[1]), 66), pc.equal(pc.binary_length(words[2]), 66),
        pc.equal(pc.binary_length(data), 66), pc.starts_with(data, "0x"),
        pc.is_valid(address), pc.invert(pc.fill_null(subset.field("removed"), False)),
    ]
    if not _ascii_bytes([topics.values, data, address]):  # else every string is ASCII: no per-string check
        checks += [pc.string_is_ascii(strings) for strings in (*words, data, address)]
    keep = checks[0]
    for check in checks[1:]:
        keep = pc.and_kleene(keep, check)
    found = pc.indices_nonzero(pc.fill_null(keep, False))
    return found if positions is None else positions.take(found)


def _standard_columns(logs: "pa.StructArray", amounts: "pa.Array",
                      stamps: dict[str, int] | None) -> dict[str, "pa.Array"]:
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(logs)
    topics = logs.field("topics")
    if stamps is None:
        timestamps = _hex_ints(logs.field("blockTimestamp"))
    else:
        hashes = pc.dictionary_encode(logs.field("blockHash"))
        timestamps = pa.array([stamps[h] for h in hashes.dictionary.to_pylist()], pa.int64()).take(hashes.indices)
    return {
        "block_number": _hex_ints(logs.field("blockNumber")), "block_hash": logs.field("blockHash"),
        "block_timestamp": timestamps, "tx_hash": logs.field("transactionHash"),
        "tx_index": _hex_ints(logs.field("transactionIndex")), "log_index": _hex_ints(logs.field("logIndex")),
        "asset": pc.ascii_lower(logs.field("address")), "kind": pa.repeat(pa.scalar("erc20"), count),
        "shape": pa.repeat(pa.scalar(STANDARD), count), "sender": _address_of_topic(topics, 1),
        "recipient": _address_of_topic(topics, 2), "amount": amounts,
        "token_id": pa.nulls(count, pa.string()),
    }


def _general_rows(logs: list[dict[str, Any]], positions: list[int],
                  stamps: dict[str, int] | None) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of the logs left to the general path, exactly as ``rows.transfer_rows`` builds them, and the
    answer position of each (a removed log, or one that is not a Transfer, gives none)."""
    from depu.chain.rows import hex_int, transfer_rows

    rows: list[dict[str, Any]] = []
    kept: list[int] = []
    for position, entry in zip(positions, logs):
        stamp = hex_int(entry["blockTimestamp"]) if stamps is None else stamps[entry["blockHash"]]
        block = {"number": entry["blockNumber"], "hash": entry["blockHash"], "timestamp": hex(stamp),
                 "transactions": []}
        for row in transfer_rows(block, [entry], {}):
            rows.append(row)
            kept.append(position)
    return rows, kept


def transfer_table(logs: "pa.StructArray", stamps: dict[str, int] | None = None,
                   native_rows: Sequence[dict[str, Any]] = ()) -> "pa.Table":
    """The raw ``transfers`` table of these logs (and ETH transfers ``native_rows``, from
    ``rows.transfer_rows``), ordered as the row path orders them: by block, a block's ETH transfers first,
    then its logs in the node's order.

    ``stamps`` (block hash → timestamp) dates the logs by their blocks and keeps only the logs of those
    blocks (as the row path does); without it, each log's own ``blockTimestamp`` dates it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from depu.analytics import raw
    from depu.chain.amounts import amounts as amount_strings

    if stamps is not None and len(logs):
        logs = logs.filter(pc.is_in(logs.field("blockHash"), value_set=pa.array(list(stamps), pa.string())))
    elif stamps is None and len(logs) and logs.field("blockTimestamp").null_count:
        raise ValueError("these logs carry no blockTimestamp: give the blocks' timestamps")
    schema = raw.to_table("transfers", []).schema.append(pa.field(_GROUP, pa.int8())).append(
        pa.field(_ORDER, pa.int64()))
    standard = _candidates(logs)
    subset = logs if len(standard) == len(logs) else logs.take(standard)
    amounts, refused = amount_strings(subset.field("data"))
    if refused:
        accepted = pc.invert(pc.is_in(pa.array(range(len(standard))), value_set=pa.array(refused)))
        standard, subset, amounts = standard.filter(accepted), subset.filter(accepted), amounts.filter(accepted)
    if len(standard) == len(logs):
        others = pa.array([], pa.uint64())
    else:
        others = pc.indices_nonzero(pc.invert(pc.is_in(pa.array(range(len(logs)), pa.uint64()), value_set=standard)))
    parts = []
    if len(standard):
        columns = _standard_columns(subset, amounts, stamps)
        columns[_GROUP] = pa.repeat(pa.scalar(1, pa.int8()), len(standard))
        columns[_ORDER] = pc.cast(standard, pa.int64())
        parts.append(pa.table(columns, schema=schema))
    general, kept = _general_rows(logs.take(others).to_pylist(), others.to_pylist(), stamps) if len(others) else ([], [])
    for group, rows, order in ((1, general, kept), (0, list(native_rows), range(len(native_rows)))):
        if rows:
            table = raw.to_table("transfers", rows)
            table = table.append_column(_GROUP, pa.repeat(pa.scalar(group, pa.int8()), len(rows)))
            parts.append(table.append_column(_ORDER, pa.array(list(order), pa.int64())))
    if not parts:
        return raw.to_table("transfers", [])
    if len(parts) == 1 and _ascending(parts[0].column("block_number")):
        return parts[0].drop_columns([_GROUP, _ORDER])  # one kind of row, already in order: the usual chunk
    table = pa.concat_tables(parts).sort_by([("block_number", "ascending"), (_GROUP, "ascending"),
                                             (_ORDER, "ascending")])
    return table.drop_columns([_GROUP, _ORDER])


def _ascending(numbers: "pa.ChunkedArray") -> bool:
    import pyarrow.compute as pc

    numbers = numbers.combine_chunks()
    return len(numbers) < 2 or pc.all(pc.greater_equal(numbers[1:], numbers[:-1])).as_py()


def shape_counts(table: "pa.Table") -> dict[str, int]:
    import pyarrow.compute as pc

    return {item["values"]: item["counts"] for item in pc.value_counts(table.column("shape")).to_pylist()}
