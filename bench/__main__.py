"""Run every benchmark under bench/ and write one report (``python -m bench`` or ``make bench``).

Each benchmark is its own script so one that cannot run here (no GPU, a reference tool that will not install)
says so in its own table instead of stopping the others.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _headline import MARK  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPORT = HERE / "results" / "latest.md"
TIMEOUT_S = 900


def scripts() -> list[Path]:
    return sorted(path for path in HERE.glob("*.py") if not path.name.startswith("_"))


def run(script: Path) -> tuple[str, list[dict[str, str]]]:
    """A benchmark's own report, and the headline rows it printed (taken out of the report)."""
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
    headlines = [json.loads(line[len(MARK):]) for line in output.splitlines() if line.startswith(MARK)]
    body = "\n".join(line for line in output.splitlines() if not line.startswith(MARK))
    return f"## {script.stem}  ({time.perf_counter() - started:.0f} s)\n\n{body}\n", headlines


def summary(rows: list[tuple[str, dict[str, str]]]) -> str:
    """One table: every headline figure with its reference tool beside it."""
    lines = ["| benchmark | measure | DePU | reference tool | reference | comparison |", "|---|---|---|---|---|---|"]
    for name, row in rows:
        cells = [name, row["measure"], row["depu"], row["reference_tool"], row["reference"], row.get("comparison", "")]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    only = set(sys.argv[1:])
    sections, headlines = [], []
    for script in scripts():
        if only and script.stem not in only:
            continue
        section, rows = run(script)
        sections.append(section)
        headlines += [(script.stem, row) for row in rows]
    header = f"# DePU benchmark report\n\nmachine: {platform_line()}\n"
    report = "\n".join([header, "## Summary\n", summary(headlines), "", *sections])
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
