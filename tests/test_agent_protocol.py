"""The agent's protocol pieces against a recording HTTP endpoint on 127.0.0.1 that can fail on demand:
log batches keep their ``seq`` across retries, progress is throttled to the newest value, and a final report
survives an outage and an agent restart and is delivered exactly once."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from depu_agent.api import ApiClient, Backoff
from depu_agent.logship import JobChannel
from depu_agent.outbox import Outbox


class Recorder(BaseHTTPRequestHandler):
    """Records every request; answers 503 while ``down`` or for the next ``fail_next`` requests."""

    state: dict = {}

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        state = Recorder.state
        with state["lock"]:
            state["requests"].append((self.path, body))
            failing = state["down"] or (state["fail_next"] > 0 and self.path.endswith(state["fail_path"]))
            if failing and not state["down"]:
                state["fail_next"] -= 1
        if failing:
            return self._answer(503, {"message": "unavailable"})
        if self.path.endswith("/artifacts"):
            return self._answer(200, {"upload_url": f"{state['url']}/upload/{body['name']}",
                                      "key": f"jobs/j1/artifacts/{body['name']}"})
        if self.path.endswith("/complete"):
            state["completions"] += 1
        self._answer(200, {"ok": True})

    def do_PUT(self):  # noqa: N802 - the presigned upload
        data = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.state["uploads"][self.path] = data
        self._answer(200, {})

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    Recorder.state = {"lock": threading.Lock(), "requests": [], "down": False, "fail_next": 0, "fail_path": "",
                      "completions": 0,
                      "uploads": {}, "url": url}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url, Recorder.state
    server.shutdown()
    server.server_close()


def client(url: str) -> ApiClient:
    return ApiClient(url, token="t", attempts=3, backoff=Backoff(0.01, 0.05))


def test_log_batches_are_numbered_and_a_retried_batch_keeps_its_seq(endpoint):
    url, state = endpoint
    gone = threading.Event()
    channel = JobChannel(client(url), "j1", interval_s=0.05, batch_attempts=5, on_gone=gone.set).start()
    channel.add_line("first")
    time.sleep(0.3)
    state["fail_path"], state["fail_next"] = "/logs", 2  # the next batch meets two 503s
    channel.add_line("second")
    channel.add_line("third")
    channel.set_progress(0.2, "a")
    channel.set_progress(0.4, "b")  # only the newest progress is sent
    time.sleep(0.5)
    channel.close()
    logs = [body for path, body in state["requests"] if path == "/agent/jobs/j1/logs"]
    assert [b["seq"] for b in logs] == [0, 1, 1, 1]  # the failed attempts resend seq 1, never a new number
    assert logs[0]["lines"] == ["first"] and logs[-1]["lines"] == ["second", "third"]
    progress = [body for path, body in state["requests"] if path.endswith("/progress")]
    assert progress == [{"progress": 0.4, "message": "b"}]
    assert channel.sent_lines == 3 and channel.dropped_lines == 0 and not gone.is_set()


def test_progress_that_could_not_be_sent_is_kept_until_a_newer_one(endpoint):
    url, state = endpoint
    state["fail_path"], state["fail_next"] = "/progress", 2
    channel = JobChannel(client(url), "j1", interval_s=0.05, batch_attempts=5, on_gone=lambda: None).start()
    channel.set_progress(1.0, "done")
    time.sleep(0.5)
    channel.close()
    progress = [body for path, body in state["requests"] if path.endswith("/progress")]
    assert progress == [{"progress": 1.0, "message": "done"}] * 3  # two refused, the third delivered


def test_report_survives_outage_and_restart_and_is_delivered_once(endpoint, tmp_path):
    url, state = endpoint
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights" * 100)
    state["down"] = True
    outbox = Outbox(tmp_path / "outbox", client(url))
    outbox.put("j1", "complete", {"result": {"loss": 0.1}}, [{"name": "model.pt", "path": str(weights)}])
    assert outbox.flush() is False  # API down: kept
    assert outbox.pending_job_ids() == ["j1"]

    state["down"] = False
    restarted = Outbox(tmp_path / "outbox", client(url))  # a new agent process finds it on disk
    assert restarted.flush() is True
    assert restarted.flush() is True  # nothing left, nothing sent twice
    assert state["completions"] == 1
    [complete] = [body for path, body in state["requests"] if path.endswith("/complete")
                  and body.get("artifacts")]
    assert complete == {"result": {"loss": 0.1}, "artifacts": ["jobs/j1/artifacts/model.pt"]}
    assert state["uploads"]["/upload/model.pt"] == weights.read_bytes()
    assert restarted.pending_job_ids() == []


def test_a_report_the_cloud_has_already_decided_is_dropped_not_retried_forever(endpoint, tmp_path):
    url, _ = endpoint

    class Gone(ApiClient):
        def post(self, path, json=None, timeout=None, attempts=None):
            return 409, {"error": "conflict", "state": "cancelled"}

    outbox = Outbox(tmp_path / "outbox", Gone(url))
    outbox.put("j2", "fail", {"error": "boom", "retryable": True})
    assert outbox.flush() is True
    assert outbox.delivered == [{"job_id": "j2", "action": "fail", "outcome": "HTTP 409"}]


def test_endpoint_is_loopback_only(endpoint):
    url, _ = endpoint
    assert url.startswith("http://127.0.0.1:")
    assert requests.post(url + "/x", json={}, timeout=5).status_code == 200


def _job_run(job: dict, url: str, tmp_path, **settings):
    from depu_agent import gpus
    from depu_agent.config import load_config
    from depu_agent.job import JobRun

    config = load_config(None, environ={}, work_dir=str(tmp_path / "work"), docker="never", cancel_grace_seconds=1,
                         log_interval_seconds=0.1, **settings)
    api = client(url)
    outbox = Outbox(tmp_path / "outbox", api)
    run = JobRun(job, gpus.discover()[0], config, api, outbox)
    return run, outbox


def test_job_over_its_time_limit_is_stopped_and_failed_not_retryable(endpoint, tmp_path):
    url, state = endpoint
    run, outbox = _job_run({"job_id": "jlimit", "workload": "script", "time_limit_s": 2, "attempt": 1,
                            "params": {"source": "import time\nprint('working', flush=True)\ntime.sleep(60)\n"}},
                           url, tmp_path)
    started = time.monotonic()
    report = run.run()
    assert time.monotonic() - started < 10
    assert report.action == "fail" and report.body == {"error": "time limit of 2 s reached", "retryable": False}
    assert outbox.flush() is True
    assert ("/agent/jobs/jlimit/fail", report.body) in state["requests"]
    logs = [body for path, body in state["requests"] if path == "/agent/jobs/jlimit/logs"]
    assert any("working" in line for body in logs for line in body["lines"])


def test_job_that_finishes_uploads_its_artifact_then_completes(endpoint, tmp_path):
    url, state = endpoint
    run, outbox = _job_run({"job_id": "jtrain", "workload": "train", "time_limit_s": 120, "attempt": 1,
                            "params": {"epochs": 3, "dataset": "synthetic", "samples": 200}}, url, tmp_path)
    report = run.run()
    assert report.action == "complete", report
    assert outbox.flush() is True
    paths = [path for path, _ in state["requests"]]
    assert paths.index("/agent/jobs/jtrain/artifacts") < paths.index("/agent/jobs/jtrain/complete")
    [complete] = [body for path, body in state["requests"] if path == "/agent/jobs/jtrain/complete"]
    assert complete["artifacts"] == ["jobs/j1/artifacts/model.pt"]
    assert complete["result"]["epochs"] == 3 and len(complete["result"]["losses"]) == 3
    assert state["uploads"]["/upload/model.pt"][:2] == b"PK"  # torch.save's zip format


def test_job_with_bad_parameters_fails_not_retryable_with_the_reason(endpoint, tmp_path):
    url, _ = endpoint
    run, _ = _job_run({"job_id": "jbad", "workload": "train", "time_limit_s": 60,
                       "params": {"dataset": "imagenet"}}, url, tmp_path)
    report = run.run()
    assert report.action == "fail" and report.body["retryable"] is False
    assert "dataset must be one of" in report.body["error"]


def _script_run(url: str, tmp_path, job_id: str, source: str, **settings):
    return _job_run({"job_id": job_id, "workload": "script", "time_limit_s": 60, "attempt": 1,
                     "params": {"source": source}}, url, tmp_path, **settings)


def test_a_script_that_raises_fails_with_its_exit_status_and_last_stderr_lines(endpoint, tmp_path):
    url, state = endpoint
    run, outbox = _script_run(url, tmp_path, "jraise", "print('loading', flush=True)\n"
                              "raise ValueError('the learning rate must be positive')\n")
    report = run.run()
    assert report.action == "fail" and report.body["retryable"] is False
    error = report.body["error"]
    assert error.startswith("your script exited with status 1: "), error
    assert error.endswith("ValueError: the learning rate must be positive") and "line 2, in <module>" in error
    assert outbox.flush() is True
    assert ("/agent/jobs/jraise/fail", report.body) in state["requests"]


def test_a_script_that_runs_out_of_memory_says_so(endpoint, tmp_path):
    url, _ = endpoint
    run, _ = _script_run(url, tmp_path, "joom", "blocks = [bytearray(64 * 2**20) for _ in range(64)]\n",
                         script_memory_mb=1024)
    report = run.run()
    assert report.action == "fail"
    assert report.body["error"].startswith("out of memory: your script exited with status 1: "), report.body
    assert "MemoryError" in report.body["error"]


def test_a_script_killed_by_a_signal_names_the_signal(endpoint, tmp_path):
    url, _ = endpoint
    run, _ = _script_run(url, tmp_path, "jkilled", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    report = run.run()
    assert report.action == "fail"
    assert report.body["error"] == "your script was killed by SIGKILL (out of memory, or stopped from outside)"


def test_a_sandbox_that_cannot_start_fails_the_job_retryably_with_the_reason(endpoint, tmp_path):
    """The interpreter sits in a private folder and the runtime mirror cannot be made: the agent says so."""
    import os
    import sys

    url, _ = endpoint
    private = tmp_path / "private"
    private.mkdir()
    os.symlink(sys.executable, private / "python")
    (private / "runtime").mkdir()
    private.chmod(0o700)
    run, _ = _script_run(url, tmp_path, "jnosandbox", "print('never runs')\n", sandbox_uid_base=482000,
                         sandbox_python=str(private / "python"), sandbox_runtime_dir=str(private / "runtime"))
    report = run.run()
    assert report.action == "fail" and report.body["retryable"] is True  # the machine's fault, not the renter's
    error = report.body["error"]
    assert error.startswith("sandbox could not start: the sandbox user (uid 482000) cannot execute "), error
    assert f"{private}/python: permission denied" in error
