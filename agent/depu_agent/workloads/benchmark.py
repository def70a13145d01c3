"""The ``benchmark`` workload: matmul TFLOP/s in fp32 and bf16, and memory bandwidth from large copies.

Every timing is bracketed by device synchronisation and preceded by warm-up runs, so it measures the device,
not the launch queue or first-call allocation. Sizes shrink on the CPU so a benchmark there takes seconds.
"""
from __future__ import annotations

import torch

from . import WorkloadError
from .device import describe, pick, timed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULTS = {
    "cuda": {"size": 8192, "repeats": 20, "warmup": 3, "bandwidth_mb": 1024},
    "cpu": {"size": 512, "repeats": 5, "warmup": 1, "bandwidth_mb": 64},
}
LIMITS = {"size": (16, 32768), "repeats": (1, 1000), "warmup": (0, 100), "bandwidth_mb": (1, 16384)}


def settings(params: dict, device: torch.device) -> dict:
    chosen = dict(DEFAULTS["cuda" if device.type == "cuda" else "cpu"])
    for key, (low, high) in LIMITS.items():
        if key in params:
            try:
                value = int(params[key])
            except (TypeError, ValueError) as exc:
                raise WorkloadError(f"{key} must be an integer") from exc
            if not low <= value <= high:
                raise WorkloadError(f"{key} must be between {low} and {high}")
            chosen[key] = value
    dtypes = params.get("dtypes", list(DTYPES))
    unknown = [name for name in dtypes if name not in DTYPES]
    if unknown:
        raise WorkloadError(f"unknown dtypes {unknown}; choose from {list(DTYPES)}")
    chosen["dtypes"] = list(dtypes)
    return chosen


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int, warmup: int) -> float:
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    timed(device, lambda: torch.matmul(left, right, out=out), warmup)
    seconds = timed(device, lambda: torch.matmul(left, right, out=out), repeats)
    return 2.0 * size**3 * repeats / seconds / 1e12


def copy_bandwidth_gbs(device: torch.device, megabytes: int, repeats: int, warmup: int) -> float:
    """Device memory bandwidth: each copy reads and writes ``megabytes``, so bytes moved = 2 x size."""
    elements = megabytes * 1024 * 1024 // 4
    source = torch.ones(elements, device=device, dtype=torch.float32)
    target = torch.empty_like(source)
    timed(device, lambda: target.copy_(source), warmup)
    seconds = timed(device, lambda: target.copy_(source), repeats)
    return 2.0 * source.numel() * source.element_size() * repeats / seconds / 1e9


def significant(value: float, digits: int = 4) -> float:
    """Four significant digits: a slow CPU's 0.00004 TFLOP/s must not round to zero."""
    return float(f"{value:.{digits}g}")


def run(params: dict, device: torch.device | None, reporter, out_dir) -> tuple[dict, list[str]]:
    device = device or pick()
    chosen = settings(params, device)
    result: dict = {"device": describe(device), "matrix_size": chosen["size"], "repeats": chosen["repeats"]}
    steps = len(chosen["dtypes"]) + 1
    for done, name in enumerate(chosen["dtypes"]):
        reporter.progress(done / steps, f"matmul {name} {chosen['size']}x{chosen['size']}")
        try:
            tflops = matmul_tflops(device, DTYPES[name], chosen["size"], chosen["repeats"], chosen["warmup"])
        except RuntimeError as exc:  # e.g. a GPU generation without bf16 kernels: report it, measure the rest
            result[f"{name}_tflops"] = None
            result[f"{name}_error"] = str(exc).splitlines()[0][:200]
            print(f"{name}: not supported here ({result[f'{name}_error']})", flush=True)
            continue
        result[f"{name}_tflops"] = significant(tflops)
        print(f"{name}: {tflops:.4f} TFLOP/s", flush=True)
    reporter.progress((steps - 1) / steps, f"memory bandwidth, {chosen['bandwidth_mb']} MB copies")
    bandwidth = copy_bandwidth_gbs(device, chosen["bandwidth_mb"], chosen["repeats"], chosen["warmup"])
    result["mem_bandwidth_gbs"] = significant(bandwidth)
    print(f"memory bandwidth: {bandwidth:.3f} GB/s", flush=True)
    reporter.progress(1.0, "benchmark done", {k: v for k, v in result.items() if isinstance(v, float)})
    return result, []
