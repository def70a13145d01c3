"""The public API's contract: the OpenAPI document generated from the route models is the one checked in
(docs/public-api.openapi.json) and the one served at /v1/openapi.json, and schemathesis, run against the real
handler behind the local runtime, finds no answer outside it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local.moto_server import free_port
from tests.public_api_support import call, user_with_key

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "public-api.openapi.json"
sys.path.insert(0, str(ROOT / "scripts"))
import public_api_openapi  # noqa: E402


def test_the_checked_in_document_is_what_the_code_generates():
    generated = public_api_openapi.generate()
    assert DOCUMENT.read_text() == generated, (
        "docs/public-api.openapi.json is out of date: run .venv/bin/python scripts/public_api_openapi.py")


def test_the_document_is_served_without_a_key_and_matches(aws):
    served = call("GET", "/v1/openapi.json")
    assert served["statusCode"] == 200
    assert served["json"] == json.loads(DOCUMENT.read_text())


def test_every_operation_needs_a_key_and_documents_the_one_error_shape():
    document = json.loads(DOCUMENT.read_text())
    assert document["security"] == [{"apiKey": []}]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    assert len(operations) == 23  # every route of functions/public_api/app.py but the document itself
    for path, method, operation in operations:
        for status in ("401", "403", "404", "422", "429", "500"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, status)
        if method == "post":
            assert any(p["name"] == "idempotency-key" and p["in"] == "header" for p in operation.get("parameters", [])), path
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.e2e
def test_schemathesis_finds_no_contract_violation(aws, tmp_path, monkeypatch):
    from depu.apikeys import throttle
    from forks_support import register_fork_host
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    monkeypatch.setattr(throttle, "BURST", 10_000.0)  # the fuzzer's burst is not what is under test here
    key = user_with_key(6001, credits=50_000)
    register_fork_host("host-fuzz")
    job = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "benchmark"})["json"]
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\n"path.job_id" = "{job["job_id"]}"\n')
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port()))
    runtime.functions = {name: fn for name, fn in runtime.functions.items() if name == "PublicApiFunction"}
    runtime.start()
    # as in test_fuzz_agent_api.py: API Gateway sends every method to the route; the stdlib server would answer
    # methods it has no do_X for itself, before any handler
    handler_class = runtime._server.RequestHandlerClass

    def any_method(self, name: str):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    handler_class.__getattr__ = any_method
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "NO_COLOR": "1"}
        command = [
            sys.executable, "-m", "schemathesis.cli", "run", str(DOCUMENT), "--url", runtime.url,
            "-H", f"Authorization: Bearer {key}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases", os.environ.get("DEPU_SCHEMATHESIS_PHASES", "examples,fuzzing"), "--max-examples", "6",
            "--workers", "1", "--seed", "16", "--request-timeout", "30", "--generation-database", "none", "--no-color",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=500, env=env, cwd=tmp_path)
    finally:
        runtime.stop()
    output = done.stdout + done.stderr
    print(output[-6000:])
    assert done.returncode == 0, output[-6000:]
