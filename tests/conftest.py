"""Shared fixtures: one moto server per test session, resources created from template.yaml.

Every test that touches AWS gets a fresh, empty copy of the template's tables, queues, bucket, secrets and
state machines (the ``aws`` fixture), so tests are independent and cannot drift from the deployed stack.
"""
from __future__ import annotations

import os
import sys
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


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    template = LocalTemplate()
    os.environ.update(template.environment(server.endpoint))
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server):
    """A fresh copy of template.yaml's stateful resources in moto; returns the moto server."""
    from depu.config import get_settings

    moto_server.reset()
    provision(LocalTemplate(), moto_server.endpoint, bot_token=TEST_BOT_TOKEN, webhook_secret=TEST_WEBHOOK_SECRET)
    get_settings.cache_clear()
    yield moto_server
    get_settings.cache_clear()
