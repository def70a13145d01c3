"""What the dashboard shows, read from each feature's real store, and only for the session's user."""
from __future__ import annotations

import time

import pytest

from depu.dashboard import overview
from depu.forks import chainids
from tests.dashboard_support import (
    gpu_metrics,
    seed_chain,
    seed_fork,
    seed_profile,
    seed_running_job,
    seed_watch_with_flows,
)

ALICE, BOB = 301, 302
ALICE_ADDRESS, BOB_ADDRESS = "0x" + "11" * 20, "0x" + "22" * 20


def test_an_empty_account_shows_none_yet_everywhere(aws):
    data = overview.build_overview(ALICE)
    assert data["user_id"] == ALICE
    assert {name: data[name]["state"] for name in ("credits", "jobs", "forks", "watches", "chain")} == dict.fromkeys(
        ("credits", "jobs", "forks", "watches", "chain"), "none")


def test_every_section_reads_the_users_own_data(aws):
    now = int(time.time())
    seed_profile(ALICE)
    seed_running_job(ALICE, "job-a", gpu_metrics(70))
    seed_running_job(BOB, "job-b", gpu_metrics(10))
    seed_chain(head=20_000_100, blocks=12, now=now)
    seed_fork(ALICE, "fork-alice", base_block=20_000_040)
    seed_fork(ALICE, "fork-gone", base_block=20_000_000, status="deleted")
    seed_fork(BOB, "fork-bob", base_block=20_000_090)
    seed_watch_with_flows(ALICE, ALICE_ADDRESS, received_wei=3 * 10**18, sent_wei=5 * 10**17, block=20_000_099, now=now)
    seed_watch_with_flows(BOB, BOB_ADDRESS, received_wei=10**18, sent_wei=0, block=20_000_100, now=now)

    data = overview.build_overview(ALICE)
    assert data["credits"] == {"state": "ok", "available": 1000, "held": 0, "earned": 0}
    assert [job["job_id"] for job in data["jobs"]["items"]] == ["job-a"]

    forks = data["forks"]
    assert [fork["fork_id"] for fork in forks["items"]] == ["fork-alice"]  # not deleted, not Bob's
    assert forks["items"][0]["lag_blocks"] == 60 and forks["mainnet_block"] == 20_000_100
    assert forks["items"][0]["chain_id"] == chainids.for_fork("fork-alice")  # the Mini App shows each fork's own

    watches = data["watches"]["items"]
    assert [watch["address"] for watch in watches] == [ALICE_ADDRESS]
    assert (watches[0]["inflow"], watches[0]["outflow"], watches[0]["transfers"]) == (3.0, 0.5, 2)

    chain = data["chain"]
    assert chain["head"] == 20_000_100 and len(chain["blocks"]) == 12
    assert [block["number"] for block in chain["blocks"]] == list(range(20_000_089, 20_000_101))
    assert chain["blocks"][0]["tx_count"] == 3 and chain["blocks"][-1]["tx_count"] == 14


def test_flows_older_than_a_day_are_left_out(aws):
    now = int(time.time())
    seed_watch_with_flows(ALICE, ALICE_ADDRESS, received_wei=10**18, sent_wei=0, block=10, now=now - 3 * 86400)
    watch = overview.build_overview(ALICE)["watches"]["items"][0]
    assert (watch["inflow"], watch["transfers"]) == (0, 0)


def test_a_failing_section_does_not_blank_the_others(aws, monkeypatch):
    seed_profile(ALICE)

    def broken(_user_id):
        raise RuntimeError("jobs store down")

    monkeypatch.setattr(overview, "jobs_section", broken)
    data = overview.build_overview(ALICE)
    assert data["jobs"] == {"state": "unavailable"}
    assert data["credits"]["state"] == "ok"


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (None, []),
        ({"utilization_pct": 80, "memory_used_mb": 8192, "memory_total_mb": 16384, "temperature_c": 65, "power_w": 200},
         [{"t": None, "util": 80.0, "mem": 50.0, "temp": 65.0, "power": 200.0}]),
        ({"samples": [{"t": 2, "util": 5}, {"t": 1, "util": 4}]},
         [{"t": 1.0, "util": 4.0, "mem": None, "temp": None, "power": None},
          {"t": 2.0, "util": 5.0, "mem": None, "temp": None, "power": None}]),
        ({"gpus": [{"utilization_pct": 1}, {"utilization_pct": 99}]},
         [{"t": None, "util": 99.0, "mem": None, "temp": None, "power": None}]),
        ({"note": "no readings"}, []),
        ("garbage", []),
    ],
    ids=["none", "agent-heartbeat", "series-sorted", "per-gpu", "no-readings", "not-a-dict"],
)
def test_metric_shapes_are_normalised(metrics, expected):
    assert overview.metric_samples(metrics, gpu_index=1) == expected
