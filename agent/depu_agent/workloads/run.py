"""Child-process entry point: ``python -m depu_agent.workloads.run --job JOB.json --out DIR --events-fd N``.

The agent starts this pinned to one GPU (CUDA_VISIBLE_DEVICES) in its own process group, so a time limit or a
cancel can stop it and everything it spawned. The outcome is an event on the events descriptor; the exit
status only says whether one was written.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from . import WorkloadError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def workload_function(name: str):
    if name == "benchmark":
        from .benchmark import run
    elif name == "train":
        from .train import run
    elif name == "verify":
        from ..verify import run
    else:
        raise WorkloadError(f"unknown workload {name!r} (this runner handles benchmark, train, verify)")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depu_agent.workloads.run")
    parser.add_argument("--job", required=True, help="JSON file with workload and params")
    parser.add_argument("--out", required=True, help="directory for artifacts")
    parser.add_argument("--events-fd", type=int, default=None)
    args = parser.parse_args(argv)

    from .report import Reporter

    reporter = Reporter(args.events_fd)
    try:
        job = json.loads(Path(args.job).read_text(encoding="utf-8"))
        run = workload_function(job.get("workload", ""))
        params = job.get("params") or {}
        if not isinstance(params, dict):
            raise WorkloadError("params must be an object")
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        result, artifacts = run(params, None, reporter, out_dir)
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        reporter.error(str(exc), retryable=False)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the job failed on this machine; another provider may succeed
        traceback.print_exc()
        reporter.error(f"{type(exc).__name__}: {exc}"[:500], retryable=not _is_out_of_memory(exc))
        return EXIT_FAILED
    reporter.result(result, artifacts)
    return EXIT_OK


def _is_out_of_memory(exc: Exception) -> bool:
    return "out of memory" in str(exc).lower()


if __name__ == "__main__":
    sys.exit(main())
