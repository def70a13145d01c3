"""Job spec setup: how long a job waits for its packages before its code starts, on a cache miss and a cache
hit of the agent's environment cache (depu_agent.envcache), beside the reference: a fresh virtual environment
(``python -m venv``) and ``pip install`` of the same requirements for every job, what a provider without a
cache does.

The package is a wheel this script builds (setuptools, ``pip wheel``) and serves with ``--find-links`` from a
local folder: nothing leaves the machine. Each figure is measured RUNS times; p50 and p95 are printed.
The sandbox part (bubblewrap) is the same for every row and not included: this is setup only.
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent"))

from depu_agent import envcache  # noqa: E402
from depu_agent.config import AgentConfig  # noqa: E402
from depu_agent.sandbox_runtime import SandboxRuntime  # noqa: E402

RUNS = 5


def _wheel(root: Path) -> Path:
    source = root / "src"
    (source / "depu_bench_probe").mkdir(parents=True)
    (source / "depu_bench_probe" / "__init__.py").write_text("VALUE = 1\n", encoding="utf-8")
    (source / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "depu-bench-probe"
        version = "1.0.0"
    """), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "wheels"), str(source)], check=True)
    return root / "wheels"


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="depu-bench-envs-"))
    try:
        wheels = _wheel(root)
        runtime = SandboxRuntime(python=sys.executable)
        lines = ["depu-bench-probe==1.0.0"]
        misses, hits, reference = [], [], []
        for run in range(RUNS):
            config = AgentConfig(env_cache_dir=str(root / f"cache-{run}"), package_find_links=str(wheels))
            started = time.monotonic()
            envcache.ensure(config, runtime, lines, lambda line: None)
            misses.append(time.monotonic() - started)
            started = time.monotonic()
            assert envcache.ensure(config, runtime, lines, lambda line: None).hit
            hits.append(time.monotonic() - started)
            venv = root / f"venv-{run}"
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                           check=True)
            subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                            "--no-index", "--find-links", str(wheels), *lines], check=True,
                           env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
            reference.append(time.monotonic() - started)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [("DePU env cache, miss (build + install)", misses), ("DePU env cache, hit", hits),
            ("reference: fresh venv + pip install per job", reference)]
    print(f"{'setup before the code starts':<46} {'p50 s':>8} {'p95 s':>8}   ({RUNS} runs, one local wheel)")
    for label, values in rows:
        p50, p95 = _percentiles(values)
        print(f"{label:<46} {p50:>8.3f} {p95:>8.3f}")
    hit50, ref50 = _percentiles(hits)[0], _percentiles(reference)[0]
    headline("job spec setup, same requirements again (p50)", f"{hit50 * 1000:.1f} ms", "venv + pip install per job",
             f"{ref50:.2f} s", "a hit installs nothing")


if __name__ == "__main__":
    main()
