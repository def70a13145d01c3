"""Abuse: agent and enrolment tokens in the wrong hands (docs/security.md, "Provider tokens").

Each test performs the attack through the real agent API handler (functions/agent_api/app.py), the real
/provider bot handlers and the real operator script, against moto, and shows that it fails. Time passing is
what the stored deadlines say, so a test that needs "later" moves a stored deadline into the past (exactly
what the clock would do) instead of sleeping for 30 days.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from proof_support import diff, snapshot
from recording_chat import RecordingChat
from rental_helpers import (
    CPU_BENCHMARK,
    PROVIDER_ID,
    USER_ID,
    AgentApi,
    enrol_provider,
    ensure_user,
    register_agent,
    run_matcher,
    submit_job,
)

ROOT = Path(__file__).resolve().parent.parent
UNAUTHORIZED = (401, {"error": "unauthorized"})
OTHER_PROVIDER = 7002


def heartbeat(api: AgentApi, token: str) -> tuple[int, object]:
    return api.call("/agent/heartbeat", {"running_jobs": [], "free_gpus": [0]}, token)


def every_route_refuses(api: AgentApi, token: str, job_id: str = "jnothing") -> None:
    """The token gets 401 on every authenticated route, and nothing is read or written."""
    before = snapshot(exclude=("Idempotency",))
    for path, body in (
        ("/agent/heartbeat", {"running_jobs": [job_id], "free_gpus": [0]}),
        ("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}),
        ("/agent/token/renew", {}),
        (f"/agent/jobs/{job_id}/progress", {"progress": 0.5}),
        (f"/agent/jobs/{job_id}/logs", {"seq": 0, "lines": ["x"]}),
        (f"/agent/jobs/{job_id}/artifacts", {"name": "a.bin", "size": 1}),
        (f"/agent/jobs/{job_id}/complete", {"result": {}}),
        (f"/agent/jobs/{job_id}/fail", {"error": "x"}),
        ("/agent/release", {"job_ids": [job_id]}),
    ):
        assert api.call(path, body, token) == UNAUTHORIZED, path
    assert api.call("/agent/forks/claim", {"wait": 0, "running": []}, token)[0] == 401
    assert diff(before, snapshot(exclude=("Idempotency",))) == {}


def run_button(incoming, chat) -> str:  # noqa: ANN001
    """A button press through the bot's dispatcher, as the webhook runs it."""
    from depu.bot.dispatch import dispatch

    return dispatch(incoming, chat, correlation_id="test")


def press(data: str, user_id: int) -> object:
    from depu.bot.registry import Incoming

    return Incoming(update_id=2, user_id=user_id, chat_id=user_id, chat_type="private", callback_id="cb",
                    callback_data=data, message_id=9, first_name="Ada")


def provider_command(user_id: int) -> object:
    from depu.bot.registry import Incoming

    return Incoming(update_id=1, user_id=user_id, chat_id=user_id, chat_type="private", text="/provider",
                    command="provider", args="", message_id=5, first_name="Ada")


def agent_item(agent_id: str):
    from depu.agents.registry import Agent

    return Agent.get(agent_id, consistent_read=True)


# ---------------------------------------------------------------- revocation
@pytest.fixture
def running_rig(aws):
    """A provider's machine running a user's job; a thief has copied its agent token."""
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    rig = register_agent(api, enrol_provider(PROVIDER_ID), name="basement-rig")
    job = submit_job()
    run_matcher()
    assert api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, rig["agent_token"])[0] == 200
    return api, rig, job


def test_a_stolen_token_is_401_at_once_after_its_provider_revokes_the_machine(running_rig):
    from depu.bot import rental
    from depu.jobs.models import Job

    api, rig, job = running_rig
    stolen = rig["agent_token"]
    assert heartbeat(api, stolen)[0] == 200  # the thief is, for now, that agent

    chat = RecordingChat(require_text=True)
    rental.provider(provider_command(PROVIDER_ID), chat)
    revoke = chat.button("Revoke basement-rig")
    run_button(press(revoke, PROVIDER_ID), chat)  # the first press only asks
    assert "Revoke basement-rig?" in chat.plain
    assert heartbeat(api, stolen)[0] == 200 and agent_item(rig["agent_id"]).revoked_at is None
    run_button(press(chat.button("Yes, revoke"), PROVIDER_ID), chat)
    assert "is revoked" in chat.text and "1 of its jobs went back to the queue" in chat.text

    every_route_refuses(api, stolen, job.job_id)  # the very next request, on every route
    requeued = Job.get(job.job_id, consistent_read=True)
    assert requeued.status == "queued" and requeued.agent_id is None and int(requeued.attempt) == 0
    assert agent_item(rig["agent_id"]).busy == 0

    # the revoked machine is never given work again, even with a fresh heartbeat written behind our back
    from depu.agents.registry import Agent

    Agent(rig["agent_id"]).update(actions=[Agent.last_seen_at.set(int(time.time()))])
    run_matcher()
    assert Job.get(job.job_id, consistent_read=True).agent_id is None

    # pressing the old confirmation again changes nothing; /provider shows it revoked, without a button
    run_button(press(revoke.replace(":rv:", ":rvok:"), PROVIDER_ID), chat)
    assert chat.answers[-1][0] == "Already revoked."
    chat = RecordingChat(require_text=True)
    rental.provider(provider_command(PROVIDER_ID), chat)
    assert "⛔ revoked" in chat.text and "Revoke basement-rig" not in chat.button_labels


def test_a_provider_cannot_revoke_someone_elses_machine(running_rig):
    from depu.bot import rental
    from depu.conversation import encode

    api, rig, _ = running_rig
    ensure_user(OTHER_PROVIDER)
    chat = RecordingChat(require_text=True)
    before = snapshot(exclude=("Idempotency",))
    for action in ("rv", "rvok"):
        run_button(press(encode(rental.PROVIDER_PREFIX, action, rig["agent_id"]), OTHER_PROVIDER), chat)
        assert chat.answers[-1] == ("That machine is not one of yours. Send /provider again.", True)
    run_button(press(encode(rental.PROVIDER_PREFIX, "rvok", "ag_doesnotexist"), OTHER_PROVIDER), chat)
    assert chat.answers[-1][1] is True
    assert diff(before, snapshot(exclude=("Idempotency",))) == {}
    assert heartbeat(api, rig["agent_token"])[0] == 200


def test_an_operator_revokes_any_agent_with_the_script_against_the_local_stack(running_rig, aws):
    api, rig, job = running_rig
    other = register_agent(api, enrol_provider(OTHER_PROVIDER), name="other")
    third = register_agent(api, enrol_provider(OTHER_PROVIDER), name="third")
    env = {key: value for key, value in os.environ.items() if not key.endswith("_TABLE")}
    script = [sys.executable, str(ROOT / "scripts" / "revoke_agent.py"), "--local", aws.endpoint]

    done = subprocess.run(script + [rig["agent_id"]], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{rig['agent_id']}: revoked; requeued {job.job_id}"
    every_route_refuses(api, rig["agent_token"], job.job_id)
    assert heartbeat(api, other["agent_token"])[0] == 200  # only the named agent

    done = subprocess.run(script + ["--provider", str(OTHER_PROVIDER)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert heartbeat(api, other["agent_token"]) == UNAUTHORIZED and heartbeat(api, third["agent_token"]) == UNAUTHORIZED

    again = subprocess.run(script + [rig["agent_id"], "ag_nosuchagent"], capture_output=True, text=True, timeout=120,
                           env=env)
    assert again.returncode == 1 and "already revoked" in again.stdout and "ag_nosuchagent: not found" in again.stdout
    assert subprocess.run(script, capture_output=True, text=True, timeout=60, env=env).returncode == 2


# ---------------------------------------------------------------- expiry and renewal
def test_an_expired_agent_token_is_401(aws):
    from depu.agents import tokens

    api = AgentApi()
    rig = register_agent(api, enrol_provider(), name="rig")
    record = tokens.TokenRecord.get(tokens.hash_token(rig["agent_token"]))
    assert abs(int(record.expires_at) - (time.time() + tokens.AGENT_TOKEN_TTL_SECONDS)) < 60
    assert rig["token_expires_in"] == tokens.AGENT_TOKEN_TTL_SECONDS == 30 * 24 * 3600
    assert heartbeat(api, rig["agent_token"])[0] == 200

    record.update(actions=[tokens.TokenRecord.expires_at.set(int(time.time()) - 1)])  # 30 days later
    every_route_refuses(api, rig["agent_token"])


def test_a_token_from_before_expiry_existed_expires_from_its_creation(aws):
    """An item written before tokens expired has no expires_at: it is not immortal, it counts from created_at."""
    from depu.agents import tokens

    api = AgentApi()
    rig = register_agent(api, enrol_provider(), name="old-rig")
    record = tokens.TokenRecord.get(tokens.hash_token(rig["agent_token"]))
    record.update(actions=[tokens.TokenRecord.expires_at.remove(),
                           tokens.TokenRecord.created_at.set(int(time.time()) - tokens.AGENT_TOKEN_TTL_SECONDS + 3600)])
    assert heartbeat(api, rig["agent_token"])[1]["renew_token"] is True  # an hour left: renew now
    record.update(actions=[tokens.TokenRecord.created_at.set(int(time.time()) - tokens.AGENT_TOKEN_TTL_SECONDS - 1)])
    assert heartbeat(api, rig["agent_token"]) == UNAUTHORIZED


def test_a_renewed_token_works_and_the_old_one_stops_after_the_overlap(aws):
    from depu.agents import tokens
    from depu.agents.registry import Agent

    api = AgentApi()
    rig = register_agent(api, enrol_provider(), name="rig")
    old = rig["agent_token"]
    assert heartbeat(api, old)[1]["renew_token"] is False  # 30 days left: no need yet
    tokens.TokenRecord(tokens.hash_token(old)).update(
        actions=[tokens.TokenRecord.expires_at.set(int(time.time()) + 6 * 24 * 3600)])
    assert heartbeat(api, old)[1]["renew_token"] is True  # under a week left

    status, renewed = api.call("/agent/token/renew", {}, old)
    assert status == 200 and renewed["agent_token"] != old and renewed["agent_token"].startswith("depa_")
    assert renewed["overlap_seconds"] == tokens.AGENT_TOKEN_OVERLAP_SECONDS == 600
    assert abs(renewed["expires_in"] - tokens.AGENT_TOKEN_TTL_SECONDS) < 5
    fresh = renewed["agent_token"]
    status, answer = heartbeat(api, fresh)
    assert status == 200 and answer["renew_token"] is False
    assert heartbeat(api, old)[0] == 200  # requests in flight with the old token still land
    item = agent_item(rig["agent_id"])
    assert abs(int(item.previous_token_until) - (time.time() + 600)) < 5

    Agent(rig["agent_id"]).update(actions=[Agent.previous_token_until.set(int(time.time()) - 1)])  # 10 min later
    every_route_refuses(api, old)
    assert heartbeat(api, fresh)[0] == 200


def test_a_renewal_whose_answer_was_lost_leaves_one_live_token(aws):
    """The agent retries with the old token within the overlap: it gets another fresh token and the one it
    never saw is dead, so a renewal never leaves an extra live token behind."""
    api = AgentApi()
    rig = register_agent(api, enrol_provider(), name="rig")
    old = rig["agent_token"]
    lost = api.call("/agent/token/renew", {}, old)[1]["agent_token"]
    status, again = api.call("/agent/token/renew", {}, old)
    assert status == 200
    assert heartbeat(api, lost) == UNAUTHORIZED
    assert heartbeat(api, again["agent_token"])[0] == 200 and heartbeat(api, old)[0] == 200


def test_a_thief_renewing_a_stolen_token_locks_the_owner_out_visibly_and_revocation_ends_both(running_rig):
    """A bearer token cannot tell its owner from a thief; what renewal guarantees is that the two cannot both
    keep a token: after the overlap the owner's stops (it exits on 401, its provider sees it offline), and one
    revocation ends every token of the agent."""
    from depu.agents import revocation
    from depu.agents.registry import Agent

    api, rig, _ = running_rig
    owners = rig["agent_token"]
    thiefs = api.call("/agent/token/renew", {}, owners)[1]["agent_token"]
    Agent(rig["agent_id"]).update(actions=[Agent.previous_token_until.set(int(time.time()) - 1)])
    assert heartbeat(api, owners) == UNAUTHORIZED and api.call("/agent/token/renew", {}, owners) == UNAUTHORIZED
    assert revocation.revoke(rig["agent_id"], by="operator").outcome == revocation.REVOKED
    assert heartbeat(api, thiefs) == UNAUTHORIZED


def test_the_agent_renews_its_token_when_the_heartbeat_asks_and_stores_it_private(aws, tmp_path, monkeypatch):
    """The real daemon's heartbeat against the real handler: the new token is written with mode 600, the
    client switches to it, and the API takes it."""
    from depu.agents import tokens
    from depu_agent import daemon
    from depu_agent.config import load_config

    api = AgentApi()
    rig = register_agent(api, enrol_provider(), name="rig", gpus=[], benchmark=CPU_BENCHMARK)
    config = load_config(None, environ={}, agent_token_file=str(tmp_path / "agent_token"), work_dir=str(tmp_path / "w"),
                         capabilities=["fork_host"], verify=False)
    config.write_token(rig["agent_token"])

    class InProcessClient:
        """depu_agent.api.ApiClient's interface over the real handler (no HTTP server needed)."""

        def __init__(self, token: str) -> None:
            self.token, self.has_token = token, True

        def set_token(self, token: str) -> None:
            self.token = token

        def post(self, path, json=None, timeout=None, attempts=None):
            return api.call(path, json or {}, self.token)

    client = InProcessClient(rig["agent_token"])
    agent = daemon.Agent(config, api=client, fault=None)
    agent.heartbeat()
    assert config.read_token() == rig["agent_token"]  # nothing to do yet
    tokens.TokenRecord(tokens.hash_token(rig["agent_token"])).update(
        actions=[tokens.TokenRecord.expires_at.set(int(time.time()) + 3600)])
    agent.heartbeat()
    stored = config.read_token()
    assert stored != rig["agent_token"] and client.token == stored
    assert stat.S_IMODE(os.stat(config.agent_token_file).st_mode) == 0o600
    assert heartbeat(api, stored)[0] == 200


# ---------------------------------------------------------------- enrolment tokens
def test_one_enrolment_token_registers_one_machine(aws):
    api = AgentApi()
    token = enrol_provider()
    register_agent(api, token, name="first")
    before = snapshot(exclude=("Idempotency",))
    status, answer = api.call("/agent/register", {"provider_token": token, "name": "second", "gpus": [],
                                                  "benchmark": CPU_BENCHMARK})
    assert (status, answer) == UNAUTHORIZED
    assert diff(before, snapshot(exclude=("Idempotency",))) == {}


def test_two_registrations_racing_with_one_enrolment_token_yield_one_agent(aws):
    from depu.agents.registry import Agent

    api = AgentApi()
    token = enrol_provider()
    racers = 8
    start = threading.Barrier(racers)
    answers: list[tuple[int, object]] = []

    def race(index: int) -> None:
        start.wait()
        answers.append(api.call("/agent/register", {"provider_token": token, "name": f"racer-{index}", "gpus": [],
                                                    "benchmark": CPU_BENCHMARK}))

    threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(status for status, _ in answers) == [201] + [401] * (racers - 1), answers
    agents = list(Agent.scan())
    assert len(agents) == 1 and agents[0].agent_id == next(body["agent_id"] for status, body in answers if status == 201)


def test_a_malformed_registration_does_not_use_up_the_enrolment_token(aws):
    api = AgentApi()
    token = enrol_provider()
    status, answer = api.call("/agent/register", {"provider_token": token, "name": "", "gpus": [], "benchmark": {}})
    assert status == 400 and "name" in answer["error"]
    assert api.call("/agent/register", {"provider_token": token, "name": "rig", "gpus": "many", "benchmark": {}})[0] == 400
    register_agent(api, token, name="rig")  # still good for its one machine


def test_provider_says_the_token_is_for_one_machine(aws):
    from depu.bot import rental

    ensure_user(PROVIDER_ID)
    chat = RecordingChat(require_text=True)
    rental.provider(provider_command(PROVIDER_ID), chat)
    assert "for one machine only" in chat.text and "reusable" not in chat.text
