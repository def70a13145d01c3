"""The agent package /provider's command installs: served by the real agent API handler (from the repository
locally, from the artifacts bucket when deployed), deterministic and checksummed; and install.sh piped into
bash (no checkout next to it) downloads it, verifies it, extracts it, and the result is installable."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from local.moto_server import free_port
from rental_helpers import function
from telegram_harness import FakeLambdaContext, api_event

ROOT = Path(__file__).resolve().parent.parent
AGENT_DIR = ROOT / "agent"
TOKEN = "provider-token-that-must-not-be-printed"
SHA_HEADER = "x-depu-package-sha256"


@pytest.fixture(autouse=True)
def fresh_package_cache():
    from depu.agents import package

    package.clear_cache()
    yield
    package.clear_cache()


def get(path: str) -> tuple[int, dict[str, str], str]:
    """GET through the real AgentApiFunction handler: (status, lower-cased headers, body)."""
    response = function("agent_api").lambda_handler(api_event(path, None, {}, "GET"), FakeLambdaContext())
    headers = {key.lower(): value for key, value in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = values[-1]
    assert not response.get("isBase64Encoded")  # text: API Gateway needs no binary media types
    return response["statusCode"], headers, response.get("body") or ""


def expected_files() -> dict[str, bytes]:
    """What the package must hold, read from agent/ independently of the packer."""
    files = {f"depu-agent/{name}": (AGENT_DIR / name).read_bytes()
             for name in ("pyproject.toml", "requirements.txt", "README.md")}
    for directory, subdirectories, names in os.walk(AGENT_DIR / "depu_agent"):
        subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
        for name in names:
            path = Path(directory) / name
            if not name.endswith(".pyc"):
                files["depu-agent/" + path.relative_to(AGENT_DIR).as_posix()] = path.read_bytes()
    return files


def tarball_files(tarball: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        members = tar.getmembers()
        assert all(member.isdir() or member.isreg() for member in members)
        assert all(member.uid == 0 and member.uname == "" for member in members)
        return {m.name: tar.extractfile(m).read() for m in members if m.isreg()}


def test_package_route_serves_the_agent_tree_with_its_checksum(aws):
    status, headers, body = get("/agent/package.b64")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    tarball = base64.b64decode(body, validate=False)
    assert headers[SHA_HEADER] == hashlib.sha256(tarball).hexdigest()
    files = tarball_files(tarball)
    assert files == expected_files()
    assert "depu-agent/depu_agent/daemon.py" in files and not any("__pycache__" in name for name in files)

    again_status, again_headers, again_body = get("/agent/package.b64")
    assert (again_status, again_body, again_headers[SHA_HEADER]) == (200, body, headers[SHA_HEADER])  # stable
    status, sha_headers, sha_body = get("/agent/package.sha256")
    assert status == 200 and sha_body.split()[0] == headers[SHA_HEADER] == sha_headers[SHA_HEADER]


def test_packing_is_deterministic_whatever_the_file_times(tmp_path):
    import shutil

    from depu.agents import package

    copy = tmp_path / "agent"
    shutil.copytree(AGENT_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    first = package.build_tarball(copy)
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (copy / "depu_agent" / "__pycache__").mkdir(exist_ok=True)
    (copy / "depu_agent" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    assert package.build_tarball(copy) == first
    (copy / "depu_agent" / "api.py").write_text((copy / "depu_agent" / "api.py").read_text() + "\n# changed\n")
    assert package.build_tarball(copy) != first  # the checksum follows the content


def test_deployed_function_serves_what_publish_uploaded(aws, monkeypatch, tmp_path):
    import boto3

    from depu.config import get_settings

    monkeypatch.setenv("DEPU_AGENT_DIR", str(tmp_path / "no-checkout"))  # a deployed function has no agent/
    assert get("/agent/package.b64")[0] == 404 and get("/agent/install.sh")[0] == 404  # nothing published yet

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import publish_agent
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert publish_agent.main([]) == 2 and publish_agent.main(["--help"]) == 2  # usage, uploads nothing
    bucket = get_settings().artifacts_bucket
    assert publish_agent.main([bucket]) == 2  # never unsigned
    assert get("/agent/install.sh")[0] == 404
    assert publish_agent.main([bucket, "--signing-key-file", os.environ["DEPU_AGENT_SIGNING_KEY_FILE"]]) == 0

    status, headers, body = get("/agent/package.b64")
    assert status == 200
    tarball = base64.b64decode(body)
    assert headers[SHA_HEADER] == hashlib.sha256(tarball).hexdigest()
    assert tarball_files(tarball) == expected_files()
    status, _, script = get("/agent/install.sh")
    assert status == 200 and script == (AGENT_DIR / "install.sh").read_text()
    assert get("/agent/package.sha256")[2].split()[0] == headers[SHA_HEADER]

    # a publish caught half-way (new package, old checksum) is refused, not served under the wrong checksum
    from depu.agents import package

    s3 = boto3.client("s3")
    s3.put_object(Bucket=get_settings().artifacts_bucket, Key="site/agent/package.sha256", Body=b"0" * 64 + b"\n")
    package.clear_cache()
    status, _, answer = get("/agent/package.b64")
    assert status == 503 and "try again" in answer


# ---------------------------------------------------------------- install.sh piped into bash, end to end


@pytest.fixture
def agent_api(aws):
    """The agent API on 127.0.0.1 as the local stack serves it (template routes -> the real handler)."""
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port(), poll_wait_seconds=1))
    for name in list(runtime.functions):
        if name != "AgentApiFunction":
            del runtime.functions[name]
    runtime.start()
    try:
        yield runtime.url
    finally:
        runtime.stop()


def piped(url: str, args: str, cwd: Path) -> subprocess.CompletedProcess:
    """/provider's command as a provider runs it (curl ... | bash -s -- ...), in a directory with no checkout."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", f"set -o pipefail; curl -fsSL {url}/agent/install.sh | bash -s -- {args}"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
def test_piped_install_fetches_verifies_and_installs_the_package(agent_api, tmp_path, monkeypatch):
    from depu.bot.rental import install_command
    from depu.config import get_settings

    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    monkeypatch.setenv("PUBLIC_API_URL", agent_api)
    get_settings.cache_clear()
    shown = install_command(TOKEN)  # exactly what /provider shows, run without root: sudo -> --dry-run
    from depu.bot.rental import SUDO_WITH_TOKEN

    key = os.environ["AGENT_SIGNING_PUBLIC_KEY"]
    assert f"curl -fsSL --proto =http -o \"$d/install.sh\" {agent_api}/agent/install.sh" in shown
    assert shown.endswith(f"{SUDO_WITH_TOKEN} \"$d/install.sh\" --api {agent_api} --signing-key {key}")
    assert "--token" not in shown  # the token is in the environment, not in any process's arguments
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", "TMPDIR": str(tmp_path)}
    dry = subprocess.run(["bash", "-c", shown.replace(SUDO_WITH_TOKEN, "bash") + " --dry-run"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    get_settings.cache_clear()
    assert dry.returncode == 0, dry.stderr
    assert "Signature Verified Successfully" in dry.stdout  # install.sh itself, before it ran
    fetch = dry.stdout.index(f"+ fetch {agent_api}/agent/package.b64")
    assert f"verify its SHA-256 and its signature by {key}" in dry.stdout
    install = dry.stdout.index("pip install --quiet <temporary directory>/depu-agent")
    assert fetch < install < dry.stdout.index("depu-agent register")
    assert str(cwd) not in dry.stdout  # the old bug: pip install "$PWD"
    assert TOKEN not in dry.stdout and TOKEN not in dry.stderr
    assert list(cwd.iterdir()) == []  # --dry-run changed nothing

    fetched = piped(agent_api, f"--fetch-only {tmp_path / 'dl'} --api {agent_api}/ --signing-key {key}", cwd)
    assert fetched.returncode == 0, fetched.stderr
    source = Path(fetched.stdout.strip().splitlines()[-1])
    assert source == tmp_path / "dl" / "depu-agent"
    extracted = {"depu-agent/" + path.relative_to(source).as_posix(): path.read_bytes()
                 for path in source.rglob("*") if path.is_file()}
    assert extracted == expected_files()

    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                                "--target", str(target), str(source)], capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    [entry_points] = target.glob("depu_agent-*.dist-info/entry_points.txt")
    assert "depu-agent = depu_agent.__main__:main" in entry_points.read_text()
    assert (target / "depu_agent" / "daemon.py").read_bytes() == (AGENT_DIR / "depu_agent" / "daemon.py").read_bytes()


@pytest.mark.e2e
def test_piped_install_refuses_a_package_that_fails_its_checksum(agent_api, tmp_path, monkeypatch):
    from depu.agents import package

    real = package.agent_package
    monkeypatch.setattr(package, "agent_package",
                        lambda *a: package.AgentPackage(real().encoded, "0" * 64, real().signature))
    key = os.environ["AGENT_SIGNING_PUBLIC_KEY"]
    done = piped(agent_api, f"--fetch-only {tmp_path / 'dl'} --api {agent_api} --signing-key {key}", tmp_path)
    assert done.returncode != 0 and "checksum mismatch" in done.stderr
    assert not (tmp_path / "dl" / "depu-agent").exists()  # nothing unverified is extracted


def test_run_from_a_checkout_installs_the_agent_next_to_it_without_downloading():
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    done = subprocess.run(["bash", str(AGENT_DIR / "install.sh"), "--dry-run", "--token", TOKEN, "--api",
                           "http://127.0.0.1:9"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"pip install --quiet {AGENT_DIR}\n" in done.stdout and "fetch" not in done.stdout
