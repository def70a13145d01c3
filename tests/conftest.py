"""Shared fixtures: one moto server per test session, resources created from template.yaml.

Every test that touches AWS gets a fresh, empty copy of the template's tables, queues, bucket, secrets and
state machines (the ``aws`` fixture), so tests are independent and cannot drift from the deployed stack.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "layers" / "depu", ROOT / "agent"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from local.moto_server import MotoServer  # noqa: E402
from local.provision import provision  # noqa: E402
from local.template import LocalTemplate  # noqa: E402

TEST_BOT_TOKEN = "123456:TEST-bot-token-not-a-secret"
TEST_WEBHOOK_SECRET = "test-webhook-secret-0123456789"

os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "DePU")
os.environ.setdefault("POWERTOOLS_DEV", "false")

# The tests' own agent signing key (never the checkout's .local one): the local agent API signs with it and the
# template's AgentSigningPublicKey (so /provider's pinned key) is its public half, as in the local stack.
_SIGNING_DIR = Path(tempfile.mkdtemp(prefix="depu-test-signing-"))
atexit.register(shutil.rmtree, _SIGNING_DIR, True)
os.environ["DEPU_AGENT_SIGNING_KEY_FILE"] = str(_SIGNING_DIR / "agent-signing-key.pem")
from local import signing_key as _signing_key  # noqa: E402

os.environ["AGENT_SIGNING_PUBLIC_KEY"] = _signing_key.load_or_create().public_key


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    template = LocalTemplate()
    os.environ.update(template.environment(server.endpoint))
    yield server
    server.stop()


@pytest.fixture
def bot_token() -> str:
    """The bot token the ``telegram`` fixture accepts (a module may override it)."""
    return TEST_BOT_TOKEN


@pytest.fixture
def telegram(bot_token):
    """The Telegram stand-in (local/telegram_standin) as the Bot API: it records every call (``calls``,
    ``calls_of``, ``texts``) and takes scripted failures (``fail_next``) and files (``add_file``)."""
    from telegram_harness import bot_api_double

    standin = bot_api_double(bot_token)
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def aws(moto_server):
    """A fresh copy of template.yaml's stateful resources in moto; returns the moto server."""
    from depu.config import get_settings

    moto_server.reset()
    provision(LocalTemplate(), moto_server.endpoint, bot_token=TEST_BOT_TOKEN, webhook_secret=TEST_WEBHOOK_SECRET)
    get_settings.cache_clear()
    yield moto_server
    get_settings.cache_clear()


def _stage(monkeypatch, stage: str):
    from depu.config import get_settings

    monkeypatch.setenv("STAGE", stage)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def production(monkeypatch):
    """Outside the local stack: host URLs must be https and public, host links TLS with a pin."""
    yield from _stage(monkeypatch, "prod")


@pytest.fixture
def local_stage(monkeypatch):
    """The local stack's rules (plain http on loopback allowed)."""
    yield from _stage(monkeypatch, "local")
