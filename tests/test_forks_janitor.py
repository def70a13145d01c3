"""The fork janitor function (functions/fork_janitor via the template, on a schedule event): a warning before
expiry (once), deletion at expiry through the delete state machine."""
from __future__ import annotations

import time

import pytest

from depu.forks import hosts, service, tasks, tokens
from depu.forks.models import Fork
from forks_support import notices, wait_for
from local.runtime import LocalRuntime, scheduled_event
from local.template import LocalTemplate
from test_forks_statemachines import HOST, create_active, fast, mainnet  # noqa: F401 - fixtures


@pytest.fixture
def janitor(fast):
    from depu.agents import registry, tokens as agent_tokens

    live = registry.register(agent_tokens.issue_enrolment_token(77), name="live", gpus=[], capabilities=["fork_host"],
                             benchmark={}, version="t")
    # forks in these tests are "hosted" by the test (see test_forks_statemachines); a live agent stands for it
    _live_ids.append(live.agent_id)
    function = LocalRuntime(LocalTemplate(), fast.endpoint).functions["ForkJanitorFunction"]
    return lambda: function.invoke(scheduled_event("arn:aws:events:us-east-1:123456789012:rule/fork-janitor"))


_live_ids: list[str] = []


def hosted_by_live_agent(fork: Fork) -> None:
    hosts.approve(_live_ids[-1])  # approved only now: the fork was assigned to HOST, the only host then
    Fork(fork.fork_id).update(actions=[Fork.host_agent_id.set(_live_ids[-1])])


def test_warns_once_before_expiry_then_deletes_at_expiry(janitor):
    fork = create_active("100")
    hosted_by_live_agent(fork)
    notices(5)
    Fork(fork.fork_id).update(actions=[Fork.expires_at.set(int(time.time()) + 30 * 60)])
    assert janitor()["warned"] == [fork.fork_id]
    [warning] = notices(5, fork.fork_id)
    assert f"<b>{fork.fork_id}</b> expires in" in warning["text"] and "minutes" in warning["text"]
    assert janitor()["warned"] == []  # once

    Fork(fork.fork_id).update(actions=[Fork.expires_at.set(int(time.time()) - 1)])
    assert janitor()["expired"] == [fork.fork_id]
    assert tokens.ForkRpcToken.count(fork.rpc_token_hash) == 0  # the URL is revoked at once
    assert tasks.claim(HOST, 1) is None  # the stop goes to the fork's own host only
    stop = wait_for(lambda: tasks.claim(_live_ids[-1], 1), 20, "stop task")
    assert stop.kind == "stop"
    tasks.finish(_live_ids[-1], stop.task_id, {"ok": True, "stopped": True})
    wait_for(lambda: Fork.get(fork.fork_id).status == "deleted", 20, "deleted")
    assert "reached the end of its lifetime" in notices(5, fork.fork_id)[0]["text"]


def test_forks_on_live_hosts_are_left_alone_and_silent_hosts_forks_are_rebuilt(janitor):
    fork = create_active("100")
    hosted_by_live_agent(fork)
    assert janitor() == {"warned": [], "expired": [], "rebuilt": [], "conflicts": []}
    assert Fork.get(fork.fork_id).status == "active"
    notices(5)
    Fork(fork.fork_id).update(actions=[Fork.host_agent_id.set("ag_gone")])  # an agent that no longer exists
    assert janitor()["rebuilt"] == [fork.fork_id]
    new_host = Fork.get(fork.fork_id).assigned_host
    assert new_host in (HOST, _live_ids[-1])  # another approved, live host
    rebuild = wait_for(lambda: tasks.claim(new_host, 1), 20, "rebuild task")
    assert (rebuild.kind, rebuild.block) == ("provision", "100")  # same base: only a sync moves it
    assert service.MAX_ALIVE_FORKS == 3
