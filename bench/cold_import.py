"""Cold import cost of the Telegram webhook function (what every Lambda cold start pays before the handler).

Each run is a fresh interpreter that times only the import (interpreter start-up excluded) and lists which
heavy libraries ended up in ``sys.modules``; the table shows medians over several runs. ``import boto3``
alone is the reference: any Lambda that talks to AWS pays that much. ``Tracer()`` alone is shown because
it dominates: the X-Ray SDK builds two botocore clients (service model and endpoint files parsed) at import. The webhook must stay under 300 ms
and must not import web3, torch, matplotlib or pyarrow (feature modules are imported on the first update).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7
BUDGET_MS = 300.0
HEAVY = ("web3", "torch", "matplotlib", "pyarrow", "pandas", "numpy")

PROBE = """
import importlib.util, json, sys, time
target = sys.argv[1]
started = time.perf_counter()
if target.endswith(".py"):
    spec = importlib.util.spec_from_file_location("app", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
elif target.startswith("exec:"):
    exec(target[5:])
elif target:
    __import__(target)
elapsed = (time.perf_counter() - started) * 1000
print(json.dumps({"ms": elapsed, "heavy": [name for name in json.loads(sys.argv[2]) if name in sys.modules],
                  "modules": len(sys.modules)}))
"""

TARGETS = (
    ("nothing (interpreter only)", ""),
    ("import boto3 (reference)", "boto3"),
    ("Powertools Tracer() alone (loads the X-Ray SDK)", "exec:from aws_lambda_powertools import Tracer; Tracer()"),
    ("telegram_webhook/app.py", str(ROOT / "functions" / "telegram_webhook" / "app.py")),
    ("notifier/app.py", str(ROOT / "functions" / "notifier" / "app.py")),
)


def environment() -> dict[str, str]:
    """Roughly what Lambda gives the function: the layer on the path, a region, no local overrides."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(
        PYTHONPATH=str(ROOT / "layers" / "depu"),
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_SERVICE_NAME="depu",
        PYTHONDONTWRITEBYTECODE="",
    )
    return env


def measure(target: str) -> dict[str, object]:
    samples, heavy, modules = [], set(), 0
    for _ in range(RUNS):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, target, json.dumps(HEAVY)],
            capture_output=True, text=True, timeout=120, env=environment(), cwd=ROOT,
        )
        if done.returncode != 0:
            raise SystemExit(f"importing {target} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        samples.append(result["ms"])
        heavy.update(result["heavy"])
        modules = result["modules"]
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "heavy": sorted(heavy), "modules": modules}


def main() -> int:
    rows = [(label, measure(target)) for label, target in TARGETS]
    print(f"cold import, median of {RUNS} fresh interpreters (ms); budget for the webhook: {BUDGET_MS:.0f} ms\n")
    print("| what | median ms | min | max | modules | heavy libraries loaded |")
    print("|---|---:|---:|---:|---:|---|")
    for label, row in rows:
        print(f"| {label} | {row['median']:.0f} | {row['min']:.0f} | {row['max']:.0f} | {row['modules']} | "
              f"{', '.join(row['heavy']) or 'none'} |")
    webhook = dict(rows)["telegram_webhook/app.py"]
    boto3_ms = dict(rows)["import boto3 (reference)"]["median"]
    ok = webhook["median"] < BUDGET_MS and not webhook["heavy"]
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (medians inflate with load)")
    print(f"webhook = {webhook['median'] / boto3_ms:.1f} x boto3 alone; "
          f"{'within' if ok else 'OVER'} the {BUDGET_MS:.0f} ms budget, heavy libraries: {', '.join(webhook['heavy']) or 'none'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
