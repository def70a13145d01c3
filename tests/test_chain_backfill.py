"""The history backfill against a real anvil chain with known activity, ChainTable and S3 in moto: the same
Parquet rows and aggregates as the live indexer, chunked and parallel, resumable after a crash without
counting anything twice, rate-limited, and kept below what the live indexer owns."""
from __future__ import annotations

import time

import pytest

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
