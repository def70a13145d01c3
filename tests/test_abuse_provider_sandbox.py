"""Abuse (issue 11, found items 1, 2 and the network part of 4): a renter's script attacks the provider's
agent through the real job path (``JobRun`` -> bubblewrap sandbox -> outputs -> outbox -> presigned PUT to a
recording server on 127.0.0.1), and each attack is shown to fail.

(a) A setsid'd helper keeps swapping the job's outputs (and outputs/ itself) for symlinks to the agent token
    while the job ends: before, 81-94 of 120 uploads carried the token. Now the helper dies with the job's PID
    namespace before anything is read, and every read is O_NOFOLLOW relative to a directory descriptor.
(b) A process that keeps forking and exiting (a new pid every few microseconds, which a /proc scan by uid
    never catches) does not survive its job.
(c) The script reaches no network (a listener on the host's 127.0.0.1, as a fork host's anvil is), sees no host
    process (nor the upstream URL in an anvil's argv), and cannot read the agent's token, its config or a
    concurrently running job's workspace.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import job_api_recorder
from agent_process import private_uid_base
from job_api_recorder import JobApiRecorder

from depu_agent import gpus, isolation
from depu_agent.config import load_config
from depu_agent.job import JobRun
from depu_agent.outbox import Outbox
from depu_agent.runner import StopRequest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID (the installed agent has it)"),
    pytest.mark.skipif(isolation.bwrap_path() is None, reason="bubblewrap is installed by make deps and install.sh"),
]

TOKEN = "depa_" + "c3RvbGVuLWJ5LWEtc3ltbGluaw" * 2
SLOT_UID_BASE = private_uid_base(0)  # no passwd entry needed; this worker's own
SWAP_ROUNDS = 30


@pytest.fixture
def api():
    with job_api_recorder.serve() as client:
        yield client


def agent_config(tmp_path, **settings):
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never", work_dir=str(tmp_path / "work"),
                         cancel_grace_seconds=1, log_interval_seconds=0.1, script_max_processes=64, **settings)
    config.write_token(TOKEN)
    config.save(tmp_path / "agent" / "agent.json")
    return config


def run_job(config, api, outbox, job_id: str, source: str, time_limit_s: float = 30):
    job = {"job_id": job_id, "workload": "script", "time_limit_s": time_limit_s, "attempt": 1,
           "params": {"source": textwrap.dedent(source)}}
    return JobRun(job, gpus.discover()[0], config, api, outbox).run()


SWAPPER = """
    import os, sys, time
    TOKEN_FILE, TOKEN_DIR = {token_file!r}, {token_dir!r}
    for index in range(3):
        with open(f"outputs/result{{index}}.txt", "w") as handle:
            handle.write(f"result {{index}}")
    if os.fork() == 0:
        os.setsid()   # out of the job's process group, as in the review's attack
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        ends = time.monotonic() + 20   # bounded, should the sandbox ever let it live
        turn = 0
        while time.monotonic() < ends:
            turn += 1
            for index in range(3):
                name = f"outputs/result{{index}}.txt"
                try:
                    os.symlink(TOKEN_FILE, name + ".swap")
                    os.replace(name + ".swap", name)   # the output is now a link to the agent token
                except OSError:
                    pass
            try:
                if turn % 2:   # and outputs/ itself a link to the agent's folder
                    os.rename("outputs", "outputs.real")
                    os.symlink(TOKEN_DIR, "outputs")
                else:
                    os.unlink("outputs")
                    os.rename("outputs.real", "outputs")
            except OSError:
                pass
        os._exit(0)
    time.sleep({delay})   # the job ends while the helper is mid-swap
    sys.exit(0)
"""


def test_a_helper_swapping_outputs_for_links_to_the_token_never_gets_it_uploaded(tmp_path, api):
    config = agent_config(tmp_path)
    outbox = Outbox(tmp_path / "outbox", api)
    token_dir = os.path.dirname(config.agent_token_file)
    completed = 0
    for round_ in range(SWAP_ROUNDS):
        source = SWAPPER.format(token_file=config.agent_token_file, token_dir=token_dir,
                                delay=(round_ % 6) * 0.01)
        report = run_job(config, api, outbox, f"jswap{round_}", source)
        assert report.action == "complete", report.body
        completed += 1
        assert outbox.flush() is True
    uploads = JobApiRecorder.bodies()
    assert completed == SWAP_ROUNDS
    assert not any(TOKEN.encode() in body for body in uploads), "an upload carried the agent token"
    assert set(uploads) <= {b"result 0", b"result 1", b"result 2"}, uploads[:5]


def test_the_outbox_never_follows_a_link_planted_where_an_artifact_was(tmp_path, api):
    """Defence in depth: were the agent's own copy ever swapped for a symlink before the upload, the outbox
    refuses it instead of sending what it points to."""
    config = agent_config(tmp_path)
    kept = tmp_path / "kept.bin"
    os.symlink(config.agent_token_file, kept)
    outbox = Outbox(tmp_path / "outbox", api)
    outbox.put("jlink", "complete", {"result": {}}, [{"name": "kept.bin", "path": str(kept)}])
    assert outbox.flush() is True
    assert JobApiRecorder.uploads == []


FORK_AND_EXIT = """
    import os, sys, time
    if os.fork() == 0:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        ends = time.monotonic() + 20   # bounded, should the sandbox ever let it live
        while time.monotonic() < ends:
            try:
                if os.fork():
                    os._exit(0)   # the parent leaves at once: only a fresh pid is ever left running
            except OSError:
                time.sleep(0.001)
            with open("beat", "a") as beat:
                beat.write(".")
        os._exit(0)
    while not os.path.exists("beat"):
        time.sleep(0.01)
    time.sleep(0.3)
    print("looping", flush=True)
"""


def test_a_fork_and_exit_loop_does_not_survive_its_job(tmp_path, api):
    """Before: ``kill_everything_of`` scans /proc by uid, and a process that forks and exits faster than one
    scan survived it (3 of 3 runs). Now its job's PID namespace ends with the job, taking it along."""
    config = agent_config(tmp_path, sandbox_uid_base=SLOT_UID_BASE)
    outbox = Outbox(tmp_path / "outbox", api)
    report = run_job(config, api, outbox, "jforkloop", FORK_AND_EXIT)
    assert report.action == "complete", report.body
    for _ in range(10):  # watched for a second: nothing runs as the slot's uid
        assert isolation.processes_of(SLOT_UID_BASE) == []
        time.sleep(0.1)


def test_a_fork_and_exit_loop_does_not_survive_even_with_one_shared_sandbox_user(tmp_path):
    """Without per-slot uids there is no uid to hunt by; the PID namespace is what ends it."""
    config = agent_config(tmp_path, script_memory_mb=1024)
    plan = isolation.plan_script(job_id="jloop", script=textwrap.dedent(FORK_AND_EXIT).encode(), gpu_index=0,
                                 on_cpu=True, time_limit_s=30, config=config, use_docker=False)
    try:
        lines: list[str] = []
        outcome = plan.start(on_line=lines.append).wait(30, StopRequest(), 1)
        assert outcome.returncode == 0 and lines == ["looping"], lines
        assert plan.ended()
        beat = os.path.join(plan.cwd, "beat")
        size = os.path.getsize(beat)
        time.sleep(0.5)
        assert os.path.getsize(beat) == size, "the loop is still writing its heartbeat"
    finally:
        isolation.remove_workspace(plan)


def test_the_script_reaches_no_network_no_host_process_no_agent_file_and_no_other_job(tmp_path, api):
    config = agent_config(tmp_path, sandbox_uid_base=SLOT_UID_BASE)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    secret = "renter-B-" + os.urandom(8).hex()
    victim = isolation.plan_script(job_id="jvictim", script=f"# {secret}\nimport time\ntime.sleep(30)\n".encode(),
                                   gpu_index=1, on_cpu=True, time_limit_s=30, config=config, use_docker=False)
    stop = StopRequest()
    running = victim.start(on_line=lambda line: None)
    # what a fork host's anvil looks like to `ps`: its upstream URL, with the provider's API key, in its argv
    upstream_key = "upstream-api-key-" + os.urandom(6).hex()
    anvil_like = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--fork-url",
                                   f"https://rpc.invalid/v2/{upstream_key}"])
    try:
        probe = f"""
            import glob, json, os, socket
            seen = {{}}
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
                seen["tcp"] = "connected"
            except OSError as error:
                seen["tcp"] = type(error).__name__
            seen["pids"] = sorted(int(pid) for pid in os.listdir("/proc") if pid.isdigit())
            seen["cmdlines"] = [open(f"/proc/{{pid}}/cmdline", "rb").read().decode(errors="replace")
                                for pid in seen["pids"]]
            for name, path in {{"token": {config.agent_token_file!r}, "config": {config.config_path!r},
                               "victim": {os.path.join(victim.cwd, "script.py")!r}}}.items():
                try:
                    seen[name] = "READ " + open(path, errors="replace").read()[:80]
                except OSError as error:
                    seen[name] = type(error).__name__
            seen["other_jobs"] = [path for path in glob.glob({os.path.dirname(victim.cwd)!r} + "/depu-job-*")
                                  if os.path.abspath(path) != os.getcwd()]
            seen["agent_dir"] = os.path.isdir({os.path.dirname(config.agent_token_file)!r})
            seen["state_dir"] = os.path.exists("/var/lib/depu-agent")
            open("outputs/seen.json", "w").write(json.dumps(seen))
            print(json.dumps(seen))
        """
        outbox = Outbox(tmp_path / "outbox", api)
        report = run_job(config, api, outbox, "jprobe", probe)
        assert report.action == "complete", report.body
        assert outbox.flush() is True
        seen = json.loads(JobApiRecorder.bodies()[-1])
        assert seen["tcp"] in ("ConnectionRefusedError", "OSError"), seen["tcp"]  # its own, empty loopback
        with pytest.raises(TimeoutError):
            listener.accept()
        assert seen["pids"] == [1, 2], seen  # bwrap's init and the script: no host process, no other job
        assert not any(secret in line or TOKEN in line or upstream_key in line for line in seen["cmdlines"])
        assert seen["token"] == seen["config"] == seen["victim"] == "FileNotFoundError", seen
        assert seen["other_jobs"] == [] and seen["agent_dir"] is False and seen["state_dir"] is False
        assert running.process.poll() is None  # the other job ran all along, untouched
    finally:
        anvil_like.kill()
        anvil_like.wait()
        stop.request("cancelled")
        running.wait(30, stop, 1)
        isolation.remove_workspace(victim)
        listener.close()
