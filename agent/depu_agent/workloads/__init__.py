"""The workloads a renter can run. Each is a function ``run(params, device, reporter, out_dir) -> result``
executed in a child process (``python -m depu_agent.workloads.run``) pinned to one GPU."""
from __future__ import annotations

WORKLOADS = ("benchmark", "train", "script")


class WorkloadError(ValueError):
    """Bad parameters or data the renter can fix; reported as a non-retryable failure."""
