"""/shadow_fork's developer tools through the bot's dispatcher against a real fork host: recent transactions
with "Why did it revert?" (decoded reason and call tree), Fund → token (ERC-20 by slot probing, and a clear
refusal for a rebasing token), and follow mode switched off and on."""
from __future__ import annotations

import re

import pytest
import requests
from web3 import Web3

from depu.forks.models import Fork
from forks_support import notices, wait_for
from test_forks_bot import OWNER, STRANGER, press
from test_forks_bot import send as send_text
from test_forks_debug import CALLER, DEV, REBASING, REBASING_CODE, REVERTER, bubbles_from, error_string, reverts_with
import test_forks_e2e

pytestmark = pytest.mark.e2e
mainnet = test_forks_e2e.mainnet
stack = test_forks_e2e.stack
HOLDER = "0x52908400098527886E0F7030069857D2E4169EE7"


def rpc(url: str, method: str, *params):
    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=30).json()
    assert "error" not in answer, answer
    return answer["result"]


def test_why_did_it_revert_fund_a_token_and_follow_mode_in_the_chat(stack):
    stack.start_host("bot-debug-host")
    created = press(OWNER, "sf:1:new:latest")
    url = re.search(r"(http\S+/rpc/dpf_\S+)", created.plain).group(1)
    fork_id = created.button_data[0].split(":")[-1]
    wait_for(lambda: Fork.get(fork_id).status == "active", 60, "active")
    notices(5)
    info = press(OWNER, f"sf:1:i:{fork_id}")
    assert "Follows mainnet: on" in info.plain and f"sf:1:follow:{fork_id}:off" in info.button_data
    assert f"sf:1:txs:{fork_id}" in info.button_data and f"sf:1:fundt:{fork_id}" in info.button_data

    # a reverting transaction: the recent list offers "Why did it revert?", which decodes it with its call tree
    rpc(url, "anvil_setCode", REVERTER, reverts_with(error_string("not enough collateral")))
    rpc(url, "anvil_setCode", CALLER, bubbles_from(REVERTER))
    rpc(url, "anvil_setBalance", DEV, hex(10**18))
    rpc(url, "eth_sendTransaction", {"from": DEV, "to": REVERTER, "value": "0x0", "gas": hex(100_000)})
    recent = press(OWNER, f"sf:1:txs:{fork_id}")
    why_button = next(data for data in recent.button_data if data.startswith(f"sf:1:why:{fork_id}:"))
    assert "✗ reverted" in recent.plain
    explained = press(OWNER, why_button)
    assert 'Error("not enough collateral")' in explained.plain and "Call tree" in explained.plain
    assert "CALL 0xf39f…2266→0x0000…00c1" in explained.plain
    assert "No such shadow fork" in press(STRANGER, why_button).text

    # Fund → token: a real ERC-20 gets the exact balance; a rebasing one is refused in words
    dusd = stack.mainnet.tokens["DUSD"].address
    assert "token's address" in press(OWNER, f"sf:1:fundt:{fork_id}").text
    funded = send_text(OWNER, f"{dusd} {HOLDER} 123456789")
    assert "now holds 123,456,789 units" in funded.plain
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    held = w3.eth.call({"to": dusd, "data": "0x70a08231" + "00" * 12 + HOLDER[2:].lower()})
    assert int.from_bytes(held, "big") == 123456789
    rpc(url, "anvil_setCode", REBASING, REBASING_CODE)
    press(OWNER, f"sf:1:fundt:{fork_id}")
    assert "rebasing or share-based" in send_text(OWNER, f"{Web3.to_checksum_address(REBASING)} {HOLDER} 5").text

    # follow mode off and on, per fork
    off = press(OWNER, f"sf:1:follow:{fork_id}:off")
    assert "Follows mainnet: off" in off.plain and Fork.get(fork_id).follow is False
    on = press(OWNER, f"sf:1:follow:{fork_id}:on")
    assert "Follows mainnet: on" in on.plain and Fork.get(fork_id).follow is True
