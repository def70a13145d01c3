"""Is a machine's start-up benchmark plausible for the GPU it claims, and how fast must its class be?

The benchmark is the agent's own word: it is only a first filter (an agent whose own report rules it out is
never challenged), it never verifies an agent and never ranks one. Verification is the server's hardware
challenge (depu.agents.challenges), whose deadlines come from ``expected_tflops`` below.

io.net saw about 1.8 million fake GPUs try to join in one month: a machine that claims an H100 but measures
CPU-like TFLOP/s, or whose benchmark ran on the CPU or on another model (``device`` is ``cuda:N`` or the CUDA
device's name), is registered as *unverified* and gets no GPU jobs.
The floors are a quarter of each model's published dense FP32 throughput and memory bandwidth, which a real
card clears easily even in a short benchmark and a CPU cannot reach. (A self-reported number only stops naive
fakes; a challenge job whose result the cloud checks is the stronger test, see docs/scheduling.md.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from depu.agents.gpuclass import gpu_class_of

# model key (as in gpu_class_of, without the memory) -> (dense FP32 TFLOP/s, memory bandwidth GB/s), published
_PUBLISHED: dict[str, tuple[float, float]] = {
    "h200": (67.0, 4800.0),
    "h100": (51.0, 2000.0),
    "a100": (19.5, 1555.0),
    "a10g": (31.2, 600.0),
    "a10": (31.2, 600.0),
    "l40s": (91.6, 864.0),
    "l40": (90.5, 864.0),
    "l4": (30.3, 300.0),
    "t4": (8.1, 320.0),
    "v100": (15.7, 900.0),
    "rtx4090": (82.6, 1008.0),
    "rtx4080": (48.7, 717.0),
    "rtx3090": (35.6, 936.0),
    "rtx3080": (29.8, 760.0),
    "rtxa6000": (38.7, 768.0),
}
FLOOR_SHARE = 0.25
# What an honest card reaches on the challenge (exact float32 products, no TF32): half the published dense
# FP32 figure, which real cards clear (they measure 60-90 %); the deadline adds a margin on top of that.
EXPECTED_SHARE = 0.5
UNKNOWN_GPU_TFLOPS = 2.0
CPU_TFLOPS = 0.005  # 5 GFLOP/s: the slowest machine still worth offering as "cpu" (2 shared cores do ~20)
UNKNOWN_GPU_MIN_TFLOPS = 2.0
ABSURD_TFLOPS = 5000.0


@dataclass(frozen=True)
class BenchmarkVerdict:
    verified: bool
    score: float
    reason: str


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and number >= 0 else 0.0  # NaN and negatives count as nothing


def _model(gpu_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100' (the class key without its memory size)."""
    return gpu_class_of(gpu_name, 1024).rsplit("-", 1)[0]


def published_specs(gpu_name: str) -> tuple[float, float] | None:
    return _PUBLISHED.get(_model(gpu_name))


def expected_tflops(gpu_name: str | None) -> float:
    """The FP32 TFLOP/s the challenge assumes for a claimed GPU (None: the CPU class)."""
    if gpu_name is None:
        return CPU_TFLOPS
    specs = published_specs(gpu_name)
    return specs[0] * EXPECTED_SHARE if specs else UNKNOWN_GPU_TFLOPS


def judge_benchmark(gpu_name: str | None, benchmark: dict[str, Any]) -> BenchmarkVerdict:
    """Verdict on the benchmark an agent ran at start; ``gpu_name`` is None for a CPU-only machine."""
    fp32 = _number(benchmark.get("fp32_tflops"))
    bandwidth = _number(benchmark.get("mem_bandwidth_gbs"))
    device = str(benchmark.get("device", "")).lower()
    if benchmark.get("verified") is not True:
        return BenchmarkVerdict(False, fp32, "the agent's own verification did not pass")
    if fp32 <= 0 or fp32 > ABSURD_TFLOPS:
        return BenchmarkVerdict(False, 0.0, "no plausible FP32 measurement")
    if gpu_name is None:
        return BenchmarkVerdict(True, fp32, "cpu")
    if not device or device.startswith("cpu"):
        return BenchmarkVerdict(False, fp32, f"claims {gpu_name} but the benchmark ran on {device or 'no device'}")
    if not device.startswith("cuda") and _model(device) != _model(gpu_name):
        # the agent names the CUDA device it measured; it must be the model it claims
        return BenchmarkVerdict(False, fp32, f"claims {gpu_name} but the benchmark ran on {device[:40]}")
    specs = published_specs(gpu_name)
    if specs is None:
        ok = fp32 >= UNKNOWN_GPU_MIN_TFLOPS
        return BenchmarkVerdict(ok, fp32, "unknown model, minimum met" if ok else "too slow for any GPU")
    min_tflops, min_bandwidth = specs[0] * FLOOR_SHARE, specs[1] * FLOOR_SHARE
    if fp32 < min_tflops:
        return BenchmarkVerdict(False, fp32, f"{fp32:.1f} FP32 TFLOP/s is implausible for {gpu_name}")
    if bandwidth < min_bandwidth:
        return BenchmarkVerdict(False, fp32, f"{bandwidth:.0f} GB/s memory bandwidth is implausible for {gpu_name}")
    return BenchmarkVerdict(True, fp32, "plausible for the claimed model")
