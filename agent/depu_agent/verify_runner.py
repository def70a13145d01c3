"""Runs the start-up verification (``verify.py``) in a child per device, pinned like a job, and folds the
results into the one ``benchmark`` object the register call carries."""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from . import isolation
from .gpus import Gpu
from .runner import EVENTS_FD, ChildProcess, StopRequest

log = logging.getLogger(__name__)
VERIFY_TIME_LIMIT_S = 600
AGENT_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def verify_device(gpu: Gpu, grace_s: float = 5.0, params: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="depu-verify-") as directory:
        job_file = Path(directory) / "job.json"
        job_file.write_text(json.dumps({"workload": "verify", "params": params or {}}), encoding="utf-8")
        env = isolation.scrubbed_environment("" if gpu.is_cpu else gpu.uuid, directory)
        env["PYTHONPATH"] = AGENT_PACKAGE_ROOT
        os.makedirs(env["TMPDIR"], exist_ok=True)
        events: list[dict] = []
        lines: list[str] = []
        child = ChildProcess(
            [sys.executable, "-m", "depu_agent.workloads.run", "--job", str(job_file), "--out", directory,
             "--events-fd", EVENTS_FD],
            env=env, cwd=directory, on_line=lines.append, on_event=events.append,
        ).start()
        outcome = child.wait(VERIFY_TIME_LIMIT_S, StopRequest(), grace_s)
    results = [event["result"] for event in events if event.get("type") == "result"]
    if not results:
        log.error("verification of %s failed (%s, status %s): %s", gpu.name, outcome.reason, outcome.returncode,
                  " | ".join(lines[-5:]))
        return {"device": torch_device_of(gpu), "device_name": gpu.name, "fp32_tflops": None, "bf16_tflops": None, "mem_bandwidth_gbs": None,
                "verified": False}
    result = results[0]
    result["device_name"] = result.get("device")
    result["device"] = torch_device_of(gpu)
    return result


def torch_device_of(gpu: Gpu) -> str:
    """What the cloud's plausibility check expects: the torch device the benchmark ran on."""
    return "cpu" if gpu.is_cpu else "cuda"


def verify_devices(devices: list[Gpu], config) -> dict:
    """The slowest device's figures stand for the agent; verified only if every device passed."""
    per_device = [verify_device(gpu, config.cancel_grace_seconds) for gpu in devices]
    for gpu, result in zip(devices, per_device):
        log.info("verified %s: %s", gpu.name, {k: result.get(k) for k in ("fp32_tflops", "bf16_tflops",
                                                                          "mem_bandwidth_gbs", "verified")})
    slowest = min(per_device, key=lambda item: item.get("fp32_tflops") or 0.0)
    return {
        "device": slowest["device"],
        "device_name": slowest.get("device_name"),
        "fp32_tflops": slowest.get("fp32_tflops"),
        "bf16_tflops": slowest.get("bf16_tflops"),
        "mem_bandwidth_gbs": slowest.get("mem_bandwidth_gbs"),
        "verified": all(item.get("verified") for item in per_device),
    }
