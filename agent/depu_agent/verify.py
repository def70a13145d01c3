"""Start-up verification: prove the device computes correctly, really holds the memory it claims, and
measure its speed, before the agent offers it. A GPU that fakes its name or memory fails here.

Runs as a ``verify`` workload in a child pinned to the GPU, like any job, so a hung or crashing device cannot
take the agent down with it.
"""
from __future__ import annotations

import torch

from .workloads import benchmark
from .workloads.device import describe, pick, synchronize

CPU_ALLOCATION_MB = 256
GPU_ALLOCATION_FRACTION = 0.8
CHUNK_MB = 256


def allocate_and_check(device: torch.device, megabytes: int) -> int:
    """Fill ``megabytes`` of device memory with a known pattern and read it back; returns the MB verified."""
    chunks = []
    elements = CHUNK_MB * 1024 * 1024 // 4
    for number in range(max(1, megabytes // CHUNK_MB)):
        chunk = torch.full((elements,), float(number % 251 + 1), device=device, dtype=torch.float32)
        chunks.append(chunk)
    synchronize(device)
    for number, chunk in enumerate(chunks):
        # an exact element-wise comparison: a float sum over 64M elements would round
        if bool((chunk != float(number % 251 + 1)).any()):
            raise RuntimeError(f"memory check failed in chunk {number}: the device returned wrong data")
    verified = len(chunks) * CHUNK_MB
    del chunks
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return verified


def matmul_is_correct(device: torch.device) -> bool:
    generator = torch.Generator().manual_seed(1234)
    left = torch.randn(256, 256, generator=generator, dtype=torch.float64)
    right = torch.randn(256, 256, generator=generator, dtype=torch.float64)
    expected = left @ right
    got = (left.float().to(device) @ right.float().to(device)).double().cpu()
    return bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-2))


def run(params: dict, device: torch.device | None, reporter, out_dir) -> tuple[dict, list[str]]:
    device = device or pick()
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        target_mb = int(free * GPU_ALLOCATION_FRACTION) // (1024 * 1024)
        total_mb = total // (1024 * 1024)
    else:
        target_mb = int(params.get("allocation_mb", CPU_ALLOCATION_MB))
        total_mb = None
    reporter.progress(0.1, f"allocating {target_mb} MB")
    verified_mb = allocate_and_check(device, target_mb)
    reporter.progress(0.4, "checking matmul results")
    correct = matmul_is_correct(device)
    reporter.progress(0.5, "timing matmuls and copies")
    quick = {"size": 4096, "repeats": 10, "warmup": 2, "bandwidth_mb": 512} if device.type == "cuda" else {
        "size": 256, "repeats": 3, "warmup": 1, "bandwidth_mb": 32}
    quick.update({k: v for k, v in params.items() if k in benchmark.LIMITS})
    speed, _ = benchmark.run(quick, device, _Silent(), out_dir)
    result = {
        "device": describe(device),
        "fp32_tflops": speed.get("fp32_tflops"),
        "bf16_tflops": speed.get("bf16_tflops"),
        "mem_bandwidth_gbs": speed.get("mem_bandwidth_gbs"),
        "memory_verified_mb": verified_mb,
        "memory_total_mb": total_mb,
        "matmul_correct": correct,
        "verified": bool(correct and verified_mb >= (target_mb // CHUNK_MB) * CHUNK_MB),
    }
    reporter.progress(1.0, "verified" if result["verified"] else "verification FAILED")
    return result, []


class _Silent:
    def progress(self, *args, **kwargs) -> None:
        pass
