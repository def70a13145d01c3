"""The live dashboard's bodies (functions/dashboard_api): sign-in and the overview the page polls."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from depu.contracts.common import Contract


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
