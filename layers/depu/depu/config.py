"""Runtime settings: the only module that reads the environment template.yaml (or the local stack) sets.

``get_settings()`` is read once per process (cached). A few settings are read at each use instead, because
the local stack and the tests change them within one process: the indexer's tuning (``chain_tuning``) and
the paths the local stack points at its own checkout (``local_overrides``).

Secrets are not settings: only the *names* of secrets live here; their values are fetched through
Powertools Parameters where they are used (the Bot API client, the webhook's and dashboard's handlers,
``depu.agents.signing``), so they never sit in environment variables or logs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    stage: str
    bot_username: str
    telegram_api_base: str
    telegram_bot_token_secret: str
    telegram_webhook_secret: str
    chain_rpc_url: str
    starter_credits: int
    public_api_url: str
    agent_signing_public_key: str  # pinned in /provider's install command (depu.agents.bootstrap)
    users_table: str
    ledger_table: str
    jobs_table: str
    agents_table: str
    tokens_table: str
    forks_table: str
    journal_table: str
    chain_table: str
    idempotency_table: str
    job_queue_url: str
    notify_queue_url: str
    fork_task_queue_url: str
    export_queue_url: str
    artifacts_bucket: str
    fork_create_state_machine_arn: str
    fork_sync_state_machine_arn: str
    fork_delete_state_machine_arn: str
    explorer_url: str = "https://etherscan.io"  # transaction links in chain views and alerts: <url>/tx/<hash>
    # money in (Telegram Stars) and out (DUSD on chain): depu.payments, depu.payouts
    payments_table: str = "depu-PaymentsTable"
    payouts_table: str = "depu-PayoutsTable"
    payout_queue_url: str = ""
    credits_per_star: int = 10
    star_packs: tuple[int, ...] = (50, 100, 500)
    order_ttl_seconds: int = 3600
    refund_window_days: int = 14
    referral_share_pct: int = 10
    treasury_key_id: str = "alias/depu-local-treasury"
    payout_token_address: str = ""
    payout_chain_rpc_url: str = ""
    payout_token_decimals: int = 18
    payout_confirmations: int = 3
    payout_min_credits: int = 1000
    payout_daily_limit_credits: int = 1_000_000
    payout_daily_total_credits: int = 10_000_000
    treasury_low_credits: int = 100_000
    payout_address_delay_seconds: int = 24 * 3600
    # an exporter run hands its export over to the next run this long before its timeout (depu.analytics.export_run)
    export_handover_margin_seconds: float = 60.0
    # at most this long per exporter run before handing over (None: as long as the timeout allows); the local
    # runtime's tests set it to 0 to make every run one chunk
    export_run_seconds: float | None = None
    # at most this long composing per exporter run before handing the compose over (None: the run's time less
    # the hand-over margin); the local runtime's tests set it to 0 to make every compose run one part
    export_compose_seconds: float | None = None
    # at most one edit of an export's progress message this often (None: depu.analytics.export's 3 s); tests
    # set 0 to see every edit
    export_progress_seconds: float | None = None
    # a job's input files above Telegram's 20 MB download limit come through an upload link (depu.jobs.uploads):
    # each file, and all of one job's inputs together, at most this (the agent's default max_input_mb)
    upload_max_bytes: int = 2 * 1024 ** 3
    # what one user's upload links may hold at once, not yet used by a submitted job (depu.jobs.upload_room):
    # so many files, and so many bytes declared (each link's policy takes at most its declared size)
    upload_max_outstanding: int = 20
    upload_max_outstanding_bytes: int = 20 * 1024 ** 3

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            stage=_env("STAGE", "local"),
            bot_username=_env("BOT_USERNAME", "DePUDevBot"),
            telegram_api_base=_env("TELEGRAM_API_BASE", "https://api.telegram.org").rstrip("/"),
            telegram_bot_token_secret=_env("TELEGRAM_BOT_TOKEN_SECRET", "depu/local/telegram-bot-token"),
            telegram_webhook_secret=_env("TELEGRAM_WEBHOOK_SECRET", "depu/local/telegram-webhook-secret"),
            chain_rpc_url=_env("CHAIN_RPC_URL", "http://127.0.0.1:8545"),
            starter_credits=int(_env("STARTER_CREDITS", "1000")),
            public_api_url=_env("PUBLIC_API_URL", "http://127.0.0.1:3000").rstrip("/"),
            agent_signing_public_key=_env("AGENT_SIGNING_PUBLIC_KEY").strip(),
            users_table=_env("USERS_TABLE", "depu-UsersTable"),
            ledger_table=_env("LEDGER_TABLE", "depu-LedgerTable"),
            jobs_table=_env("JOBS_TABLE", "depu-JobsTable"),
            agents_table=_env("AGENTS_TABLE", "depu-AgentsTable"),
            tokens_table=_env("TOKENS_TABLE", "depu-TokensTable"),
            forks_table=_env("FORKS_TABLE", "depu-ForksTable"),
            journal_table=_env("JOURNAL_TABLE", "depu-JournalTable"),
            chain_table=_env("CHAIN_TABLE", "depu-ChainTable"),
            idempotency_table=_env("IDEMPOTENCY_TABLE", "depu-IdempotencyTable"),
            job_queue_url=_env("JOB_QUEUE_URL"),
            notify_queue_url=_env("NOTIFY_QUEUE_URL"),
            fork_task_queue_url=_env("FORK_TASK_QUEUE_URL"),
            export_queue_url=_env("EXPORT_QUEUE_URL"),
            artifacts_bucket=_env("ARTIFACTS_BUCKET", "depu-artifactsbucket"),
            fork_create_state_machine_arn=_env("FORK_CREATE_STATE_MACHINE_ARN"),
            fork_sync_state_machine_arn=_env("FORK_SYNC_STATE_MACHINE_ARN"),
            fork_delete_state_machine_arn=_env("FORK_DELETE_STATE_MACHINE_ARN"),
            explorer_url=_env("EXPLORER_URL", "https://etherscan.io").rstrip("/"),
            payments_table=_env("PAYMENTS_TABLE", "depu-PaymentsTable"),
            payouts_table=_env("PAYOUTS_TABLE", "depu-PayoutsTable"),
            payout_queue_url=_env("PAYOUT_QUEUE_URL"),
            credits_per_star=int(_env("CREDITS_PER_STAR", "10")),
            star_packs=tuple(int(part) for part in _env("STAR_PACKS", "50,100,500").split(",") if part.strip()),
            order_ttl_seconds=int(_env("ORDER_TTL_SECONDS", "3600")),
            refund_window_days=int(_env("REFUND_WINDOW_DAYS", "14")),
            referral_share_pct=int(_env("REFERRAL_SHARE_PCT", "10")),
            treasury_key_id=_env("TREASURY_KEY_ID", "alias/depu-local-treasury"),
            payout_token_address=_env("PAYOUT_TOKEN_ADDRESS"),
            payout_chain_rpc_url=_env("PAYOUT_CHAIN_RPC_URL") or _env("CHAIN_RPC_URL", "http://127.0.0.1:8545"),
            payout_token_decimals=int(_env("PAYOUT_TOKEN_DECIMALS", "18")),
            payout_confirmations=int(_env("PAYOUT_CONFIRMATIONS", "3")),
            payout_min_credits=int(_env("PAYOUT_MIN_CREDITS", "1000")),
            payout_daily_limit_credits=int(_env("PAYOUT_DAILY_LIMIT_CREDITS", "1000000")),
            payout_daily_total_credits=int(_env("PAYOUT_DAILY_TOTAL_CREDITS", "10000000")),
            treasury_low_credits=int(_env("TREASURY_LOW_CREDITS", "100000")),
            payout_address_delay_seconds=int(_env("PAYOUT_ADDRESS_DELAY_SECONDS", str(24 * 3600))),
            export_handover_margin_seconds=float(_env("EXPORT_HANDOVER_MARGIN_SECONDS", "60")),
            export_run_seconds=float(_env("EXPORT_RUN_SECONDS")) if _env("EXPORT_RUN_SECONDS") else None,
            export_compose_seconds=(float(_env("EXPORT_COMPOSE_SECONDS")) if _env("EXPORT_COMPOSE_SECONDS")
                                    else None),
            export_progress_seconds=(float(_env("EXPORT_PROGRESS_SECONDS")) if _env("EXPORT_PROGRESS_SECONDS")
                                     else None),
            upload_max_bytes=int(_env("UPLOAD_MAX_BYTES", str(2 * 1024 ** 3))),
            upload_max_outstanding=int(_env("UPLOAD_MAX_OUTSTANDING", "20")),
            upload_max_outstanding_bytes=int(_env("UPLOAD_MAX_OUTSTANDING_BYTES", str(20 * 1024 ** 3))),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings. Tests that change the environment call ``get_settings.cache_clear()``."""
    return Settings.from_env()


@dataclass(frozen=True)
class ChainTuning:
    """The indexer's optional tuning (docs/analytics.md); None: the indexer's own default."""

    confirmations: int | None
    chunk_blocks: int | None
    start_block: int | None
    backfill: int | None
    max_reorg_depth: int | None
    rpc_rate: float | None
    aggregate_workers: int  # aggregate updates in flight per block
    poll_seconds: float | None = None  # how often the head is looked at when nothing is new
    alert_at_tip: bool | None = None  # False: alerts only once confirmed (CHAIN_ALERT_AT_TIP=0)


def _optional(name: str, cast: type = int):
    value = _env(name)
    return cast(value) if value else None


def chain_tuning() -> ChainTuning:
    """Read at each use (not cached): the local stack sets these per chain before it starts the indexer."""
    return ChainTuning(
        confirmations=_optional("CHAIN_CONFIRMATIONS"),
        chunk_blocks=_optional("CHAIN_CHUNK_BLOCKS"),
        start_block=_optional("CHAIN_START_BLOCK"),
        backfill=_optional("CHAIN_BACKFILL_BLOCKS"),
        max_reorg_depth=_optional("CHAIN_MAX_REORG_DEPTH"),
        rpc_rate=_optional("CHAIN_RPC_RATE", float),
        aggregate_workers=int(_env("CHAIN_AGGREGATE_WORKERS", "8")),
        poll_seconds=_optional("CHAIN_POLL_SECONDS", float),
        alert_at_tip=(_env("CHAIN_ALERT_AT_TIP").lower() not in ("0", "false", "no")) if _env("CHAIN_ALERT_AT_TIP")
        else None,
    )


@dataclass(frozen=True)
class LocalOverrides:
    """What only the local stack and the tests set; a deployed function has none of them."""

    agent_dir: Path | None  # DEPU_AGENT_DIR: the agent sources to package (default: the checkout's agent/)
    dashboard_site_dir: Path | None  # DASHBOARD_SITE_DIR: the Mini App's files (default: web/dashboard/)
    agent_signing_key_file: Path | None  # DEPU_AGENT_SIGNING_KEY_FILE: the local stack's own signing key


AGENT_SIGNING_KEY_FILE_ENV = "DEPU_AGENT_SIGNING_KEY_FILE"


def local_overrides() -> LocalOverrides:
    """Read at each use (not cached): tests point these at a folder or key of their own."""

    def path(name: str) -> Path | None:
        value = _env(name)
        return Path(value) if value else None

    return LocalOverrides(
        agent_dir=path("DEPU_AGENT_DIR"),
        dashboard_site_dir=path("DASHBOARD_SITE_DIR"),
        agent_signing_key_file=path(AGENT_SIGNING_KEY_FILE_ENV),
    )
