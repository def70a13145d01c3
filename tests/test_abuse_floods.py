"""Abuse: floods on 127.0.0.1 through the local runtime's HTTP server (template routes -> real handlers ->
moto), in bounded loops. The fork RPC proxy's per-fork token bucket answers 429 with a JSON-RPC error once the
burst is spent and serves again after it refills; concurrent agents hammering the agent API each act only as
themselves.

The agent API and the webhook have no rate limit of their own: the stage throttling of template.yaml (burst
500, 1000/s, emulated by the local runtime too) caps them; two shared cores cannot reach that rate, so it is
not flooded here (tests/test_local_runtime.py tests the emulation).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from depu.forks import policy
from local.moto_server import free_port
from proof_support import RecordingHost
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, register_agent, run_matcher, submit_job

pytestmark = pytest.mark.e2e


@pytest.fixture
def runtime(aws):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port(), poll_wait_seconds=1))
    # only the HTTP side: the pollers and schedules are not part of these tests
    runtime.functions = {name: fn for name, fn in runtime.functions.items()
                         if name in ("ForkRpcFunction", "AgentApiFunction", "TelegramWebhookFunction")}
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def host():
    host = RecordingHost().start()
    try:
        yield host
    finally:
        host.stop()


def make_fork(host_url: str, fork_id: str = "fflood01") -> str:
    from depu.forks import tokens
    from depu.forks.models import ACTIVE, Fork, utcnow_iso

    token, token_hash = tokens.issue(fork_id, USER_ID, int(time.time()) + 3600)
    Fork(fork_id, user_id=USER_ID, chat_id=USER_ID, created_at=utcnow_iso(), status=ACTIVE, host_rpc_url=host_url,
         rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600, base_block=1, chain_id=1,
         host_agent_id="ag_x").save()
    return token


def test_rpc_flood_gets_429_then_the_fork_answers_again(runtime, host):
    """Junk batches (refused methods: cheap for the attacker, forwarded nowhere) still spend the fork's
    bucket; once it is empty even a valid call is refused with 429, and after the refill it is served."""
    token = make_fork(host.url)
    url = f"{runtime.url}/rpc/{token}"
    junk = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "anvil_reset"} for i in range(policy.MAX_BATCH)])
    valid = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
    statuses, refusals = [], []
    session = requests.Session()
    for _ in range(int(policy.BURST // policy.MAX_BATCH) * 3):  # bounded: three bursts' worth
        response = session.post(url, data=junk, headers={"Content-Type": "application/json"}, timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 429:
            refusals.append(response.json())
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert refusals[0]["error"]["code"] == policy.LIMIT_EXCEEDED and "rate limit" in refusals[0]["error"]["message"]
    again = session.post(url, data=junk, headers={"Content-Type": "application/json"}, timeout=30)
    assert again.status_code == 429  # still empty: the refill (RATE_PER_SECOND) is slower than the flood
    assert host.methods == []  # nothing of the flood reached the fork's host
    time.sleep(0.3)  # the bucket refills
    answer = session.post(url, json=valid, timeout=30)
    assert answer.status_code == 200 and answer.json()["result"] == "0x1"
    assert host.methods == ["eth_chainId"]


def test_concurrent_agents_each_act_only_as_themselves(runtime):
    """Two agents call the API at the same time through the local runtime: A reports progress on its own
    job (must be 200), B tries the same job (must be 404). Any cross-over means one request was answered
    with the other's identity. (This caught the runtime sharing one handler module between concurrent
    requests; since 964b642 each concurrent invocation gets its own execution environment, as in Lambda.)"""
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    first = register_agent(api, enrol_provider(7001), name="a")
    second = register_agent(api, enrol_provider(7002), name="b")
    job = submit_job()
    run_matcher()
    owner = None
    for agent in (first, second):
        status, offer = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])
        if status == 200:
            owner = agent
    assert owner is not None
    other = second if owner is first else first
    url = f"{runtime.url}/agent/jobs/{job.job_id}/progress"

    def post(token: str, progress: float) -> int:
        return requests.post(url, json={"progress": progress, "message": "x"}, timeout=30,
                             headers={"Authorization": f"Bearer {token}"}).status_code

    rounds = 100
    with ThreadPoolExecutor(max_workers=8) as pool:
        mine = [pool.submit(post, owner["agent_token"], 0.5) for _ in range(rounds)]
        theirs = [pool.submit(post, other["agent_token"], 0.9) for _ in range(rounds)]
        owner_statuses = [future.result() for future in mine]
        other_statuses = [future.result() for future in theirs]
    assert set(other_statuses) == {404}, other_statuses
    assert set(owner_statuses) == {200}, owner_statuses
    from depu.jobs.models import Job

    assert float(Job.get(job.job_id).progress) == 0.5


def test_every_http_method_gets_a_json_answer(runtime):
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "QUERY", "PURGE"):
        response = requests.request(method, f"{runtime.url}/agent/release", timeout=30)
        assert response.status_code < 500, (method, response.status_code)
        assert response.headers.get("Content-Type", "").startswith("application/json"), (method, response.text[:80])
