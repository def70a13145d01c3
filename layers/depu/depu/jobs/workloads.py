"""What a user may ask an agent to run, and the checks each request passes before any credit is held.

- ``benchmark``: matmul TFLOP/s in FP32 and BF16 and memory bandwidth; no parameters.
- ``train``: a small model trained for ``epochs`` on ``dataset`` ('synthetic', made by the job, or an https URL
  the agent downloads); reports loss per epoch and returns the weights.
- ``script``: the user's own .py file (sent as a Telegram document); stored in S3 at submit and handed to the
  agent as a short-lived presigned GET ``script_url``.
- ``job``: a job spec (``depu.jobs.spec``): a command or a script, requirements, environment, ``gpu_count``.
"""
from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlparse

from depu.errors import UserError

WORKLOADS = ("benchmark", "train", "script", "job")  # "job": a job spec (depu.jobs.spec)
MAX_EPOCHS = 100
MAX_URL_LENGTH = 400
MAX_SCRIPT_BYTES = 1024 * 1024
TIME_LIMIT_CHOICES = (300, 900, 3600)
MIN_TIME_LIMIT_S = 60
MAX_TIME_LIMIT_S = 4 * 3600


def validate_dataset(dataset: Any) -> str:
    if dataset == "synthetic":
        return "synthetic"
    if not isinstance(dataset, str) or len(dataset) > MAX_URL_LENGTH:
        raise UserError(f"The dataset is 'synthetic' or an https URL of at most {MAX_URL_LENGTH} characters.")
    parsed = urlparse(dataset.strip())
    if parsed.scheme != "https" or not parsed.hostname or any(c.isspace() for c in dataset.strip()):
        raise UserError("The dataset URL must start with https:// and name a host.")
    if not _public_host(parsed.hostname) or parsed.username or parsed.password:
        raise UserError("The dataset URL must name a public host (the provider's machine downloads it).")
    return dataset.strip()


def _public_host(host: str) -> bool:
    """No loopback, private, link-local (cloud metadata) or otherwise internal address as a literal, and a
    dotted name: the provider's machine fetches the URL, so it must not be pointed at its own network. (The
    agent checks the resolved address again, since a public name can resolve to a private address.)"""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host and not host.endswith((".local", ".internal", ".localhost")) and host != "localhost"
    return address.is_global


def validate_script_file(file_name: str | None, file_size: int | None) -> None:
    if not file_name or not file_name.lower().endswith(".py"):
        raise UserError("Send your program as a <b>.py</b> file.")
    if file_size is None or file_size <= 0 or file_size > MAX_SCRIPT_BYTES:
        raise UserError(f"The script must be between 1 byte and {MAX_SCRIPT_BYTES // 1024} KiB.")


def validate_time_limit(time_limit_s: Any) -> int:
    try:
        value = int(time_limit_s)
    except (TypeError, ValueError) as error:
        raise UserError("The time limit is a number of seconds.") from error
    if not MIN_TIME_LIMIT_S <= value <= MAX_TIME_LIMIT_S:
        raise UserError(f"The time limit is between {MIN_TIME_LIMIT_S} s and {MAX_TIME_LIMIT_S // 3600} h.")
    return value


def validate(workload: str, params: dict[str, Any]) -> dict[str, Any]:
    """The normalised parameters of a built-in workload the agent receives, or a ``UserError`` saying what to
    fix (a user's own job is a ``depu.jobs.spec.JobSpec``, which builds on this module)."""
    if workload not in WORKLOADS:
        raise UserError(f"Unknown workload; choose one of {', '.join(WORKLOADS)}.")
    if not isinstance(params, dict):
        raise UserError("Workload parameters are missing.")
    if workload == "benchmark":
        return {}
    if workload == "job":
        raise ValueError("a job spec is checked by depu.jobs.spec.JobSpec.parse (depu.jobs.service does)")
    if workload == "train":
        try:
            epochs = int(params.get("epochs", 3))
        except (TypeError, ValueError) as error:
            raise UserError("Epochs must be a whole number.") from error
        if not 1 <= epochs <= MAX_EPOCHS:
            raise UserError(f"Epochs must be between 1 and {MAX_EPOCHS}.")
        return {"epochs": epochs, "dataset": validate_dataset(params.get("dataset", "synthetic"))}
    file_name = params.get("file_name")
    validate_script_file(file_name, params.get("file_size"))
    return {"file_name": str(file_name)[:100]}
