"""Egress as a renter and a provider see it (issue 15 §5): the job spec's ``network`` field from the chat, the
public API and the CLI; the provider's policy carried by registration and heartbeats; the matcher placing an
egress job only on an agent that allows it (its claim-time steal too); the offer saying so; and, end to end,
`depu jobs run --egress` through the local runtime to a real agent process whose sandbox reaches the
provider's filtering proxy and nothing else. The sandbox's own attacks are in test_abuse_provider_egress.py.
"""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from conftest import TEST_BOT_TOKEN
from rental_helpers import AgentApi, USER_ID, enrol_provider, ensure_user, run_matcher, submit_job, vouch_for
from telegram_harness import bot_api_double
from test_rental_bot import command, new_chat, press, run, typed
from tests.public_api_support import call, user_with_key

CPU_BENCHMARK = {"device": "cpu", "fp32_tflops": 0.2, "bf16_tflops": None, "mem_bandwidth_gbs": 10.0,
                 "verified": False}


def register(api: AgentApi, name: str, egress: str | None, egress_hosts=None) -> dict:
    body = {"provider_token": enrol_provider(), "name": name, "gpus": [], "capabilities": ["gpu"],
            "benchmark": CPU_BENCHMARK, "version": "test"}
    if egress is not None:
        body["egress"] = egress
    if egress_hosts is not None:
        body["egress_hosts"] = egress_hosts
    status, answer = api.call("/agent/register", body)
    assert status == 201, answer
    vouch_for(answer["agent_id"])
    return answer


def agent_record(agent_id: str):
    from depu.agents.registry import Agent

    return Agent.get(agent_id, consistent_read=True)


# ---------------------------------------------------------------- the field
def test_the_job_spec_takes_network_none_or_egress_and_refuses_anything_else_clearly():
    from depu.errors import UserError
    from depu.jobs.spec import JobSpec

    assert JobSpec.parse({"command": "true"}).network == "none"
    assert "network" not in JobSpec.parse({"command": "true", "network": "none"}).params  # as before the field
    assert JobSpec.parse({"command": "true", "network": "egress"}).params["network"] == "egress"
    for bad in ("all", "EGRESS", True, 1, ["egress"]):
        with pytest.raises(UserError, match="network is 'none' .* or 'egress'"):
            JobSpec.parse({"command": "true", "network": bad})


@pytest.mark.parametrize("fields, says", [
    ({"egress_hosts": ["pypi.example.com"]}, "goes with network 'egress'"),
    ({"network": "none", "egress_hosts": ["pypi.example.com"]}, "goes with network 'egress'"),
    ({"network": "egress", "egress_hosts": "pypi.example.com"}, "is a list of host names"),
    ({"network": "egress", "egress_hosts": []}, "at least one host; leave it out"),
    ({"network": "egress", "egress_hosts": [f"h{n}.example.com" for n in range(33)]}, "at most 32 hosts"),
    ({"network": "egress", "egress_hosts": [7]}, "host names as text"),
    ({"network": "egress", "egress_hosts": ["10.0.0.1"]}, "'10.0.0.1' is not a host name"),
    ({"network": "egress", "egress_hosts": ["[::1]"]}, "is not a host name"),
    ({"network": "egress", "egress_hosts": ["localhost"]}, "'localhost' is not a host name"),
    ({"network": "egress", "egress_hosts": ["*.com"]}, "is not a host name"),
    ({"network": "egress", "egress_hosts": ["*"]}, "is not a host name"),
    ({"network": "egress", "egress_hosts": ["a.*.example.com"]}, "is not a host name"),
    ({"network": "egress", "egress_hosts": ["pypi.example.com:443"]}, "no addresses, ports"),
    ({"network": "egress", "egress_hosts": ["https://pypi.example.com/simple"]}, "is not a host name"),
    ({"network": "egress", "egress_hosts": ["-bad.example.com"]}, "is not a host name"),
    ({"network": "egress", "egress_hosts": ["a" * 64 + ".example.com"]}, "is not a host name"),
])
def test_egress_hosts_is_a_short_list_of_names_that_goes_with_egress_only(fields, says):
    from depu.errors import UserError
    from depu.jobs.spec import JobSpec

    with pytest.raises(UserError, match=says):
        JobSpec.parse({"command": "true", **fields})


def test_egress_hosts_are_stored_normalised_for_the_agent_and_absent_means_any_public_host():
    from depu.jobs.egress_hosts import MAX_EGRESS_HOSTS
    from depu.jobs.spec import JobSpec

    job = JobSpec.parse({"command": "true", "network": "egress",
                         "egress_hosts": ["PyPI.Example.com.", "*.files.example.org", "pypi.example.com"]})
    assert job.params["egress_hosts"] == ["*.files.example.org", "pypi.example.com"]
    assert "egress_hosts" not in JobSpec.parse({"command": "true", "network": "egress"}).params
    most = [f"h{n}.example.com" for n in range(MAX_EGRESS_HOSTS)]
    assert len(JobSpec.parse({"command": "true", "network": "egress", "egress_hosts": most}).params["egress_hosts"]) \
        == MAX_EGRESS_HOSTS


# ---------------------------------------------------------------- the provider's policy
def test_registration_and_heartbeats_carry_the_providers_egress_policy(aws):
    api = AgentApi()
    closed, open_, old = register(api, "closed", "none"), register(api, "open", "allowed"), register(api, "old", None)
    assert agent_record(closed["agent_id"]).egress_allowed is False
    assert agent_record(open_["agent_id"]).egress_allowed is True
    assert not agent_record(old["agent_id"]).egress_allowed  # an older agent: never offered egress jobs
    status, _ = api.call("/agent/heartbeat", {"free_gpus": [0], "egress": "none"}, token=open_["agent_token"])
    assert status == 200 and agent_record(open_["agent_id"]).egress_allowed is False
    status, _ = api.call("/agent/heartbeat", {"free_gpus": [0], "egress": "allowed"}, token=open_["agent_token"])
    assert status == 200 and agent_record(open_["agent_id"]).egress_allowed is True
    status, _ = api.call("/agent/heartbeat", {"free_gpus": [0]}, token=open_["agent_token"])  # unchanged
    assert status == 200 and agent_record(open_["agent_id"]).egress_allowed is True
    status, answer = api.call("/agent/heartbeat", {"free_gpus": [0], "egress": "everything"},
                              token=open_["agent_token"])
    assert status == 400, answer
    assert agent_record(open_["agent_id"]).egress_allowed is True


# ---------------------------------------------------------------- placement
def test_the_matcher_places_an_egress_job_only_on_an_agent_that_allows_it(aws):
    from depu.agents.registry import Agent
    from depu.jobs import service, work
    from depu.jobs.leases import MAX_QUEUE_SECONDS

    ensure_user(USER_ID, credits=5000)
    api = AgentApi()
    closed, open_ = register(api, "closed", "none"), register(api, "open", "allowed")
    # the closed agent ranks first otherwise: more reliable
    Agent(closed["agent_id"]).update(actions=[Agent.challenges_passed.add(20)])
    plain = submit_job(gpu_class="cpu", workload="job", params={"command": "true"})
    run_matcher()
    assert service.user_job(USER_ID, plain.job_id).agent_id == closed["agent_id"]
    service.cancel(USER_ID, plain.job_id)

    egress = submit_job(gpu_class="cpu", workload="job", params={"command": "true", "network": "egress"})
    run_matcher()
    placed = service.user_job(USER_ID, egress.job_id)
    assert placed.status == "assigned" and placed.agent_id == open_["agent_id"]

    # the open agent is full now: a second egress job waits rather than going to the closed one, even when
    # the closed one claims with the job queued long enough to be stolen
    second = submit_job(gpu_class="cpu", workload="job", params={"command": "true", "network": "egress"})
    run_matcher()
    waiting = service.user_job(USER_ID, second.job_id)
    assert waiting.status == "queued" and waiting.agent_id is None
    waiting.update(actions=[type(waiting).lease_expires_at.set(int(time.time()) + MAX_QUEUE_SECONDS - 30)])
    assert work.claim(agent_record(closed["agent_id"]), [0], 0) is None
    assert service.user_job(USER_ID, second.job_id).status == "queued"


def test_an_egress_job_nobody_allows_is_refused_at_submit_and_bad_values_get_a_clear_400(aws):
    from depu.errors import UserError

    key = user_with_key(7401, credits=5000)
    register(AgentApi(), "closed", "none")
    with pytest.raises(UserError, match="No online provider of this class allows egress"):
        submit_job(USER_ID, gpu_class="cpu", workload="job", params={"command": "true", "network": "egress"})
    refused = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                            "network": "egress"})
    assert refused["statusCode"] == 400 and "allows egress" in refused["body"], refused["body"]
    bad = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                        "network": "internet"})
    assert bad["statusCode"] == 400 and "network is 'none'" in bad["body"], bad["body"]
    other = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "benchmark",
                                                          "network": "egress"})
    assert other["statusCode"] == 400 and "network" in other["json"]["error"]["message"]
    register(AgentApi(), "open", "allowed")
    accepted = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                             "network": "egress"})
    assert accepted["statusCode"] == 201 and accepted["json"]["params"]["network"] == "egress", accepted["body"]
    listed = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                           "network": "egress", "egress_hosts": ["Files.Example.com"]})
    assert listed["statusCode"] == 201 and listed["json"]["params"]["egress_hosts"] == ["files.example.com"], \
        listed["body"]
    unlisted = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                             "egress_hosts": ["files.example.com"]})
    assert unlisted["statusCode"] == 400 and "goes with network 'egress'" in unlisted["body"], unlisted["body"]
    address = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                            "network": "egress", "egress_hosts": ["169.254.169.254"]})
    assert address["statusCode"] == 400 and "is not a host name" in address["body"], address["body"]


# ---------------------------------------------------------------- the provider's own host list
PROVIDER_HOSTS = ["*.hub.example.org", "index.example.org"]
HOSTILE_LISTS = [
    [f"h{n}.example" for n in range(33)],            # one over the cap
    ["x.example"] * 5000,                             # oversized (refused on its length, not read)
    ["10.0.0.1"], ["169.254.169.254"], ["*.com"], ["a.example:443"], [7], [None], [["a.example"]],
    ["<b>x</b>.example"], ["a.example\n[depu] fake line"], ["a" * 300 + ".example"],
    "index.example.org", {"hosts": ["index.example.org"]}, 42, True,
]


def test_registration_and_heartbeats_carry_the_providers_list_and_a_hostile_one_withdraws_egress(aws):
    api = AgentApi()
    agent = register(api, "listed", "allowed", ["Index.Example.org.", "*.hub.example.org", "index.example.org"])
    record = agent_record(agent["agent_id"])
    assert record.egress_allowed is True and record.egress_hosts == PROVIDER_HOSTS  # normalised, deduplicated
    token = agent["agent_token"]
    for hostile in HOSTILE_LISTS:
        status, answer = api.call("/agent/heartbeat", {"free_gpus": [0], "egress": "allowed",
                                                       "egress_hosts": hostile}, token=token)
        assert status == 200, (hostile, answer)  # the heartbeat itself goes through
        record = agent_record(agent["agent_id"])
        assert record.egress_allowed is False and record.egress_hosts is None, hostile  # never "any host"
        assert int(record.last_seen_at) >= int(time.time()) - 5
        status, _ = api.call("/agent/heartbeat", {"free_gpus": [0], "egress": "allowed",
                                                  "egress_hosts": PROVIDER_HOSTS}, token=token)
        assert status == 200 and agent_record(agent["agent_id"]).egress_hosts == PROVIDER_HOSTS
        assert agent_record(agent["agent_id"]).egress_allowed is True
    status, _ = api.call("/agent/heartbeat", {"free_gpus": [0], "egress": "allowed"}, token=token)  # older agent
    assert status == 200 and agent_record(agent["agent_id"]).egress_hosts == PROVIDER_HOSTS  # left as stored
    status, _ = api.call("/agent/heartbeat", {"free_gpus": [0], "egress": "allowed", "egress_hosts": []}, token=token)
    assert status == 200 and agent_record(agent["agent_id"]).egress_hosts is None  # any public host now
    assert agent_record(agent["agent_id"]).egress_allowed is True
    hostile = register(api, "hostile", "allowed", ["x.example"] * 2000)  # under the 32 KiB body cap
    assert agent_record(hostile["agent_id"]).egress_allowed is False
    assert agent_record(hostile["agent_id"]).egress_hosts is None


def test_the_matcher_and_the_steal_place_a_job_only_inside_a_providers_list(aws):
    from depu.agents.registry import Agent
    from depu.jobs import service, work
    from depu.jobs.leases import MAX_QUEUE_SECONDS

    ensure_user(USER_ID, credits=5000)
    api = AgentApi()
    listed, open_ = register(api, "listed", "allowed", PROVIDER_HOSTS), register(api, "open", "allowed")
    Agent(listed["agent_id"]).update(actions=[Agent.challenges_passed.add(20)])  # it ranks first where it fits

    def placed(hosts: list[str] | None):
        params = {"command": "true", "network": "egress", **({"egress_hosts": hosts} if hosts else {})}
        job = submit_job(gpu_class="cpu", workload="job", params=params)
        run_matcher()
        return service.user_job(USER_ID, job.job_id)

    for hosts in (["index.example.org"], ["m.hub.example.org", "index.example.org"], ["*.x.hub.example.org"],
                  ["*.hub.example.org"]):
        job = placed(hosts)
        assert job.agent_id == listed["agent_id"], hosts  # inside its list
        service.cancel(USER_ID, job.job_id)
    for hosts in (None, ["other.example.org"], ["hub.example.org"], ["*.example.org"],
                  ["m.hub.example.org", "other.example.org"], ["aindex.example.org"]):
        job = placed(hosts)
        assert job.agent_id == open_["agent_id"], hosts  # not wholly inside it: only the open provider
        service.cancel(USER_ID, job.job_id)

    blocker = placed(None)  # the open provider is full now
    assert blocker.agent_id == open_["agent_id"]
    for hosts in (None, ["hub.example.org"], ["m.hub.example.org", "other.example.org"]):
        waiting = placed(hosts)
        assert waiting.status == "queued" and waiting.agent_id is None, hosts
        waiting.update(actions=[type(waiting).lease_expires_at.set(int(time.time()) + MAX_QUEUE_SECONDS - 30)])
        assert work.claim(agent_record(listed["agent_id"]), [0], 0) is None, hosts  # the steal refuses it too
        assert service.user_job(USER_ID, waiting.job_id).status == "queued"
        service.cancel(USER_ID, waiting.job_id)
    fits = placed(["deep.m.hub.example.org"])
    assert fits.agent_id == listed["agent_id"]


def test_submit_says_which_lists_are_on_offer_when_none_takes_the_jobs(aws):
    from depu.errors import UserError

    key = user_with_key(7402, credits=5000)
    register(AgentApi(), "listed", "allowed", PROVIDER_HOSTS)
    with pytest.raises(UserError, match=r"reaches only listed hosts \(\*\.hub\.example\.org, index\.example\.org\)"):
        submit_job(USER_ID, gpu_class="cpu", workload="job", params={"command": "true", "network": "egress"})
    outside = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                            "network": "egress",
                                                            "egress_hosts": ["index.example.org", "other.example.org"]})
    assert outside["statusCode"] == 400, outside["body"]
    assert "allows egress to all of index.example.org, other.example.org" in outside["json"]["error"]["message"]
    assert "*.hub.example.org, index.example.org" in outside["json"]["error"]["message"]
    inside = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job", "command": "true",
                                                           "network": "egress", "egress_hosts": ["m.hub.example.org"]})
    assert inside["statusCode"] == 201, inside["body"]


def own_job_to_its_network_step(chat, command_line: str, check=lambda: True) -> None:
    """The chat's "My own job" from the GPU class up to where it asks about the network (or, where nobody offers
    egress, the time limit): CPU, the command, no packages, no input files, one GPU. ``check`` runs once the
    own-job step is shown."""
    run(press(chat.button("CPU")), chat)
    run(press(chat.button("My own job")), chat)
    assert check(), chat.text
    run(typed(command_line), chat)
    run(press(chat.button("No packages")), chat)
    run(press(chat.button("No input files")), chat)
    run(press(chat.button("1")), chat)


def test_the_offer_says_egress_only_to_the_providers_list_and_the_chat_asks_no_network_then(aws):
    from depu.agents import catalogue
    from depu.bot import rental

    ensure_user(USER_ID, credits=5000)
    register(AgentApi(), "listed", "allowed", PROVIDER_HOSTS)
    [offer] = catalogue.offers()
    assert offer.egress == "only to *.hub.example.org, index.example.org"
    chat = new_chat()
    rental.rent_gpu(command("rent_gpu"), chat)
    assert chat.timeline[-1][1][0][0].text.endswith("· egress: only to *.hub.example.org, index.example.org")
    own_job_to_its_network_step(chat, "echo one")
    assert "Time limit?" in chat.text  # the chat's egress asks for any public host: nobody here offers that
    run(press(chat.button("Cancel")), chat)
    register(AgentApi(), "other-list", "allowed", ["models.example.org"])
    [offer] = catalogue.offers()
    assert offer.egress == "only to *.hub.example.org, index.example.org or models.example.org"
    register(AgentApi(), "open", "allowed")
    assert [offer.egress for offer in catalogue.offers()] == ["allowed"]


# ---------------------------------------------------------------- the chat
def test_the_offer_shows_the_policy_and_the_own_job_flow_asks_for_egress_only_where_it_is_offered(aws, monkeypatch):
    from depu.bot import rental
    from depu.config import get_settings
    from depu.jobs import service
    from depu.telegram.client import bot_api

    ensure_user(USER_ID, credits=5000)
    register(AgentApi(), "closed", "none")
    chat = new_chat()
    rental.rent_gpu(command("rent_gpu"), chat)
    assert chat.timeline[-1][1][0][0].text.endswith("· egress: none")
    own_job_to_its_network_step(chat, "echo one",
                                check=lambda: "no network unless you ask for egress" in chat.text)
    assert "Time limit?" in chat.text  # no network question: nobody of this class offers egress
    run(press(chat.button("Cancel")), chat)

    register(AgentApi(), "open", "allowed")
    telegram = bot_api_double(TEST_BOT_TOKEN)
    try:
        monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
        get_settings.cache_clear()
        bot_api.cache_clear()
        chat = new_chat()
        rental.rent_gpu(command("rent_gpu"), chat)
        assert chat.timeline[-1][1][0][0].text.endswith("· egress: allowed")
        own_job_to_its_network_step(chat, "pip download tqdm")
        assert "Network?" in chat.text and "never the provider's own machine" in chat.text
        run(press(chat.button("Egress")), chat)
        run(press(chat.button("5 min")), chat)
        assert "egress (public addresses only)" in chat.text
        run(press(chat.button("Submit")), chat)
    finally:
        telegram.stop()
        bot_api.cache_clear()
    [job] = [job for job in service.user_jobs(USER_ID) if job.status == "queued"]
    assert job.params["network"] == "egress" and job.params["command"] == "pip download tqdm"


# ---------------------------------------------------------------- end to end: the CLI, the API, a real agent
PROBE = """
import json, os, socket, urllib.error, urllib.request
seen = {"proxy": os.environ.get("HTTPS_PROXY")}
try:
    urllib.request.urlopen("http://169.254.169.254/latest/meta-data/", timeout=10)
    seen["metadata"] = "reached"
except urllib.error.HTTPError as error:
    seen["metadata"] = error.code
except OSError as error:
    seen["metadata"] = type(error).__name__
try:
    socket.create_connection(("192.0.2.1", 443), timeout=3).close()
    seen["direct"] = "connected"
except OSError as error:
    seen["direct"] = type(error).__name__
print("SEEN " + json.dumps(seen), flush=True)
"""


@pytest.fixture
def egress_rental(aws, tmp_path):
    from agent_process import AgentProcess
    from test_public_api_cli import start_runtime

    runtime = start_runtime(aws, "PublicApiFunction", "AgentApiFunction", "MatcherFunction", "LeaseReaperFunction")
    started = []

    def agent(name: str, **settings):
        process = AgentProcess(runtime.url, tmp_path / name, name, enrolment_token=enrol_provider(), settings=settings)
        started.append(process)
        process.wait_registered()
        return process

    try:
        yield SimpleNamespace(runtime=runtime, agent=agent)
    finally:
        for process in started:
            process.stop()
        runtime.stop()


@pytest.mark.e2e
def test_depu_jobs_run_egress_runs_on_the_open_provider_behind_its_proxy(egress_rental, tmp_path):
    from depu.agents.registry import Agent
    from depu.jobs.models import Job
    from test_public_api_cli import Cli

    key = user_with_key(USER_ID, credits=5000)
    cli = Cli(egress_rental.runtime.url, tmp_path)
    assert cli("login", "--key", key).returncode == 0
    (tmp_path / "probe.py").write_text(PROBE)
    closed = egress_rental.agent("rig-closed")
    refused = cli("jobs", "run", "--gpu", "cpu", "--egress", "probe.py")
    assert refused.returncode == 2 and "allows egress" in refused.stderr, (refused.stdout, refused.stderr)
    not_a_host = cli("jobs", "run", "--gpu", "cpu", "--egress-host", "localhost", "probe.py")
    assert not_a_host.returncode == 2 and "'localhost' is not a host name" in not_a_host.stderr, not_a_host.stderr

    opened = egress_rental.agent("rig-open", allow_egress=True)
    ran = cli("jobs", "run", "--gpu", "cpu", "--egress", "--time-limit", "120", "probe.py", "--follow")
    assert ran.returncode == 0, (ran.stdout, ran.stderr, opened.log_text()[-2000:])
    seen = json.loads(next(line for line in ran.stdout.splitlines() if line.startswith("SEEN "))[5:])
    assert seen == {"proxy": "http://127.0.0.1:3128", "metadata": 403, "direct": "OSError"}, seen
    assert "[depu] egress refused 169.254.169.254:80: 169.254.169.254: link-local" in ran.stdout, ran.stdout
    [job] = json.loads(cli("--json", "jobs", "list").stdout)["jobs"]
    assert job["params"]["network"] == "egress"
    by_name = {agent.name: agent.agent_id for agent in Agent.scan()}
    assert Job.get(job["job_id"]).agent_id == by_name["rig-open"] != by_name["rig-closed"]
    assert closed.log_text().count(job["job_id"]) == 0
