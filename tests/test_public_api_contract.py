"""The public API's contract: the OpenAPI document generated from the route models is the one checked in
(docs/public-api.openapi.json) and the one served at /v1/openapi.json, and schemathesis, run against the real
handler behind the local runtime, finds no answer outside it."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from schemathesis_run import run_against

from tests.public_api_support import call, user_with_key

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "public-api.openapi.json"
APP_SOURCE = ROOT / "functions" / "public_api" / "app.py"
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
    routes = re.findall(r"^@app\.(?:get|post|put|patch|delete)\(", APP_SOURCE.read_text(), flags=re.M)
    assert len(operations) == len(routes) - 1 >= 23  # every route of functions/public_api/app.py but the document
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

    monkeypatch.setattr(throttle, "BURST", 10_000.0)  # the fuzzer's burst is not what is under test here
    key = user_with_key(6001, credits=50_000)
    register_fork_host("host-fuzz")
    job = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "benchmark"})["json"]
    run_against(aws, "PublicApiFunction", DOCUMENT, key, tmp_path, job_id=job["job_id"], seed=16, max_examples=6,
                timeout=500)
