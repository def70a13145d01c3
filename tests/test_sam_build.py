"""What ``sam build`` makes is what Lambda runs: complete, importable on its own, and under 250 MB.

The fast tests check that the runtime is stated once (template.yaml's Globals) and that the layers, the dev
interpreter and the Makefile agree with it. The slow test runs the real build (``scripts/build.py``, which is
what ``make build`` runs) for x86_64, so that the built compiled wheels load on this machine, from scratch and
into its own folder (nothing reused from the arm64 build). Then, for every function, a clean interpreter
(``python -I -S``: the standard library and nothing else) gets only what Lambda would put on ``sys.path`` --
the function's built folder, its built layers, and the runtime's boto3 -- imports the handler and calls one
real route against moto (the webhook and the notifier against a Bot API double, the indexer against anvil),
so a dependency the venv has but the build lacks fails here as ``ModuleNotFoundError``.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from conftest import TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET
from deadlines import scaled
from local.template import LocalTemplate, load_template
from telegram_harness import api_event, bot_api_double, sqs_event

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "lambda_probe.py"
sys.path.insert(0, str(ROOT / "scripts"))
import build as sam_build  # noqa: E402

TEMPLATE = load_template()
RUNTIME, ARCHITECTURE = sam_build.runtime_and_architecture(TEMPLATE)
LAYERS = {lid: res for lid, res in TEMPLATE["Resources"].items() if res["Type"] == "AWS::Serverless::LayerVersion"}
FUNCTIONS = {lid: res for lid, res in TEMPLATE["Resources"].items() if res["Type"] == "AWS::Serverless::Function"}


# ---------------------------------------------------------------- one runtime, stated once
def test_every_layer_is_built_for_the_functions_runtime_and_architecture():
    assert re.fullmatch(r"python3\.\d+", RUNTIME)
    for lid, layer in LAYERS.items():
        assert layer["Metadata"]["BuildMethod"] == RUNTIME, lid
        assert layer["Metadata"]["BuildArchitecture"] == ARCHITECTURE, lid
        assert layer["Properties"]["CompatibleRuntimes"] == [RUNTIME], lid
        assert layer["Properties"]["CompatibleArchitectures"] == [ARCHITECTURE], lid


def test_no_function_overrides_the_global_runtime_or_architecture():
    for lid, function in FUNCTIONS.items():
        assert "Runtime" not in function["Properties"] and "Architectures" not in function["Properties"], lid


def test_the_dev_interpreter_and_the_makefile_run_the_lambda_runtime():
    """Tests and the local stack run handlers in-process: on another Python they would prove nothing."""
    assert f"python{sys.version_info.major}.{sys.version_info.minor}" == RUNTIME
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^PYTHON \?= {re.escape(RUNTIME)}$", makefile, re.M)


def test_the_local_runtime_refuses_an_interpreter_other_than_the_templates(tmp_path):
    from local.runtime import LocalRuntime

    other = tmp_path / "template.yaml"
    other.write_text((ROOT / "template.yaml").read_text().replace(f"Runtime: {RUNTIME}", "Runtime: python3.99", 1))
    runtime = LocalRuntime(LocalTemplate(path=other), "http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match=r"run python3\.99 but this interpreter is python3\.\d+"):
        runtime.start()


def test_the_x86_64_template_copy_differs_only_in_architecture(tmp_path):
    other = next(arch for arch in sam_build.ARCHITECTURES if arch != ARCHITECTURE)
    copy = json.loads(sam_build.template_for(other, tmp_path).read_text())
    assert copy["Globals"]["Function"]["Architectures"] == [other]
    for lid in LAYERS:
        assert copy["Resources"][lid]["Metadata"] == {"BuildMethod": RUNTIME, "BuildArchitecture": other}
        assert Path(copy["Resources"][lid]["Properties"]["ContentUri"]).is_dir()
    for lid in FUNCTIONS:
        assert (Path(copy["Resources"][lid]["Properties"]["CodeUri"]) / "app.py").is_file()
    assert sam_build.template_for(ARCHITECTURE, tmp_path) == sam_build.TEMPLATE_PATH


# ---------------------------------------------------------------- the real build, run as Lambda would
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("sam") / "build-x86_64"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build.py"), "--architecture", "x86_64",
                           "--build-dir", str(build_dir), "--no-cached"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    print(done.stdout[-3000:])  # the size table, shown with -s or on failure
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = sam_build.load_manifest(build_dir)
    runtime_dir = build_dir.parent / "var-runtime"
    sam_build.lambda_runtime_dir(runtime_dir)
    return manifest, runtime_dir


# both tests share one build: one xdist group keeps them on one worker (`make test` runs --dist loadgroup)
BUILD_GROUP = pytest.mark.xdist_group("sam_build")


@pytest.mark.slow
@BUILD_GROUP
def test_the_build_fits_and_leaves_out_only_what_the_runtime_provides(built):
    manifest, _ = built
    assert manifest["architecture"] == "x86_64" and manifest["runtime"] == RUNTIME
    assert set(manifest["functions"]) == set(FUNCTIONS)
    for lid, spec in manifest["functions"].items():
        assert 0 < spec["bytes"] < sam_build.LAMBDA_UNZIPPED_LIMIT, (lid, spec["bytes"])
    depu = Path(manifest["layers"]["DepuLayer"]["path"])
    assert (depu / "depu" / "__init__.py").is_file() and (depu / "pynamodb").is_dir()
    assert not any((depu / name).exists() for name in sam_build.RUNTIME_PROVIDED)
    assert manifest["runtime_provided_bytes_removed"] > 10 * 1024 * 1024  # botocore alone is ~20 MB


def _run(manifest: dict[str, Any], runtime_dir: Path, function: str, event: dict[str, Any], endpoint: str,
         env: dict[str, str] | None = None, after: str | None = None, remaining_ms: int = 25_000) -> dict[str, Any]:
    spec = manifest["functions"][function]
    environment = {
        "PATH": "/usr/bin:/bin",
        **LocalTemplate().environment(endpoint, function),
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
        "LAMBDA_TASK_ROOT": spec["code"], "AWS_LAMBDA_FUNCTION_NAME": f"depu-{function}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
        "MPLCONFIGDIR": str(runtime_dir.parent / "mpl"),  # Lambda's home is read-only; /tmp is not
        **(env or {}),
    }
    request = {"path": spec["path"] + [str(runtime_dir)], "handler": spec["handler"], "function": function,
               "event": event, "after": after, "remaining_ms": remaining_ms}
    done = subprocess.run([sys.executable, "-I", "-S", str(PROBE)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=120, env=environment, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in answer, answer["error"]["trace"]
    allowed = [*spec["path"], str(runtime_dir), *answer["stdlib"]]
    strays = {name: where for name, where in answer["modules"].items()
              if where and not any(where.startswith(root) for root in allowed)}
    assert not strays, f"{function} imported modules from outside what Lambda has: {strays}"
    assert answer["modules"]["botocore"].startswith(str(runtime_dir)), "the runtime's botocore, not a layer's"
    return answer


def _layer_of(manifest: dict[str, Any], answer: dict[str, Any], module: str) -> str:
    where = answer["modules"][module]
    return next(lid for lid, layer in manifest["layers"].items() if where.startswith(layer["path"] + "/"))


def _message(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    return {"update_id": update_id, "message": {
        "message_id": 1, "date": 1764000000, "chat": {"id": user_id, "type": "private"},
        "from": {"id": user_id, "is_bot": False, "first_name": "Ada"}, "text": text,
        "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]}}


@pytest.mark.slow
@BUILD_GROUP
def test_every_built_function_imports_and_answers_one_route_with_only_what_lambda_has(built, aws, tmp_path):
    manifest, runtime_dir = built
    endpoint = aws.endpoint
    telegram = bot_api_double(TEST_BOT_TOKEN)
    try:
        bot = {"TELEGRAM_API_BASE": telegram.base_url}
        # webhook: /start creates the profile and answers with the menu; then a chart, as /dashboard draws it
        answer = _run(manifest, runtime_dir, "TelegramWebhookFunction", api_event(
            "/telegram/webhook", json.dumps(_message(1, 4242, "/start")),
            {"X-Telegram-Bot-Api-Secret-Token": TEST_WEBHOOK_SECRET}), endpoint, bot,
            after="from depu.analytics import charts\n"
                  "result = len(charts.bars_chart('GPU minutes', ['A100'], [3.0], 'minutes'))")
        assert answer["result"]["statusCode"] == 200, answer["result"]
        assert telegram.calls_of("sendMessage") and answer["after"] > 1000
        assert _layer_of(manifest, answer, "matplotlib") == "ChartsDepsLayer"
        assert "pyarrow" not in answer["modules"] and "web3" not in answer["modules"]
        users = boto3.resource("dynamodb", endpoint_url=endpoint).Table(LocalTemplate().physical_name("UsersTable"))
        assert users.scan()["Items"], "the built webhook created the profile"

        sent = len(telegram.calls_of("sendMessage"))
        answer = _run(manifest, runtime_dir, "NotifierFunction",
                      sqs_event([json.dumps({"chat_id": 4242, "text": "built and delivered"})]), endpoint, bot)
        assert answer["result"] == {"batchItemFailures": []}
        assert [call.params["text"] for call in telegram.calls_of("sendMessage")[sent:]] == ["built and delivered"]
    finally:
        telegram.stop()

    answer = _run(manifest, runtime_dir, "AgentApiFunction",
                  api_event("/agent/register", json.dumps({"provider_token": "not-issued", "gpus": []})), endpoint)
    assert answer["result"]["statusCode"] == 401, answer["result"]

    answer = _run(manifest, runtime_dir, "DashboardApiFunction",
                  api_event("/dashboard/session", json.dumps({"init_data": "user=forged&hash=00"})), endpoint)
    assert answer["result"]["statusCode"] in (400, 401), answer["result"]

    answer = _run(manifest, runtime_dir, "ForkRpcFunction", api_event(
        "/rpc/not-a-token", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})), endpoint)
    assert answer["result"]["statusCode"] in (401, 403, 404), answer["result"]

    answer = _run(manifest, runtime_dir, "MatcherFunction", sqs_event([json.dumps({"job_id": "no-such-job"})]), endpoint)
    assert answer["result"] == {"batchItemFailures": []}

    schedule = {"version": "0", "id": "probe", "detail-type": "Scheduled Event", "source": "aws.events",
                "account": "123456789012", "time": "2026-11-25T00:00:00Z", "region": "us-east-1",
                "resources": [], "detail": {}}
    for function in ("LeaseReaperFunction", "ForkJanitorFunction"):
        answer = _run(manifest, runtime_dir, function, schedule, endpoint)
        assert isinstance(answer["result"], dict) and all(ids == [] for ids in answer["result"].values()), answer

    from local.devchain import DevChain

    with DevChain(accounts=4) as chain:
        chain.deploy_defaults()
        chain.activity(rounds=3)
        head = chain.block_number()
        answer = _run(manifest, runtime_dir, "IndexerFunction", schedule, endpoint,
                      {"CHAIN_RPC_URL": chain.rpc_url, "CHAIN_START_BLOCK": "0", "CHAIN_CONFIRMATIONS": "0"},
                      remaining_ms=10_000 + int(scaled(12_000)))  # 12 s to index ~10 blocks, even when loaded
    assert answer["result"]["checkpoint"] == head and answer["result"]["transfers"] > 0, answer["result"]
    assert _layer_of(manifest, answer, "pyarrow") == "ParquetDepsLayer"

    request = {"request_id": "probe-1", "user_id": 4242, "chat_id": 4242, "dataset": "transfers",
               "start": 0, "end": head, "format": "parquet"}
    answer = _run(manifest, runtime_dir, "ExporterFunction", sqs_event([json.dumps(request)]), endpoint)
    assert answer["result"] == {"batchItemFailures": []}
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = LocalTemplate().physical_name("ArtifactsBucket")
    exports = [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if obj["Key"].endswith(".parquet")
               and not obj["Key"].startswith("raw/")]
    assert len(exports) == 1, exports
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=exports[0])["Body"].read()))
    assert table.num_rows == answer_transfers(endpoint) > 0


def answer_transfers(endpoint: str) -> int:
    """Transfers the built indexer stored, counted from its raw Parquet parts (read here, in the venv)."""
    import pyarrow.parquet as pq

    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = LocalTemplate().physical_name("ArtifactsBucket")
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix="raw/transfers/").get("Contents", [])]
    return sum(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())).num_rows for key in keys)
