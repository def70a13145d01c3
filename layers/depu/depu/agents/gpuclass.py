"""GPU classes: the stable key a GPU model and memory size are rented under ('h100-80gb', or 'cpu').

Why its own module: the registry classes an agent's GPUs with it and verification looks published specs up
by the same model key; here, both import it and neither needs the other.
"""
from __future__ import annotations

import math
import re

CPU_CLASS = "cpu"
_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro", "corporation", "graphics"}
_MEMORY_SIZES_GB = (2, 4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 141, 192)
_NAME_NOISE = re.compile(r"\b(pcie|sxm\d?|hbm\d?e?|nvl|\d+\s*gb)\b", re.IGNORECASE)


def _memory_gb(memory_mb: float) -> int:
    """The marketed memory size nearest (by ratio) to what NVML reports, e.g. 81559 MiB -> 80."""
    gb = max(float(memory_mb), 1.0) / 1024
    return min(_MEMORY_SIZES_GB, key=lambda size: abs(math.log(size / gb)))


def gpu_class_of(name: str, memory_mb: float) -> str:
    """A stable key for a GPU model and memory size: 'NVIDIA H100 80GB HBM3', 81559 -> 'h100-80gb'."""
    words = [word for word in re.split(r"[^a-z0-9]+", _NAME_NOISE.sub(" ", name.lower())) if word]
    model = "".join(word for word in words if word not in _VENDOR_WORDS) or "gpu"
    return f"{model[:24]}-{_memory_gb(memory_mb)}gb"
