"""The Mini App in real headless Chromium shows why a fork's latest transaction reverted: the decoded reason
and the compact call tree, read from the fork's real anvil through the proxy (test_dashboard_browser's
driver, runtime and Telegram launch data)."""
from __future__ import annotations

import time

import pytest

from depu.dashboard import initdata
from depu.forks import chainids, proxy, tokens
from depu.forks.models import ACTIVE, Fork, utcnow_iso
from forks_support import Anvil
import test_dashboard_browser
from test_dashboard_browser import THEME, drive, launch_url
from test_forks_debug import CALLER, DEV, REVERTER, bubbles_from, error_string, reverts_with
from tests.conftest import TEST_BOT_TOKEN
from tests.dashboard_support import seed_profile, telegram_user

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
USER_ID = 5252
browser_ready = test_dashboard_browser.browser_ready  # the fixtures: Chromium installed, the local API runtime
local_api = test_dashboard_browser.local_api


def test_the_mini_app_shows_the_call_tree_of_a_reverted_transaction(browser_ready, local_api, tmp_path):
    host = Anvil()
    try:
        seed_profile(USER_ID, "Ada")
        _token, token_hash = tokens.issue("fork-ada-1", USER_ID, int(time.time()) + 3600)
        fork = Fork("fork-ada-1", user_id=USER_ID, chat_id=USER_ID, created_at=utcnow_iso(), status=ACTIVE,
                    host_rpc_url=host.url, rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600, base_block=0,
                    chain_id=chainids.for_fork("fork-ada-1"), host_agent_id="ag_x")
        fork.save()
        write = proxy.default_proxy().call
        for address, code in ((REVERTER, reverts_with(error_string("too little received"))), (CALLER, bubbles_from(REVERTER))):
            assert "error" not in write(fork, {"jsonrpc": "2.0", "id": 1, "method": "anvil_setCode", "params": [address, code]})
        sent = write(fork, {"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction",
                            "params": [{"from": DEV, "to": CALLER, "gas": hex(200_000)}]})
        assert sent["result"].startswith("0x")
        launch = initdata.build(telegram_user(USER_ID, "Ada"), TEST_BOT_TOKEN, auth_date=int(time.time()) - 5)
        seen = drive(tmp_path, [{"name": "forks", "url": launch_url(local_api, launch, THEME)}])["forks"]
    finally:
        host.stop()
    assert seen["ok"], seen
    assert f"why did {sent['result'][:10]}… revert? Error(\"too little received\")" in seen["forks"], seen["forks"]
    assert "CALL 0x0000…00c2→0x0000…00c1" in seen["forks"] and '✗ Error("too little received")' in seen["forks"]
    assert seen["scrollWidth"] <= seen["viewportWidth"] and not seen["consoleErrors"]
