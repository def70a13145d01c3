"""Backfill chain history into ChainTable's aggregates and the raw Parquet parts (``depu.chain.backfill``).

Run with the deployment's settings in the environment (``CHAIN_TABLE``, ``ARTIFACTS_BUCKET``, AWS credentials
of an operator), against any node; a rerun of the same ``--job`` resumes where it stopped.

    python scripts/backfill.py --rpc URL --job history-1 FIRST LAST [--rate CALLS_PER_S] [--workers N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "depu")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("--rpc", required=True, help="the node's JSON-RPC URL")
    parser.add_argument("--job", required=True, help="a name: the same name resumes")
    parser.add_argument("--rate", type=float, default=None, help="calls per second, for a paid provider")
    parser.add_argument("--workers", type=int, default=8, help="chunks in flight")
    parser.add_argument("--chunk", type=int, default=50, help="blocks per chunk (one Parquet part each)")
    args = parser.parse_args(argv)
    from depu.chain.backfill import Backfill, BackfillConfig, BackfillRefused

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} chunks", end="", flush=True)

    config = BackfillConfig(chunk_blocks=args.chunk, workers=args.workers, rpc_rate=args.rate)
    try:
        report = Backfill(args.rpc, args.job, args.first, args.last, config, progress=progress).run()
    except BackfillRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 2
    print(f"\n{report.blocks:,} blocks, {report.rows:,} rows in {report.seconds:.1f} s "
          f"({report.skipped} chunks were done already)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
