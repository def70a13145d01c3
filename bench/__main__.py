"""Run every benchmark under bench/ and write one report (``python -m bench`` or ``make bench``).

Each benchmark is its own script so one that cannot run here (no GPU, a reference tool that will not install)
says so in its own table instead of stopping the others.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPORT = HERE / "results" / "latest.md"
TIMEOUT_S = 900


def scripts() -> list[Path]:
    return sorted(path for path in HERE.glob("*.py") if not path.name.startswith("_"))


def run(script: Path) -> str:
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        output = done.stdout.strip() or "(no output)"
        if done.returncode != 0:
            output += f"\n\nexit status {done.returncode}:\n" + "\n".join(done.stderr.strip().splitlines()[-15:])
    except subprocess.TimeoutExpired:
        output = f"timed out after {TIMEOUT_S} s"
    return f"## {script.stem}  ({time.perf_counter() - started:.0f} s)\n\n{output}\n"


def main() -> None:
    only = set(sys.argv[1:])
    sections = [run(script) for script in scripts() if not only or script.stem in only]
    header = f"# DePU benchmark report\n\nmachine: {platform_line()}\n"
    report = "\n".join([header, *sections])
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(report, encoding="utf-8")
    print(report)
    print(f"(written to {REPORT.relative_to(ROOT)})")


def platform_line() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


if __name__ == "__main__":
    main()
