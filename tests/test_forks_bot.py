"""/shadow_fork through the bot's dispatcher against a running fork host: the menu, creation, info, funding
(with address validation), snapshots, ownership and deletion, checked on the fork itself with web3.py."""
from __future__ import annotations

import re

import pytest
import requests
from web3 import Web3

from depu.bot.dispatch import dispatch
from depu.bot.registry import Incoming
from depu.forks import chainids
from depu.forks.models import Fork
from depu.bot.sections import render_sections
from forks_support import approved_host_item, notices, wait_for
from recording_chat import RecordingChat
from test_forks_e2e import mainnet, stack  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e
OWNER, STRANGER = 5151, 6161
ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55's own all-caps checksum example


def new_chat() -> RecordingChat:
    """Forks send no photos or documents: either fails the test."""
    return RecordingChat(allow_photos=False, allow_documents=False)


def send(user: int, text: str = "", command: str | None = None, args: str = "") -> RecordingChat:
    chat = new_chat()
    incoming = Incoming(update_id=1, user_id=user, chat_id=user, chat_type="private", text=text, command=command,
                        args=args, message_id=3, first_name="Ada")
    dispatch(incoming, chat, correlation_id="test")
    return chat


def press(user: int, data: str) -> RecordingChat:
    chat = new_chat()
    incoming = Incoming(update_id=2, user_id=user, chat_id=user, chat_type="private", callback_id="cb", callback_data=data,
                        message_id=4, first_name="Ada")
    dispatch(incoming, chat, correlation_id="test")
    return chat


def test_the_shadow_fork_menu_end_to_end(stack):
    stack.start_host("bot-host")
    menu = send(OWNER, "/shadow_fork", command="shadow_fork")
    assert "0 of 3 live forks" in menu.text and menu.button_data == ["sf:1:new:latest", "sf:1:new:ask", "sf:1:new:mainnet"]

    created = press(OWNER, "sf:1:new:latest")
    url = re.search(r"(http\S+/rpc/dpf_\S+)", created.plain).group(1)
    fork_id = created.button_data[0].split(":")[-1]
    wait_for(lambda: Fork.get(fork_id).status == "active", 60, "active")
    notices(5)
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))

    chain_id = chainids.for_fork(fork_id)
    assert f"Chain id: {chain_id} " in created.plain and "valid on Ethereum mainnet" not in created.plain
    assert w3.eth.chain_id == chain_id
    info = press(OWNER, f"sf:1:i:{fork_id}")
    assert "— active" in info.text and "Journal: 0 entries" in info.text and "blocks behind mainnet" in info.text
    assert f"Chain id: {chain_id} (this fork's own" in info.plain
    assert f"sf:1:fund:{fork_id}" in info.button_data and f"sf:1:del:{fork_id}" in info.button_data
    # another user cannot open, fund or delete it
    for data in (f"sf:1:i:{fork_id}", f"sf:1:fund:{fork_id}", f"sf:1:delok:{fork_id}"):
        assert "No such shadow fork" in press(STRANGER, data).text

    assert "Send the address to fund" in press(OWNER, f"sf:1:fund:{fork_id}").text
    assert "is not an Ethereum address" in send(OWNER, "0x1234 5").text
    bad_checksum = ADDRESS[:-2] + "e7"  # one letter of the checksum flipped
    assert "is not an Ethereum address" in send(OWNER, f"{bad_checksum} 5").text
    assert "amount must be" in send(OWNER, f"{ADDRESS} -3").text
    funded = send(OWNER, f"{ADDRESS.lower()} 2.5")  # the flow survived the mistakes
    assert f"{ADDRESS} now holds 2.500000 ETH" in funded.plain
    assert w3.eth.get_balance(ADDRESS) == 25 * 10**17

    snap = press(OWNER, f"sf:1:snap:{fork_id}")
    snapshot_id = re.search(r"Snapshot (0x[0-9a-f]+) ", snap.plain).group(1)
    press(OWNER, f"sf:1:fund:{fork_id}")
    send(OWNER, f"{ADDRESS} 1")
    assert w3.eth.get_balance(ADDRESS) == 35 * 10**17
    press(OWNER, f"sf:1:rev:{fork_id}")
    assert "reverted" in send(OWNER, snapshot_id).text
    assert w3.eth.get_balance(ADDRESS) == 25 * 10**17
    assert "Journal: 1 entries" in press(OWNER, f"sf:1:i:{fork_id}").text

    assert ("Shadow forks", f"1 of 3 live: {fork_id} (active)") in render_sections(OWNER)

    confirm = press(OWNER, f"sf:1:del:{fork_id}")
    assert confirm.button_data == [f"sf:1:delok:{fork_id}", f"sf:1:i:{fork_id}"]
    assert "Deleting" in press(OWNER, f"sf:1:delok:{fork_id}").text
    assert requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=10).status_code == 401
    wait_for(lambda: Fork.get(fork_id).status == "deleted", 30, "deleted")


def test_a_bad_block_number_is_a_clear_error_and_keeps_the_question_open(stack):
    approved_host_item("ag_idle_host")  # a fork is assigned to an approved host when created (none claims here)
    assert "Send the mainnet block number" in press(OWNER, "sf:1:new:ask").text
    head = stack.mainnet.block_number()
    assert f"mainnet is at block {head}" in send(OWNER, str(head + 1000)).text
    assert "positive block number" in send(OWNER, "yesterday").text
    created = send(OWNER, str(head - 1))
    assert f"from {head - 1}" in created.text


def test_keeping_mainnets_chain_id_is_an_explicit_choice_behind_a_warning(stack):
    approved_host_item("ag_idle_host")  # a fork is assigned to an approved host when created (none claims here)
    warned = press(OWNER, "sf:1:new:mainnet")
    assert "valid on Ethereum mainnet" in warned.text and list(Fork.scan()) == []  # nothing created yet
    assert warned.button_data == ["sf:1:newmainnet", "sf:1:new:latest"]
    kept = press(OWNER, "sf:1:newmainnet")
    fork_id = kept.button_data[0].split(":")[-1]
    assert Fork.get(fork_id).chain_id == 1
    assert "Chain id: 1 (mainnet's)" in kept.plain and "could broadcast it there for real" in kept.plain
    assert "Chain id: 1 (mainnet's)" in press(OWNER, f"sf:1:i:{fork_id}").plain
    # by command: only with the explicit word, and the warning comes with it
    by_command = send(OWNER, "/shadow_fork latest keep-chain-id", command="shadow_fork", args="latest keep-chain-id")
    assert "could broadcast it there for real" in by_command.text
    assert Fork.get(by_command.button_data[0].split(":")[-1]).chain_id == 1
    plain = send(OWNER, "/shadow_fork latest", command="shadow_fork", args="latest")
    assert chainids.is_forks(Fork.get(plain.button_data[0].split(":")[-1]).chain_id) and "could broadcast" not in plain.text
