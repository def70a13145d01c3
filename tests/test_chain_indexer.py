"""The indexer against a real anvil "mainnet" with known activity (local.devchain) and ChainTable/S3 in moto.

Each test compares what the indexer stored with the ground truth DevChain recorded from its own transactions'
receipts: every transfer found once, amounts exact, odd logs classified, aggregates equal to sums computed
here from the truth, through a crash and through a forced reorg.
"""
from __future__ import annotations

from collections import defaultdict

import pytest

from local.devchain import DevChain, Transfer

pytestmark = pytest.mark.e2e


@pytest.fixture
def chain():
    with DevChain(accounts=6) as devchain:
        devchain.deploy_defaults()
        yield devchain


def make_indexer(chain, notices=None, **overrides):
    from depu.chain.indexer import Indexer, IndexerConfig

    config = IndexerConfig(**({"confirmations": 0, "start_block": 0, "chunk_blocks": 5} | overrides))
    sink = notices if notices is not None else []
    return Indexer(chain.rpc_url, config, notify=sink.append)


def pos(transfer: Transfer) -> str:
    return f"N{transfer.tx_index:06d}" if transfer.kind == "native" else f"L{transfer.log_index:06d}"


def stored_rows(last_block: int) -> dict[tuple[int, str], dict]:
    from depu.chain import store

    rows = {}
    for number in range(last_block + 1):
        for item in store.query_all(store.block_rows_pk(number)):
            rows[(number, item["sk"])] = item
    return rows


def expected_row(transfer: Transfer) -> dict:
    return {
        "kind": "erc20" if transfer.kind == "odd" and transfer.shape == "unindexed" else transfer.kind,
        "shape": "native" if transfer.kind == "native" else transfer.shape,
        "asset": "eth" if transfer.kind == "native" else transfer.token.lower(),
        "sender": transfer.sender.lower(),
        "amount": None if transfer.amount is None else str(transfer.amount),
        "token_id": None if transfer.token_id is None else str(transfer.token_id),
        "tx_hash": transfer.tx_hash,
        "block_hash": transfer.block_hash,
    }


def assert_matches_truth(history: list[Transfer], last_block: int) -> None:
    rows = stored_rows(last_block)
    expected = {(t.block_number, pos(t)): t for t in history}
    assert set(rows) == set(expected), "the indexer found exactly the transfers that happened"
    for key, transfer in expected.items():
        row = rows[key]
        want = expected_row(transfer)
        got = {name: row.get(name) for name in want}
        got["recipient"] = row.get("recipient")
        want["recipient"] = transfer.recipient.lower()
        assert got == want, key


def truth_balances(history: list[Transfer]) -> dict[tuple[str, str], tuple[int, int]]:
    """(address, asset) -> (in, out) summed from the ground truth, for the shapes aggregates count."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in history:
        if t.kind == "odd" and t.shape != "unindexed":
            continue
        asset = "eth" if t.kind == "native" else t.token.lower()
        amount = t.amount or 0
        sums[(t.recipient.lower(), asset)][0] += amount
        sums[(t.sender.lower(), asset)][1] += amount
    return {key: (a, b) for key, (a, b) in sums.items()}


def stored_balances() -> dict[tuple[str, str], tuple[int, int]]:
    from boto3.dynamodb.conditions import Attr

    from depu.chain import store

    found = {}
    for item in store.table().scan(FilterExpression=Attr("sk").begins_with("BAL#"))["Items"]:
        if int(item.get("in", 0)) or int(item.get("out", 0)):
            found[(item["pk"][4:], item["sk"][4:])] = (int(item.get("in", 0)), int(item.get("out", 0)))
    return found


def test_every_transfer_found_with_exact_amounts(aws, chain):
    truth = chain.activity(rounds=5, seed=3, per_block=4)
    assert {t.shape for t in truth if t.kind == "odd"} == {"missing_data", "extra_topics", "short_data", "unindexed"}
    indexer = make_indexer(chain)
    report = indexer.run(until_caught_up=True)
    head = chain.block_number()
    assert report.checkpoint == head and report.blocks == head + 1
    assert_matches_truth(chain.history, head)
    assert stored_balances() == {k: v for k, v in truth_balances(chain.history).items() if v != (0, 0)}
    # metadata fetched once and cached; the odd token has none and stays in base units
    from depu.analytics import metadata

    assert metadata.cached(chain.tokens["USDD"].address.lower()).decimals == 6
    assert metadata.cached(chain.tokens["DUSD"].address.lower()).symbol == "DUSD"
    odd = metadata.cached(chain.tokens["ODD"].address.lower())
    assert odd.symbol is None and odd.decimals is None
    # raw Parquet in S3 holds the same rows, amounts as exact strings
    from depu.analytics import raw

    parquet_rows = raw.read_range("transfers", 0, head)
    assert len(parquet_rows) == len(chain.history)
    assert sorted(r["amount"] for r in parquet_rows if r["amount"]) == sorted(
        str(t.amount) for t in chain.history if t.amount is not None)
    assert len(raw.read_range("blocks", 0, head)) == head + 1


def test_second_run_repeats_nothing_and_crash_resumes(aws, chain, monkeypatch):
    chain.activity(rounds=2, seed=5, per_block=4)
    indexer = make_indexer(chain)
    indexer.run(until_caught_up=True)
    before = stored_balances()
    # more activity, then a crash in the middle of a chunk: after block rows and some aggregates are written
    chain.activity(rounds=4, seed=6, per_block=4)
    from depu.analytics import aggregates

    real_apply = aggregates.apply_block
    calls = {"n": 0}

    def crash_on_third_block(number, deltas):
        calls["n"] += 1
        if calls["n"] == 3:
            # half of this block's deltas land, then the process dies
            items = dict(list(deltas.items())[: len(deltas) // 2])
            real_apply(number, items)
            raise SystemExit("simulated crash")
        return real_apply(number, deltas)

    monkeypatch.setattr(aggregates, "apply_block", crash_on_third_block)
    with pytest.raises(SystemExit):
        make_indexer(chain).run(until_caught_up=True)
    monkeypatch.setattr(aggregates, "apply_block", real_apply)
    assert stored_balances() != before  # the crash left partial work behind
    report = make_indexer(chain).run(until_caught_up=True)
    head = chain.block_number()
    assert report.checkpoint == head
    assert_matches_truth(chain.history, head)
    assert stored_balances() == {k: v for k, v in truth_balances(chain.history).items() if v != (0, 0)}
    from depu.analytics import raw

    assert len(raw.read_range("transfers", 0, head)) == len(chain.history), "no duplicate Parquet rows"
    # and a run with nothing new changes nothing
    again = make_indexer(chain).run(until_caught_up=True)
    assert again.blocks == 0 and stored_balances() == {k: v for k, v in truth_balances(chain.history).items()
                                                       if v != (0, 0)}


@pytest.mark.parametrize("new_blocks", [1, 3, 5], ids=["shorter", "same-height", "longer"])
def test_forced_reorg_is_corrected(aws, chain, new_blocks):
    from decimal import Decimal

    from depu.analytics import watches

    watched = chain.accounts[1].lower()
    watches.add(7, 7, watched, Decimal(0))
    chain.activity(rounds=2, seed=11, per_block=4)
    fork_point = chain.snapshot()
    ancestor = chain.block_number()
    dropped = chain.activity(rounds=3, seed=12, per_block=4)
    first_notices: list = []
    indexer = make_indexer(chain, first_notices)
    indexer.run(until_caught_up=True)
    assert_matches_truth(chain.history, chain.block_number())
    old_head = chain.block_number()

    chain.revert(fork_point)  # the dropped blocks leave the chain (and the truth)
    replacement = chain.activity(rounds=new_blocks, seed=99, per_block=3)

    def touching(transfers):
        return [t for t in transfers if watched in (t.sender.lower(), t.recipient.lower())
                and (t.amount is not None or t.token_id is not None)]

    notices: list = []
    report = make_indexer(chain, notices).run(until_caught_up=True)
    sent_first = {n.slot: n for n in first_notices if n.slot}
    dropped_slots = {n.slot for n in sent_first.values()
                     if any(t.tx_hash in n.slot for t in touching(dropped))}
    assert len(dropped_slots) == len(touching(dropped)) > 0
    retractions = [n for n in notices if n.slot in dropped_slots]
    # each alert of a dropped block is its own message edited once, never a second message
    assert sorted(n.slot for n in retractions) == sorted(dropped_slots)
    assert all(n.slot_version == 1 and "dropped" in n.text and n.chat_id == 7 for n in retractions)
    new_alerts = [n for n in notices if n.slot not in dropped_slots]
    assert all(n.slot_version == 0 and "confirmed" in n.text for n in new_alerts)
    assert len(new_alerts) == len(touching(replacement))
    assert report.reorgs == 1 and report.reverted_blocks == len({t.block_number for t in dropped})
    head = chain.block_number()
    assert report.checkpoint == head
    assert_matches_truth(chain.history, max(head, old_head))
    assert stored_balances() == {k: v for k, v in truth_balances(chain.history).items() if v != (0, 0)}
    assert all(t.block_number > ancestor for t in replacement)
    from depu.analytics import raw

    parquet_rows = raw.read_range("transfers", 0, max(head, old_head))
    assert {(r["block_number"], r["tx_hash"], r["log_index"]) for r in parquet_rows} == {
        (t.block_number, t.tx_hash, t.log_index) for t in chain.history}


def test_a_run_out_of_time_closes_its_chunk_early_and_the_next_resumes(aws, chain):
    import time

    chain.activity(rounds=3, seed=8, per_block=3)
    head = chain.block_number()
    from depu.chain.indexer import RunReport, load_checkpoint

    indexer = make_indexer(chain, chunk_blocks=50)
    checkpoint, indexed = indexer.step(None, RunReport(), deadline=time.monotonic())  # already out of time
    assert indexed == 1 and checkpoint == load_checkpoint() and checkpoint.number == 0
    from depu.analytics import raw

    assert [(s, e) for s, e, _ in raw.parts("transfers")] == [(0, 0)]
    rest = make_indexer(chain, chunk_blocks=50).run(until_caught_up=True)
    assert rest.checkpoint == head and rest.blocks == head
    assert_matches_truth(chain.history, head)


class DynamoCalls:
    """Every DynamoDB call made through the shared ChainTable client while registered: (operation, the request
    as sent, in DynamoDB's typed JSON)."""

    def __init__(self) -> None:
        from depu.chain import store

        self.events = store.table().meta.client.meta.events
        self.calls: list[tuple[str, dict]] = []

    def record(self, model, params, **_: object) -> None:
        import json

        self.calls.append((model.name, json.loads(params["body"] or b"{}")))

    def __enter__(self) -> "DynamoCalls":
        self.events.register("before-call.dynamodb", self.record)
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.unregister("before-call.dynamodb", self.record)

    def of(self, operation: str) -> list[dict]:
        return [params for name, params in self.calls if name == operation]

    def watch_queries(self) -> list[str]:
        """The addresses whose watches were queried (Query on a WATCH#<address> partition)."""
        return [value["S"][6:] for params in self.of("Query")
                for value in params.get("ExpressionAttributeValues", {}).values()
                if value.get("S", "").startswith("WATCH#")]


def test_watch_lookups_cost_what_a_block_moves_not_how_many_watches_exist(aws, chain):
    """Many watches, a busy block of 151 addresses: the indexer never scans; per block it asks for the markers
    of exactly the addresses the block moves (at most 100 keys a request) and queries only marked ones."""
    import math
    import time
    from decimal import Decimal

    from web3 import Web3

    from depu.analytics import watches

    idle = [f"0x{'e' * 8}{n:032x}" for n in range(200)]  # watched, never moving
    for n, address in enumerate(idle):
        assert watches.add(1000 + n // watches.MAX_WATCHES_PER_USER, 1000, address, Decimal(0))
    recipients = [Web3.to_checksum_address(f"0x{'d' * 8}{n:032x}") for n in range(150)]
    busy_watched = [r.lower() for r in recipients[::30]]  # 5 of the busy block's recipients
    for n, address in enumerate(busy_watched):
        assert watches.add(50 + n, 50 + n, address, Decimal(0))
    watched = chain.accounts[1].lower()
    assert watches.add(7, 7, watched, Decimal(0))
    chain.activity(rounds=2, seed=21, per_block=4)
    chain.batch_transfer(chain.tokens["DUSD"], chain.accounts[0], recipients, [10**18] * len(recipients))
    assert watches.backfill_markers(time.monotonic() + 30)  # a fresh table: the one-off backfill is done at once

    notices: list = []
    with DynamoCalls() as calls:
        report = make_indexer(chain, notices).run(until_caught_up=True)
    head = chain.block_number()
    assert report.checkpoint == head
    assert calls.of("Scan") == []
    moved = [watches.moved_addresses(rows) for rows in
             ([dict(item) for item in stored_block_rows(number)] for number in range(head + 1))]
    requested = [{key["pk"]["S"][len(watches.MARKER_PREFIX):] for key in params["RequestItems"][table]["Keys"]}
                 for params in calls.of("BatchGetItem") for table in params["RequestItems"]]
    assert all(len(keys) <= 100 for keys in requested)
    assert len(requested) == sum(math.ceil(len(addresses) / 100) for addresses in moved)
    assert sorted(a for keys in requested for a in keys) == sorted(a for addresses in moved for a in addresses)
    assert all(params["RequestItems"][t]["ConsistentRead"] for params in calls.of("BatchGetItem")
               for t in params["RequestItems"])
    watched_moves = [number for number, addresses in enumerate(moved) if watched in addresses]
    assert sorted(calls.watch_queries()) == sorted([watched] * len(watched_moves) + busy_watched)
    assert not set(idle) & set(calls.watch_queries())
    busy_alerts = [n for n in notices if 50 <= n.chat_id < 55]
    assert sorted(n.chat_id for n in busy_alerts) == list(range(50, 55))
    assert all(f"block {head}," in n.text and "received 1 DUSD" in n.text for n in busy_alerts)
    assert {n.chat_id for n in notices} <= {7, 50, 51, 52, 53, 54} and any(n.chat_id == 7 for n in notices)


def stored_block_rows(number: int) -> list[dict]:
    from depu.chain import store

    return list(store.query_all(store.block_rows_pk(number)))


def test_watches_stored_before_markers_still_alert(aws, chain):
    """Watches written by an older DePU (no marker) get theirs from the indexer's one-off, resumable backfill."""
    from depu.analytics import watches
    from depu.chain import store

    watched = chain.accounts[2].lower()
    store.table().put_item(Item={"pk": f"WATCH#{watched}", "sk": "9", "user_id": 9, "min_amount": "0"})
    store.table().put_item(Item={"pk": "USERWATCH#9", "sk": watched, "chat_id": 9, "min_amount": "0"})
    chain.transfer(chain.tokens["DUSD"], chain.accounts[0], chain.accounts[2], 5 * 10**18)
    block = chain.block_number()
    notices: list = []
    make_indexer(chain, notices).run(until_caught_up=True)
    assert [n.chat_id for n in notices if f"block {block}," in n.text] == [9]
    assert store.get(store.CHAIN, watches.MARKERS_DONE_SK)["done"]
    chain.transfer(chain.tokens["DUSD"], chain.accounts[2], chain.accounts[0], 10**18)
    with DynamoCalls() as calls:
        make_indexer(chain, notices).run(until_caught_up=True)
    assert calls.of("Scan") == [], "the backfill ran once"
    assert any(f"block {chain.block_number()}," in n.text and "sent 1 DUSD" in n.text for n in notices)
