"""Egress host lists (issue 15): the one rule a job's and a provider's ``egress_hosts`` share, how the two
lists combine on the agent, and the provider's setting as the agent loads it.

The rule's source is agent/depu_agent/hostlist.py; the cloud layer holds a byte-for-byte copy (neither side
can import the other), written by scripts/sync_hostlist.py and held to the source here.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from depu_agent import egress, hostlist
from depu_agent.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_cloud_layer_holds_the_agents_rule_byte_for_byte():
    spec = importlib.util.spec_from_file_location("sync_hostlist", ROOT / "scripts" / "sync_hostlist.py")
    assert spec and spec.loader
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert sync.COPY.read_bytes() == sync.SOURCE.read_bytes(), "run scripts/sync_hostlist.py"
    from depu.jobs import egress_hosts
    from depu.jobs import hostlist as cloud_rule

    assert egress_hosts.hostlist is cloud_rule and Path(cloud_rule.__file__).resolve() == sync.COPY.resolve()
    assert Path(hostlist.__file__).resolve() == sync.SOURCE.resolve()


def test_the_agent_and_the_cloud_take_and_refuse_the_same_job_lists():
    from depu.errors import UserError
    from depu.jobs.egress_hosts import clean_egress_hosts

    good = [["PyPI.Example.com.", "*.files.example.org"], ["a.b"], [f"h{n}.example.com" for n in range(32)]]
    bad = [["10.0.0.1"], ["*.com"], ["a.*.example.com"], ["x.example.com:443"], ["-a.example.com"], [7],
           [f"h{n}.example.com" for n in range(33)], ["a" * 64 + ".example.com"], ["1.2.3.4444"], ["ex ample.com"],
           ["under_score.example.com"], ["x.example.com\x1b[31m"]]
    for value in good:
        assert egress.job_hosts(value) == clean_egress_hosts(value, egress=True), value
    for value in bad:
        with pytest.raises(egress.Refused):
            egress.job_hosts(value)
        with pytest.raises(UserError):
            clean_egress_hosts(value, egress=True)


# ---------------------------------------------------------------- how lists combine
@pytest.mark.parametrize("entry, provider, inside", [
    ("a.example", ("a.example",), True),
    ("a.example", ("*.example",), True),
    ("deep.a.example", ("*.example",), True),
    ("example", ("*.example",), False),            # a wildcard never holds the name itself
    ("*.x.example", ("*.example",), True),          # a narrower wildcard lies inside a wider one
    ("*.example", ("*.example",), True),
    ("*.example", ("example",), False),             # the names below are not the name
    ("*.example", ("a.example",), False),
    ("*.example", ("*.x.example",), False),         # a wider wildcard is not inside a narrower one
    ("aexample.com", ("*.example.com",), False),    # a label boundary, not a suffix of characters
    ("*.aexample.com", ("*.example.com",), False),
    ("a.example.com", ("*.example.org", "a.example.com"), True),
])
def test_a_job_entry_is_inside_a_providers_list_only_when_every_name_it_allows_is(entry, provider, inside):
    assert hostlist.covered(entry, provider) is inside
    assert (hostlist.uncovered((entry,), provider) == ()) is inside


NAMES = ["example", "a.example", "b.a.example", "x.example", "c.x.example", "example.org", "a.example.org",
         "aexample", "a.aexample"]
LISTS = [("*.example",), ("a.example",), ("*.a.example", "x.example"), ("*.x.example", "example.org"),
         ("*.example", "*.example.org"), ("example",), ("*.aexample", "a.example")]


@pytest.mark.parametrize("first", LISTS)
@pytest.mark.parametrize("second", LISTS)
def test_intersect_allows_exactly_the_names_both_lists_allow(first, second):
    both = hostlist.intersect(first, second)
    assert both == hostlist.intersect(second, first)
    for name in NAMES:
        assert hostlist.allowed(name, both) == (hostlist.allowed(name, first) and hostlist.allowed(name, second)), \
            (name, first, second, both)


def test_the_effective_list_is_the_providers_the_jobs_or_the_names_both_allow():
    provider = ("*.hub.example", "index.example")
    assert egress.effective_hosts(None, None) is None                      # any public host
    assert egress.effective_hosts(None, ("x.example",)) == ("x.example",)  # the job's alone
    assert egress.effective_hosts(provider, None) == provider              # the provider's alone
    assert egress.effective_hosts(provider, ("*.a.hub.example", "index.example", "other.example")) == \
        ("*.a.hub.example", "index.example")                               # only what both allow
    assert egress.effective_hosts(provider, ("*.example",)) == provider    # a wider job list is cut to the provider's
    assert egress.effective_hosts(provider, ("hub.example", "other.example")) == ()  # nothing at all


def test_a_policy_refuses_by_name_what_the_effective_list_leaves_out_before_resolving():
    asked: list[str] = []
    policy = egress.EgressPolicy(resolver=lambda name, _port: asked.append(name) or ["93.184.216.34"],
                                 hosts=egress.effective_hosts(("*.hub.example",), None))
    assert policy.addresses("m.hub.example", 443)
    for host in ("other.example", "hub.example", "93.184.216.34"):
        with pytest.raises(egress.Refused):
            policy.addresses(host, 443)
    assert asked == ["m.hub.example"]


# ---------------------------------------------------------------- the provider's setting
def test_the_providers_list_is_checked_and_stored_normalised_at_load(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"allow_egress": True, "egress_hosts": ["Index.Example.com.", "*.hub.example"]}))
    config = load_config(path, environ={})
    assert config.egress_hosts == ["*.hub.example", "index.example.com"]
    assert egress.policy_for(config).hosts == ("*.hub.example", "index.example.com")
    assert load_config(None, environ={"DEPU_AGENT_EGRESS_HOSTS": "a.example, *.b.example"}).egress_hosts == \
        ["*.b.example", "a.example"]
    ini = tmp_path / "agent.ini"
    ini.write_text("[agent]\nallow_egress = yes\negress_hosts = models.example.org\n")
    assert load_config(ini, environ={}).egress_hosts == ["models.example.org"]
    assert load_config(None, environ={}).egress_hosts == [] and egress.policy_for(load_config(None, environ={})).hosts is None


@pytest.mark.parametrize("value", [["10.0.0.1"], ["*.com"], ["localhost"], ["a.example:443"], ["*"],
                                   [f"h{n}.example" for n in range(33)], ["https://a.example/simple"]])
def test_a_providers_list_that_breaks_the_rule_stops_the_agent_at_load(tmp_path, value):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"allow_egress": True, "egress_hosts": value}))
    with pytest.raises(ConfigError, match="^egress_hosts: "):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="^egress_hosts: "):
        load_config(None, environ={"DEPU_AGENT_EGRESS_HOSTS": ",".join(value)})
