"""Chain analytics: Transfer decoding speed and block ingestion speed, each against a reference, in one run.

1. Decoding: DePU's hex-word slicing (``depu.chain.decode``) against web3.py's own ABI event decoding
   (``contract.events.Transfer().process_log``) on the same standard ERC-20 Transfer logs, taken from a real
   local chain (DevChain) and repeated to a few tens of thousands.
   The chain: DevChain's mixed activity (every log shape, ETH, NFTs), then busy blocks of one batch
   transaction with ``--per-block`` standard Transfers each, up to ``--blocks``.
2. Ingestion, blocks/s over the same block range of the local chain:
   * DePU fetch + decode: batched eth_getBlockByNumber (full txs) + eth_getLogs + receipts of value
     transfers, every row built (what the indexer does before it writes);
   * DePU full indexer: the same plus ChainTable writes, guarded aggregates and Parquet parts, here into moto
     (an in-process AWS stand-in, so this row measures moto more than DynamoDB);
   * ethereum-etl ``export_token_transfers`` to CSV, installed into a throwaway venv outside the repository
     (``/tmp/depu-etl-venv``); if it cannot be installed or run here, its row says why instead of a figure.
3. History backfill (``depu.chain.backfill``), fetch + decode over the same range, beside cryo's
   ``erc20_transfers`` (the ``cryo`` package, pinned in requirements-dev.txt, its Rust core collecting into
   a polars DataFrame): DePU's backfill of the same data (Transfer logs dated by their ``blockTimestamp``,
   ``values_only``) and its full rows (plus ETH transfers from full blocks and receipts). cryo runs twice:
   with its own defaults (one eth_getLogs per block, up to 100 requests in flight) and on DePU's footing
   (eth_getLogs over DePU's chunk, as many requests in flight as DePU has chunks). Fair by construction:
   the same anvil and range for all, one untimed warm-up run of each (the node's caches, first-touch costs),
   then ``--rounds`` rounds in which every contender runs once, the order rotating each round; each row
   gives the median and the range of its rounds, and the ratios are of medians. The rows are checked, not
   only counted: cryo's (block, log index) pairs are exactly DePU's rows minus the two shapes cryo skips.

``python bench/analytics.py [--blocks N] [--logs N] [--rounds N] [--history-only]``
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "depu")]

ETL_VENV = Path(os.environ.get("DEPU_ETL_VENV", "/tmp/depu-etl-venv"))
ETL_INSTALL_TIMEOUT_S = 300


def best_of(runs: int, work) -> float:
    """The fastest of ``runs`` timings (seconds): the least disturbed by other processes on a shared box."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def build_chain(chain, blocks: int, per_block: int) -> tuple[int, int]:
    """Mixed known activity (every shape) in the first blocks, then busy blocks up to ``blocks``: each one
    batch transaction of ``per_block`` standard DUSD Transfers, like a mainnet block full of token moves.
    Returns (head of the mixed part, head)."""
    chain.deploy_defaults()
    chain.activity(rounds=40, seed=1, per_block=8)
    mixed_head = chain.block_number()
    accounts = chain.accounts
    dusd = chain.tokens["DUSD"]
    number = mixed_head
    while number < blocks:
        sender = accounts[1 + number % (len(accounts) - 1)]
        recipients = [accounts[(number + i) % len(accounts)] for i in range(per_block)]
        chain.batch_transfer(dusd, sender, recipients, [10**15 + number * 1000 + i for i in range(per_block)])
        number += 1
    return mixed_head, chain.block_number()


def bench_decoding(chain, count: int) -> list[tuple[str, str]]:
    from web3 import Web3
    from web3._utils.method_formatters import log_entry_formatter

    from depu.chain.decode import TRANSFER_TOPIC, decode_transfer
    from local.devchain import load_artifact

    logs = chain.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "topics": [TRANSFER_TOPIC]})
    standard = [log for log in logs if len(log["topics"]) == 3 and len(log["data"]) == 66]
    sample = (standard * (count // len(standard) + 1))[:count]
    event = Web3().eth.contract(abi=load_artifact("DepuToken")["abi"]).events.Transfer()
    formatted = [log_entry_formatter(log) for log in sample]  # web3's own input shape, prepared outside the clock

    ours = best_of(3, lambda: [decode_transfer(log) for log in sample])
    theirs = best_of(3, lambda: [event.process_log(log) for log in formatted])
    # same answers, or the race means nothing
    for log, raw in zip(formatted[:500], sample[:500]):
        a, b = decode_transfer(raw), event.process_log(log)["args"]
        assert (a.sender, a.recipient, a.amount) == (b["from"].lower(), b["to"].lower(), b["value"])
    headline("ERC-20 Transfer logs decoded", f"{len(sample) / ours:,.0f} logs/s", "web3.py process_log, same logs",
             f"{len(sample) / theirs:,.0f} logs/s", f"{theirs / ours:.1f}x faster")
    return [
        ("logs decoded (standard ERC-20 Transfer)",
         f"{len(sample):,} (from {len(standard):,} on the chain{', repeated' if len(standard) < len(sample) else ''})"),
        ("DePU decode_transfer", f"{len(sample) / ours:,.0f} logs/s"),
        ("web3.py events.Transfer().process_log", f"{len(sample) / theirs:,.0f} logs/s"),
        ("ratio DePU / web3.py", f"{theirs / ours:.1f}x"),
    ]


def bench_fetch_decode(rpc_url: str, head: int) -> float:
    from depu.chain.indexer import Indexer, IndexerConfig, transfer_rows

    indexer = Indexer(rpc_url, IndexerConfig(confirmations=0, chunk_blocks=100), notify=lambda notice: None)

    def run() -> None:
        rows = 0
        for first in range(0, head + 1, 100):
            last = min(head, first + 99)
            blocks, logs, receipts = indexer.fetch(first, last)
            for block in blocks:
                rows += len(transfer_rows(block, logs.get(block["hash"], []), receipts))

    return (head + 1) / best_of(2, run)


def bench_full_indexer(rpc_url: str, head: int) -> tuple[float, int]:
    """Blocks 0..head through the whole indexer (moto is slow: keep ``head`` to about a thousand)."""
    from local.moto_server import MotoServer
    from local.provision import provision
    from local.template import LocalTemplate

    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = MotoServer().start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        template = LocalTemplate()
        os.environ.update(template.environment(server.endpoint))
        provision(template, server.endpoint, bot_token="bench", webhook_secret="bench")
        from depu.config import get_settings

        get_settings.cache_clear()
        from depu.chain.indexer import Indexer, IndexerConfig

        indexer = Indexer(rpc_url, IndexerConfig(confirmations=0, start_block=0, chunk_blocks=100),
                          notify=lambda notice: None)
        indexer.rpc.head = lambda: head  # index exactly 0..head of a longer chain
        started = time.perf_counter()
        report = indexer.run(until_caught_up=True)
        elapsed = time.perf_counter() - started
        assert report.checkpoint == head
        return report.blocks / elapsed, report.transfers
    finally:
        server.stop()


# cryo 0.3.2's erc20_transfers keeps the standard ERC-20 Transfers only (3 topics, one data word): DePU's
# "standard" shape; DePU also keeps NFT transfers and the odd shapes (and ETH transfers in its full rows)
CRYO_SHAPES = frozenset({"standard"})
Row = tuple[int, int, str, str, str]  # block, log index, sender, recipient, amount: what both tools decode


@dataclass
class Contender:
    """One tool's way through blocks 0..head: ``run`` does the timed work and returns its output; ``decoded``
    (untimed) reads every ERC-20 row in it as a ``Row``, ``rows`` counts all its rows."""
    name: str
    run: Callable[[], Any]
    decoded: Callable[[Any], set[Row]]
    rows: Callable[[Any], int]
    seconds: list[float] = field(default_factory=list)
    output: Any = None
    error: str = ""

    def rates(self, blocks: int) -> list[float]:
        return [blocks / second for second in self.seconds]


def backfill_contender(name: str, rpc_url: str, head: int, values_only: bool) -> Contender:
    """DePU's history backfill, fetch + decode only (no writes), its defaults (``BackfillConfig``); the
    chunks' tables are kept, as cryo's DataFrame is."""
    from depu.chain.backfill import Backfill, BackfillConfig

    config = BackfillConfig(write=False, values_only=values_only, keep_tables=True)

    def decoded(report) -> set[Row]:
        found: set[Row] = set()
        names = ("block_number", "log_index", "sender", "recipient", "amount", "shape")
        for table in report.tables:
            for *row, shape in zip(*(table.column(name).to_pylist() for name in names)):
                if shape in CRYO_SHAPES:
                    found.add(tuple(row))
        return found

    return Contender(name, lambda: Backfill(rpc_url, "bench", 0, head, config).run(), decoded,
                     lambda report: report.rows)


def cryo_contender(name: str, rpc_url: str, head: int, **settings: Any) -> Contender:
    """cryo's erc20_transfers over blocks 0..head into a polars DataFrame, in this process."""
    def run():
        import cryo

        return cryo.collect("erc20_transfers", blocks=[f"0:{head + 1}"], rpc=rpc_url, no_verbose=True, **settings)

    def decoded(frame) -> set[Row]:
        columns = [frame[name].to_list() for name in ("block_number", "log_index", "from_address", "to_address",
                                                       "value_string")]
        return {(n, i, "0x" + sender[-20:].hex(), "0x" + recipient[-20:].hex(), value)
                for n, i, sender, recipient, value in zip(*columns)}

    return Contender(name, run, decoded, len)


def race(contenders: list[Contender], rounds: int) -> None:
    """One untimed warm-up run of each, then ``rounds`` rounds, each contender once a round, the order rotating
    so none always runs first or right after the same one. A contender that fails keeps its error."""
    for contender in contenders:
        try:
            contender.output = contender.run()
        except Exception as error:  # noqa: BLE001 - its row says why instead of a figure
            contender.error = f"{type(error).__name__}: {str(error)[:160]}"
    live = [contender for contender in contenders if not contender.error]
    for round_ in range(rounds):
        shift = round_ % len(live) if live else 0
        for contender in live[shift:] + live[:shift]:
            started = time.perf_counter()
            contender.run()
            contender.seconds.append(time.perf_counter() - started)


def spread(rates: list[float]) -> str:
    return (f"median {statistics.median(rates):,.0f} blocks/s (min {min(rates):,.0f}, max {max(rates):,.0f}, "
            f"{len(rates)} rounds)")


def bench_history(rpc_url: str, head: int, rounds: int) -> tuple[list[tuple[str, str]], tuple[float, float] | None]:
    """The history race; rows for the table, and (DePU's median, cryo's median) for the headline."""
    from depu.chain.backfill import BackfillConfig

    defaults = BackfillConfig()
    try:
        import cryo  # noqa: F401
    except ImportError as error:
        cryo_missing = f"unavailable (cryo does not import: {error})"
    else:
        cryo_missing = ""
    tokens = backfill_contender("DePU backfill, token transfers (eth_getLogs, dated by blockTimestamp)", rpc_url,
                                head, True)
    full = backfill_contender("DePU backfill, full rows (+ full blocks, value receipts)", rpc_url, head, False)
    contenders = [tokens, full]
    if not cryo_missing:
        cryo_default = cryo_contender("cryo erc20_transfers, its defaults (cryo.collect → polars)", rpc_url, head)
        cryo_same = cryo_contender(
            f"cryo erc20_transfers on DePU's footing (inner_request_size={defaults.chunk_blocks}, "
            f"max_concurrent_requests={defaults.workers})", rpc_url, head,
            inner_request_size=defaults.chunk_blocks, max_concurrent_requests=defaults.workers)
        contenders = [cryo_default, tokens, cryo_same, full]
    race(contenders, rounds)
    blocks = head + 1
    rows = [(contender.name, f"unavailable ({contender.error})" if contender.error else
             f"{spread(contender.rates(blocks))}, {contender.rows(contender.output):,} rows")
            for contender in contenders]
    if cryo_missing:
        rows.insert(0, ("cryo erc20_transfers", cryo_missing))
        return rows, None
    medians = {c.name: statistics.median(c.rates(blocks)) for c in contenders if not c.error}
    labels = {tokens.name: "DePU token transfers", full.name: "DePU full rows", cryo_default.name: "cryo, its defaults",
              cryo_same.name: "cryo on DePU's footing"}
    for reference in (cryo_default, cryo_same):
        for ours in (tokens, full):
            if reference.name in medians and ours.name in medians:
                rows.append((f"ratio of medians: {labels[ours.name]} / {labels[reference.name]}",
                             f"{medians[ours.name] / medians[reference.name]:.2f}x"))
    if not cryo_default.error and not tokens.error:
        theirs, ours = cryo_default.decoded(cryo_default.output), tokens.decoded(tokens.output)
        rows.append(("same rows? cryo's (block, log index, from, to, value) vs DePU's standard ERC-20 rows",
                     f"{'identical' if theirs == ours else 'DIFFERENT'}: {len(theirs):,} and {len(ours):,} "
                     f"(DePU's other rows: NFTs, odd shapes{', ETH in the full rows' if full else ''})"))
    if tokens.name not in medians or cryo_default.name not in medians:
        return rows, None
    return rows, (medians[tokens.name], medians[cryo_default.name])


def history(rpc_url: str, head: int, rounds: int) -> None:
    """The history race's table and headline."""
    history_rows, medians = bench_history(rpc_url, head, rounds)
    print(table(f"History backfill beside cryo, same chain, same range (0-{head}), fetch + decode", history_rows))
    if medians:
        ours_median, cryo_median = medians
        headline(f"history backfill fetch + decode, token transfers (0-{head}), median of {rounds} rounds",
                 f"{ours_median:,.0f} blocks/s", "cryo erc20_transfers (its defaults), same range, alternating",
                 f"{cryo_median:,.0f} blocks/s", f"{ours_median / cryo_median:.2f}x (goal 1.0x)")
    print(f"machine load (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


def etl_python() -> str | None:
    """An interpreter ethereum-etl runs on: its pinned dependencies (web3 5, parsimonious 0.8) use
    ``inspect.getargspec``, which Python 3.11 removed, so look for 3.10 or older next to this one."""
    candidates: list[str | None] = []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob("3.1[0]*")) + sorted(pyenv.glob("3.[89].*"))]
    candidates += [shutil.which(f"python3.{minor}") for minor in (10, 9, 8)]
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run([candidate, "-c", "import inspect; inspect.getargspec"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return candidate
    return None


def etl_available() -> tuple[Path | None, str]:
    """The ethereumetl CLI from a throwaway venv outside the repo, installing it once if possible."""
    cli = ETL_VENV / "bin" / "ethereumetl"
    if cli.exists():
        return cli, ""
    python = etl_python()
    if python is None:
        return None, "needs Python 3.10 or older (it imports inspect.getargspec); none found"
    try:
        subprocess.run([python, "-m", "venv", str(ETL_VENV)], check=True, capture_output=True, timeout=120)
        done = subprocess.run([str(ETL_VENV / "bin" / "pip"), "install", "-q", "ethereum-etl"],
                              capture_output=True, text=True, timeout=ETL_INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"pip install did not finish within {ETL_INSTALL_TIMEOUT_S} s"
    except (OSError, subprocess.CalledProcessError) as error:
        return None, f"could not create a venv: {error}"
    if done.returncode != 0 or not cli.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"pip install failed: {last[:160]}"
    return cli, ""


def bench_etl(rpc_url: str, head: int) -> tuple[str, float | None, int | None]:
    cli, reason = etl_available()
    if cli is None:
        return f"unavailable ({reason})", None, None
    out = Path(tempfile.mkdtemp(prefix="depu-etl-"))
    try:
        def export(end: int) -> tuple[float, subprocess.CompletedProcess]:
            command = [str(cli), "export_token_transfers", "--start-block", "0", "--end-block", str(end),
                       "--provider-uri", rpc_url, "--output", str(out / "transfers.csv"), "--batch-size", "100",
                       "--max-workers", "4"]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            return time.perf_counter() - started, done

        startup = min(export(0)[0] for _ in range(2))  # a one-block range: the CLI's own start-up (imports)
        elapsed, done = export(head)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"unavailable (export_token_transfers failed: {last[:160]})", None, None
        rows = max(0, len((out / "transfers.csv").read_text().splitlines()) - 1)
        net = elapsed - startup
        if net < 0.5 * elapsed:
            return (f"{(head + 1) / elapsed:,.0f} blocks/s as a CLI run, of which {startup:.1f} s start-up: range too "
                    "short to separate the two (use --blocks)", None, rows)
        text = (f"{(head + 1) / elapsed:,.0f} blocks/s as a CLI run; {(head + 1) / net:,.0f} blocks/s without its "
                f"{startup:.1f} s start-up")
        return text, (head + 1) / net, rows
    finally:
        shutil.rmtree(out, ignore_errors=True)


def table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [title, "", f"| {'what'.ljust(width)} | figure |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1500, help="block range for fetch+decode and ethereum-etl")
    parser.add_argument("--per-block", type=int, default=60, help="Transfer logs in each busy block")
    parser.add_argument("--logs", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of the history race, after a warm-up")
    parser.add_argument("--history-only", action="store_true",
                        help="only the history race beside cryo (the same chain; skips decoding, moto, ethereum-etl)")
    args = parser.parse_args()
    from local.devchain import DevChain

    with DevChain() as chain:
        mixed_head, head = build_chain(chain, args.blocks, args.per_block)
        if args.history_only:
            history(chain.rpc_url, head, args.rounds)
            return 0
        truth = [t for t in chain.history if t.kind != "native"]
        print(table("Transfer decoding (same logs, same process)", bench_decoding(chain, args.logs)))
        print()
        ours = bench_fetch_decode(chain.rpc_url, head)
        indexer_head = mixed_head  # moto is slow: the full indexer runs over the mixed part only
        full, indexed_rows = bench_full_indexer(chain.rpc_url, indexer_head)
        etl_text, etl_rate, etl_rows = bench_etl(chain.rpc_url, head)
        rows = [
            ("block range", f"0–{head}: {len(truth):,} Transfer logs, {len(chain.history) - len(truth)} ETH transfers; "
                            f"blocks {mixed_head + 1}–{head} hold {args.per_block} Transfers each"),
            ("DePU fetch + decode (batched RPC, 4 workers)", f"{ours:,.0f} blocks/s"),
            ("DePU full indexer into moto (ChainTable + S3)",
             f"{full:,.1f} blocks/s over blocks 0–{indexer_head}, {indexed_rows} rows"),
            ("ethereum-etl export_token_transfers", etl_text + (f", {etl_rows} rows" if etl_rows is not None else "")),
            ("ratio DePU fetch + decode / ethereum-etl (start-up excluded)",
             f"{ours / etl_rate:.1f}x" if etl_rate else "n/a (no reference figure)"),
        ]
        print(table("Ingestion from the local chain (anvil), blocks per second", rows))
        print()
        history(chain.rpc_url, head, args.rounds)
        headline(f"blocks fetched + decoded from the local chain (0-{head})", f"{ours:,.0f} blocks/s",
                 "ethereum-etl export_token_transfers, same range", f"{etl_rate:,.0f} blocks/s" if etl_rate else etl_text,
                 f"{ours / etl_rate:.1f}x faster" if etl_rate else "no reference figure this run")
        print("\nethereum-etl fetches only eth_getLogs and keeps logs whose topics+data hold exactly 3 words; DePU also"
              "\nfetches full blocks and value-transfer receipts, and records ERC-721 ids, odd shapes and ETH transfers."
              "\nA loaded, shared machine: compare the ratios, not the absolute figures.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
