"""Cold import cost of the Telegram webhook function (what every Lambda cold start pays before the handler).

Each run is a fresh interpreter that times only the import (interpreter start-up excluded) and lists which
heavy libraries ended up in ``sys.modules``; the table shows medians over several runs, wall clock and CPU.
``import boto3`` alone is the reference: any Lambda that talks to AWS pays that much.

The functions are measured as Lambda runs them (``LAMBDA_TASK_ROOT`` set): tracing on, the X-Ray SDK with
its local sampler, boto and requests patched at import. Outside Lambda (tests, the local stack) the X-Ray
SDK instead builds a centralized sampler with two botocore clients, which costs more; that row is shown too.

Budget: the webhook under 300 ms, and none of web3, torch, matplotlib, pyarrow imported (feature modules
load on the first update). On a shared, loaded machine wall time inflates while CPU time hardly moves, so
the exit status follows CPU time and the heavy-library check; the wall figures are printed next to it.

``--built DIR`` (a build folder from ``make build`` or ``scripts/build.py``) measures the built package
instead of the source tree: each run is ``python -I -S`` with only the built function folder, its built
layers and a stand-in for the runtime's boto3 on ``sys.path``, which is all Lambda gives it.
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import argparse
import json
import os
import platform
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
sys.path[:0] = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
target = sys.argv[1]
started, cpu_started = time.perf_counter(), time.process_time()
if target.endswith(".py"):
    spec = importlib.util.spec_from_file_location("app", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
elif target.startswith("exec:"):
    exec(target[5:])
elif target:
    __import__(target)
elapsed = (time.perf_counter() - started) * 1000
cpu = (time.process_time() - cpu_started) * 1000
print(json.dumps({"ms": elapsed, "cpu_ms": cpu, "heavy": [name for name in json.loads(sys.argv[2]) if name in sys.modules],
                  "modules": len(sys.modules)}))
"""

WEBHOOK = str(ROOT / "functions" / "telegram_webhook" / "app.py")
NOTIFIER = str(ROOT / "functions" / "notifier" / "app.py")
IN_LAMBDA, OUTSIDE_LAMBDA = True, False
TARGETS = (
    ("nothing (interpreter only)", "", IN_LAMBDA),
    ("import boto3 (reference)", "boto3", IN_LAMBDA),
    ("Powertools Tracer() alone", "exec:from aws_lambda_powertools import Tracer; Tracer()", IN_LAMBDA),
    ("telegram_webhook/app.py", WEBHOOK, IN_LAMBDA),
    ("notifier/app.py", NOTIFIER, IN_LAMBDA),
    ("telegram_webhook/app.py outside Lambda (tests, local stack)", WEBHOOK, OUTSIDE_LAMBDA),
)


# set by --built: {"paths": {function: [folders Lambda searches]}, "files": {source app.py: built app.py}}
BUILT: dict[str, dict[str, object]] = {}


def built_layout(build_dir: Path) -> dict[str, dict[str, object]]:
    sys.path.insert(0, str(ROOT / "scripts"))
    import build  # noqa: PLC0415 - scripts/build.py, only needed for --built

    manifest = build.load_manifest(build_dir.resolve())
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if manifest["architecture"] != machine:
        raise SystemExit(f"{build_dir} is built for {manifest['architecture']}; this machine is {platform.machine()}: "
                         f"build for it with `python scripts/build.py --architecture {machine} --build-dir DIR`")
    runtime_dir = build.lambda_runtime_dir(build_dir.resolve().parent / "var-runtime")
    layout: dict[str, dict[str, object]] = {"paths": {}, "files": {}}
    for source, function in ((WEBHOOK, "TelegramWebhookFunction"), (NOTIFIER, "NotifierFunction")):
        spec = manifest["functions"][function]
        layout["files"][source] = str(Path(spec["code"]) / "app.py")
        layout["paths"][source] = [*spec["path"], str(runtime_dir)]
    layout["paths"][""] = layout["paths"][WEBHOOK]  # the reference rows: the webhook's sys.path
    return layout


def command(target: str, *flags: str) -> list[str]:
    """The probe for one target: the dev venv's interpreter on the source tree, or a clean one on the build."""
    if not BUILT:
        return [sys.executable, *flags, "-c", PROBE, target, json.dumps(HEAVY)]
    paths = BUILT["paths"].get(target, BUILT["paths"][""])
    return [sys.executable, "-I", "-S", *flags, "-c", PROBE, str(BUILT["files"].get(target, target)),
            json.dumps(HEAVY), json.dumps(paths)]


def environment(in_lambda: bool = IN_LAMBDA) -> dict[str, str]:
    """What Lambda gives the function: the layer on the path, a region, the task root; no local overrides."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AWS_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN"))}
    env.update(
        PYTHONPATH=str(ROOT / "layers" / "depu"),
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_SERVICE_NAME="depu",
    )
    if in_lambda:
        env.update(
            LAMBDA_TASK_ROOT=str(Path(str(BUILT["files"][WEBHOOK])).parent) if BUILT
            else str(ROOT / "functions" / "telegram_webhook"),
            AWS_LAMBDA_FUNCTION_NAME="depu-bench-TelegramWebhookFunction",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
            AWS_XRAY_CONTEXT_MISSING="IGNORE_ERROR",
        )
    return env


def measure(target: str, in_lambda: bool) -> dict[str, object]:
    samples, cpu_samples, heavy, modules = [], [], set(), 0
    for _ in range(RUNS):
        done = subprocess.run(
            command(target),
            capture_output=True, text=True, timeout=120, env=environment(in_lambda), cwd=ROOT,
        )
        if done.returncode != 0:
            raise SystemExit(f"importing {target} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        samples.append(result["ms"])
        cpu_samples.append(result["cpu_ms"])
        heavy.update(result["heavy"])
        modules = result["modules"]
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "cpu": statistics.median(cpu_samples),
            "heavy": sorted(heavy), "modules": modules}


BREAKDOWN = ("boto3", "requests", "aws_lambda_powertools.event_handler", "aws_xray_sdk.core",
             "aws_lambda_powertools.utilities.parameters", "aws_lambda_powertools.utilities.idempotency",
             "depu.bot.dispatch", "depu.telegram.client", "depu.telegram.updates")


def breakdown(target: str) -> dict[str, float]:
    """Cumulative first-import cost (ms) of the big pieces, from one ``-X importtime`` run. Order-dependent:
    a shared dependency is charged to whichever piece imported it first."""
    done = subprocess.run(command(target, "-X", "importtime"),
                          capture_output=True, text=True, timeout=120, env=environment(), cwd=ROOT)
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() in BREAKDOWN:
            costs[parts[2].strip()] = int(parts[1]) / 1000
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--built", type=Path, metavar="DIR", help="measure this build folder (make build: .aws-sam/build)")
    args = parser.parse_args(argv)
    if args.built:
        BUILT.update(built_layout(args.built))
    rows = [(label, measure(target, in_lambda)) for label, target, in_lambda in TARGETS]
    source = f"the built package in {args.built} (clean interpreter)" if args.built else "the source tree"
    print(f"cold import of {source}, median of {RUNS} fresh interpreters (ms); budget for the webhook: {BUDGET_MS:.0f} ms\n")
    print("| what | median ms | min | max | CPU ms (median) | modules | heavy libraries loaded |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, row in rows:
        print(f"| {label} | {row['median']:.0f} | {row['min']:.0f} | {row['max']:.0f} | {row['cpu']:.0f} | {row['modules']} | "
              f"{', '.join(row['heavy']) or 'none'} |")
    print("\nwhere the webhook's import time goes (one run, ms, cumulative, first importer pays):\n")
    print("| module | ms |")
    print("|---|---:|")
    for name, ms in breakdown(WEBHOOK).items():
        print(f"| {name} | {ms:.0f} |")
    webhook = dict(rows)["telegram_webhook/app.py"]
    boto3_ms = dict(rows)["import boto3 (reference)"]["median"]
    ok = webhook["cpu"] < BUDGET_MS and not webhook["heavy"]
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall times inflate with load)")
    print(f"webhook (as in Lambda): wall {webhook['median']:.0f} ms = {webhook['median'] / boto3_ms:.1f} x boto3 alone, "
          f"CPU {webhook['cpu']:.0f} ms; {'within' if ok else 'OVER'} the {BUDGET_MS:.0f} ms budget (CPU); "
          f"wall {'within' if webhook['median'] < BUDGET_MS else 'over'} it at this load; "
          f"heavy libraries: {', '.join(webhook['heavy']) or 'none'}")
    headline("webhook cold import (median, fresh interpreter, as in Lambda)", f"{webhook['median']:.0f} ms wall, "
             f"{webhook['cpu']:.0f} ms CPU", "import boto3 alone", f"{boto3_ms:.0f} ms",
             f"{webhook['median'] / boto3_ms:.1f}x boto3; budget {BUDGET_MS:.0f} ms; heavy libs: "
             f"{', '.join(webhook['heavy']) or 'none'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
