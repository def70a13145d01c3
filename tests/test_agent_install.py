"""install.sh is valid bash, prints every step under --dry-run without doing any (and without the token), and
refuses bad input; the agent package builds into a wheel with the ``depu-agent`` console script."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"
INSTALL = AGENT_DIR / "install.sh"
TOKEN = "provider-token-that-must-not-be-printed"


def run_install(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, env=env, timeout=60)


def test_install_script_parses():
    assert subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True).returncode == 0
    assert os.access(INSTALL, os.X_OK)


def test_dry_run_prints_every_step_and_changes_nothing():
    before = {path: os.path.exists(path) for path in
              ("/opt/depu-agent", "/etc/depu-agent", "/etc/systemd/system/depu-agent.service")}
    done = run_install("--dry-run", "--token", TOKEN, "--api", "https://api.depu.example", "--name", "rig-1",
                       "--gpus", "0,1", "--capabilities", "gpu,fork_host")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    steps = ["useradd --system", "nologin depu-sandbox", "-m venv /opt/depu-agent/venv", "pip install --quiet torch",
             "runuser -u depu-agent -- /opt/depu-agent/venv/bin/depu-agent register",
             "write /etc/systemd/system/depu-agent.service", "Restart=always", "User=depu-agent", "KillMode=mixed",
             "systemctl enable --now depu-agent"]
    positions = [out.index(step) for step in steps]
    assert positions[:5] == sorted(positions[:5])  # users, venv, torch, then register
    assert '"capabilities": ["gpu", "fork_host"]' in out and '"gpus": "0,1"' in out
    assert '"sandbox_uid_base": 470000' in out  # one uid per GPU slot for renters' scripts
    assert out.index("apt-get install -y -q bubblewrap") < out.index("-m venv")  # the script sandbox, up front
    assert TOKEN not in out and TOKEN not in done.stderr
    after = {path: os.path.exists(path) for path in before}
    assert after == before


def test_uninstall_dry_run_removes_unit_users_and_files():
    done = run_install("--uninstall", "--dry-run")
    assert done.returncode == 0, done.stderr
    for step in ("rm -f /etc/systemd/system/depu-agent.service", "rm -rf /opt/depu-agent /etc/depu-agent "
                 "/var/lib/depu-agent", "userdel depu-agent", "userdel depu-sandbox"):
        assert step in done.stdout


@pytest.mark.parametrize("args, complaint", [
    ((), "--token is required"),
    (("--token", "t"), "--api is required"),
    (("--token", "t", "--api", "ftp://x"), "--api must be"),
    (("--token", "t", "--api", "https://x", "--gpus", "0;rm -rf /"), "--gpus"),
    (("--token", "t", "--api", "https://x", "--name", "a b"), "--name"),
    (("--bogus",), "unknown option"),
])
def test_bad_input_is_refused_with_a_clear_message(args, complaint):
    done = run_install("--dry-run", *args)
    assert done.returncode != 0 and complaint in done.stderr


def test_agent_package_builds_with_its_console_script(tmp_path):
    source = tmp_path / "agent"
    shutil.copytree(AGENT_DIR, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(source), "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("depu_agent-*.whl")
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                                str(target), str(wheel)], capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    [entry_points] = target.glob("depu_agent-*.dist-info/entry_points.txt")
    assert "depu-agent = depu_agent.__main__:main" in entry_points.read_text()
    helped = subprocess.run([sys.executable, "-m", "depu_agent", "register", "--help"], capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)}, timeout=60)
    assert helped.returncode == 0 and "--provider-token" in helped.stdout
