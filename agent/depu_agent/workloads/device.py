"""Which torch device a workload uses and how to wait for it: CUDA when present, else the CPU."""
from __future__ import annotations

import time

import torch


def pick() -> torch.device:
    # The agent pins the child with CUDA_VISIBLE_DEVICES, so the job's GPU is always cuda:0 here.
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def timed(device: torch.device, work, repeats: int) -> float:
    """Seconds for ``repeats`` calls of ``work`` after the queue is drained before and after."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    synchronize(device)
    return time.perf_counter() - started
