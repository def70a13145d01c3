"""The agent API's bodies (functions/agent_api): what a provider's agent sends and what it gets back.

Field rules that are about shape (types, counts, ranges) live here; rules that need the job or the agent
(budgets, ownership, states) live in the domain (depu.jobs.work, depu.agents). Bodies the domain judges by
design, a hardware challenge's roots and reveals, are typed loosely on purpose: a malformed answer fails
the challenge (it is an answer), it is not refused as a bad request.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from depu.contracts.common import Contract, whole

MAX_JOBS_PER_CALL = 64
MAX_GPUS = 16
MAX_LOG_LINES = 500
MAX_LOG_SEQ = 10_000_000
MAX_ARTIFACT_KEYS = 50
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024  # one file's size; depu.jobs.storage signs links up to this
JOB_ID_CHARS = 40

GpuIndex = whole(ge=0, lt=MAX_JOBS_PER_CALL)
JobId = Annotated[str, Field(min_length=1, max_length=JOB_ID_CHARS)]
Reading = Annotated[float | None, Field(allow_inf_nan=False)]
JobState = Literal["queued", "assigned", "running", "succeeded", "failed", "cancelled", "expired"]
EgressPolicy = Annotated[Literal["allowed", "none"] | None, Field(
    description="The provider's egress policy (agent setting allow_egress): 'allowed' takes job specs that ask for "
                "egress (public addresses through the agent's filtering proxy), 'none' takes only jobs without "
                "network; null (an older agent) leaves the last one stored as it is.")]
EgressHosts = Annotated[Any, Field(
    description="The only hosts this provider's egress reaches (agent setting egress_hosts): at most 32 names such "
                "as pypi.example.com or *.example.com wildcards, the job spec's rule; [] any public host; null (an "
                "older agent) leaves the stored list. Judged by the domain, not refused here: a list that breaks "
                "the rule keeps the heartbeat but withdraws egress until a good one comes.")]
Fault = Annotated[str | None, Field(description="Why this agent cannot take jobs (its sandbox self-check failed), "
                                                "or null. The matcher offers a faulted agent nothing; its "
                                                "provider sees the reason in /provider (first 300 characters).")]


class GpuMetrics(Contract):
    """One GPU's NVML readings; readings an agent cannot take are null or left out."""

    gpu_index: GpuIndex | None = None
    utilization_pct: Reading = None
    memory_used_mb: Reading = None
    memory_total_mb: Reading = None
    temperature_c: Reading = None
    power_w: Reading = None

    def readings(self) -> dict[str, float]:
        """What is stored with the job: the readings that were given (gpu_index as an integer)."""
        return {name: (value if name == "gpu_index" else float(value))
                for name, value in self.model_dump().items() if value is not None}


# ---------------------------------------------------------------- register and tokens
class GpuSpec(Contract):
    name: str
    memory_mb: float = Field(gt=0, allow_inf_nan=False)
    index: GpuIndex | None = None
    uuid: str | None = None
    driver: str | None = None
    cuda_capability: str | None = None


class RegisterRequest(Contract):
    """A machine registering with its provider's one-time enrolment token (from /provider)."""

    provider_token: str | None = None
    name: str | None = Field(None, description="required: the machine's name in /provider")
    gpus: list[GpuSpec] = Field(default_factory=list, max_length=MAX_GPUS)
    capabilities: list[str] = Field(default_factory=list, max_length=8, description="gpu, fork_host")
    benchmark: dict[str, Any] = Field(default_factory=dict, description="the agent's own measurements "
                                      "(device, fp32_tflops, bf16_tflops, mem_bandwidth_gbs); numbers only are kept")
    version: str | None = None
    fork_rpc_base_url: str | None = Field(None, description="How the DePU proxy reaches this fork host: https on a "
                                          "public address, else 400; the local stack also allows http and loopback.")
    fork_tls_sha256: str | None = Field(None, description="SHA-256 of the certificate the host's https fork fronts "
                                        "serve, 64 hex digits (colons allowed); required with an https fork_rpc_base_url.")
    fault: Fault = None
    cpu_slots: whole(ge=1, le=8) | None = Field(None, description="a CPU-only machine's job slots (default 1); a "
                                                "job spec's gpu_count counts them like GPUs")
    egress: EgressPolicy = None
    egress_hosts: EgressHosts = None


class RegisterReply(Contract):
    agent_id: str
    agent_token: str = Field(description="shown once; only its SHA-256 hash is stored")
    token_expires_in: int = Field(description="seconds until the agent token expires (renew before)")
    heartbeat_seconds: int
    lease_seconds: int
    gpu_class: str = Field(description="e.g. h100-80gb, or cpu")
    verified: bool = Field(description="always false at first: only a passed hardware challenge verifies")
    verdict: str | None = None
    challenge_due: bool = Field(description="true: take a challenge now (POST /agent/challenge)")


class EmptyRequest(Contract):
    """A route that takes no fields (any JSON object is accepted and ignored)."""


class RenewReply(Contract):
    agent_token: str
    expires_in: int = Field(description="seconds until the fresh token expires")
    overlap_seconds: int = Field(description="how long the old token still works")


# ---------------------------------------------------------------- heartbeat and claim
class HeartbeatRequest(Contract):
    metrics: list[GpuMetrics] = Field(default_factory=list, max_length=MAX_GPUS)
    running_jobs: list[JobId] = Field(default_factory=list, max_length=MAX_JOBS_PER_CALL)
    free_gpus: list[GpuIndex] = Field(default_factory=list, max_length=MAX_JOBS_PER_CALL)
    fault: Fault = None
    env_hashes: list[Annotated[str, Field(pattern=r"^[0-9a-f]{24}$")]] | None = Field(
        None, max_length=64, description="job environments (a job spec's requirements hash) this agent holds built; "
                                         "the matcher prefers it for jobs that need them")
    egress: EgressPolicy = None
    egress_hosts: EgressHosts = None
    image_digests: list[Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]] | None = Field(
        None, max_length=64, description="container images this agent's runtime holds; the matcher prefers it for "
                                         "jobs naming one (a preference only: the image is pulled by digest anyway)")
    container_registries: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,252}(:[0-9]{1,5})?$")]] | None = Field(
        None, max_length=16, description="registries whose images this agent runs (empty: its container runtime "
                                         "failed its probe, or it offers none); only such agents get image jobs")


class HeartbeatReply(Contract):
    cancel: list[str] = Field(description="jobs the agent must stop now")
    lease_seconds: int
    heartbeat_seconds: int
    renew_token: bool = Field(description="true: call /agent/token/renew now (a week or less left)")
    challenge_due: bool = Field(description="a hardware challenge is due: answer it when every GPU is idle")
    verified: bool


class ClaimRequest(Contract):
    free_gpus: list[GpuIndex] = Field(default_factory=list, max_length=MAX_JOBS_PER_CALL)
    wait_seconds: float = Field(0, ge=0, le=3600, allow_inf_nan=False, description="at most 20 are used")


class JobOffer(Contract):
    job_id: str
    workload: Literal["benchmark", "train", "script", "job"]
    params: dict[str, Any] = Field(description="train: {epochs, dataset}; script: {file_name}; benchmark: {}; job (a "
                                   "job spec): {command | file_name, requirements, env, gpu_count, image, env_hash, "
                                   "network ('egress' when it asked for it; absent: none), egress_hosts (with egress: the only "
                                   "host names it may reach, '*.' wildcards; absent: any public host), "
                                   "image_registry, image_digest}")
    time_limit_s: int
    gpu_index: int
    attempt: int = Field(ge=1)
    gpu_class: str | None = None
    script_url: str | None = Field(None, description="presigned GET of the user's script (script only)")
    gpu_indices: list[int] | None = Field(None, description="every slot the job holds (a job spec's gpu_count), "
                                          "gpu_index first")
    inputs: list[dict[str, Any]] | None = Field(None, description="a job spec's input files {name, url, size?, "
                                                "if_match?}: presigned GETs of one key each, fetched into inputs/ "
                                                "during setup; send If-Match: <if_match> (a signed header) and "
                                                "stop past size bytes")


class ClaimReply(Contract):
    job: JobOffer
    lease_seconds: int


# ---------------------------------------------------------------- a running job's reports
class ProgressRequest(Contract):
    progress: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    message: str | None = None
    metrics: GpuMetrics | None = None
    phase: Literal["setup", "running"] | None = Field(None, description="a job spec's phase; the first 'running' "
                                                      "starts its billing")


class StateReply(Contract):
    state: JobState


class ConflictReply(Contract):
    error: Literal["conflict"]
    state: JobState


class LogsRequest(Contract):
    seq: Annotated[whole(ge=0, lt=MAX_LOG_SEQ), Field(description="chunk number from 0; a repeat is accepted and ignored")]
    lines: list[str] = Field(max_length=MAX_LOG_LINES)


class LogsReply(Contract):
    accepted: bool = Field(description="false for a repeated or older chunk")


class ArtifactRequest(Contract):
    name: str = Field(min_length=1)
    size: whole(ge=1, le=MAX_ARTIFACT_BYTES)


class ArtifactReply(Contract):
    upload_url: str
    key: str
    upload_headers: dict[str, str] = Field(description="send these with the PUT (the link is write-once)")
    expires_in: int


class CompleteRequest(Contract):
    result: dict[str, Any] = Field(default_factory=dict, description="under 32 KiB as JSON")
    artifacts: list[Annotated[str, Field(max_length=299)]] = Field(default_factory=list, max_length=MAX_ARTIFACT_KEYS,
                                                                   description="keys the artifacts route returned")


class CompleteReply(Contract):
    state: JobState
    charged: int


class FailRequest(Contract):
    error: str | None = None
    retryable: bool = False


class ReleaseRequest(Contract):
    job_ids: list[JobId] = Field(default_factory=list, max_length=MAX_JOBS_PER_CALL)


class ReleaseReply(Contract):
    released: list[str] = Field(description="the ids actually handed back")


# ---------------------------------------------------------------- hardware challenges
class ChallengeIssued(Contract):
    challenge_id: str
    seed: str = Field(description="64 hex digits")
    n: int
    steps: int
    devices: int
    memory_mb: int = Field(description="per GPU; 0 for the CPU class")
    memory_chunk_mb: int
    deadline_seconds: float


class CommitRequest(Contract):
    challenge_id: str | None = None
    roots: Any = Field(None, description="one sha256 Merkle root (64 hex digits) per device; anything else "
                                         "fails the challenge")


class RowCheck(Contract):
    step: int
    row: int
    columns: list[int]


class DeviceChecks(Contract):
    rows: list[RowCheck]
    memory: list[list[int]]


class ChecksToReveal(Contract):
    """A commit in time: per device, the rows (step, row, columns) and memory positions (chunk, int32 offset)
    to reveal within ``reveal_seconds``. A late or malformed commit answers a ChallengeVerdict instead."""

    challenge_id: str
    checks: list[DeviceChecks]
    reveal_seconds: int


class RevealRequest(Contract):
    challenge_id: str | None = None
    devices: Any = Field(None, description="per device, in the order of checks: {rows: [{row, proof, previous}], "
                                           "memory}; anything else fails the challenge")


class ChallengeVerdict(Contract):
    passed: bool
    verified: bool
    verdict: str
