"""What this machine can offer: NVIDIA GPUs through NVML, or one CPU "device" when there is no NVML.

The CPU fallback keeps the whole rental path runnable on a machine without a GPU (development, CI); the
cloud sees it as a device named "CPU ..." with cuda_capability None and prices it accordingly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import platform
import threading
import warnings
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)
CPU_DRIVER = "none"


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mb: int
    driver: str
    cuda_capability: str | None

    @property
    def is_cpu(self) -> bool:
        return self.driver == CPU_DRIVER

    def as_dict(self) -> dict:
        return asdict(self)


_nvml_lock = threading.Lock()
_nvml_state: dict[str, object] = {"ready": None}


def _nvml():
    """The initialised pynvml module, or None when NVML is unavailable (no driver, no GPU)."""
    with _nvml_lock:
        if _nvml_state["ready"] is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # the module renamed itself; same API
                    import pynvml

                pynvml.nvmlInit()
                _nvml_state["module"] = pynvml
                _nvml_state["ready"] = True
            except Exception as exc:  # pynvml raises NVMLError_* or ImportError; any means "no NVML"
                log.info("NVML not available (%s): offering the CPU", type(exc).__name__)
                _nvml_state["ready"] = False
        return _nvml_state.get("module") if _nvml_state["ready"] else None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def discover(cpu_slots: int = 1) -> list[Gpu]:
    """The machine's GPUs, or without any its CPU as ``cpu_slots`` slots (indices 0..n-1, one job each)."""
    nvml = _nvml()
    if nvml is None:
        return cpu_devices(cpu_slots)
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    found = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        found.append(
            Gpu(
                index=index,
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                name=_text(nvml.nvmlDeviceGetName(handle)),
                memory_mb=int(nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)),
                driver=driver,
                cuda_capability=f"{major}.{minor}",
            )
        )
    return found or cpu_devices(cpu_slots)


def cpu_devices(slots: int = 1) -> list[Gpu]:
    device = cpu_device()
    return [dataclasses.replace(device, index=index) for index in range(max(1, min(int(slots), 8)))]


def cpu_device() -> Gpu:
    model = _cpu_model()
    machine = _machine_id()
    return Gpu(
        index=0,
        uuid="CPU-" + hashlib.sha256(f"{machine}:{model}".encode()).hexdigest()[:32],
        name=f"CPU ({model}, {os.cpu_count()} cores)",
        memory_mb=_total_memory_mb(),
        driver=CPU_DRIVER,
        cuda_capability=None,
    )


def metrics(indices: list[int]) -> list[dict]:
    """Live utilisation, memory, temperature and power per device (NVML), or the CPU's load and memory."""
    nvml = _nvml()
    if nvml is None:
        used, total = _memory_used_and_total_mb()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        utilization = min(100.0, 100.0 * load / max(1, os.cpu_count() or 1))
        return [
            {
                "gpu_index": index,
                "utilization_pct": round(utilization, 1),
                "memory_used_mb": used,
                "memory_total_mb": total,
                "temperature_c": None,
                "power_w": None,
            }
            for index in indices
        ]
    samples = []
    for index in indices:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        sample = {
            "gpu_index": index,
            "utilization_pct": float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "memory_used_mb": int(memory.used // (1024 * 1024)),
            "memory_total_mb": int(memory.total // (1024 * 1024)),
            "temperature_c": None,
            "power_w": None,
        }
        try:
            sample["temperature_c"] = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            sample["power_w"] = round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 1)
        except Exception:  # some boards do not report these; the rest of the sample is still good
            pass
        samples.append(sample)
    return samples


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
                if value:
                    return value
        except OSError:
            continue
    return platform.node()


def _meminfo() -> dict[str, int]:
    values = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0])  # kB
    except (OSError, ValueError, IndexError):
        pass
    return values


def _total_memory_mb() -> int:
    return _meminfo().get("MemTotal", 0) // 1024


def _memory_used_and_total_mb() -> tuple[int, int]:
    info = _meminfo()
    total = info.get("MemTotal", 0) // 1024
    available = info.get("MemAvailable", 0) // 1024
    return max(0, total - available), total
