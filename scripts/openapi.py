"""Write the published API contracts from the code: docs/agent-api.openapi.json (the agent API with its
fork-host routes) and docs/dashboard-api.openapi.json.

Each document is what Powertools' Event Handler generates from the routes and their models
(depu.contracts), plus what the generator cannot know: DePU answers a body that does not fit with 400 (not
Powertools' default 422), a body of another content type with 415, the bearer scheme, and which operations
need no token. Run it after a
change to a route or a model (``make openapi``); tests/test_api_contracts.py fails while a document differs
from the code. ``--check`` only compares.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "depu"))

from aws_lambda_powertools.event_handler.openapi.models import Server  # noqa: E402

BEARER = {"type": "http", "scheme": "bearer"}
LOCAL = [Server(url="http://127.0.0.1:3000", description="the local stack (make up)")]
AGENT_DESCRIPTION = """The REST API provider agents pull work from. Every operation except register needs \
`Authorization: Bearer <agent_token>`; a missing or wrong token is answered 401 `{"error":"unauthorized"}` and \
nothing is read or written. An agent sees only its own jobs: another agent's job (or one taken back from it) \
answers 404, exactly like a job that does not exist. A move that is not legal from the job's current state answers \
409 with that state. Timings: heartbeat every `heartbeat_seconds`; a heartbeat renews the lease of each listed job \
for `lease_seconds`; a job whose lease runs out is retried on another agent (at most 3 attempts). Agent tokens \
expire 30 days after they were issued; a heartbeat answers `renew_token: true` once a week or less is left, and \
the agent then calls /agent/token/renew (the old token keeps working for `overlap_seconds`). Provider budgets: log \
chunks only for a running job (else 409), seq below the job's chunk budget and at most 64 MiB of log per job, at \
most 20 artifact names and 2 GiB signed for per job, else 413. Fork hosts an operator approved poll \
/agent/forks/claim for tasks and report each one's result. A body that does not fit its schema answers 400 with \
`error` naming the field. Generated from the code by scripts/openapi.py: do not edit."""
DASHBOARD_DESCRIPTION = """The live dashboard's API, under /dashboard/ (the page itself is served there too). \
Sign in with Telegram's initData inside the Mini App or with the bot's one-time login code in a browser; the \
answer is a 15-minute bearer session for the overview, which the page polls. A job's log is read from a cursor \
(polled every ~2 s while it runs) and its outputs as 10-minute links; another user's job answers 404, exactly like \
a job that does not exist. Generated from the code by scripts/openapi.py: do not edit."""

# name -> (function, title, description, bearer scheme, the operations that need no token)
DOCUMENTS = {
    "agent-api.openapi.json": ("agent_api", "DePU agent API", AGENT_DESCRIPTION, "agentToken", {"register"}),
    "dashboard-api.openapi.json": ("dashboard_api", "DePU dashboard API", DASHBOARD_DESCRIPTION, "dashboardSession",
                                   {"loginLink", "openSession", "closeSession"}),
}
BAD_BODY = {"description": "The body does not fit the contract; `error` says which field and why.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}}}
NOT_JSON = {"description": "The body is not sent as application/json.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}}}


def load_app(name: str) -> ModuleType:
    """functions/<name>/app.py, imported under its own module name (every function's file is app.py)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    spec = importlib.util.spec_from_file_location(f"depu_openapi_{name}", ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def document(name: str) -> dict[str, Any]:
    """The OpenAPI document of one function's API, as checked in."""
    function, title, description, scheme, public = DOCUMENTS[name]
    app = load_app(function).app
    generated = app.get_openapi_schema(title=title, version="1.0", description=description, servers=LOCAL,
                                       security_schemes={scheme: BEARER}, security=[{scheme: []}])
    spec = generated.model_dump(mode="json", by_alias=True, exclude_none=True)
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            if operation.get("operationId") in public:  # Powertools drops a route's empty security list
                operation["security"] = []
            responses = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None or "requestBody" in operation:
                responses.setdefault("400", BAD_BODY)
            if "requestBody" in operation:
                responses.setdefault("415", NOT_JSON)
            responses.pop("500", None)  # a reply that breaks its own model is a bug, not part of the contract
    schemas = spec.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(unused, None)
    return spec


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a document is stale")
    args = parser.parse_args(argv)
    stale = []
    for name in DOCUMENTS:
        path = ROOT / "docs" / name
        text = render(document(name))
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    verb = "stale" if args.check else "written"
    print(f"{verb}: {', '.join(stale)}" if stale else "every API document matches the code")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
