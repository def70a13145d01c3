"""The `depu` command end to end against the local stack's pieces: the template's routes served by the local
runtime (the real public API, agent API, matcher, fork RPC and exporter handlers over moto), a real agent
process running the job on this machine's CPU, real fork hosts running anvil on a local "mainnet", and the
fork's RPC URL used by cast and ethers exactly as the CLI printed it."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent_process import AgentProcess
from deadlines import wait_for
from local.moto_server import free_port
from tests.public_api_support import user_with_key

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
CAST = ROOT / "node_modules" / "@foundry-rs" / "cast-linux-amd64" / "bin" / "cast"
USER = 7301

SCRIPT = """
import time
for step in range(4):
    print(f"step {step}", flush=True)
    time.sleep(0.4)
open("outputs/answer.txt", "w").write("42")
print("done", flush=True)
"""


class Cli:
    """Runs `depu` as a user would: its own process, config in a private folder, the API at ``url``."""

    def __init__(self, url: str, home: Path, entry: list[str] | None = None, pythonpath: str | None = None):
        self.url, self.home = url, home
        self.entry = entry or [sys.executable, "-m", "depu_cli"]
        self.pythonpath = pythonpath or str(CLIENT)

    def __call__(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "PYTHONPATH": self.pythonpath,
               "DEPU_CONFIG_DIR": str(self.home / "config"), "DEPU_API_URL": self.url, "NO_COLOR": "1"}
        return subprocess.run([*self.entry, *args], capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=self.home)


def start_runtime(aws, *functions: str, polling: bool = False):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port(), poll_wait_seconds=1))
    for name in list(runtime.functions):
        if name not in functions:
            del runtime.functions[name]
    runtime.start()
    return runtime


# ------------------------------------------------------------------------------------------------ install
def test_the_client_installs_with_pip_and_its_depu_command_helps(tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(CLIENT)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PIP_NO_INDEX": "1"})
    assert done.returncode == 0, done.stderr
    depu = target / "bin" / "depu"
    assert depu.exists()
    cli = Cli("http://127.0.0.1:9", tmp_path, entry=[sys.executable, str(depu)], pythonpath=str(target))
    helped = cli("--help")
    assert helped.returncode == 0
    for command in ("login", "jobs", "forks", "export", "analytics", "credits", "whoami"):
        assert command in helped.stdout
    for sub in (("jobs", "run"), ("forks", "create"), ("forks", "sync"), ("export",)):
        text = cli(*sub, "--help").stdout
        assert "Usage: depu " + " ".join(sub) in text and "--json" in text, text
    assert "--gpu" in cli("jobs", "run", "--help").stdout and "--block" in cli("forks", "create", "--help").stdout
    refused = cli("jobs", "list")
    assert refused.returncode != 0 and "depu login" in refused.stderr


# ------------------------------------------------------------------------------------------------ jobs
@pytest.fixture
def rental(aws, tmp_path):
    from rental_helpers import enrol_provider

    runtime = start_runtime(aws, "PublicApiFunction", "AgentApiFunction", "MatcherFunction", "LeaseReaperFunction")
    agent = AgentProcess(runtime.url, tmp_path / "agent", "rig-cli", enrolment_token=enrol_provider())
    try:
        agent.wait_registered()
        yield SimpleNamespace(runtime=runtime, agent=agent)
    finally:
        agent.stop()
        runtime.stop()


def test_login_then_run_a_script_following_its_logs_then_fetch_its_artifact(rental, tmp_path):
    key = user_with_key(USER, credits=5000)
    cli = Cli(rental.runtime.url, tmp_path)

    logged = cli("login", "--key", key)
    assert logged.returncode == 0, logged.stderr
    config = tmp_path / "config" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert json.loads(config.read_text())["key"] == key
    assert key not in logged.stdout + logged.stderr
    assert str(USER) in cli("whoami").stdout

    (tmp_path / "train.py").write_text(SCRIPT)
    ran = cli("jobs", "run", "--gpu", "cpu", "--time-limit", "120", "train.py", "--follow")
    assert ran.returncode == 0, (ran.stdout, ran.stderr, rental.agent.log_text()[-2000:])
    lines = ran.stdout.splitlines()
    assert [line for line in lines if line.startswith("step ")] == [f"step {i}" for i in range(4)]
    assert lines.index("done") > lines.index("step 3")
    assert "Uploading train.py" in ran.stderr and "succeeded" in ran.stdout

    listed = json.loads(cli("--json", "jobs", "list").stdout)["jobs"]
    [job] = listed
    assert job["status"] == "succeeded" and job["workload"] == "script" and job["charged"] is not None
    full = cli("jobs", "logs", job["job_id"])
    assert "step 0" in full.stdout and "done" in full.stdout
    fetched = cli("jobs", "artifacts", job["job_id"], "--download", "out")
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out" / "answer.txt").read_text() == "42"

    (tmp_path / "boom.py").write_text("raise SystemExit('no luck')\n")
    failed = cli("jobs", "run", "--gpu", "cpu", "--time-limit", "60", "boom.py", "--follow")
    assert failed.returncode == 1 and "failed" in failed.stdout, (failed.stdout, failed.stderr)


def test_the_cli_reports_refusals_in_one_line_with_exit_status_2(rental, tmp_path):
    from depu.apikeys import keys

    key = user_with_key(USER, scopes=["jobs", "read-only"])
    cli = Cli(rental.runtime.url, tmp_path)
    assert cli("login", "--key", key).returncode == 0
    (tmp_path / "a.py").write_text("print(1)\n")
    refused = cli("jobs", "run", "--gpu", "cpu", "a.py")
    assert refused.returncode == 2 and "forbidden" in refused.stderr and "Traceback" not in refused.stderr
    keys.revoke(USER, keys.list_keys(USER)[0].key_id)
    gone = cli("jobs", "list")
    assert gone.returncode == 2 and "unauthorized" in gone.stderr
    bad = cli("login", "--key", "dpk_not-a-real-key")
    assert bad.returncode == 2 and not (tmp_path / "config" / "config.json").read_text().count("not-a-real-key")


PROBE = """
import os, depu_probe
print("value", depu_probe.VALUE, "greeting", os.environ["GREETING"], "slots", os.environ["DEPU_JOB_SLOTS"], flush=True)
"""


@pytest.fixture
def spec_rental(aws, tmp_path):
    """An agent with two slots whose provider serves a wheel built here by --find-links (as in
    test_rental_jobspec), behind the local runtime's public API."""
    import shutil
    import tempfile

    from rental_helpers import enrol_provider
    from test_agent_envcache import _package

    root = Path(tempfile.mkdtemp(prefix="depu-provider-"))
    os.chmod(root, 0o755)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "wheels"), str(_package(root / "build", "depu-probe", "VALUE = 42\n"))],
                   check=True)
    runtime = start_runtime(aws, "PublicApiFunction", "AgentApiFunction", "MatcherFunction", "LeaseReaperFunction")
    agent = AgentProcess(runtime.url, tmp_path / "agent", "rig-cli-spec", enrolment_token=enrol_provider(),
                         settings={"cpu_slots": 2, "package_find_links": str(root / "wheels"),
                                   "env_cache_dir": str(root / "envs")})
    try:
        agent.wait_registered()
        yield SimpleNamespace(runtime=runtime, agent=agent)
    finally:
        agent.stop()
        runtime.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_run_a_script_with_requirements_env_and_two_gpus_as_a_job_spec(spec_rental, tmp_path):
    key = user_with_key(USER, credits=5000)
    cli = Cli(spec_rental.runtime.url, tmp_path)
    assert cli("login", "--key", key).returncode == 0
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "requirements.txt").write_text("# the provider's wheel\ndepu-probe==1.2.0\n")
    ran = cli("jobs", "run", "--gpu", "cpu", "--requirements", "requirements.txt", "--env", "GREETING=hello",
              "--gpus", "2", "--time-limit", "120", "probe.py", "--follow")
    assert ran.returncode == 0, (ran.stdout, ran.stderr, spec_rental.agent.log_text()[-2000:])
    assert "value 42 greeting hello slots 0,1" in ran.stdout.splitlines(), ran.stdout
    [job] = json.loads(cli("--json", "jobs", "list").stdout)["jobs"]
    assert job["workload"] == "job" and job["status"] == "succeeded" and job["params"]["gpu_count"] == 2
    assert job["params"]["requirements"] == ["depu-probe==1.2.0"] and job["params"]["env"] == {"GREETING": "hello"}

    (tmp_path / "bad.txt").write_text("depu-probe @ https://example.invalid/probe.whl\n")
    for args, words in ((("--env", "API_TOKEN=x"), "looks like a secret"),
                        (("--requirements", "bad.txt"), "line 1"),
                        (("--image", "pytorch/pytorch:latest"), "default image")):
        refused = cli("jobs", "run", "--gpu", "cpu", *args, "probe.py")
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert len(json.loads(cli("--json", "jobs", "list").stdout)["jobs"]) == 1


# ------------------------------------------------------------------------------------------------ forks
@pytest.fixture
def fork_stack(aws, monkeypatch, tmp_path):
    from depu.config import get_settings
    from depu.forks import proxy, service
    from depu_agent.api import ApiClient
    from depu_agent.forkhost import ForkHost
    from forks_support import register_fork_host
    from local.devchain import DevChain

    mainnet = DevChain().start()
    mainnet.deploy_defaults()
    mainnet.activity(rounds=1)
    port = free_port()
    monkeypatch.setenv("PUBLIC_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CHAIN_RPC_URL", mainnet.rpc_url)
    get_settings.cache_clear()
    monkeypatch.setattr(service, "PROVISION_TIMEOUT_S", 60)
    monkeypatch.setattr(service, "REBASE_TIMEOUT_S", 60)
    monkeypatch.setattr(service, "STOP_TIMEOUT_S", 20)
    monkeypatch.setattr(proxy, "FORK_CACHE_SECONDS", 0)
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    environment = {"PUBLIC_API_URL": f"http://127.0.0.1:{port}", "CHAIN_RPC_URL": mainnet.rpc_url}
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint,
                           RuntimeOptions(port=port, poll_wait_seconds=1, extra_environment=environment))
    runtime.functions = {n: f for n, f in runtime.functions.items()
                         if n in ("PublicApiFunction", "AgentApiFunction", "ForkRpcFunction")}
    runtime.start()
    _agent, token = register_fork_host("host-cli")
    host = ForkHost(ApiClient(runtime.url, token, attempts=2),
                    SimpleNamespace(fork_upstream_url=mainnet.rpc_url, fork_rpc_base_url="http://127.0.0.1",
                                    claim_wait_seconds=1))
    stop = threading.Event()
    thread = threading.Thread(target=host.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(runtime=runtime, mainnet=mainnet, host=host)
    finally:
        stop.set()
        thread.join(timeout=30)
        host.shutdown()
        runtime.stop()
        mainnet.stop()


def test_create_a_fork_use_its_url_in_cast_and_ethers_sync_it_and_delete_it(fork_stack, tmp_path):
    import requests

    key = user_with_key(USER)
    cli = Cli(fork_stack.runtime.url, tmp_path)
    assert cli("login", "--key", key).returncode == 0
    base = fork_stack.mainnet.block_number()
    created = cli("forks", "create", "--block", str(base), timeout=180)
    assert created.returncode == 0, created.stderr
    url = created.stdout.strip()
    assert url.startswith(fork_stack.runtime.url + "/rpc/dpf_") and "\n" not in url  # one bare line: $(...)-ready
    fork_id = json.loads(cli("--json", "forks", "list").stdout)["forks"][0]["fork_id"]

    # the printed URL as cast's --rpc-url and in ethers, unchanged
    cast = subprocess.run([str(CAST), "block-number", "--rpc-url", url], capture_output=True, text=True, timeout=60)
    assert cast.returncode == 0 and int(cast.stdout) == base, cast.stderr
    script = ("const { ethers } = require('ethers');"
              "new ethers.JsonRpcProvider(process.argv[1]).getNetwork()"
              ".then(n => console.log(n.chainId.toString())).catch(e => { console.error(e); process.exit(1); });")
    ethers = subprocess.run(["node", "-e", script, url], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    detail = json.loads(cli("--json", "forks", "get", fork_id).stdout)
    assert ethers.returncode == 0 and int(ethers.stdout) == detail["fork"]["chain_id"] != 1, ethers.stderr

    funded = cli("forks", "fund", fork_id, "0x000000000000000000000000000000000000dEaD", "3")
    assert funded.returncode == 0 and "ETH" in funded.stdout, funded.stderr

    fork_stack.mainnet.activity(rounds=1, seed=5)
    head = fork_stack.mainnet.block_number()
    assert head > base
    synced = cli("--json", "forks", "sync", fork_id, "--wait", timeout=180)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["fork"]["base_block"] >= head

    deleted = cli("forks", "delete", fork_id)
    assert deleted.returncode == 0 and "deleting" in deleted.stdout
    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=10)
    assert answer.status_code == 401
    wait_for(lambda: not fork_stack.host.forks, 30, "the host stopped the fork's anvil")


# ------------------------------------------------------------------------------------------------ export
def test_export_transfers_of_one_token_as_parquet_with_a_file_on_disk(aws, tmp_path):
    import pyarrow.parquet as pq
    from depu.analytics import raw

    token, other = "0x" + "ab" * 20, "0x" + "cd" * 20
    rows = [{"block_number": 100 + i, "block_hash": f"0x{i:064x}", "block_timestamp": 1_700_000_000 + i,
             "tx_hash": f"0x{i:064x}", "tx_index": 0, "log_index": i, "asset": (token if i % 3 else other),
             "kind": "erc20", "shape": "standard", "sender": "0x" + "01" * 20, "recipient": "0x" + "02" * 20,
             "amount": str(10**18 + i), "token_id": None} for i in range(30)]
    raw.write_part("transfers", 100, 129, rows)
    key = user_with_key(USER)
    runtime = start_runtime(aws, "PublicApiFunction", "ExporterFunction")
    try:
        cli = Cli(runtime.url, tmp_path)
        assert cli("login", "--key", key).returncode == 0
        done = cli("export", "transfers", "--token", token.upper().replace("0X", "0x"), "--from-block", "100",
                   "--to-block", "129", "--format", "parquet", "-o", "t.parquet", timeout=240)
    finally:
        runtime.stop()
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Downloading t.parquet" in done.stderr and "t.parquet" in done.stdout
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.num_rows == 20 and set(table.column("asset").to_pylist()) == {token}
