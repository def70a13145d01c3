"""Supply chain (issue 11, found item 9): what every new provider runs as root must be the operator's.

Each attack is performed and shown to fail:
- a tampered agent package served with its own, matching SHA-256 is refused by the real install.sh, as are one
  signed by another key and one with no signature; nothing of it is unpacked;
- a tampered install.sh (with the genuine signature, or signed by another key, or unsigned) is refused by the
  one-line command /provider shows, before any of it runs;
- plain http off loopback is refused by install.sh and never offered by /provider;
- publishing with a key that is not the pinned one uploads nothing;
- no function's IAM policy lets it write site/ (install.sh, the agent package, the Mini App), and each one
  may write exactly the prefixes its code writes.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from local.moto_server import free_port
from local.template import load_template

ROOT = Path(__file__).resolve().parent.parent
AGENT_DIR = ROOT / "agent"
INSTALL = AGENT_DIR / "install.sh"
TOKEN = "provider-token-that-must-not-be-printed"
PAYLOAD = "# planted by an attacker with write access to site/agent/\n"


@pytest.fixture(autouse=True)
def fresh_package_cache():
    from depu.agents import package

    package.clear_cache()
    yield
    package.clear_cache()


@pytest.fixture
def agent_api(aws, monkeypatch):
    """The agent API on 127.0.0.1 as the local stack serves it (template routes -> the real handler)."""
    from depu.config import get_settings
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port(), poll_wait_seconds=1))
    for name in list(runtime.functions):
        if name != "AgentApiFunction":
            del runtime.functions[name]
    runtime.start()
    monkeypatch.setenv("PUBLIC_API_URL", runtime.url)
    get_settings.cache_clear()
    try:
        yield runtime.url
    finally:
        runtime.stop()
        get_settings.cache_clear()


def pinned_key() -> str:
    return os.environ["AGENT_SIGNING_PUBLIC_KEY"]


def operator_key():
    from depu.agents import signing

    return signing.read_key_file(Path(os.environ["DEPU_AGENT_SIGNING_KEY_FILE"]))


def attacker_key(tmp_path: Path):
    from depu.agents import signing

    return signing.generate_key_file(tmp_path / "attacker.pem")


def tampered_tarball(tmp_path: Path) -> bytes:
    """The real agent with a line added to its entry point: a different package, packed the same way."""
    from depu.agents import package

    copy = tmp_path / "tampered-agent"
    shutil.copytree(AGENT_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    main = copy / "depu_agent" / "__main__.py"
    main.write_text(PAYLOAD + main.read_text())
    return package.build_tarball(copy)


def fetch_only(api: str, into: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real install.sh's download-verify-unpack mode (no root, no token)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(into.parent), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", str(INSTALL), "--fetch-only", str(into), "--api", api, *extra],
                          capture_output=True, text=True, env=env, timeout=60)


# ---------------------------------------------------------------- the agent package


@pytest.mark.e2e
def test_the_genuine_signed_package_is_unpacked(agent_api, tmp_path):
    done = fetch_only(agent_api, tmp_path / "dl", "--signing-key", pinned_key())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dl" / "depu-agent" / "depu_agent" / "__main__.py").read_text() == \
        (AGENT_DIR / "depu_agent" / "__main__.py").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("signer", ["genuine signature of the real package", "another key", "unsigned"])
def test_a_tampered_package_with_a_matching_sha256_is_refused(agent_api, tmp_path, monkeypatch, signer):
    from depu.agents import package, signing

    real = package.agent_package()
    tarball = tampered_tarball(tmp_path)
    forged = package.encode(tarball)  # its SHA-256 is its own: the checksum check passes
    signature = {"genuine signature of the real package": real.signature,
                 "another key": signing.sign(attacker_key(tmp_path), tarball),
                 "unsigned": None}[signer]
    monkeypatch.setattr(package, "agent_package", lambda *a: package.AgentPackage(forged.encoded, forged.sha256,
                                                                                  signature))
    done = fetch_only(agent_api, tmp_path / "dl", "--signing-key", pinned_key())
    assert done.returncode != 0
    assert "checksum mismatch" not in done.stderr  # the checksum matched; the signature is what refused it
    assert ("not signed" if signer == "unsigned" else "signature is not the operator's") in done.stderr
    assert not (tmp_path / "dl" / "depu-agent").exists()  # nothing of it unpacked
    assert not (tmp_path / "dl" / "package.tar.gz").exists()


@pytest.mark.e2e
def test_the_package_cannot_be_fetched_without_a_pinned_key(agent_api, tmp_path):
    done = fetch_only(agent_api, tmp_path / "dl")
    assert done.returncode != 0 and "--signing-key is required" in done.stderr
    done = fetch_only(agent_api, tmp_path / "dl", "--signing-key", "MCowBQYDK2VwAyEA-not-a-key")
    assert done.returncode != 0 and "not an Ed25519 public key" in done.stderr
    assert not (tmp_path / "dl" / "depu-agent").exists()


def test_a_piped_install_without_a_key_is_refused_before_any_step():
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    done = subprocess.run(["bash", "-c", f"bash -s -- --dry-run --token {TOKEN} --api https://api.depu.example "
                                         f"< {INSTALL}"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and "--signing-key is required" in done.stderr
    assert "useradd" not in done.stdout


# ---------------------------------------------------------------- install.sh and the one-line command


def run_shown_command(agent_api: str, cwd: Path) -> subprocess.CompletedProcess:
    """/provider's line, exactly, with sudo replaced by bash and install.sh in --dry-run (no root here)."""
    from depu.bot.rental import SUDO_WITH_TOKEN, install_command

    shown = install_command(TOKEN)
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", "TMPDIR": str(cwd)}
    return subprocess.run(["bash", "-c", shown.replace(SUDO_WITH_TOKEN, "bash") + " --dry-run"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def tampered_script(marker: Path) -> str:
    genuine = INSTALL.read_text()
    shebang, rest = genuine.split("\n", 1)
    return f"{shebang}\ntouch {marker}\n{rest}"  # the attacker's code runs first, as root


@pytest.mark.e2e
@pytest.mark.parametrize("signer", ["genuine signature", "another key", "unsigned"])
def test_a_tampered_install_script_is_refused_by_the_one_line_command(agent_api, tmp_path, monkeypatch, signer):
    from depu.agents import package, signing

    marker = tmp_path / "ran-as-root"
    script = tampered_script(marker)
    signature = {"genuine signature": package.install_script().signature,
                 "another key": signing.sign(attacker_key(tmp_path), script.encode()),
                 "unsigned": None}[signer]
    monkeypatch.setattr(package, "install_script", lambda *a: package.InstallScript(script, signature))
    done = run_shown_command(agent_api, tmp_path)
    assert done.returncode != 0
    assert not marker.exists()  # not one line of it ran
    assert "==> " not in done.stdout  # install.sh never started
    if signer != "unsigned":
        assert "Signature Verification Failure" in done.stdout + done.stderr


@pytest.mark.e2e
def test_the_marker_would_show_a_script_that_ran(agent_api, tmp_path, monkeypatch):
    """Control for the test above: the same tampered script, signed by the operator's key, does run."""
    from depu.agents import package, signing

    marker = tmp_path / "ran-as-root"
    script = tampered_script(marker)
    monkeypatch.setattr(package, "install_script",
                        lambda *a: package.InstallScript(script, signing.sign(operator_key(), script.encode())))
    done = run_shown_command(agent_api, tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists() and "==> " in done.stdout


# ---------------------------------------------------------------- plain http


@pytest.mark.parametrize("url", ["http://api.depu.example", "http://10.0.0.7:3000", "http://127.0.0.1.evil.example",
                                 "http://localhost.evil.example/", "ftp://api.depu.example"])
def test_plain_http_off_loopback_is_refused(url, tmp_path):
    done = fetch_only(url, tmp_path / "dl", "--signing-key", pinned_key())
    assert done.returncode != 0 and "--api must be" in done.stderr
    assert not (tmp_path / "dl").exists()  # refused before any download
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    full = subprocess.run(["bash", str(INSTALL), "--dry-run", "--token", TOKEN, "--api", url], capture_output=True,
                          text=True, env=env, timeout=60)
    assert full.returncode != 0 and "--api must be" in full.stderr and "useradd" not in full.stdout


@pytest.mark.parametrize("option, url", [("--source", "http://pkgs.depu.example/agent.whl"),
                                         ("--torch-index-url", "http://mirror.depu.example/simple")])
def test_plain_http_sources_are_refused(option, url):
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    done = subprocess.run(["bash", str(INSTALL), "--dry-run", "--token", TOKEN, "--api", "https://api.depu.example",
                           option, url], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and f"{option} must be" in done.stderr and "useradd" not in done.stdout


def test_provider_never_offers_an_unverifiable_or_plain_http_command(aws, monkeypatch):
    from depu.agents import bootstrap
    from depu.config import get_settings
    from recording_chat import RecordingChat
    from depu.bot import rental
    from depu.bot.registry import Incoming

    def provider_text() -> str:
        get_settings.cache_clear()
        chat = RecordingChat(require_text=True)
        rental.provider(Incoming(update_id=1, user_id=7001, chat_id=7001, chat_type="private", text="/provider",
                                 command="provider", args="", message_id=5, first_name="Ada"), chat)
        return chat.text

    assert "openssl pkeyutl -verify" in provider_text()  # the control: configured, it shows the line
    for name, value in (("PUBLIC_API_URL", "http://api.depu.example"), ("AGENT_SIGNING_PUBLIC_KEY", "")):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            text = provider_text()
            assert "curl" not in text and "sudo" not in text and "not available" in text
    get_settings.cache_clear()
    with pytest.raises(bootstrap.NotConfigured):
        bootstrap.install_command("http://api.depu.example", pinned_key(), TOKEN)
    assert "--proto =https" in bootstrap.install_command("https://api.depu.example", pinned_key(), TOKEN)


# ---------------------------------------------------------------- publishing


def load_publish_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import publish_agent
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return publish_agent


def site_agent_keys() -> list[str]:
    import boto3

    from depu.config import get_settings

    listed = boto3.client("s3").list_objects_v2(Bucket=get_settings().artifacts_bucket, Prefix="site/agent/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_publish_signs_with_the_pinned_key_or_uploads_nothing(aws, tmp_path):
    from depu.agents import signing
    from depu.config import get_settings

    publish_agent = load_publish_script()
    bucket = get_settings().artifacts_bucket
    attacker = tmp_path / "attacker.pem"
    signing.generate_key_file(attacker)
    assert publish_agent.main([bucket, "--signing-key-file", str(attacker), "--public-key", pinned_key()]) == 1
    readable = tmp_path / "readable.pem"
    readable.write_bytes(Path(os.environ["DEPU_AGENT_SIGNING_KEY_FILE"]).read_bytes())
    readable.chmod(0o644)
    assert publish_agent.main([bucket, "--signing-key-file", str(readable)]) == 1  # others could read the key
    assert site_agent_keys() == []

    key_file = os.environ["DEPU_AGENT_SIGNING_KEY_FILE"]
    assert publish_agent.main([bucket, "--signing-key-file", key_file, "--public-key", pinned_key()]) == 0
    assert site_agent_keys() == [f"site/agent/{name}" for name in
                                 ("install.sh", "install.sh.sig", "package.b64", "package.sha256", "package.sig")]


def test_publish_reads_the_key_from_secrets_manager(aws, capsys):
    import boto3

    from depu.config import get_settings

    pem = Path(os.environ["DEPU_AGENT_SIGNING_KEY_FILE"]).read_text()
    boto3.client("secretsmanager").create_secret(Name="operator/depu-agent-signing-key", SecretString=pem)
    publish_agent = load_publish_script()
    assert publish_agent.main([get_settings().artifacts_bucket, "--signing-key-secret",
                               "operator/depu-agent-signing-key", "--public-key", pinned_key()]) == 0
    printed = capsys.readouterr()
    assert "PRIVATE KEY" not in printed.out + printed.err and pem.splitlines()[1] not in printed.out + printed.err
    assert "site/agent/package.sig" in site_agent_keys()


def test_the_local_key_is_made_once_private_and_a_readable_one_is_refused(tmp_path):
    from depu.agents import signing
    from local import signing_key

    path = tmp_path / ".local" / "agent-signing-key.pem"
    first = signing_key.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and signing.is_public_key(first.public_key)
    assert signing_key.load_or_create(path).public_key == first.public_key  # never replaced
    path.chmod(0o640)
    with pytest.raises(signing.SigningKeyError, match="readable by other users"):
        signing_key.load_or_create(path)


# ---------------------------------------------------------------- who may write the bucket

ARTIFACTS = "arn:aws:s3:::depu-artifacts"
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject", "s3:PutObjectAcl", "s3:RestoreObject", "s3:AbortMultipartUpload")
# SAM policy templates: the S3 ones that write anywhere in their bucket, and those that touch no S3 object
S3_BUCKET_WIDE_WRITERS = {"S3CrudPolicy", "S3WritePolicy", "S3FullAccessPolicy"}
NO_S3_WRITES = {"S3ReadPolicy", "DynamoDBCrudPolicy", "DynamoDBReadPolicy", "SQSSendMessagePolicy",
                "SQSPollerPolicy", "StepFunctionsExecutionPolicy", "AWSSecretsManagerGetSecretValuePolicy"}


def _resource(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"].replace("${ArtifactsBucket.Arn}", ARTIFACTS)
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][0] != "ArtifactsBucket":
        return f"arn:depu:{value['Fn::GetAtt'][0]}"  # another resource (a KMS key, say): never an S3 object
    raise AssertionError(f"a resource this test cannot read: {value!r}")


def s3_grants(policies: list) -> list[tuple[list[str], list[str]]]:
    """(actions, resource ARNs) of every Allow a function's Policies hold, SAM templates expanded."""
    grants = []
    for policy in policies:
        if isinstance(policy, str):  # a managed policy name or ARN: never one that can write S3 objects
            assert "S3" not in policy.upper() and "ADMINISTRATOR" not in policy.upper() and policy != "*", policy
            continue
        [(name, body)] = policy.items()
        if name in S3_BUCKET_WIDE_WRITERS:
            grants.append((["s3:*"], [f"{ARTIFACTS}/*"]))
        elif name == "Statement":
            for statement in body:
                assert "NotAction" not in statement and "NotResource" not in statement
                if statement.get("Effect") != "Allow":
                    continue
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                grants.append((actions, [_resource(resource) for resource in resources]))
        else:
            assert name in NO_S3_WRITES, f"unclassified policy {name}: add it to this test"
    return grants


def may_write(grants: list[tuple[list[str], list[str]]], key: str) -> bool:
    """IAM's answer for PutObject/DeleteObject on ``key`` of the artifacts bucket (wildcards as IAM reads them)."""
    arn = f"{ARTIFACTS}/{key}"
    for actions, resources in grants:
        writes = any(fnmatch.fnmatchcase(action, pattern) for pattern in actions for action in WRITE_ACTIONS)
        if writes and any(fnmatch.fnmatchcase(arn, resource) for resource in resources):
            return True
    return False


def write_patterns(grants) -> set[str]:
    return {resource.removeprefix(f"{ARTIFACTS}/") for actions, resources in grants for resource in resources
            if any(fnmatch.fnmatchcase(action, pattern) for pattern in actions for action in WRITE_ACTIONS)}


def function_grants() -> dict[str, list]:
    template = load_template()
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            found[logical_id] = s3_grants(resource.get("Properties", {}).get("Policies", []))
        assert resource["Type"] not in ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"), \
            f"{logical_id}: a role outside the functions' Policies would escape this test"
    return found


def keys_the_code_writes() -> dict[str, list[str]]:
    from depu.analytics import raw
    from depu.analytics.export import ExportRequest
    from depu.jobs import storage, uploads

    job = "0b6f3a1e"
    export = ExportRequest(request_id="r1", user_id=42, chat_id=42, dataset="transfers", start=1, end=2, format="csv")
    # upload links of inputs over 20 MB (depu.jobs.uploads) are signed by three functions: the chat's and the
    # Mini App's for a job draft, the public API's for an API upload. IAM cannot tell the two kinds of key
    # apart under uploads/ (a "*" spans slashes); each link's signed policy names its one key exactly.
    upload_keys = [uploads.draft_key(42, "d0123456789abcdef", "big.bin"),
                   uploads.upload_key(42, "u0123456789abcdef", "big.bin")]
    return {
        # /rent_gpu: script, inputs; and it signs upload links
        "TelegramWebhookFunction": [storage.script_key(job), storage.input_key(job, "data.csv"), *upload_keys],
        "DashboardApiFunction": upload_keys,  # the Mini App's links
        # POST /v1/jobs stores the script it was sent; POST /v1/uploads signs upload links
        "PublicApiFunction": [storage.script_key(job), *upload_keys],
        "AgentApiFunction": [storage.log_key(job, 7), storage.artifact_prefix(job) + storage.safe_name("out.pt")],
        "IndexerFunction": [raw.part_key("transfers", 1, 99), raw.part_key("blocks", 1, 99)],
        "ExporterFunction": [export.key],
    }


SITE_KEYS = ["site/agent/install.sh", "site/agent/install.sh.sig", "site/agent/package.b64", "site/agent/package.sig",
             "site/agent/package.sha256", "site/dashboard/index.html", "site/dashboard/app.js", "site/x"]


def test_no_function_may_write_site():
    grants = function_grants()
    assert "AgentApiFunction" in grants and "TelegramWebhookFunction" in grants
    for function, granted in grants.items():
        for key in SITE_KEYS:
            assert not may_write(granted, key), f"{function} may write {key}"


def test_each_function_may_write_exactly_the_prefixes_it_uses():
    grants = function_grants()
    expected = {"TelegramWebhookFunction": {"jobs/*/script.py", "jobs/*/inputs/*", "uploads/*"},
                "DashboardApiFunction": {"uploads/*"},
                "PublicApiFunction": {"jobs/*/script.py", "uploads/*"},
                "AgentApiFunction": {"jobs/*/logs/*", "jobs/*/artifacts/*"},
                "IndexerFunction": {"raw/*"},
                "ExporterFunction": {"exports/*"}}
    for function, granted in grants.items():
        assert write_patterns(granted) == expected.get(function, set()), function
    writes = keys_the_code_writes()
    for function, keys in writes.items():
        for key in keys:
            assert may_write(grants[function], key), f"{function} could no longer write {key}"
            writers = {name for name in grants if may_write(grants[name], key)}
            meant = {name for name, listed in writes.items() if key in listed}
            assert writers == meant, f"{key} is writable by {sorted(writers)}, meant for {sorted(meant)}"
    assert not may_write(grants["AgentApiFunction"], writes["TelegramWebhookFunction"][0])  # agents: not scripts


def test_the_bucket_wide_policy_the_review_found_would_be_caught():
    """Control: the checker flags the old S3CrudPolicy, so a regression to it fails the tests above."""
    old = s3_grants([{"S3CrudPolicy": {"BucketName": {"Ref": "ArtifactsBucket"}}}])
    assert may_write(old, "site/agent/install.sh") and may_write(old, "site/dashboard/app.js")
    broad = s3_grants([{"Statement": [{"Effect": "Allow", "Action": "s3:Put*",
                                       "Resource": {"Fn::Sub": "${ArtifactsBucket.Arn}/*"}}]}])
    assert may_write(broad, "site/agent/package.b64")


def test_the_bucket_itself_denies_site_writes_to_every_function():
    """Defence in depth: even a function that were granted S3CrudPolicy again could not change site/."""
    template = load_template()
    functions = sorted(lid for lid, res in template["Resources"].items() if res["Type"] == "AWS::Serverless::Function")
    statements = template["Resources"]["ArtifactsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [deny] = [statement for statement in statements if statement.get("Sid") == "DenySiteWritesByFunctions"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert {"s3:PutObject", "s3:DeleteObject"} <= set(deny["Action"])
    resource = _resource(deny["Resource"])
    assert all(fnmatch.fnmatchcase(f"{ARTIFACTS}/{key}", resource) for key in SITE_KEYS)
    assert not fnmatch.fnmatchcase(f"{ARTIFACTS}/jobs/j/script.py", resource)  # only site/
    roles = deny["Condition"]["ArnEquals"]["aws:PrincipalArn"]
    assert sorted(role["Fn::GetAtt"][0] for role in roles) == sorted(f"{name}Role" for name in functions)
    assert all(role["Fn::GetAtt"][1] == "Arn" for role in roles)
