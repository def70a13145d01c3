"""Abuse: one user reaching for another's jobs, forks and exports through the bot, and one provider's agent
reaching for another agent's job through the agent API. Everything goes through the real handlers (the
Telegram webhook with the real feature set, the agent API) against moto; "nothing changed" is a full scan of
every table and the bucket before and after.
"""
from __future__ import annotations

import json
import time

import boto3
import pytest

from depu.config import get_settings
from proof_support import button, diff, invoke, message, snapshot, webhook_event, webhook  # noqa: F401 - fixtures
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, register_agent, run_matcher, submit_job
from local.telegram_standin import TelegramStandIn

VICTIM = USER_ID
STRANGER = 6161


def victims_fork(fork_id: str = "fvictim1") -> str:
    """A live fork of the victim's (as the create flow leaves it), with its RPC token issued."""
    from depu.forks import tokens
    from depu.forks.models import ACTIVE, Fork, utcnow_iso

    now = int(time.time())
    _, token_hash = tokens.issue(fork_id, VICTIM, now + 3600)
    Fork(fork_id, user_id=VICTIM, chat_id=VICTIM, created_at=utcnow_iso(), status=ACTIVE,
         host_rpc_url="http://127.0.0.1:9", rpc_token_hash=token_hash, expires_at=now + 3600, base_block=1,
         chain_id=1, host_agent_id="ag_victimhost").save()
    return fork_id


def texts_to(telegram: TelegramStandIn, chat_id: int) -> list[str]:
    sent = [call.params.get("text", "") for call in telegram.calls if call.method in ("sendMessage", "editMessageText")
            and int(call.params.get("chat_id", 0)) == chat_id]
    alerts = [call.params.get("text", "") or "" for call in telegram.calls_of("answerCallbackQuery")]
    return sent + alerts


def test_another_users_job_and_fork_ids_are_refused_and_nothing_changes(webhook, telegram):
    ensure_user(VICTIM, credits=5000)
    job = submit_job(VICTIM)
    fork_id = victims_fork()
    next_id = iter(range(9000, 10000))
    assert invoke(webhook, webhook_event(json.dumps(message(next(next_id), STRANGER, "/start"))))[0] == 200
    before = snapshot(exclude=("Idempotency",))
    telegram.calls.clear()

    from depu.jobs.messages import cancel_button

    attempts = [
        message(next(next_id), STRANGER, f"/cancel {job.job_id}"),
        button(next(next_id), STRANGER, cancel_button(job.job_id)["data"]),
    ] + [
        button(next(next_id), STRANGER, f"sf:1:{action}")
        for action in (f"i:{fork_id}", f"del:{fork_id}", f"delok:{fork_id}", f"url:{fork_id}", f"sync:{fork_id}",
                       f"auto:{fork_id}:on", f"auto:{fork_id}:off", f"snap:{fork_id}", f"fund:{fork_id}",
                       f"imp:{fork_id}", f"rev:{fork_id}")
    ]
    for update in attempts:
        status, body = invoke(webhook, webhook_event(json.dumps(update)))
        assert status == 200, (update, body)  # accepted (Telegram must not retry), and refused in the chat

    assert diff(before, snapshot(exclude=("Idempotency",))) == {}
    said = texts_to(telegram, STRANGER)
    assert any("No such job of yours" in text for text in said), said
    assert sum("No such shadow fork" in text for text in said) >= 11, said
    for text in said:  # nothing of the victim's leaks into the stranger's chat
        assert "rpc/" not in text and str(VICTIM) not in text
    assert not [call for call in telegram.calls if int(call.params.get("chat_id", STRANGER) or STRANGER) == VICTIM]


def test_exports_are_addressed_by_the_senders_own_id(webhook, telegram):
    """No command takes an export id: a request carries the sender's user id, and its S3 key is under
    exports/<that id>/, so a stranger cannot name someone else's export."""
    invoke(webhook, webhook_event(json.dumps(message(9100, STRANGER, f"/export transfers 1-2 csv"))))
    queue = get_settings().export_queue_url
    received = boto3.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert len(received) == 1
    from depu.analytics.export import ExportRequest

    request = ExportRequest.from_json(received[0]["Body"])
    assert request.user_id == STRANGER and request.chat_id == STRANGER
    assert request.key.startswith(f"exports/{STRANGER}/")


# ---------------------------------------------------------------- agents of other providers
@pytest.fixture
def two_agents(aws):
    api = AgentApi()
    ensure_user(VICTIM, credits=5000)
    owner = register_agent(api, enrol_provider(7001), name="owner")
    thief = register_agent(api, enrol_provider(7002), name="thief")
    job = submit_job(VICTIM)
    run_matcher()
    status, offer = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, owner["agent_token"])
    if status == 204:  # the matcher may have offered it to the other agent: claim with whoever got it
        owner, thief = thief, owner
        status, offer = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, owner["agent_token"])
    assert status == 200 and offer["job"]["job_id"] == job.job_id
    return api, owner, thief, job


def test_an_agent_of_another_provider_cannot_touch_the_job(two_agents):
    api, owner, thief, job = two_agents
    before = snapshot()
    calls = [
        (f"/agent/jobs/{job.job_id}/progress", {"progress": 0.9, "message": "stolen"}),
        (f"/agent/jobs/{job.job_id}/logs", {"seq": 0, "lines": ["stolen"]}),
        (f"/agent/jobs/{job.job_id}/artifacts", {"name": "loot.bin", "size": 10}),
        (f"/agent/jobs/{job.job_id}/complete", {"result": {"loot": 1}, "artifacts": []}),
        (f"/agent/jobs/{job.job_id}/fail", {"error": "sabotage", "retryable": False}),
    ]
    for path, body in calls:
        assert api.call(path, body, thief["agent_token"]) == (404, {"error": "not found"}), path
    # a second claim by the thief does not get the running job either
    assert api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, thief["agent_token"])[0] == 204
    # releasing someone else's job is a no-op
    status, answer = api.call("/agent/release", {"job_ids": [job.job_id]}, thief["agent_token"])
    assert status == 200 and answer["released"] in ([], 0)
    changed = diff(before, snapshot())
    # only the thief's own agent row may move (its last claim time); the job, ledger and bucket are untouched
    assert set(changed) <= {"depu-AgentsTable"}, changed
    for added in changed.get("depu-AgentsTable", {}).get("added", []):
        assert thief["agent_id"] in added
    for path, body in calls:  # the owner can still do all of it afterwards
        if path.endswith(("/fail", "/artifacts")):
            continue
        assert api.call(path, body, owner["agent_token"])[0] == 200, path


def test_a_forged_or_other_kind_of_token_is_401(two_agents):
    """Tokens of the wrong kind: a provider's enrolment token, a fork RPC token, a dashboard session."""
    api, owner, thief, job = two_agents
    from depu.dashboard import sessions
    from depu.forks import tokens as fork_tokens

    enrolment = enrol_provider(7003)
    fork_token, _ = fork_tokens.issue("fsome", VICTIM, int(time.time()) + 3600)
    session_token, _ = sessions.open_session(VICTIM)
    before = snapshot()
    for token in (enrolment, fork_token, session_token, owner["agent_token"].upper(), owner["agent_token"][:-2]):
        for path in ("/agent/heartbeat", "/agent/claim", f"/agent/jobs/{job.job_id}/complete"):
            assert api.call(path, {"result": {}}, token) == (401, {"error": "unauthorized"}), (path, token[:6])
    assert diff(before, snapshot()) == {}


# ---------------------------------------------------------------- fork hosts
@pytest.mark.e2e
def test_a_fork_host_refuses_calls_that_bypass_the_proxy():
    """A stranger who found the fork's advertised port gets 401 for an admin method the proxy would refuse,
    and anvil is not listening on that address at all; the same call with the fork's host secret (what the
    proxy presents) is obeyed."""
    import requests as http

    from depu_agent.forkhost import AnvilFork
    from forks_support import ANVIL, Anvil

    upstream = Anvil()
    fork = None
    account = "0x" + "11" * 20
    set_balance = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance", "params": [account, "0xde0b6b3a7640000"]}
    get_balance = {"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance", "params": [account, "latest"]}
    try:
        # advertised on 127.0.0.2 (loopback, but not the address anvil binds): as a public address would be
        fork = AnvilFork(ANVIL, upstream.url, 0, "127.0.0.2", "http://127.0.0.2", secret="s3cret-of-this-fork",
                         chain_id=73570000000003)
        fork.wait_ready()
        assert fork.rpc_url == f"http://127.0.0.2:{fork.port}"
        refused = http.post(fork.rpc_url, json=set_balance, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == -32001, refused.text
        with pytest.raises(http.ConnectionError):  # anvil itself answers on 127.0.0.1 only
            http.post(f"http://127.0.0.2:{fork.anvil_port}", json=set_balance, timeout=5)
        assert fork.value("eth_getBalance", [account, "latest"]) == "0x0"  # the refused call changed nothing

        with_secret = {"Authorization": "Bearer s3cret-of-this-fork"}
        assert http.post(fork.rpc_url, json=set_balance, headers=with_secret, timeout=10).json()["result"] is None
        answer = http.post(fork.rpc_url, json=get_balance, headers=with_secret, timeout=10).json()
        assert answer["result"] == "0xde0b6b3a7640000", answer
    finally:
        if fork is not None:
            fork.stop()
        upstream.stop()
