"""The fork-host routes' bodies (``/agent/forks/...`` in functions/agent_api): an approved fork host polls
for tasks and reports what it built (depu.forks.tasks)."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from depu.contracts.common import Contract

MAX_RUNNING_FORKS = 100


class ForkClaimRequest(Contract):
    wait: float = Field(0, ge=0, allow_inf_nan=False, description="seconds to long-poll (capped by the server)")
    running: list[str] = Field(default_factory=list, max_length=1000, description="fork ids this host serves now")


class ForkTask(Contract):
    task_id: str
    kind: str
    fork_id: str
    block: str
    journal: list[Any] = Field(default_factory=list)
    chain_id: int | None = None
    host_secret: str | None = Field(None, description="the secret the host's front checks (create only)")


class ForkClaimReply(Contract):
    task: ForkTask | None = Field(description="null: nothing within the wait")
    stop: list[str] = Field(description="forks this host must stop serving")


class ForkReport(Contract):
    """A host's answer to a task. ``ok`` false carries ``error``; ok true carries what was built. The
    domain checks the built fork's details (depu.forks.tasks.finish), so they pass through as sent."""

    model_config = {**Contract.model_config, "extra": "allow"}

    ok: bool = False
    error: str | None = None


class ForkReportReply(Contract):
    accepted: bool
    told: dict[str, Any] = Field(description="what the waiting state machine was told")
