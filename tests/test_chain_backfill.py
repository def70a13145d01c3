"""The history backfill against a real anvil chain with known activity, ChainTable and S3 in moto: the same
Parquet rows and aggregates as the live indexer, chunked and parallel, resumable after a crash without
counting anything twice, rate-limited, and kept below what the live indexer owns."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from local.devchain import DevChain
from test_chain_indexer import assert_matches_truth, stored_balances, truth_balances

pytestmark = pytest.mark.e2e


@pytest.fixture
def chain():
    with DevChain(accounts=6) as devchain:
        devchain.deploy_defaults()
        devchain.activity(rounds=12, seed=21, per_block=4)
        yield devchain


def config(**overrides):
    from depu.chain.backfill import BackfillConfig

    return BackfillConfig(**({"chunk_blocks": 4, "workers": 3, "max_reorg_depth": 2} | overrides))


def test_backfill_writes_what_the_live_indexer_writes(aws, chain):
    from depu.analytics import raw
    from depu.chain.backfill import Backfill

    chain.mine(2)
    last = chain.block_number() - 2
    progress: list[tuple[int, int]] = []
    report = Backfill(chain.rpc_url, "all", 0, last, config(),
                      progress=lambda done, total: progress.append((done, total))).run()
    truth = [t for t in chain.history if t.block_number <= last]
    assert report.blocks == last + 1 and report.rows == len(truth) and report.chunks == len(progress)
    assert progress[-1] == (report.chunks, report.chunks) and report.chunks > 3
    assert stored_balances() == {k: v for k, v in truth_balances(truth).items() if v != (0, 0)}
    rows = raw.read_range("transfers", 0, last)
    assert {(r["block_number"], r["tx_hash"], r["log_index"], r["amount"]) for r in rows} == {
        (t.block_number, t.tx_hash, t.log_index, None if t.amount is None else str(t.amount)) for t in truth}
    assert len(raw.read_range("blocks", 0, last)) == last + 1

    # the live indexer then starts above the history and the two together hold the whole chain exactly
    from depu.chain.indexer import Indexer, IndexerConfig

    live = Indexer(chain.rpc_url, IndexerConfig(confirmations=0, start_block=0, chunk_blocks=5),
                   notify=lambda notice: None).run(until_caught_up=True)
    assert live.blocks == chain.block_number() - last
    assert stored_balances() == {k: v for k, v in truth_balances(chain.history).items() if v != (0, 0)}
    assert_matches_truth([t for t in chain.history if t.block_number > last], chain.block_number())


def test_a_crashed_backfill_resumes_and_counts_nothing_twice(aws, chain, monkeypatch):
    from depu.analytics import aggregates
    from depu.chain.backfill import Backfill, progress_of

    chain.mine(2)
    last = chain.block_number() - 2
    real = aggregates.apply_history_chunk
    calls = {"n": 0}

    def crash_on_the_third_chunk(chunk, deltas):
        calls["n"] += 1
        if calls["n"] == 3:
            real(chunk, dict(list(deltas.items())[: len(deltas) // 2]))  # half its items, then the crash
            raise RuntimeError("the process died here")
        return real(chunk, deltas)

    monkeypatch.setattr(aggregates, "apply_history_chunk", crash_on_the_third_chunk)
    with pytest.raises(RuntimeError, match="died"):
        Backfill(chain.rpc_url, "job1", 0, last, config(workers=1)).run()
    done, total = progress_of("job1")
    assert 0 < done < total
    monkeypatch.setattr(aggregates, "apply_history_chunk", real)
    report = Backfill(chain.rpc_url, "job1", 0, last, config(workers=2)).run()
    assert report.skipped == done and report.chunks == total - done
    truth = [t for t in chain.history if t.block_number <= last]
    assert stored_balances() == {k: v for k, v in truth_balances(truth).items() if v != (0, 0)}
    again = Backfill(chain.rpc_url, "job1", 0, last, config()).run()
    assert again.chunks == 0 and again.skipped == total


def test_backfill_refuses_what_the_live_indexer_owns_and_the_reorgable_head(aws, chain):
    from depu.chain.backfill import Backfill, BackfillRefused
    from depu.chain.indexer import Indexer, IndexerConfig

    head = chain.block_number()
    with pytest.raises(BackfillRefused, match="reorganised"):
        Backfill(chain.rpc_url, "near-head", 0, head, config()).run()
    Indexer(chain.rpc_url, IndexerConfig(confirmations=0, start_block=head - 3), notify=lambda n: None).run(
        until_caught_up=True)
    chain.mine(5)
    with pytest.raises(BackfillRefused, match="live indexer holds blocks"):
        Backfill(chain.rpc_url, "overlap", 0, head - 3, config()).run()


def test_backfill_keeps_to_its_rate_limit(aws, chain):
    from depu.chain.backfill import Backfill

    chain.mine(2)
    last = chain.block_number() - 2
    # batches no bigger than the bucket, so every call is paid for (a bigger batch pays a full bucket)
    backfill = Backfill(chain.rpc_url, "slow", 0, last, config(rpc_rate=10, rpc_batch_size=5, write=False,
                                                               chunk_blocks=7))
    started = time.monotonic()
    backfill.run()
    elapsed = time.monotonic() - started
    calls = backfill.rpc.stats.calls
    assert calls > 20 and elapsed >= (calls - 10) / 10 * 0.9, f"{calls} calls in {elapsed:.2f} s"


def test_a_transfers_only_backfill_dates_rows_by_their_logs(aws, chain):
    """``values_only`` (cryo's erc20_transfers data): no block headers fetched, where the node dates its logs;
    token balances still exact."""
    from depu.analytics import raw
    from depu.chain.backfill import Backfill

    chain.mine(2)
    last = chain.block_number() - 2
    backfill = Backfill(chain.rpc_url, "tokens", 0, last, config(values_only=True))
    backfill.run()
    assert backfill.rpc.stats.calls == len(backfill.chunks()) + 1, "the head, then one eth_getLogs per chunk"
    truth = [t for t in chain.history if t.block_number <= last and t.kind != "native"]
    tokens_only = {k: v for k, v in truth_balances(truth).items() if v != (0, 0)}
    assert stored_balances() == tokens_only
    stamps = {r["block_number"]: r["block_timestamp"] for r in raw.read_range("transfers", 0, last)}
    for number in list(stamps)[:5]:
        assert stamps[number] == int(chain.block(number)["timestamp"], 16)


def test_the_operators_script_backfills_and_refuses_clearly(aws, chain, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "backfill.py"
    spec = importlib.util.spec_from_file_location("backfill_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    head = chain.block_number()
    assert module.main([str(0), str(head), "--rpc", chain.rpc_url, "--job", "near"]) == 2
    assert "can still be reorganised" in capsys.readouterr().err
    chain.mine(130)
    assert module.main(["0", str(head), "--rpc", chain.rpc_url, "--job", "ops", "--chunk", "5"]) == 0
    truth = [t for t in chain.history if t.block_number <= head]
    assert stored_balances() == {k: v for k, v in truth_balances(truth).items() if v != (0, 0)}
    assert f"{head + 1:,} blocks" in capsys.readouterr().out


# ---------------------------------------------------------------- a node that refuses big eth_getLogs answers
class RefusingNode(BaseHTTPRequestHandler):
    """Forwards to a real anvil, but answers an eth_getLogs (alone or in a batch) whose result holds more than
    ``limit`` logs with the error providers give, as Infura words it; counts what it refused and served."""

    upstream = ""
    limit = 0
    refused = 0
    served: list[tuple[int, int]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(raw)
        answer = requests.post(RefusingNode.upstream, data=raw, headers={"Content-Type": "application/json"},
                               timeout=30).json()
        pairs = zip(request, answer) if isinstance(request, list) else [(request, answer)]
        spoiled = [self._refuse_if_big(call, reply) for call, reply in pairs]
        payload = json.dumps(spoiled if isinstance(request, list) else spoiled[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    @staticmethod
    def _refuse_if_big(call: dict, reply: dict) -> dict:
        if call.get("method") != "eth_getLogs" or not isinstance(reply.get("result"), list):
            return reply
        span = (int(call["params"][0]["fromBlock"], 16), int(call["params"][0]["toBlock"], 16))
        with RefusingNode.lock:
            if len(reply["result"]) > RefusingNode.limit:
                RefusingNode.refused += 1
                return {"jsonrpc": "2.0", "id": reply["id"], "error": {
                    "code": -32005, "message": f"query returned more than {RefusingNode.limit} results"}}
            RefusingNode.served.append(span)
        return reply

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def busy_chain(chain):
    """The chain fixture's mixed activity, then blocks of 30 standard Transfers each."""
    dusd = chain.tokens["DUSD"]
    accounts = chain.accounts
    for number in range(12):
        recipients = [accounts[(number + i) % len(accounts)] for i in range(30)]
        chain.batch_transfer(dusd, accounts[1 + number % (len(accounts) - 1)], recipients,
                             [10**15 + number * 1000 + i for i in range(30)])
    chain.mine(3)
    return chain


@pytest.fixture
def refusing_node(busy_chain):
    RefusingNode.upstream, RefusingNode.limit, RefusingNode.refused, RefusingNode.served = (
        busy_chain.rpc_url, 70, 0, [])
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingNode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def served_blocks_once(first: int, last: int) -> bool:
    """The spans the node answered cover first..last with no block twice."""
    blocks = [n for a, b in RefusingNode.served for n in range(a, b + 1)]
    return sorted(blocks) == list(range(first, last + 1))


def test_a_node_that_refuses_big_log_queries_gets_every_row_exactly_once(aws, busy_chain, refusing_node):
    from depu.analytics import raw
    from depu.chain.backfill import Backfill

    last = busy_chain.block_number() - 2
    # chunks of 40 blocks: every chunk holds more logs than the node gives at once, so each is halved
    backfill = Backfill(refusing_node, "halved", 0, last, config(chunk_blocks=40, workers=2))
    report = backfill.run()
    assert RefusingNode.refused >= len(backfill.chunks()) and backfill.rpc.stats.splits == RefusingNode.refused
    assert served_blocks_once(0, last)
    truth = [t for t in busy_chain.history if t.block_number <= last]
    assert report.rows == len(truth) > 12 * 30
    rows = raw.read_range("transfers", 0, last)
    found = [(r["block_number"], r["tx_hash"], r["log_index"], r["amount"]) for r in rows]
    assert len(found) == len(set(found)) == len(truth)
    assert set(found) == {(t.block_number, t.tx_hash, t.log_index, None if t.amount is None else str(t.amount))
                          for t in truth}
    assert stored_balances() == {k: v for k, v in truth_balances(truth).items() if v != (0, 0)}


def test_the_indexers_batched_log_query_is_halved_too(busy_chain, refusing_node):
    from depu.chain.decode import TRANSFER_TOPIC
    from depu.chain.rpc import RpcClient

    last = busy_chain.block_number()
    client = RpcClient(refusing_node, batch_size=4, workers=1)
    logs = client.logs(0, last, [TRANSFER_TOPIC], span=8)
    direct = busy_chain.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(last), "topics": [TRANSFER_TOPIC]})
    assert logs == direct and client.stats.splits == RefusingNode.refused > 0 and served_blocks_once(0, last)


def test_a_single_block_over_the_nodes_limit_is_a_clear_error_not_a_loop(busy_chain, refusing_node):
    from depu.chain.decode import TRANSFER_TOPIC
    from depu.chain.rpc import RpcClient, RpcError

    RefusingNode.limit = 10  # fewer than one busy block holds
    busiest = max(range(busy_chain.block_number() + 1), key=lambda n: len(busy_chain.rpc(
        "eth_getLogs", {"fromBlock": hex(n), "toBlock": hex(n), "topics": [TRANSFER_TOPIC]})))
    client = RpcClient(refusing_node)
    with pytest.raises(RpcError, match="more than 10 results") as raised:
        client.logs_table(busiest - 3, busiest + 3, [TRANSFER_TOPIC])
    assert raised.value.too_large and not raised.value.invalid
    assert client.stats.retries == 0 and RefusingNode.refused <= 7  # halved down to the block, never asked again
