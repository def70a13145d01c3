"""The provider agent's parts on this machine's CPU: config, API client retries, device discovery fallback,
the workloads with real torch (tiny sizes), and the child-process runner's time limit and cancel."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from depu_agent import gpus
from depu_agent.api import AgentRejected, ApiClient, ApiUnavailable, Backoff
from depu_agent.config import ConfigError, load_config
from depu_agent.runner import EVENTS_FD, ChildProcess, StopRequest
from depu_agent.workloads import WorkloadError, benchmark, train
from depu_agent.workloads.report import Reporter

AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"


# ---------------------------------------------------------------------------- config
def test_config_reads_json_and_ini_and_env_overrides(tmp_path):
    json_file = tmp_path / "agent.json"
    json_file.write_text(json.dumps({"api_url": "http://127.0.0.1:9/", "heartbeat_seconds": 3, "gpus": "0"}))
    config = load_config(json_file, environ={"DEPU_AGENT_CANCEL_GRACE_SECONDS": "0.5"})
    assert config.api_url == "http://127.0.0.1:9" and config.heartbeat_seconds == 3.0
    assert config.cancel_grace_seconds == 0.5
    assert config.agent_token_file == str(tmp_path / "agent_token")
    ini_file = tmp_path / "agent.ini"
    ini_file.write_text("[agent]\nname = rig\ncapabilities = gpu, fork_host\nverify = no\n")
    config = load_config(ini_file, environ={})
    assert config.name == "rig" and config.capabilities == ["gpu", "fork_host"] and config.verify is False


def test_config_rejects_unknown_and_malformed_settings(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"heartbeat_secs": 3}))
    with pytest.raises(ConfigError, match="unknown setting 'heartbeat_secs'"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="heartbeat_seconds"):
        load_config(None, environ={"DEPU_AGENT_HEARTBEAT_SECONDS": "often"})
    with pytest.raises(ConfigError, match="does not have"):
        load_config(None, environ={}, gpus="3").shared_gpu_indices([0])


def test_token_file_is_private(tmp_path):
    config = load_config(tmp_path / "agent.json", environ={})
    config.write_token("secret-token-value")
    mode = stat.S_IMODE(os.stat(config.agent_token_file).st_mode)
    assert mode == 0o600 and config.read_token() == "secret-token-value"
    config.save(tmp_path / "agent.json")
    assert "secret-token-value" not in (tmp_path / "agent.json").read_text()


# ---------------------------------------------------------------------------- API client
class FlakyApi(BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` requests, then 200 echoing what it saw."""

    failures = 0
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        FlakyApi.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") == "Bearer wrong":
            status, answer = 401, {"error": "unauthorized"}
        elif FlakyApi.failures > 0:
            FlakyApi.failures -= 1
            status, answer = 503, {"message": "down"}
        else:
            status, answer = 200, {"ok": True}
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_api():
    FlakyApi.failures, FlakyApi.seen = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_api_client_retries_5xx_with_backoff_then_succeeds(flaky_api):
    FlakyApi.failures = 2
    client = ApiClient(flaky_api, token="tok-123", attempts=4, backoff=Backoff(0.01, 0.05))
    status, body = client.post("/agent/heartbeat", {"x": 1})
    assert (status, body) == (200, {"ok": True})
    assert len(FlakyApi.seen) == 3 and all(s["auth"] == "Bearer tok-123" for s in FlakyApi.seen)
    assert "tok-123" not in repr(client)


def test_api_client_gives_up_after_its_attempts_and_on_401(flaky_api):
    FlakyApi.failures = 10
    client = ApiClient(flaky_api, token="tok", attempts=3, backoff=Backoff(0.01, 0.02))
    with pytest.raises(ApiUnavailable, match="HTTP 503"):
        client.post("/agent/claim")
    assert len(FlakyApi.seen) == 3
    with pytest.raises(AgentRejected):
        ApiClient(flaky_api, token="wrong", attempts=3).post("/agent/claim")
    with pytest.raises(ApiUnavailable, match="ConnectionError"):
        ApiClient("http://127.0.0.1:9", attempts=2, backoff=Backoff(0.01, 0.01)).post("/agent/claim")


def test_backoff_is_exponential_with_full_jitter_and_capped():
    backoff = Backoff(1.0, 8.0)
    for attempt in range(8):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= min(8.0, 2**attempt) for d in delays)
    assert max(backoff.delay(6) for _ in range(200)) > 4.0  # jitter spreads up to the cap


# ---------------------------------------------------------------------------- devices
def test_without_nvml_the_cpu_is_offered_as_one_device():
    [device] = gpus.discover()  # no NVIDIA driver on this machine
    assert device.is_cpu and device.index == 0 and device.cuda_capability is None
    assert device.uuid.startswith("CPU-") and device.memory_mb > 0
    assert gpus.discover()[0].uuid == device.uuid  # stable across calls
    [sample] = gpus.metrics([0])
    assert sample["gpu_index"] == 0 and 0 < sample["memory_used_mb"] <= sample["memory_total_mb"]


# ---------------------------------------------------------------------------- workloads
def test_benchmark_measures_matmul_and_bandwidth_on_cpu(tmp_path):
    reporter = Reporter(None)
    result, artifacts = benchmark.run({"size": 128, "repeats": 2, "bandwidth_mb": 4}, torch.device("cpu"),
                                      reporter, tmp_path)
    assert artifacts == [] and result["matrix_size"] == 128
    for key in ("fp32_tflops", "bf16_tflops", "mem_bandwidth_gbs"):
        assert result[key] > 0
    assert [e["progress"] for e in reporter.events][-1] == 1.0
    with pytest.raises(WorkloadError, match="size"):
        benchmark.settings({"size": 10**6}, torch.device("cpu"))
    with pytest.raises(WorkloadError, match="dtypes"):
        benchmark.settings({"dtypes": ["fp8"]}, torch.device("cpu"))


def test_train_learns_two_moons_and_saves_loadable_weights(tmp_path):
    reporter = Reporter(None)
    result, artifacts = train.run({"epochs": 15, "samples": 600, "dataset": "synthetic", "seed": 3},
                                  torch.device("cpu"), reporter, tmp_path)
    assert result["dataset"] == "moons" and len(result["losses"]) == 15
    assert result["losses"][-1] < result["losses"][0] / 2
    assert result["val_accuracy"] >= 0.9
    epochs = [e["metrics"]["epoch"] for e in reporter.events if e.get("metrics")]
    assert epochs == list(range(1, 16))
    saved = torch.load(tmp_path / artifacts[0], weights_only=True)
    model = train.build_model(saved["inputs"], saved["classes"], saved["hidden"], saved["layers"])
    model.load_state_dict(saved["state_dict"])
    features, labels = train.synthetic("moons", 400, seed=99)  # unseen data
    assert train.accuracy(model, features, labels) >= 0.9


def test_train_reads_csv_and_refuses_unsafe_dataset_urls():
    features, labels = train.parse_csv("x,y,label\n0,0,0\n0,1,0\n5,5,1\n5,6,1\n")
    assert features.shape == (4, 2) and labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(WorkloadError, match="row 2"):
        train.parse_csv("1,2,0\n1,a,0\n1,2,1\n3,3,1\n")
    for url in ("http://example.com/d.csv", "https://127.0.0.1/d.csv", "https://10.0.0.8/d.csv",
                "https://[::1]/d.csv", "https://169.254.169.254/latest"):
        with pytest.raises(WorkloadError):
            train.check_public_https(url)
    assert train.settings({"dataset": "https://data.example/x.csv"})["dataset_url"] == "https://data.example/x.csv"
    with pytest.raises(WorkloadError, match="epochs"):
        train.settings({"epochs": 0})


def test_workload_child_reports_result_and_bad_input_on_its_events_pipe(tmp_path):
    def run_child(job: dict) -> tuple[list[dict], list[str], int]:
        (tmp_path / "job.json").write_text(json.dumps(job))
        events, lines = [], []
        child = ChildProcess(
            [sys.executable, "-m", "depu_agent.workloads.run", "--job", str(tmp_path / "job.json"),
             "--out", str(tmp_path / "out"), "--events-fd", EVENTS_FD],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(AGENT_DIR), "CUDA_VISIBLE_DEVICES": ""},
            cwd=str(tmp_path), on_line=lines.append, on_event=events.append,
        ).start()
        outcome = child.wait(120, StopRequest(), 1)
        return events, lines, outcome.returncode

    events, lines, code = run_child({"workload": "benchmark", "params": {"size": 64, "repeats": 1,
                                                                         "bandwidth_mb": 1}})
    assert code == 0 and events[-1]["type"] == "result" and events[-1]["result"]["fp32_tflops"] > 0
    assert any("TFLOP/s" in line for line in lines)  # prints are logs, never events
    events, _, code = run_child({"workload": "train", "params": {"epochs": 500000}})
    assert code == 2 and events[-1] == {"type": "error", "error": "epochs must be between 1 and 500",
                                        "retryable": False}


# ---------------------------------------------------------------------------- runner: time limit, cancel
def _python_child(code: str, tmp_path: Path, lines: list[str]) -> ChildProcess:
    return ChildProcess([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path),
                        on_line=lines.append).start()


def test_time_limit_stops_the_whole_process_group(tmp_path):
    lines: list[str] = []
    code = ("import subprocess, sys, time\n"
            "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(grandchild.pid, flush=True)\n"
            "time.sleep(60)\n")
    child = _python_child(code, tmp_path, lines)
    started = time.monotonic()
    outcome = child.wait(4, StopRequest(), grace_s=1)  # room for two interpreter starts on a busy machine
    assert outcome.reason == "timeout" and time.monotonic() - started < 9
    assert lines, "the child did not start its grandchild within the limit"
    grandchild = int(lines[0])
    time.sleep(0.2)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split(")")[1][:3]


def test_cancel_sends_sigterm_then_sigkill_after_the_grace(tmp_path):
    lines: list[str] = []
    stubborn = ("import signal, time\n"
                "signal.signal(signal.SIGTERM, lambda *a: print('got SIGTERM, ignoring', flush=True))\n"
                "print('ready', flush=True)\n"
                "while True: time.sleep(0.1)\n")
    child = _python_child(stubborn, tmp_path, lines)
    while "ready" not in lines:
        time.sleep(0.05)
    stop = StopRequest()
    threading.Timer(0.2, stop.request, args=("cancelled",)).start()
    started = time.monotonic()
    outcome = child.wait(60, stop, grace_s=1.0)
    elapsed = time.monotonic() - started
    assert outcome.reason == "cancelled" and outcome.returncode == -9  # SIGKILL
    assert "got SIGTERM, ignoring" in lines and 1.0 <= elapsed < 4


def test_output_is_capped_and_long_lines_cut(tmp_path):
    lines: list[str] = []
    child = ChildProcess(
        [sys.executable, "-c", "print('x' * 5000)\nfor i in range(20000): print(i)"],
        env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path), on_line=lines.append,
        max_output_bytes=20_000, max_line_chars=100,
    ).start()
    outcome = child.wait(30, StopRequest(), 1)
    assert outcome.reason == "exited" and outcome.returncode == 0 and outcome.output_truncated
    assert lines[0].endswith("[line truncated]") and len(lines[0]) < 130
    assert lines[-1].startswith("[output truncated") and len(lines) < 4000


def test_cli_without_token_explains_what_to_do(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEPU_")}
    env["PYTHONPATH"] = str(AGENT_DIR)
    done = subprocess.run([sys.executable, "-m", "depu_agent", "--config", str(tmp_path / "none.json")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 4 and "register" in done.stderr


def test_startup_verification_really_allocates_and_computes_on_the_device():
    from depu_agent import verify_runner

    [device] = gpus.discover()
    result = verify_runner.verify_device(device, grace_s=1)
    assert result["verified"] is True and result["matmul_correct"] is True
    assert result["device"] == "cpu" and result["memory_verified_mb"] >= 256  # what the cloud's check expects
    assert result["fp32_tflops"] > 0 and result["mem_bandwidth_gbs"] > 0


def test_memory_check_notices_a_device_that_returns_wrong_data(monkeypatch):
    from depu_agent import verify

    real_full = torch.full

    def corrupting_full(size, value, **kwargs):  # a device whose memory does not hold what was written
        tensor = real_full(size, value, **kwargs)
        tensor[0] += 1
        return tensor

    monkeypatch.setattr(verify.torch, "full", corrupting_full)
    with pytest.raises(RuntimeError, match="memory check failed"):
        verify.allocate_and_check(torch.device("cpu"), 256)
