"""The public API's request and response shapes: the contract, and the source its OpenAPI document is
generated from (Powertools reads these models off the routes in functions/public_api/app.py).

Requests forbid unknown fields, so a typo in a client is a clear 422 rather than a silently ignored option.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

GPU_CLASS_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,39}$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"
UPLOAD_ID_PATTERN = r"^u[0-9a-f]{16}$"
MAX_INPUTS = 10  # depu.jobs.spec.MAX_INPUT_FILES (tests/test_public_api_uploads.py holds them equal)
Window = Literal["1h", "24h", "7d"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------ errors
class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable: unauthorized, forbidden, not_found, invalid_request, "
                                  "validation_failed, payload_too_large, conflict, rate_limited, internal")
    message: str
    request_id: Optional[str] = None
    details: Optional[list[dict[str, Any]]] = None


class ErrorBody(BaseModel):
    """Every error, whatever the route or status."""

    error: ErrorDetail


# ------------------------------------------------------------------------------------------------ jobs
class JobSpec(Request):
    """The same job the chat's /rent_gpu builds: a GPU class, a workload and a time limit.

    ``job`` is the chat's "My own job": a ``command`` or a script (``script_b64``), a requirements.txt, non-secret
    ``env`` and ``gpu_count``. Only its shape is checked here: what is allowed (requirement lines, env names,
    GPU counts, the image) is the domain's job spec (``depu.jobs.spec``), whose refusals come back as 400s."""

    gpu_class: str = Field(pattern=GPU_CLASS_PATTERN, examples=["cpu", "a100-80gb"])
    workload: Literal["benchmark", "train", "script", "job"]
    time_limit_s: int = Field(default=900, ge=60, le=4 * 3600)
    epochs: Optional[int] = Field(default=None, ge=1, le=100, description="train: epochs (default 3)")
    dataset: Optional[str] = Field(default=None, max_length=400,
                                   description="train: 'synthetic' or an https URL of a public host")
    script_b64: Optional[str] = Field(default=None, max_length=1_400_000,
                                      description="script, job: the .py file, base64 (at most 1 MiB decoded)")
    file_name: Optional[str] = Field(default=None, max_length=100, pattern=r"^[^/\\]+\.py$")
    command: Optional[str] = Field(default=None, max_length=4000,
                                   description="job: a shell command to run instead of a script")
    requirements: Optional[str] = Field(default=None, max_length=20_000,
                                        description="job: requirements.txt text, package names with optional "
                                                    "versions (no URLs, paths or pip options)")
    env: Optional[dict[str, str]] = Field(default=None, description="job: non-secret environment variables")
    gpu_count: Optional[int] = Field(default=None, description="job: GPUs of one machine (default 1)")
    image: Optional[str] = Field(default=None, max_length=200,
                                 description="job: 'default' (the provider's CUDA and PyTorch image) or your own, "
                                             "pinned by digest: registry/path@sha256:<64 hex>")
    network: Optional[str] = Field(default=None, max_length=20,
                                   description="job: 'none' (the default: no network at all) or 'egress' (public "
                                               "addresses, ports 80 and 443, through the provider's filtering "
                                               "proxy; only on providers whose offer says 'egress: allowed')")
    egress_hosts: Optional[list[Annotated[str, Field(max_length=300)]]] = Field(
        default=None, max_length=100,
        description="job, with network 'egress': the only hosts it may reach (at most 32), names such as "
                    "'pypi.example.com' or wildcards '*.example.com' (every name below it); the proxy refuses "
                    "any other name before resolving it. Left out: any public host, so only providers without a "
                    "list of their own take it; a provider whose offer says 'egress: only to ...' takes a job "
                    "whose list lies wholly inside its own")
    inputs: Optional[list[Annotated[str, Field(pattern=UPLOAD_ID_PATTERN)]]] = Field(
        default=None, max_length=MAX_INPUTS,
        description="job: upload ids (POST /v1/uploads) of this key, each file posted already; the job finds "
                    "them in inputs/ under their names (distinct), each checked and pinned at submit")


class JobOut(BaseModel):
    job_id: str
    status: str
    gpu_class: str
    workload: str
    params: dict[str, Any]
    created_at: str
    time_limit_s: int
    price_per_hour: int
    max_cost: int
    attempt: int
    progress: float
    message: Optional[str] = None
    started_at: Optional[int] = None
    finished_at: Optional[int] = None
    billed_seconds: int = 0
    charged: Optional[int] = None
    result: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    metrics: Optional[dict[str, Any]] = None
    artifacts: list[str] = Field(default_factory=list)
    inputs: list[str] = Field(default_factory=list, description="the names of the job's input files")
    finished: bool


class JobList(BaseModel):
    jobs: list[JobOut]


class LogPageOut(BaseModel):
    job_id: str
    lines: list[str]
    cursor: int = Field(description="pass as ?cursor= for the next page; -1 before any chunk")
    more: bool = Field(description="more chunks are stored already: ask again at once")
    finished: bool = Field(description="the job has ended: no chunks will follow the ones stored")
    status: str


class ArtifactOut(BaseModel):
    name: str
    state: Literal["ok", "missing", "withheld"]
    size: Optional[int] = None
    url: Optional[str] = Field(default=None, description="presigned download link (expires)")
    expires_at: Optional[int] = Field(default=None, description="unix time the link stops working at the latest "
                                      "(24 h; ask again for a fresh one)")


class ArtifactList(BaseModel):
    job_id: str
    artifacts: list[ArtifactOut]


class UploadRequest(Request):
    """One input file to come by upload link: its name in the job's inputs/ and its size in bytes."""

    file_name: str = Field(min_length=1, max_length=100, pattern=r"^[^/\\]+$", examples=["data.parquet"])
    size: int = Field(gt=0, description="bytes; at most max_bytes (the cap, 2 GiB by default)")


class UploadOut(BaseModel):
    upload_id: str = Field(description="name it in a job's inputs (with this same key), within 24 h")
    name: str = Field(description="the file's name in the job's inputs/ (the given name, made safe)")
    url: str = Field(description="POST a multipart form here: every one of fields, then the file as 'file', last")
    fields: dict[str, str] = Field(description="the form's signed fields (key, policy, signature): send as given")
    expires_in: int = Field(description="seconds the form is accepted for")
    max_bytes: int = Field(description="the most the file may be (the policy's content-length-range: the declared size)")


# ------------------------------------------------------------------------------------------------ forks
class ForkCreate(Request):
    block: Optional[int] = Field(default=None, gt=0, description="the mainnet block to fork at; default latest")
    keep_mainnet_chain_id: bool = Field(default=False, description="keep chain id 1 (transactions replayable on mainnet)")


class ForkOut(BaseModel):
    fork_id: str
    status: str
    block_requested: str
    base_block: Optional[int] = None
    chain_id: Optional[int] = None
    created_at: str
    expires_at: int
    auto_sync: bool
    last_synced_at: Optional[str] = None
    last_sync_error: Optional[str] = None
    conflicts: Optional[str] = None
    failure: Optional[str] = None


class ForkCreated(BaseModel):
    fork: ForkOut
    rpc_url: Optional[str] = Field(description="the fork's authenticated JSON-RPC URL: shown once (null when "
                                               "an Idempotency-Key replays the creation; ask for a new URL)")


class ForkDetail(BaseModel):
    fork: ForkOut
    journal_size: int
    mainnet_head: Optional[int] = None
    blocks_behind: Optional[int] = None


class ForkList(BaseModel):
    forks: list[ForkOut]


class RpcUrlOut(BaseModel):
    fork_id: str
    rpc_url: Optional[str] = Field(description="the new URL (the old one stops answering); null on a replay")


class SyncStarted(BaseModel):
    fork_id: str
    execution: str = Field(description="the sync's name; poll the fork until last_synced_at changes")


class FundRequest(Request):
    address: str = Field(pattern=ADDRESS_PATTERN)
    eth: str = Field(pattern=r"^[0-9]{1,7}(\.[0-9]{1,18})?$", description="ETH to add, e.g. '10' or '0.5'")


class FundOut(BaseModel):
    fork_id: str
    address: str
    balance_wei: str


class ImpersonateRequest(Request):
    address: str = Field(pattern=ADDRESS_PATTERN)
    stop: bool = False


class ImpersonateOut(BaseModel):
    fork_id: str
    address: str
    impersonating: bool


class SnapshotOut(BaseModel):
    fork_id: str
    snapshot_id: str


class RevertRequest(Request):
    snapshot_id: str = Field(pattern=r"^(0x)?[0-9a-fA-F]{1,64}$")


class RevertOut(BaseModel):
    fork_id: str
    reverted: bool


class Deleted(BaseModel):
    id: str
    status: str


# ------------------------------------------------------------------------------------------------ analytics
class TokenInfo(BaseModel):
    token: str
    symbol: Optional[str] = None
    name: Optional[str] = None
    decimals: Optional[int] = None


class AssetFlowOut(BaseModel):
    asset: str
    token: Optional[TokenInfo] = None
    inflow: str
    outflow: str
    net: str
    transfers: int


class CounterpartyOut(BaseModel):
    asset: str
    address: str
    sent: str
    received: str
    transfers: int


class AddressViewOut(BaseModel):
    address: str
    window: str
    seen: list[AssetFlowOut]
    flows: list[AssetFlowOut]
    counterparties: list[CounterpartyOut]


class HourPoint(BaseModel):
    hour: int
    volume: str
    transfers: int


class MoverOut(BaseModel):
    address: str
    moved: str


class TokenViewOut(BaseModel):
    token: TokenInfo
    window: str
    volume: str
    transfers: int
    active_addresses: int
    series: list[HourPoint]
    top_transfers: list[dict[str, Any]]
    top_movers: list[MoverOut]


class ChainViewOut(BaseModel):
    window: str
    head: Optional[int] = None
    blocks: int
    transactions: int
    transfers: int
    average_gas_used: float
    average_base_fee_wei: float
    capped: bool
    recent_blocks: list[dict[str, Any]]


class ExportCreate(Request):
    dataset: Literal["transfers", "blocks"]
    from_block: int = Field(ge=0)
    to_block: int = Field(ge=0)
    format: Literal["csv", "jsonl", "parquet"] = "parquet"
    token: Optional[str] = Field(default=None, pattern=ADDRESS_PATTERN,
                                 description="transfers of this token only (filtered when the file is built)")
    notify_chat: bool = Field(default=False, description="also show progress and send the file in the Telegram "
                              "chat; by default an API export is only polled here")


class ExportOut(BaseModel):
    export_id: str
    status: Literal["pending", "ready", "empty", "failed"]
    dataset: str
    from_block: int
    to_block: int
    format: str
    token: Optional[str] = None
    created_at: int
    size: Optional[int] = None
    download_url: Optional[str] = Field(default=None, description="presigned, valid for a day")
    filename: Optional[str] = None
    rows: Optional[int] = Field(default=None, description="rows exported so far (of the whole range once ready)")
    percent: Optional[int] = Field(default=None, description="how much of the block range is done, 0-100")


# ------------------------------------------------------------------------------------------------ profile
class CreditsOut(BaseModel):
    available: int
    held: int
    earned: int


class ProfileOut(BaseModel):
    user_id: int
    first_name: Optional[str] = None
    username: Optional[str] = None
    credits: CreditsOut
    key_id: str = Field(description="the API key this request used")
    scopes: list[str]


class LedgerEntryOut(BaseModel):
    entry_id: str
    kind: str
    amount: int
    released: int
    reason: Optional[str] = None
    job_id: Optional[str] = None
    created_at: str


class LedgerOut(BaseModel):
    credits: CreditsOut
    entries: list[LedgerEntryOut]
