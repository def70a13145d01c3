"""Abuse: renter scripts that go looking for the provider's secrets and files, run through the agent's real
isolation path (``isolation.plan_script`` + ``SandboxPlan.start``, real processes, the bubblewrap sandbox
every provider without Docker gets). test_agent_isolation.py covers the token file, /proc
environ, symlinked outputs, the time limit and memory; this file adds what a determined script tries next.

Two properties (no process outlives its job; one job cannot read a concurrent job's workspace) once held only
with ``sandbox_uid_base`` set (a uid per GPU slot). Under bubblewrap they hold in both modes: the job's PID
namespace ends with it, and its mount namespace holds its own workspace only. Both modes are checked.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import time

import pytest

from agent_process import private_uid_base

from depu_agent import isolation
from depu_agent.config import load_config
from depu_agent.runner import StopRequest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID (the installed agent has it)"),
]

TOKEN = "depa_" + "Zm9yLXRlc3RzLW9ubHk" * 3
AWS_LIKE = "AKIA" + "TESTONLY0000000"


SANDBOX_UID_BASE = private_uid_base(1)  # no passwd entry needed; this worker's own

MODES = [pytest.param("uid per slot", id="uid-per-slot"), pytest.param("shared user", id="shared-sandbox-user")]


@pytest.fixture
def config(tmp_path, monkeypatch):
    return make_config(tmp_path, monkeypatch)


def make_config(tmp_path, monkeypatch, uid_base: int = 0):
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never", script_memory_mb=1024,
                         script_max_file_mb=1, script_max_processes=64, sandbox_uid_base=uid_base)
    config.write_token(TOKEN)
    config.save(tmp_path / "agent" / "agent.json")
    # what an agent's own environment might hold on a provider's machine
    monkeypatch.setenv("DEPU_AGENT_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_LIKE)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "provider-secret-key-for-tests")
    monkeypatch.setenv("CUDA_CACHE_PATH", "/tmp/cuda-cache")  # passed through on purpose
    return config


def run(config, source: str, time_limit_s: float = 30, grace_s: float = 1) -> tuple[object, list[str], isolation.SandboxPlan]:
    plan = isolation.plan_script(job_id="jabuse", script=textwrap.dedent(source).encode(), gpu_index=0, on_cpu=True,
                                 time_limit_s=time_limit_s, config=config, use_docker=False)
    lines: list[str] = []
    outcome = plan.start(on_line=lines.append).wait(time_limit_s, StopRequest(), grace_s=grace_s)
    return outcome, lines, plan


def last_json(lines: list[str]) -> dict:
    for line in reversed(lines):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(lines)


def test_secret_hunting_script_finds_nothing(config, tmp_path):
    agent_dir = os.path.dirname(config.agent_token_file)
    outcome, lines, plan = run(config, f"""
        import glob, json, os
        secret_bits = [{TOKEN!r}, {AWS_LIKE!r}, "provider-secret-key-for-tests"]
        found = {{"env": sorted(os.environ), "hits": [], "readable": [],
                 "pids": sorted(int(pid) for pid in os.listdir("/proc") if pid.isdigit())}}
        for value in os.environ.values():
            found["hits"] += [bit for bit in secret_bits if bit in value]
        for path in [{config.agent_token_file!r}, {os.path.join(agent_dir, "agent.json")!r}, "/etc/shadow",
                     "/root/.bash_history", "/proc/1/environ", "/proc/{os.getpid()}/environ",
                     "/proc/{os.getppid()}/environ", "/proc/{os.getpid()}/mem"]:
            try:
                with open(path, "rb") as handle:
                    data = handle.read(1 << 20)
                found["readable"].append(path)
                found["hits"] += [bit for bit in secret_bits if bit.encode() in data]
            except OSError:
                pass
        for pid in filter(str.isdigit, os.listdir("/proc")):  # every process's command line is world-readable
            try:
                with open(f"/proc/{{pid}}/cmdline", "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            found["hits"] += [bit for bit in secret_bits if bit.encode() in data]
        try:
            found["agent_dir_listing"] = os.listdir({agent_dir!r})
        except OSError as error:
            found["agent_dir_listing"] = type(error).__name__
        print(json.dumps(found))
    """)
    assert outcome.returncode == 0, lines
    found = last_json(lines)
    assert found["hits"] == [], found
    assert not any(name.startswith(("AWS", "DEPU")) for name in found["env"]), found["env"]
    assert set(found["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONUNBUFFERED", "PYTHONNOUSERSITE",
                                 "PYTHONDONTWRITEBYTECODE", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_CACHE_PATH", "LD_LIBRARY_PATH",
                                 "LC_CTYPE", "PWD"}, found["env"]  # PWD: bwrap sets it to the workspace
    # /proc/1 is the sandbox's own init (bwrap's reaper, with the script's scrubbed environment): the hits
    # above cover it; the host's processes are not there at all
    assert found["pids"] == [1, 2], found["pids"]
    for private in (config.agent_token_file, "/etc/shadow", f"/proc/{os.getpid()}/environ"):
        assert private not in found["readable"], found["readable"]
    isolation.remove_workspace(plan)


def test_file_size_and_process_limits_hold(config):
    outcome, lines, plan = run(config, """
        import json, os
        result = {}
        try:
            with open("outputs/big.bin", "wb") as handle:
                for _ in range(8):
                    handle.write(b"x" * (512 * 1024))
            result["wrote"] = "all"
        except OSError as error:
            result["wrote"] = type(error).__name__
        children, refused = [], None
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError as error:
                refused = type(error).__name__
                break
            if pid == 0:
                import time
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        result["forked"], result["refused"] = len(children), refused
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print(json.dumps(result))
    """)
    result = last_json(lines)
    assert result["wrote"] == "OSError" or result["wrote"].endswith("Error"), result  # RLIMIT_FSIZE: 1 MiB
    assert os.path.getsize(os.path.join(plan.outputs, "big.bin")) <= 1024 * 1024
    assert result["refused"] is not None and result["forked"] < 64, result  # RLIMIT_NPROC
    isolation.remove_workspace(plan)


def test_a_script_that_ignores_sigterm_is_killed_at_its_time_limit(config):
    started = time.monotonic()
    outcome, lines, plan = run(config, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        while True:
            time.sleep(0.05)
    """, time_limit_s=1.5, grace_s=1)
    assert outcome.reason == "timeout" and outcome.returncode == -signal.SIGKILL, outcome
    assert time.monotonic() - started < 8
    isolation.remove_workspace(plan)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


ESCAPER = """
    import os, sys, time
    pid = os.fork()
    if pid == 0:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        while True:  # a heartbeat the test can watch from outside (the pid it sees is the namespace's)
            with open("beat", "a") as beat:
                beat.write(".")
            time.sleep(0.02)
    while not os.path.exists("beat"):
        time.sleep(0.01)
    print(pid, flush=True)
"""


def heartbeat_stopped(plan: isolation.SandboxPlan) -> bool:
    path = os.path.join(plan.cwd, "beat")
    before = os.path.getsize(path)
    time.sleep(0.3)
    return os.path.getsize(path) == before


@pytest.mark.parametrize("mode", MODES)
def test_no_process_of_a_finished_job_survives_it(tmp_path, monkeypatch, mode):
    config = make_config(tmp_path, monkeypatch, SANDBOX_UID_BASE if mode == "uid per slot" else 0)
    outcome, lines, plan = run(config, ESCAPER, time_limit_s=10)
    try:
        assert outcome.returncode == 0 and lines, lines
        assert plan.ended(), "the job's PID namespace is still there"
        assert heartbeat_stopped(plan), "the setsid'd process of the finished job is still running"
        if mode == "uid per slot":
            assert isolation.processes_of(SANDBOX_UID_BASE) == []
    finally:
        isolation.remove_workspace(plan)


@pytest.mark.parametrize("mode", MODES)
def test_one_jobs_script_cannot_read_a_concurrent_jobs_workspace(tmp_path, monkeypatch, mode):
    config = make_config(tmp_path, monkeypatch, SANDBOX_UID_BASE if mode == "uid per slot" else 0)
    secret = b"renter-A-private-model-" + os.urandom(8).hex().encode()
    victim = isolation.plan_script(job_id="jvictim", script=b"# renter A: " + secret + b"\n", gpu_index=1,
                                   on_cpu=True, time_limit_s=30, config=config, use_docker=False)
    try:
        outcome, lines, plan = run(config, f"""
            import glob, os
            hits = 0
            for path in glob.glob({os.path.dirname(victim.cwd)!r} + "/depu-job-*/script.py"):
                if os.path.dirname(os.path.abspath(path)) == os.getcwd():
                    continue  # this job's own script
                try:
                    hits += {secret!r} in open(path, "rb").read()
                except OSError:
                    pass
            print(hits)
        """)
        assert lines[-1] == "0", "the other job's script was readable"
        isolation.remove_workspace(plan)
    finally:
        isolation.remove_workspace(victim)


def test_without_docker_the_loopback_network_is_still_cut(config):
    """Once a documented hole (the restricted mode shared the host's network): under bubblewrap the script has a
    network namespace of its own, so a listener on the host's 127.0.0.1 is out of reach."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        outcome, lines, plan = run(config, f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
                print("connected")
            except OSError as error:
                print(type(error).__name__)
        """)
        assert outcome.returncode == 0 and lines[-1] == "ConnectionRefusedError", lines
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever arrived
        isolation.remove_workspace(plan)
    finally:
        listener.close()
