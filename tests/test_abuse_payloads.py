"""Abuse: forged and replayed webhooks, and oversized or malformed payloads on every public route (the
Telegram webhook, the agent API, the fork RPC proxy, the dashboard API). Each gets a clear 4xx answer with a
JSON error (JSON-RPC error objects on the RPC route) and the stored state does not move: a full scan of every
table and the bucket is equal before and after.
"""
from __future__ import annotations

import base64
import json
import time

import pytest

from conftest import TEST_WEBHOOK_SECRET
from forks_support import rpc_event
from proof_support import diff, invoke, message, snapshot, webhook_event, webhook  # noqa: F401 - fixtures
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, register_agent, run_matcher, submit_job
from telegram_harness import api_event, load_function

MEGABYTE = 1024 * 1024


def assert_json_error(status: int, body, expected: set[int]) -> None:
    assert status in expected, (status, body)
    assert isinstance(body, dict), body
    assert any(key in body for key in ("error", "message")), body


# ---------------------------------------------------------------- webhook: forged and replayed
FORGED_HEADERS = [
    {},  # no secret at all
    {"X-Telegram-Bot-Api-Secret-Token": ""},
    {"X-Telegram-Bot-Api-Secret-Token": "guess"},
    {"X-Telegram-Bot-Api-Secret-Token": TEST_WEBHOOK_SECRET.upper()},
    {"X-Telegram-Bot-Api-Secret-Token": " " + TEST_WEBHOOK_SECRET},
    {"X-Telegram-Bot-Api-Secret-Token": TEST_WEBHOOK_SECRET + "\x00"},
    {"X-Telegram-Bot-Api-Secret-Token": "é" * 30},  # non-ASCII: must not crash the constant-time compare
    {"Authorization": f"Bearer {TEST_WEBHOOK_SECRET}"},  # right value, wrong header
    {"X-Telegram-Bot-Api-Secret": TEST_WEBHOOK_SECRET},
]


@pytest.mark.parametrize("headers", FORGED_HEADERS, ids=range(len(FORGED_HEADERS)))
def test_forged_webhook_calls_are_401_and_change_nothing(webhook, telegram, headers):
    before = snapshot()
    update = message(500, USER_ID, "/start")
    status, body = invoke(webhook, webhook_event(json.dumps(update), secret=None, headers=headers))
    assert (status, body) == (401, {"ok": False, "message": "unauthorized"})
    assert diff(before, snapshot()) == {}
    assert telegram.calls == []


def test_a_replayed_update_is_processed_once_even_with_a_different_body(webhook, telegram):
    """A captured update sent again (by Telegram's retry or by someone holding the secret) runs once; an
    attacker who swaps the text under the same update_id gets the stored outcome, not a new action."""
    first = message(600, USER_ID, "/start")
    assert invoke(webhook, webhook_event(json.dumps(first)))[0] == 200
    after_first = snapshot()
    sent = len(telegram.calls)
    for replay in (first, message(600, USER_ID, "/provider"), message(600, 999, "/start")):
        assert invoke(webhook, webhook_event(json.dumps(replay))) == (200, {"ok": True, "message": "accepted"})
    assert diff(after_first, snapshot()) == {}  # no enrolment token issued, no profile for user 999
    assert len(telegram.calls) == sent


WEBHOOK_BODIES = [
    ("empty", None, 400),
    ("not json", "{update_id: 1", 400),
    ("array", "[1, 2]", 400),
    ("string update_id", '{"update_id": "1"}', 400),
    ("float update_id", '{"update_id": 1.5}', 400),
    ("bool update_id", '{"update_id": true}', 400),
    ("nested bomb", "[" * 100_000 + "]" * 100_000, 400),
    ("huge", json.dumps(message(700, USER_ID, "/start " + "x" * MEGABYTE)), 413),
    ("bad base64", "!!!notbase64", 400),
]


@pytest.mark.parametrize(("name", "body", "expected"), WEBHOOK_BODIES, ids=[row[0] for row in WEBHOOK_BODIES])
def test_malformed_and_oversized_updates_get_a_clear_4xx(webhook, telegram, name, body, expected):
    before = snapshot()
    event = webhook_event(body)
    if name == "bad base64":
        event["isBase64Encoded"] = True
    status, answer = invoke(webhook, event)
    assert status == expected and answer["ok"] is False and answer["message"], answer
    assert diff(before, snapshot()) == {}
    assert telegram.calls == []


# ---------------------------------------------------------------- agent API
@pytest.fixture
def agent_and_job(aws):
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    agent = register_agent(api, enrol_provider())
    job = submit_job()
    run_matcher()
    status, offer = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])
    assert status == 200
    return api, agent["agent_token"], job.job_id


AGENT_SHAPES = [("not json", "{nope"), ("array", "[]"), ("string", '"hello"'), ("number", "42"),
                ("huge", json.dumps({"lines": ["x" * 1000] * 300}))]  # the last is over the 256 KiB limit
AGENT_ROUTES = ["/agent/register", "/agent/heartbeat", "/agent/claim", "/agent/release",
                "/agent/jobs/{job}/progress", "/agent/jobs/{job}/logs", "/agent/jobs/{job}/artifacts",
                "/agent/jobs/{job}/complete", "/agent/jobs/{job}/fail"]
# per route, bodies whose fields have the wrong type or an absurd value
AGENT_BAD_FIELDS = {
    "/agent/register": [{"provider_token": 5}, {"provider_token": ["a"]}, {}],
    "/agent/heartbeat": [{"running_jobs": {"a": 1}}, {"running_jobs": "j1"}, {"free_gpus": "0"},
                         {"free_gpus": [10 ** 20]}, {"running_jobs": ["j"] * 65}, {"free_gpus": [True]}],
    "/agent/claim": [{"free_gpus": "0"}, {"free_gpus": [-1]}, {"wait_seconds": "long"}, {"free_gpus": [0.5]}],
    "/agent/release": [{"job_ids": 3}, {"job_ids": [1, 2]}, {"job_ids": ["j"] * 65}],
    "/agent/jobs/{job}/progress": [{"progress": "half"}, {"progress": 10 ** 400}, {"progress": -1},
                                   {"progress": float("nan")}, {"progress": float("inf")}, {"progress": [0.5]}],
    "/agent/jobs/{job}/logs": [{"seq": -1, "lines": ["x"]}, {"seq": "0", "lines": ["x"]}, {"seq": 0, "lines": "x"},
                               {"seq": 0, "lines": ["x"] * 501}, {"seq": True, "lines": ["x"]}],
    "/agent/jobs/{job}/artifacts": [{"name": 5, "size": 10}, {"name": "a", "size": -1}, {"name": "a", "size": 10 ** 30},
                                    {"name": "", "size": 1}, {"name": "a", "size": "10"}, {"name": "a", "size": True}],
    "/agent/jobs/{job}/complete": [{"result": []}, {"result": "ok"}, {"result": {"a": "x" * 40_000}},
                                   {"result": {}, "artifacts": "all"}, {"result": {}, "artifacts": ["jobs/other/artifacts/x"]},
                                   {"result": {}, "artifacts": [1]}],
}


def _check_agent_refusals(agent_and_job, cases, expected=None):
    api, token, job_id = agent_and_job
    from depu.jobs.models import Job

    job_before = Job.get(job_id).attribute_values
    before = snapshot(exclude=("Agents",))  # a refused heartbeat may still have refreshed last_seen_at
    for route, body in cases:
        path = route.replace("{job}", job_id)
        raw = body if isinstance(body, str) else json.dumps(body)
        status, answer = api.call(path, raw, None if route == "/agent/register" else token)
        assert_json_error(status, answer, expected or ({400, 401} if route == "/agent/register" else {400}))
    assert diff(before, snapshot(exclude=("Agents",))) == {}
    assert Job.get(job_id).attribute_values == job_before


@pytest.mark.parametrize(("name", "body"), AGENT_SHAPES, ids=[row[0] for row in AGENT_SHAPES])
def test_bodies_that_are_not_json_objects_get_400_on_every_agent_route(agent_and_job, name, body):
    # over the size limit is 413 on every route (before the token is even looked at on register)
    _check_agent_refusals(agent_and_job, [(route, body) for route in AGENT_ROUTES], {413} if name == "huge" else None)


def test_wrongly_typed_or_absurd_fields_get_400_and_change_nothing(agent_and_job):
    _check_agent_refusals(agent_and_job, [(route, body) for route, bodies in AGENT_BAD_FIELDS.items() for body in bodies])


def test_artifact_names_cannot_leave_the_jobs_prefix(agent_and_job):
    api, token, job_id = agent_and_job
    for name in ("../../../etc/passwd", "/abs/path", "a/../../b", "..", "x\\..\\y"):
        status, answer = api.call(f"/agent/jobs/{job_id}/artifacts", {"name": name, "size": 10}, token)
        if status == 200:
            key = answer["key"]
            assert key.startswith(f"jobs/{job_id}/artifacts/") and ".." not in key.split("/") and "/" not in key[len(f"jobs/{job_id}/artifacts/"):], key
        else:
            assert_json_error(status, answer, {400})


def test_agent_api_unknown_routes_and_methods_are_clear(agent_and_job):
    api, token, job_id = agent_and_job
    for path, method in (("/agent/nothing", "POST"), ("/agent/jobs/x/explode", "POST"), ("/agent/claim", "GET"),
                         ("/agent/jobs/" + "a" * 5000 + "/complete", "POST")):
        status, answer = api.call(path, {}, token, method=method)
        assert 400 <= status < 500, (path, status, answer)


# ---------------------------------------------------------------- fork RPC proxy
@pytest.fixture
def fork_rpc(aws, monkeypatch):
    from depu.forks import proxy, tokens
    from depu.forks.models import ACTIVE, Fork, utcnow_iso

    monkeypatch.setattr(proxy, "_default", None)
    token, token_hash = tokens.issue("fpayload", USER_ID, int(time.time()) + 3600)
    Fork("fpayload", user_id=USER_ID, chat_id=USER_ID, created_at=utcnow_iso(), status=ACTIVE,
         host_rpc_url="http://127.0.0.1:9", rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600,
         base_block=1, chain_id=1, host_agent_id="ag_x").save()
    return load_function("fork_rpc"), token


RPC_BODIES = [
    ("not json", "{", 200, -32700),
    ("empty batch", "[]", 200, -32600),
    ("big batch", json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(51)]), 200, -32600),
    ("huge", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": ["0x" + "ab" * 70_000]}), 413, -32600),
    ("no method", '{"jsonrpc": "2.0", "id": 1}', 200, -32600),
    ("number", "7", 200, -32600),
    ("admin method", '{"jsonrpc": "2.0", "id": 1, "method": "anvil_reset", "params": []}', 200, -32601),
    ("upstream leak", '{"jsonrpc": "2.0", "id": 1, "method": "anvil_nodeInfo", "params": []}', 200, -32601),
    ("dict params", '{"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": {"a": 1}}', 200, -32602),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), RPC_BODIES, ids=[row[0] for row in RPC_BODIES])
def test_malformed_rpc_requests_get_json_rpc_errors(fork_rpc, name, body, status, code):
    module, token = fork_rpc
    before = snapshot()
    got, answer = invoke(module, rpc_event(token, body))
    assert got == status, answer
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code, answer
    assert diff(before, snapshot()) == {}


def test_rpc_with_unknown_token_or_binary_body(fork_rpc):
    module, token = fork_rpc
    before = snapshot()
    status, answer = invoke(module, rpc_event("x" * 43, '{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}'))
    assert status == 401 and answer["error"]["code"] == -32001
    event = rpc_event(token, base64.b64encode(b"\xff\xfe\x00garbage").decode())
    event["isBase64Encoded"] = True
    status, answer = invoke(module, event)
    assert status == 200 and answer["error"]["code"] == -32700
    assert diff(before, snapshot()) == {}


# ---------------------------------------------------------------- dashboard API
def dashboard_event(method: str, path: str, body: str | None, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api_event(path, body, headers, method)


DASHBOARD_BODIES = [
    ("not json", "{"),
    ("array", "[]"),
    ("empty object", "{}"),
    ("wrong types", json.dumps({"init_data": 5, "login_code": ["a"]})),
    ("garbage init data", json.dumps({"init_data": "user=%7B%7D&hash=00"})),
    ("huge init data", json.dumps({"init_data": "a=" + "b" * MEGABYTE})),
    ("garbage login code", json.dumps({"login_code": "A" * 40})),
    ("huge login code", json.dumps({"login_code": "A" * MEGABYTE})),
]


@pytest.mark.parametrize(("name", "body"), DASHBOARD_BODIES, ids=[row[0] for row in DASHBOARD_BODIES])
def test_malformed_dashboard_sign_ins_get_4xx_and_no_session(aws, name, body):
    module = load_function("dashboard_api")
    before = snapshot()
    status, answer = invoke(module, dashboard_event("POST", "/dashboard/session", body))
    assert_json_error(status, answer, {413} if name.startswith("huge") else {400, 401})
    assert "token" not in answer
    assert diff(before, snapshot()) == {}


def test_dashboard_overview_refuses_foreign_tokens(aws):
    from depu.forks import tokens as fork_tokens

    module = load_function("dashboard_api")
    ensure_user(USER_ID)
    agent = register_agent(AgentApi(), enrol_provider())
    fork_token, _ = fork_tokens.issue("fdash", USER_ID, int(time.time()) + 3600)
    enrolment = enrol_provider(7009)
    before = snapshot()
    for token in (None, "", "x" * 300, agent["agent_token"], fork_token, enrolment):
        status, answer = invoke(module, dashboard_event("GET", "/dashboard/overview", None, token))
        assert status == 401 and "error" in answer and "user_id" not in answer, (token and token[:6], answer)
    assert diff(before, snapshot()) == {}
