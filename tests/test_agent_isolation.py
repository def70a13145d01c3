"""A renter's script runs in the restricted sandbox and cannot reach the agent's credentials or outlive its
time. Docker is not running on this machine, so this is the fallback path every provider without Docker gets.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from agent_process import private_uid_base

from depu_agent import isolation
from depu_agent.config import load_config
from depu_agent.runner import StopRequest

TOKEN = "agent-token-" + "s3cr3t" * 6


@pytest.fixture
def agent_config(tmp_path, monkeypatch):
    config = load_config(tmp_path / "agent" / "agent.json", environ={}, docker="never", script_memory_mb=1024)
    config.write_token(TOKEN)
    config.save(tmp_path / "agent" / "agent.json")
    monkeypatch.setenv("DEPU_AGENT_TOKEN_FOR_TEST", TOKEN)  # the agent's own environment holds a secret
    return config


def run_script(config, source: str, time_limit_s: float = 60) -> tuple[object, list[str], isolation.SandboxPlan]:
    plan = isolation.plan_script(job_id="jtest", script=textwrap.dedent(source).encode(), gpu_index=0,
                                 on_cpu=True, time_limit_s=time_limit_s, config=config, use_docker=False)
    lines: list[str] = []
    outcome = plan.start(on_line=lines.append).wait(time_limit_s, StopRequest(), grace_s=1)
    return outcome, lines, plan


@pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID to run scripts as another user")
def test_script_cannot_read_the_agent_token_from_env_files_or_proc(agent_config):
    token_file = agent_config.agent_token_file
    config_file = os.path.join(os.path.dirname(token_file), "agent.json")
    outcome, lines, plan = run_script(agent_config, f"""
        import json, os
        findings = {{"uid": os.getuid(), "env_has_token": any({TOKEN!r} in v for v in os.environ.values()),
                     "env_keys": sorted(os.environ)}}
        for name, path in {{"token": {token_file!r}, "config": {config_file!r},
                           "agent_environ": "/proc/{os.getpid()}/environ",
                           "agent_cmdline_dir": "/proc/{os.getpid()}/cwd/agent_token"}}.items():
            try:
                with open(path, "rb") as handle:
                    findings[name] = "READ " + str({TOKEN!r}.encode() in handle.read())
            except OSError as error:
                findings[name] = type(error).__name__
        os.symlink({token_file!r}, "outputs/stolen.txt")   # try to smuggle it out as an artifact
        open("outputs/real.txt", "w").write("ok")
        print(json.dumps(findings))
    """)
    assert outcome.returncode == 0, lines
    findings = json.loads(lines[-1])
    assert findings["uid"] != os.getuid() and findings["uid"] == plan.user.uid
    assert findings["env_has_token"] is False
    assert not any(key.startswith(("DEPU", "AWS")) for key in findings["env_keys"])
    for name in ("token", "config", "agent_environ", "agent_cmdline_dir"):
        assert not findings[name].startswith("READ"), (name, findings[name])
    kept = os.path.join(os.path.dirname(token_file), "kept")
    os.mkdir(kept)
    collected = [name for name, _path in isolation.collect_outputs(plan, Path(kept), 10_000_000)]
    assert collected == ["real.txt"]  # the symlink to the token file is never uploaded
    isolation.remove_workspace(plan)
    assert not os.path.exists(plan.cwd)


def test_script_cannot_outlive_its_time_limit_or_exceed_its_memory(agent_config):
    outcome, lines, plan = run_script(agent_config, """
        import time
        print("spinning", flush=True)
        while True:
            time.sleep(0.05)
    """, time_limit_s=2)
    assert outcome.reason == "timeout" and outcome.returncode in (-15, -9) and outcome.duration_s < 6
    isolation.remove_workspace(plan)

    outcome, lines, plan = run_script(agent_config, """
        try:
            block = bytearray(4 * 1024 * 1024 * 1024)
            print("allocated 4 GiB")
        except MemoryError:
            print("MemoryError")
    """)
    assert lines == ["MemoryError"]  # RLIMIT_AS (script_memory_mb=1024) holds
    isolation.remove_workspace(plan)


def test_script_workspace_is_fresh_private_and_limited(agent_config):
    outcome, lines, plan = run_script(agent_config, """
        import os, resource
        print(sorted(os.listdir(".")))
        print(oct(os.stat(".").st_mode & 0o777))
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], resource.getrlimit(resource.RLIMIT_CORE)[0])
        print(os.getpid(), sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit()))
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(status["CapEff"].strip(), status["CapAmb"].strip(), status["NoNewPrivs"].strip())
    """)
    assert lines[0] == "['outputs', 'script.py', 'tmp']"
    assert lines[1] == "0o700"
    assert lines[2] == f"{agent_config.script_max_files} 0"
    assert lines[3] == "2 [1, 2]"  # its own PID namespace: bwrap's init and the script, nothing of the host
    assert lines[4] == "0000000000000000 0000000000000000 1"  # no capabilities, cannot gain any
    isolation.remove_workspace(plan)


def test_docker_plan_pins_the_gpu_and_cuts_the_network(agent_config):
    plan = isolation.plan_script(job_id="jdock", script=b"print(1)", gpu_index=3, on_cpu=False, time_limit_s=60,
                                 config=agent_config, use_docker=True)
    argv = " ".join(plan.argv)
    assert "--gpus device=3" in argv and "--network none" in argv and "--cap-drop ALL" in argv
    assert TOKEN not in argv and "agent_token" not in argv
    assert plan.cleanup == [["docker", "rm", "-f", "depu-job-jdock"]]
    isolation.remove_workspace(plan)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the workspace to the container's uid needs CAP_CHOWN")
def test_docker_workspace_belongs_to_the_container_user_and_nobody_else_can_write_it(agent_config):
    """It was 0777: the container (or any local user) could swap outputs/ for a symlink to the agent's token.
    Now it belongs to the uid the container runs as, mode 700, and lives in the agent's work folder (which the
    Docker daemon sees; a systemd unit's PrivateTmp is invisible to it)."""
    agent_config.sandbox_uid_base = SLOT_UID_BASE
    plan = isolation.plan_script(job_id="jdock", script=b"print(1)", gpu_index=2, on_cpu=True, time_limit_s=60,
                                 config=agent_config, use_docker=True)
    try:
        uid = SLOT_UID_BASE + 2
        assert plan.argv[plan.argv.index("--user") + 1] == f"{uid}:{uid}"
        assert plan.argv[plan.argv.index("-v") + 1] == f"{plan.cwd}:/work"
        assert plan.cwd.startswith(os.path.join(agent_config.work_dir, "containers") + os.sep)
        for path in (plan.cwd, plan.outputs, os.path.join(plan.cwd, "script.py")):
            info = os.stat(path)
            assert (info.st_uid, info.st_gid) == (uid, uid) and info.st_mode & 0o077 == 0, (path, oct(info.st_mode))
        assert plan.owner_uid == uid  # only files the container's user wrote come back
    finally:
        isolation.remove_workspace(plan)
    assert not os.path.exists(plan.cwd)


def test_without_bubblewrap_the_self_check_names_it_and_scripts_are_refused(agent_config, monkeypatch):
    monkeypatch.setattr(isolation, "bwrap_path", lambda: None)
    assert isolation.self_check(agent_config) == isolation.BWRAP_MISSING
    assert isolation.BWRAP_MISSING.startswith("bubblewrap (bwrap) is not installed")
    with pytest.raises(isolation.SandboxUnusable, match=r"bubblewrap \(bwrap\) is not installed"):
        isolation.plan_script(job_id="jnobwrap", script=b"print(1)", gpu_index=0, on_cpu=True, time_limit_s=60,
                              config=agent_config, use_docker=False)


@pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID")
def test_the_unisolated_mode_runs_only_when_the_config_asks_for_it(agent_config, monkeypatch):
    monkeypatch.setattr(isolation, "bwrap_path", lambda: None)
    agent_config.allow_unisolated_scripts = True
    assert isolation.self_check(agent_config) is None
    outcome, lines, plan = run_script(agent_config, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]) > 2)\n")
    assert plan.kind == "restricted" and plan.argv[0] != "bwrap" and lines == ["True"]  # the host's processes
    isolation.remove_workspace(plan)


@pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID")
def test_bubblewrap_binds_no_agent_folder_and_its_gpu_nodes_only(agent_config, monkeypatch):
    monkeypatch.setattr(isolation, "gpu_device_nodes", lambda index: [f"/dev/nvidia{index}", "/dev/nvidiactl"])
    plan = isolation.plan_script(job_id="jargv", script=b"print(1)", gpu_index=5, on_cpu=False, time_limit_s=60,
                                 config=agent_config, use_docker=False, gpu_uuid="GPU-5")
    try:
        argv = plan.argv
        assert plan.kind == "bwrap" and os.path.basename(argv[0]) == "bwrap"
        for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"):
            assert flag in argv
        assert "--share-net" not in argv
        assert argv[argv.index("--bind") + 1:argv.index("--bind") + 3] == [plan.cwd, plan.cwd]  # the one writable
        assert [argv[i + 1] for i, part in enumerate(argv) if part == "--dev-bind"] == ["/dev/nvidia5", "/dev/nvidiactl"]
        agent_dir = os.path.dirname(agent_config.agent_token_file)
        assert not any(part.startswith((agent_dir, agent_config.work_dir)) for part in argv)
        assert plan.env["CUDA_VISIBLE_DEVICES"] == "GPU-5"  # the index means nothing when one node is visible
    finally:
        isolation.remove_workspace(plan)


SLOT_UID_BASE = private_uid_base(2)  # no passwd entry needed; this worker's own


@pytest.fixture
def per_slot_config(agent_config):
    agent_config.sandbox_uid_base = SLOT_UID_BASE
    return agent_config


def plan_on(config, slot: int, source: str) -> isolation.SandboxPlan:
    return isolation.plan_script(job_id=f"jslot{slot}", script=textwrap.dedent(source).encode(), gpu_index=slot,
                                 on_cpu=True, time_limit_s=30, config=config, use_docker=False)


def start(plan: isolation.SandboxPlan, lines: list[str]):
    return plan.start(on_line=lines.append)


@pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID")
def test_with_per_slot_uids_a_job_cannot_read_a_concurrent_jobs_workspace(per_slot_config):
    victim = plan_on(per_slot_config, 0, "# renter A's private code\n")
    attacker = plan_on(per_slot_config, 1, f"""
        import os
        try:
            print(open({os.path.join(victim.cwd, 'script.py')!r}).read())
        except OSError as error:
            print(type(error).__name__)
        print(os.getuid())
    """)
    try:
        lines: list[str] = []
        start(attacker, lines).wait(30, StopRequest(), 1)
        # not even there: the sandbox's mount namespace holds its own workspace only (and the uid would be refused)
        assert lines == ["FileNotFoundError", str(SLOT_UID_BASE + 1)]
        assert victim.user.uid == SLOT_UID_BASE and os.stat(victim.cwd).st_uid == SLOT_UID_BASE
    finally:
        isolation.remove_workspace(attacker)
        isolation.remove_workspace(victim)


@pytest.mark.skipif(not isolation.can_switch_user(), reason="needs root or CAP_SETUID")
def test_with_per_slot_uids_nothing_a_job_started_outlives_it_and_other_jobs_are_untouched(per_slot_config):
    escaper = """
        import os, time
        pid = os.fork()
        if pid == 0:
            os.setsid()   # leaves the job's process group
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
    """
    finished = plan_on(per_slot_config, 0, escaper)
    neighbour = plan_on(per_slot_config, 1, "import time\nprint('running', flush=True)\ntime.sleep(30)\n")
    stop = StopRequest()
    try:
        first, second = [], []
        running = start(neighbour, second)
        start(finished, first).wait(30, StopRequest(), 1)
        assert first and finished.ended()  # the first job's namespace is gone, its setsid'd child with it
        assert isolation.processes_of(SLOT_UID_BASE) == []
        assert running.process.poll() is None and isolation.processes_of(SLOT_UID_BASE + 1)  # untouched
        isolation.remove_workspace(finished)
        assert running.process.poll() is None
    finally:
        stop.request("cancelled")
        running.wait(30, stop, 1)
        isolation.remove_workspace(neighbour)
    assert isolation.processes_of(SLOT_UID_BASE + 1) == []

