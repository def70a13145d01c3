"""The live dashboard's bodies (functions/dashboard_api): sign-in, the overview the page polls, API keys."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from depu.contracts.common import Contract, whole


Section = Annotated[dict[str, Any], Field(description='{"state": "ok", ...}, {"state": "none"} or {"state": "unavailable"}')]


class SessionRequest(Contract):
    """Exactly one way in: Telegram's signed initData (inside Telegram) or the bot's one-time login code."""

    init_data: str | None = Field(None, description="Telegram.WebApp.initData, as the Mini App got it")
    login_code: str | None = Field(None, description="the code from the bot's browser link (#login=...)")


class SessionUser(Contract):
    id: int
    first_name: str | None = None
    username: str | None = None


class SessionReply(Contract):
    token: str = Field(description="the bearer token for the overview (15 minutes)")
    expires_at: int
    user: SessionUser


class Overview(Contract):
    """The session user's credits, jobs with live GPU metrics, forks, watches and chain status
    (depu.dashboard.overview builds it; its parts are described there)."""

    model_config = {**Contract.model_config, "extra": "allow"}

    user_id: int
    generated_at: int
    session_expires_at: int
    credits: Section
    jobs: Section
    forks: Section
    watches: Section
    chain: Section


class TopUpRequest(Contract):
    """The Mini App's Top up button: which credit pack (by its price in Stars)."""

    stars: int = Field(description="the pack's price in Telegram Stars (one of STAR_PACKS)", ge=1, le=100000)


class TopUpReply(Contract):
    sent: bool = Field(description="the invoice is in the user's private chat with the bot")
    stars: int
    credits: int

class ApiKeyInfo(Contract):
    """One of the user's API keys as a listing shows it: never the key itself."""

    key_id: str
    name: str
    hint: str = Field(description="the key's first characters, to tell keys apart")
    scopes: list[str]
    created_at: int
    expires_at: int
    last_used_at: int | None = None
    expired: bool


class ApiKeyList(Contract):
    keys: list[ApiKeyInfo]
    max_keys: int


class ApiKeyRequest(Contract):
    """A new key for the public API and the ``depu`` command (defaults: jobs, forks and analytics, 90 days)."""

    name: str | None = Field(None, max_length=40)
    scopes: list[str] | None = Field(None, description="any of jobs, forks, analytics, read-only")
    days: whole(ge=1, le=365) | None = None


class ApiKeyMade(Contract):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")
    info: ApiKeyInfo


# ------------------------------------------------------------------------------------------- jobs
class JobItem(Contract):
    """One of the session user's jobs as the Mini App's Jobs section lists it."""

    job_id: str
    status: str = Field(description="queued, assigned, running, succeeded, failed, cancelled or expired")
    phase: str | None = Field(None, description="while running: 'setup' (packages, inputs; not billed) or 'running'")
    finished: bool = Field(description="the job has ended (a terminal status)")
    gpu_class: str
    workload: str
    progress: float = Field(description="0..1, as the agent last reported")
    message: str | None = Field(None, description="the agent's latest one-line note")
    error: str | None = Field(None, description="why it failed, when it did")
    created_at: str
    started_at: int | None = None
    finished_at: int | None = None


class JobList(Contract):
    jobs: list[JobItem] = Field(description="newest first")


class JobLogPage(Contract):
    """Log lines after a cursor. Poll while ``finished`` is false (every ~2 s); when ``more`` is true, ask
    again at once with the new cursor."""

    job: JobItem
    lines: list[str] = Field(description="the next lines, in order (at most 500, about 200,000 characters)")
    cursor: str = Field(description="pass back as ?cursor= for the lines after these ('<chunk>:<line>')")
    more: bool = Field(description="stored lines follow these: ask again at once")
    finished: bool = Field(description="the job ended and every line it logged has been given: stop polling")


class JobOutput(Contract):
    name: str
    state: str = Field(description="ok, missing (no longer stored) or withheld (changed after the job ended)")
    size: int | None = Field(None, description="bytes")
    url: str | None = Field(None, description="a presigned download link (state ok), valid for 10 minutes")


class JobOutputs(Contract):
    job_id: str
    finished: bool = Field(description="outputs are recorded when the job ends; until then the list is empty")
    outputs: list[JobOutput]
    links_expire_at: int | None = Field(None, description="when the links stop working (ask again after)")


class UploadRequest(Contract):
    """The Mini App's file input: one input file of the user's job draft (the rent flow's input files step)."""

    file_name: str = Field(min_length=1, max_length=200, description="the file's name (cleaned: it is its name in inputs/)")
    size: int = Field(ge=1, description="the file's size in bytes, for an early answer; S3's policy is what holds")


class UploadLinkReply(Contract):
    """A presigned POST: send ``fields`` and then the file (the last field, named ``file``) to ``url``."""

    name: str = Field(description="the file's name in the job's inputs/")
    url: str
    fields: dict[str, str] = Field(description="the form's fields, sent as they are (the policy covers each)")
    expires_in: int = Field(description="seconds the link is valid")
    max_bytes: int = Field(description="the most the link accepts (the documented cap)")
