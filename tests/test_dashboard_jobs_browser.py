"""The Mini App's Jobs section in real headless Chromium (Debian's, through playwright-core), against the local
stack's API runtime and moto: a job a registered agent is running, whose log lines the agent's own JobChannel
ships over HTTP while the page is open, and which the agent's own Outbox completes with two output files
(uploaded through their presigned PUTs).

What it shows: the lines appear in the job's log pane while the job runs (each after it was shipped, the first
well before the last was); the job's state follows it to "succeeded"; its outputs are then listed as links
that download the very bytes the agent uploaded; a log line carrying markup (``<img src=x onerror=...>``,
``<script>``) shows as text: no element is made from it, nothing runs and the CSP never had to block anything.
Another user's job is never listed. Chromium and playwright-core come with ``make deps``; without them the test
fails, saying what to run.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from deadlines import scaled, wait_for
from depu.dashboard import initdata
from depu.dashboard import jobs as dashboard_jobs
from depu_agent.api import ApiClient
from depu_agent.logship import JobChannel
from depu_agent.outbox import Outbox
from local.moto_server import free_port
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, register_agent, run_matcher, submit_job
from tests.conftest import TEST_BOT_TOKEN
from tests.dashboard_support import seed_profile, telegram_user
import test_dashboard_browser
from test_dashboard_browser import THEME, launch_url

# the scripts index.html names, in its order: the page must run these and nothing a log line could add
SITE_SCRIPTS = re.findall(r'<script src="([^"]+)"', (Path(__file__).parents[1] / "web/dashboard/index.html").read_text())

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "dashboard_jobs_browser.mjs"
SCREENSHOT = ROOT / ".local" / "screenshots" / "dashboard-job-logs.png"
OTHER_ID = 8002
HOSTILE = ['<img src=x onerror="window.__xss=1">', "</pre><script>window.__xss=2</script>"]
LINES = ["epoch 1/5 loss=0.91", "epoch 2/5 loss=0.62", HOSTILE[0], "epoch 3/5 loss=0.40", HOSTILE[1],
         "epoch 4/5 loss=0.31", "epoch 5/5 loss=0.27"]
OUTPUTS = {"weights.pt": b"\x00\x01weights" * 300, "metrics.json": b'{"loss": 0.27}'}
LOG_POLL_MS = 2000  # jobs.js's default
SHIP_EVERY_S = 1.5  # the agent's pace between lines: several Mini App polls (every 2 s) see the log grow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
browser_ready = test_dashboard_browser.browser_ready


def running_job() -> tuple[str, str]:
    """A job of USER_ID claimed by a freshly registered agent: (job id, agent token)."""
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    agent = register_agent(api, enrol_provider())
    job = submit_job()
    assert run_matcher()["batchItemFailures"] == []
    status, body = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])
    assert status == 200 and body["job"]["job_id"] == job.job_id, body
    return job.job_id, agent["agent_token"]


class Agent(threading.Thread):
    """The provider's side over HTTP, with the agent's own pieces: once the page has the job open, heartbeat
    (keeping the lease), ship LINES one by one through a JobChannel, then report completion through an Outbox
    that uploads OUTPUTS first. Records when each line was handed to the channel."""

    def __init__(self, base_url: str, token: str, job_id: str, opened: Path, workdir: Path):
        super().__init__(daemon=True)
        self.client = ApiClient(base_url, token, timeout=10, attempts=3)
        self.job_id, self.opened, self.workdir = job_id, opened, workdir
        self.stop = threading.Event()
        self.shipped_at: list[float] = []
        self.error: BaseException | None = None

    def heartbeat(self) -> None:
        status, answer = self.client.post("/agent/heartbeat", {"running_jobs": [self.job_id], "free_gpus": []})
        assert status == 200 and answer["cancel"] == [], answer

    def run(self) -> None:
        try:
            wait_for(lambda: self.opened.exists() or self.stop.is_set(), timeout=90, what="the page to open the job")
            channel = JobChannel(self.client, self.job_id, interval_s=0.25, batch_attempts=3, on_gone=self.stop.set).start()
            for line in LINES:
                if self.stop.is_set():
                    return
                self.heartbeat()
                channel.add_line(line)
                self.shipped_at.append(time.time())
                self.stop.wait(SHIP_EVERY_S)
            channel.close()
            assert channel.sent_lines == len(LINES) and channel.dropped_lines == 0
            files = []
            for name, data in OUTPUTS.items():
                (self.workdir / name).write_bytes(data)
                files.append({"name": name, "path": str(self.workdir / name)})
            outbox = Outbox(self.workdir / "outbox", self.client)
            outbox.put(self.job_id, "complete", {"result": {"loss": 0.27}}, files)
            assert outbox.flush()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            self.error = error


def test_live_logs_then_outputs_in_headless_chromium(browser_ready, aws, tmp_path):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    job_id, token = running_job()
    ensure_user(OTHER_ID)
    others = submit_job(OTHER_ID)  # Bob's job: never in Alice's list
    seed_profile(USER_ID, "Grace")
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port()))
    # only the two APIs: the matcher, notifier and schedules have no part in what is shown here
    runtime.functions = {name: fn for name, fn in runtime.functions.items()
                         if name in ("DashboardApiFunction", "AgentApiFunction")}
    runtime.start()
    opened = tmp_path / "opened.json"
    agent = Agent(runtime.url, token, job_id, opened, tmp_path)
    init_data = initdata.build(telegram_user(USER_ID, "Grace"), TEST_BOT_TOKEN, auth_date=int(time.time()) - 5)
    scenario, result_file = tmp_path / "scenario.json", tmp_path / "result.json"
    scenario.write_text(json.dumps({
        "executablePath": shutil.which("chromium") or "/usr/bin/chromium", "url": launch_url(runtime.url, init_data, THEME, poll_ms=LOG_POLL_MS),
        "jobId": job_id, "openedFile": str(opened), "outputs": len(OUTPUTS), "screenshot": str(SCREENSHOT),
        "timeoutMs": int(scaled(90) * 1000), "settleMs": 3 * LOG_POLL_MS,
    }))
    SCREENSHOT.unlink(missing_ok=True)
    agent.start()
    try:
        done = subprocess.run(["node", str(DRIVER), str(scenario), str(result_file)], cwd=ROOT, capture_output=True,
                              text=True, timeout=scaled(240))
    finally:
        agent.stop.set()
        agent.join(timeout=scaled(60))
        runtime.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(result_file.read_text())
    assert agent.error is None, repr(agent.error)
    assert seen["ok"], {key: seen.get(key) for key in ("failure", "viewStatus", "pane", "outputRows", "consoleErrors")}

    # the list shows Alice's job only
    assert seen["listedFirst"] == [job_id] and others.job_id not in json.dumps(seen)

    # live: every line reached the pane, in order, each after the agent shipped it, the first long before the last
    appeared = [entry for entry in seen["logSeen"] if entry["nodeType"] == 3]  # text nodes: one per line
    assert [entry["text"] for entry in appeared] == LINES
    assert len(agent.shipped_at) == len(LINES)
    for entry, shipped in zip(appeared, agent.shipped_at):
        assert entry["t"] / 1000 >= shipped - 0.05, (entry, shipped)  # (the same machine's clock)
    assert appeared[0]["t"] / 1000 < agent.shipped_at[-1]  # on screen before the agent had even sent the last
    assert appeared[0]["status"] == "running"  # shown while the job was still running
    assert len({entry["t"] for entry in appeared}) >= 3  # several polls, not one page at the end

    # polled every ~2 s while running, with nothing after it finished
    assert seen["logRequests"] >= 4 and seen["logRequestsAfterEnd"] == 0

    # then it finished: state, and the outputs as working links to exactly what the agent uploaded
    assert seen["viewStatus"] == "succeeded" and seen["viewFinished"] and seen["stateText"] == "succeeded"
    links = {link["text"]: link for link in seen["outputs"]}
    assert set(links) == set(OUTPUTS)
    for name, data in OUTPUTS.items():
        link = links[name]
        assert link["target"] == "_blank" and "noopener" in link["rel"]
        assert parse_qs(urlsplit(link["href"]).query)["X-Amz-Expires"] == [str(dashboard_jobs.OUTPUT_LINK_SECONDS)]
        fetched = requests.get(link["href"], timeout=10)
        assert fetched.status_code == 200 and fetched.content == data
    assert sorted(seen["outputRows"]) == ["metrics.json14 B", "weights.pt2.7 KB"], seen["outputRows"]

    # the markup in the log is text: shown verbatim, no element made, nothing ran, nothing for the CSP to block
    for line in HOSTILE:
        assert line in seen["pane"]
    assert seen["paneElements"] == 0 and seen["images"] == 0 and seen["xss"] is None
    assert "jobs.js" in SITE_SCRIPTS and seen["scripts"] == SITE_SCRIPTS  # the page's own scripts, nothing else
    assert seen["cspViolations"] == [] and seen["consoleErrors"] == []

    # in Telegram's colours (its theme, through the page's CSS variables)
    assert seen["cardBackground"] == "rgb(27, 42, 64)" and seen["paneColor"] == "rgb(240, 244, 248)"

    # a phone-sized page, talking to nobody but its own origin
    assert seen["viewportWidth"] == 390 and seen["scrollWidth"] <= 390
    assert all(url.startswith(runtime.url + "/dashboard/") for url in seen["requests"]), seen["requests"]
    assert SCREENSHOT.stat().st_size > 10_000
