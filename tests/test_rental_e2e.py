"""GPU rental end to end: the real agent process against the real cloud side.

The cloud runs in this process exactly as the local stack runs it (``local.runtime.LocalRuntime``: the API
routes of template.yaml invoke the real handlers, an SQS poller feeds the real matcher), backed by moto. The
agent is a separate ``python -m depu_agent`` process that registers with a provider's enrolment token, claims
over HTTP and runs real torch on this machine's CPU.
"""
from __future__ import annotations

import io
import os
import sys
import threading
import time

import boto3
import pytest
import torch

from agent_process import AgentProcess, alive, descendants_of, wait_for
from deadlines import scaled
from local.moto_server import free_port
from recording_chat import RecordingChat
from rental_helpers import PROVIDER_ID, USER_ID, enrol_provider, ensure_user, submit_job

pytestmark = pytest.mark.e2e

SLOW_SCRIPT = b"""
import time, torch
torch.manual_seed(0)
total = 0.0
for step in range(STEPS):
    total += float(torch.randn(64, 64).matmul(torch.randn(64, 64)).sum())
    print(f"step {step}", flush=True)
    time.sleep(0.5)
open("outputs/total.txt", "w").write(repr(total))
print("done", flush=True)
"""


def slow_script(steps: int) -> bytes:
    return SLOW_SCRIPT.replace(b"STEPS", str(steps).encode())


@pytest.fixture
def cloud(aws):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port(), poll_wait_seconds=1))
    for name in list(runtime.functions):  # the rental path only: the indexer and notifier would just add load
        if name not in ("AgentApiFunction", "MatcherFunction", "LeaseReaperFunction"):
            del runtime.functions[name]
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def agents(cloud, tmp_path):
    started: list[AgentProcess] = []

    def start(name: str, **kwargs) -> AgentProcess:
        if "agent_token" not in kwargs and "enrolment_token" not in kwargs:
            kwargs["enrolment_token"] = enrol_provider()
        process = AgentProcess(cloud.url, tmp_path / name, name, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def finished(job_id: str, timeout: float):
    """The job once it is terminal and settled (settlement follows the state change)."""
    return wait_for(lambda: (j := job_of(job_id)).status in ("succeeded", "failed", "cancelled") and j.settled and j,
                    timeout, what=f"job {job_id} to finish and settle")


def job_of(job_id: str):
    from depu.jobs.models import Job

    return Job.get(job_id, consistent_read=True)


def settles_for(job) -> list:
    from depu import credits

    return [entry for entry in credits.history(USER_ID, limit=100)
            if entry.kind == "settle" and job.hold_id in entry.entry_id]


def test_user_rents_agent_trains_real_model_and_user_is_charged_once(agents):
    from depu import credits
    from depu.jobs import metering, storage

    ensure_user(USER_ID)
    before = credits.balance(USER_ID)
    agent = agents("rig-a")
    agent.wait_registered()
    job = submit_job(USER_ID, gpu_class="cpu", workload="train", params={"epochs": 8, "dataset": "synthetic"},
                     time_limit_s=120)

    done = finished(job.job_id, 90)
    assert done.status == "succeeded", (done.error, agent.log_text()[-2000:])
    result = done.result
    assert result["epochs"] == 8 and len(result["losses"]) == 8
    assert result["losses"][-1] < result["losses"][0] * 0.7  # it really learned
    assert result["val_accuracy"] > 0.8
    assert done.logs_tail, "the job's log lines reached the cloud"
    assert not [line for line in done.logs_tail if "Warning" in line], done.logs_tail  # no deprecated NVML binding

    # the weights came back as an artifact the user can load
    [key] = done.artifacts
    saved = torch.load(io.BytesIO(storage.get(key)), weights_only=True)
    assert saved["inputs"] == 2 and saved["classes"] == 2
    assert any(tensor.shape[0] == saved["hidden"] for tensor in saved["state_dict"].values())

    # charged exactly once, per second of GPU time, hold released
    assert done.settled and done.charged == metering.cost_of(int(done.price_per_hour), done.billed_seconds)
    assert len(settles_for(done)) == 1
    after = credits.balance(USER_ID)
    assert after.held == before.held == 0
    assert after.credits == before.credits - done.charged
    metering.settle(job_of(job.job_id))  # a retried settlement changes nothing
    assert credits.balance(USER_ID).credits == after.credits and len(settles_for(done)) == 1


def test_agent_killed_mid_job_lease_expires_second_agent_completes_charged_once(agents):
    from depu import credits
    from depu.jobs import reaper
    from depu.jobs.leases import LEASE_SECONDS

    ensure_user(USER_ID)
    before = credits.balance(USER_ID)
    first = agents("rig-first")
    first.wait_registered()
    job = submit_job(USER_ID, gpu_class="cpu", workload="script", params={"file_name": "slow.py", "file_size": 300},
                     script=slow_script(10), time_limit_s=120)
    wait_for(lambda: job_of(job.job_id).status == "running" and any("step 1" in line for line in
             job_of(job.job_id).logs_tail or []), 60, what="the first agent to be mid-job")
    first_agent_id = job_of(job.job_id).agent_id
    first.kill_hard()

    second = agents("rig-second")
    second.wait_registered()
    # the silent agent's lease runs out: the reaper's sweep at a time past it takes the job back
    sweep = reaper.sweep(int(time.time()) + LEASE_SECONDS + 5)
    assert job.job_id in sweep.retried

    done = finished(job.job_id, 90)
    assert done.status == "succeeded", (done.error, second.log_text()[-2000:])
    assert done.agent_id != first_agent_id and first_agent_id in done.failed_agents
    assert done.attempt >= 2
    assert done.result["exit_code"] == 0 and done.result["output_files"] == ["total.txt"]
    assert len(settles_for(done)) == 1
    assert credits.balance(USER_ID).credits == before.credits - done.charged
    assert done.billed_seconds <= done.result["duration_s"] + 5  # only the attempt that ran to the end


def test_cancel_reaches_the_agent_within_seconds(agents):
    from depu import credits
    from depu.jobs import service

    ensure_user(USER_ID)
    agent = agents("rig-cancel")
    agent.wait_registered()
    job = submit_job(USER_ID, gpu_class="cpu", workload="script", params={"file_name": "long.py", "file_size": 300},
                     script=slow_script(200), time_limit_s=300)
    wait_for(lambda: any("step 0" in line for line in job_of(job.job_id).logs_tail or []), 60,
             what="the script to run")
    script_pids = wait_for(lambda: [pid for pid in descendants_of(agent.pid)
                                    if b"script.py" in _cmdline(pid)], 10, what="the script process")

    cancelled_at = time.monotonic()
    service.cancel(USER_ID, job.job_id)
    wait_for(lambda: not any(alive(pid) for pid in script_pids), 15, interval=0.1,
             what="the script process to stop")
    reached_in = time.monotonic() - cancelled_at
    print(f"cancel reached the agent and stopped the script in {reached_in:.2f} s")
    assert reached_in < scaled(8), reached_in  # heartbeat (1 s) + SIGTERM; the script needs no SIGKILL
    assert f"job {job.job_id} cancelled by the cloud" in agent.log_text()
    done = finished(job.job_id, 10)
    assert done.status == "cancelled"
    assert credits.balance(USER_ID).held == 0
    assert agent.process.poll() is None  # the agent itself carries on


def test_agent_with_wrong_token_gets_401_and_sees_no_jobs(agents):
    ensure_user(USER_ID)
    job = submit_job(USER_ID, gpu_class="cpu", workload="benchmark", time_limit_s=60)
    impostor = agents("rig-impostor", agent_token="not-a-real-token-" + "x" * 20)
    impostor.process.wait(timeout=30)
    assert impostor.process.returncode == 3
    assert "rejected this agent's token (401)" in impostor.log_text()
    still = job_of(job.job_id)
    assert still.status == "queued" and still.agent_id is None


class OutageProxy:
    """Forwards the agent's requests to the local API, or answers 503 for all of them while ``down``."""

    def __init__(self, upstream: str):
        import requests
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.down = False
        self.refused: list[str] = []
        self.forwarded: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.down:
                    proxy.refused.append(self.path)
                    status, headers, payload = 503, {"Content-Type": "application/json"}, b'{"message":"down"}'
                else:
                    proxy.forwarded.append(self.path)
                    answer = requests.post(upstream + self.path, data=body, timeout=60, headers={
                        "Authorization": self.headers.get("Authorization", ""),
                        "Content-Type": "application/json"})
                    status, payload = answer.status_code, answer.content
                    headers = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_result_finished_during_an_api_outage_is_delivered_once_after_it(agents, cloud, tmp_path):
    from depu import credits

    ensure_user(USER_ID)
    before = credits.balance(USER_ID)
    proxy = OutageProxy(cloud.url)
    try:
        agent = AgentProcess(proxy.url, tmp_path / "rig-outage", "rig-outage", enrolment_token=enrol_provider())
        try:
            agent.wait_registered()
            job = submit_job(USER_ID, gpu_class="cpu", workload="script",
                             params={"file_name": "s.py", "file_size": 300}, script=slow_script(6), time_limit_s=120)
            wait_for(lambda: any("step 1" in line for line in job_of(job.job_id).logs_tail or []), 60,
                     what="the job to run")
            proxy.down = True  # the API disappears while the job runs
            wait_for(lambda: "finished: complete" in agent.log_text(), 60, what="the job to end during the outage")
            wait_for(lambda: any(path.startswith(f"/agent/jobs/{job.job_id}/") and path.endswith(("/artifacts",
                     "/complete")) for path in proxy.refused), 30, what="the report to be refused")
            assert job_of(job.job_id).status == "running"
            assert agent.process.poll() is None  # the outage did not kill the agent
            assert list((tmp_path / "rig-outage" / "work" / "outbox").glob("*.json")), "kept on disk"
            proxy.down = False
            done = finished(job.job_id, 60)
        finally:
            agent.stop()
    finally:
        proxy.close()
    assert done.status == "succeeded" and done.result["output_files"] == ["total.txt"]
    assert len(settles_for(done)) == 1
    assert credits.balance(USER_ID).credits == before.credits - done.charged


def test_graceful_shutdown_hands_the_running_job_back(agents):
    from depu import credits

    ensure_user(USER_ID)
    agent = agents("rig-leaving")
    agent.wait_registered()
    job = submit_job(USER_ID, gpu_class="cpu", workload="script", params={"file_name": "s.py", "file_size": 300},
                     script=slow_script(200), time_limit_s=300)
    wait_for(lambda: any("step 0" in line for line in job_of(job.job_id).logs_tail or []), 60,
             what="the job to run")
    assert agent.stop(timeout=30) == 0
    back = job_of(job.job_id)
    # released: back in the queue (the matcher may already have offered it again)
    assert back.status in ("queued", "assigned"), back.status
    assert "not delivered" not in agent.log_text()
    assert not list((agent.directory / "work" / "outbox").glob("*.json"))
    assert not any(b"script.py" in _cmdline(pid) for pid in descendants_of(agent.pid))
    assert credits.balance(USER_ID).held == back.max_cost  # still held for the next attempt, nothing charged
    assert not settles_for(back)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""



def _bot_says(handler, command: str, args: str, user_id: int) -> str:
    """What the bot answers a private-chat command, read the way the user reads it."""
    from depu.bot.registry import Incoming

    chat = RecordingChat()
    handler(Incoming(update_id=1, user_id=user_id, chat_id=user_id, chat_type="private",
                     text=f"/{command} {args}".strip(), command=command, args=args, message_id=5), chat)
    return chat.text


def test_an_agent_whose_sandbox_cannot_run_scripts_says_why_and_takes_no_work(agents, tmp_path):
    """The interpreter is in a private folder and the runtime mirror cannot be made: the agent finds out at
    start-up, says why in its log and in /provider, and the job goes to a healthy agent instead."""
    from depu.agents.registry import agents_of_provider
    from depu.bot import rental

    private = tmp_path / "private"
    private.mkdir()
    os.symlink(sys.executable, private / "python")
    (private / "runtime").mkdir()
    private.chmod(0o700)
    broken = agents("rig-broken", settings={"sandbox_python": str(private / "python"),
                                            "sandbox_runtime_dir": str(private / "runtime")})
    broken.wait_registered()
    why = f"cannot execute {private}/python: permission denied"
    assert "this agent takes no jobs: the sandbox user" in broken.log_text() and why in broken.log_text()
    [record] = [agent for agent in agents_of_provider(PROVIDER_ID) if agent.name == "rig-broken"]
    assert why in (record.fault or ""), record.fault  # registered with its fault: never looked able to work
    assert "takes no jobs: the sandbox user" in _bot_says(rental.provider, "provider", "", PROVIDER_ID)

    ensure_user(USER_ID)
    job = submit_job(USER_ID, gpu_class="cpu", workload="script", params={"file_name": "s.py", "file_size": 300},
                     script=slow_script(1), time_limit_s=120)
    healthy = agents("rig-healthy")
    healthy.wait_registered()
    done = finished(job.job_id, 90)
    assert done.status == "succeeded", (done.error, healthy.log_text()[-2000:])
    assert done.agent_id != record.agent_id and int(done.attempt) == 1
    assert f"job {job.job_id}" not in broken.log_text()
    assert broken.process.poll() is None  # it stays up, heartbeating its fault, until its provider fixes it


def test_a_failed_script_tells_the_user_why_in_the_job_and_in_jobs(agents):
    from depu.bot import rental
    from depu.bot import job_text as messages

    ensure_user(USER_ID)
    agent = agents("rig-failing")
    agent.wait_registered()
    failing = b"import torch\nprint('starting', flush=True)\nraise RuntimeError('CUDA kernel image not found')\n"
    job = submit_job(USER_ID, gpu_class="cpu", workload="script", params={"file_name": "f.py", "file_size": 80},
                     script=failing, time_limit_s=60)
    done = finished(job.job_id, 60)
    assert done.status == "failed"
    assert done.error.startswith("your script exited with status 1: "), done.error
    assert done.error.endswith("RuntimeError: CUDA kernel image not found"), done.error
    assert f"job {job.job_id} finished: fail (your script exited with status 1" in agent.log_text()
    shown = _bot_says(rental.list_jobs, "jobs", job.job_id, USER_ID)
    assert "Reason: your script exited with status 1" in shown and "CUDA kernel image not found" in shown
    assert "Reason: your script exited with status 1" in messages.status_text(done)  # the progress message
