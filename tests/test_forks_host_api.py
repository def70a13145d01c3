"""The fork-host routes of the agent API (functions/agent_api/app.py, /agent/forks/...): who may claim
fork tasks and report on them."""
from __future__ import annotations

import json

import pytest
import requests

from depu.agents import registry, tokens as agent_tokens
from depu.forks import chainids, service
from forks_support import ApiFront, mined_anvil, register_fork_host, wait_for


@pytest.fixture
def front(aws, monkeypatch):
    from depu.config import get_settings

    monkeypatch.setattr(service, "mainnet_head", lambda: None)
    mainnet = mined_anvil(10)  # the API checks each reported base block against it
    monkeypatch.setenv("CHAIN_RPC_URL", mainnet.url)
    get_settings.cache_clear()
    api = ApiFront(aws.endpoint)
    api.mainnet_url = mainnet.url
    try:
        yield api
    finally:
        api.stop()
        mainnet.stop()


def post(front: ApiFront, path: str, token: str | None, body: dict) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{front.url}{path}", json=body, headers=headers, timeout=30)


def test_only_authenticated_fork_hosts_claim_and_only_the_claimer_reports(front):
    assert post(front, "/agent/forks/claim", None, {}).status_code == 401
    assert post(front, "/agent/forks/claim", "depa_not-a-token", {}).status_code == 401
    gpu_only = registry.register(agent_tokens.issue_enrolment_token(5), name="gpu", gpus=[], capabilities=["gpu"],
                                 benchmark={}, version="t")
    assert post(front, "/agent/forks/claim", gpu_only.agent_token, {}).status_code == 403

    _host, token = register_fork_host("host-a")
    _other, other_token = register_fork_host("host-b", approve=False)
    assert post(front, "/agent/forks/claim", other_token, {}).status_code == 403  # fork_host is only an offer
    idle = post(front, "/agent/forks/claim", token, {"wait": 0, "running": ["f_unknown"]})
    assert idle.status_code == 200 and idle.json() == {"task": None, "stop": ["f_unknown"]}

    created = service.create_fork(77, 77, "latest")
    claimed = wait_for(lambda: post(front, "/agent/forks/claim", token, {"wait": 1}).json()["task"], 20, "task")
    assert claimed["kind"] == "provision" and claimed["fork_id"] == created.fork.fork_id
    assert "task_token" not in claimed and "token" not in claimed  # the task token stays with the API
    path = f"/agent/forks/tasks/{claimed['task_id']}/result"
    assert post(front, path, other_token, {"ok": False, "error": "x"}).status_code == 404
    assert post(front, path, token, {"ok": True, "rpc_url": "file:///etc/passwd", "base_block": 1, "chain_id": 1}).status_code == 400
    assert post(front, path, token, {"ok": True, "rpc_url": "http://10.9.9.9:1", "base_block": 1, "chain_id": 1}).status_code == 400
    assert claimed["chain_id"] == created.fork.chain_id and chainids.is_forks(claimed["chain_id"])  # its own, not 1
    # a host that runs the fork with another chain id (mainnet's) is refused
    wrong_chain = post(front, path, token, {"ok": True, "rpc_url": front.mainnet_url, "base_block": 1, "chain_id": 1})
    assert wrong_chain.status_code == 400 and "chain id" in wrong_chain.json()["error"]
    accepted = post(front, path, token, {"ok": True, "rpc_url": front.mainnet_url, "base_block": 1, "chain_id": claimed["chain_id"]})
    assert accepted.status_code == 200 and accepted.json()["told"]["base_block"] == "1"


def test_wrongly_typed_fork_host_bodies_get_a_clear_400_not_a_5xx(aws):
    """issue 13: ``{"wait": "x"}`` used to reach ``float("x")`` and answer 5xx. The route's contract
    (depu.contracts.fork_hosts) refuses it, and every other wrongly typed field, with a 400 naming the field;
    a caller without a valid token still gets 401 before its body is read."""
    from rental_helpers import AgentApi

    api = AgentApi()
    _host, token = register_fork_host("host-typed")
    for body, field in (({"wait": "x"}, "wait"), ({"wait": -1}, "wait"), ({"wait": float("nan")}, "wait"),
                        ({"running": "f_1"}, "running"), ({"running": [5]}, "running.0")):
        status, answer = api.call("/agent/forks/claim", json.dumps(body), token)
        assert status == 400 and answer["error"].startswith(f"{field}:"), (body, status, answer)
    status, answer = api.call("/agent/forks/tasks/f_x.1/result", json.dumps({"ok": "yes"}), token)
    assert status == 400 and answer["error"].startswith("ok:"), answer
    assert api.call("/agent/forks/claim", json.dumps({"wait": "x"}), "depa_not-a-token")[0] == 401
    assert api.call("/agent/forks/claim", '{"wait": 0}' + " " * 600_000, "depa_not-a-token")[0] == 401
    assert api.call("/agent/forks/claim", '{"wait": 0}' + " " * 600_000, token)[0] == 413
    status, answer = api.call("/agent/forks/claim", json.dumps({"wait": 0, "running": ["f_gone"]}), token)
    assert status == 200 and answer == {"task": None, "stop": ["f_gone"]}
