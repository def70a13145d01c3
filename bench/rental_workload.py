"""The ``benchmark`` workload's matmul TFLOP/s against a bare torch matmul loop on the same device.

The ratio shows what the workload's method (warm-up, synchronisation, preallocated output) measures relative
to the simplest loop anyone would write; close to 1.0 means the workload reports the device, not its own
overhead. Runs on CUDA when present, else the CPU (where sizes are smaller so it takes seconds).
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))

import torch  # noqa: E402

from depu_agent.workloads import benchmark  # noqa: E402
from depu_agent.workloads.device import describe, pick, synchronize  # noqa: E402

ROUNDS = 7


def bare_loop_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """What a user would write: allocate, multiply in a loop, time it (synchronising at the end)."""
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        left @ right
    synchronize(device)
    return 2.0 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def main() -> None:
    device = pick()
    size, repeats = (8192, 20) if device.type == "cuda" else (768, 6)
    rows = []
    for name, dtype in benchmark.DTYPES.items():
        workload, bare = [], []
        for _ in range(ROUNDS):  # interleaved so drift on a shared machine hits both alike
            workload.append(benchmark.matmul_tflops(device, dtype, size, repeats, warmup=1))
            bare.append(bare_loop_tflops(device, dtype, size, repeats))
        w, b = statistics.median(workload), statistics.median(bare)
        rows.append((name, w, b, w / b, max(workload), max(bare), max(workload) / max(bare)))
    bandwidth = benchmark.copy_bandwidth_gbs(device, 256 if device.type == "cuda" else 64, 5, 1)
    print(f"device: {describe(device)}; matrix {size}x{size}, {repeats} matmuls per timing, median of {ROUNDS}")
    print()
    print("| dtype | workload TFLOP/s (median) | bare loop TFLOP/s (median) | ratio of medians "
          "| workload best | bare best | ratio of bests |")
    print("|---|---|---|---|---|---|---|")
    for name, w, b, ratio, wbest, bbest, best_ratio in rows:
        print(f"| {name} | {w:.4f} | {b:.4f} | {ratio:.2f} | {wbest:.4f} | {bbest:.4f} | {best_ratio:.2f} |")
        headline(f"`benchmark` workload matmul, {name} on {device.type} (best round)", f"{wbest:.4f} TFLOP/s",
                 "bare torch matmul loop, same device", f"{bbest:.4f} TFLOP/s", f"ratio {best_ratio:.2f}")
    print()
    print("On a shared machine the best of the interleaved rounds is the steadier comparison.")
    print()
    print(f"memory bandwidth (workload's copy test): {bandwidth:.2f} GB/s")


if __name__ == "__main__":
    main()
