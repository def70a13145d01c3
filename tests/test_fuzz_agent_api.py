"""Fuzzing the agent API against the contract it publishes (docs/agent-api.openapi.json, generated from the
handler's models by scripts/openapi.py).

schemathesis, the reference tool (a dependency in requirements-dev.txt), does it twice:

1. In process: its hypothesis strategies for each operation, in two modes: bodies that conform to the
   document (positive) and bodies that break it (negative). Every answer must be a documented status of that
   operation and conform to the documented response (schemathesis validates it), a conforming body is never
   refused as malformed (400) except where the server's rule is stated in prose, and after every call the
   state invariants hold: one job, owned by one agent, balances never negative, held credits equal to the
   open job's hold. (test_rental_agent_api.py fuzzes bodies made of the known field names.)

2. Its command line, run as a separate process against the local runtime on 127.0.0.1 with its
   not_a_server_error, status_code_conformance, content_type_conformance and response_schema_conformance
   checks (the coverage phase, ~660 boundary cases and ~90 s here, runs with
   DEPU_SCHEMATHESIS_PHASES=examples,coverage,fuzzing).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from depu.contracts import agent_api as contract
from local.moto_server import free_port
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, register_agent, run_matcher, submit_job

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "docs" / "agent-api.openapi.json"
SPEC = json.loads(SPEC_PATH.read_text())
SCHEMA = schemathesis.openapi.from_path(str(SPEC_PATH))
JOB_STATES = set(typing.get_args(contract.JobState))


def operation(path: str) -> dict[str, Any]:
    return SPEC["paths"][path]["post"]


# Conforming bodies the server may still refuse with 400, for rules the document states only in prose.
PROSE_RULES = {
    "/agent/jobs/{job_id}/complete": "artifact keys must be the ones the artifacts route returned for this job",
    "/agent/jobs/{job_id}/artifacts": "a name must contain a usable file name (the schema allows '  ' or '..')",
    "/agent/forks/tasks/{task_id}/result": "what a host built is checked against the fork (depu.forks.tasks)",
    "/agent/register": "the machine's details are checked by the registry (a name, known GPUs, a fork host's URL)",
}


# ---------------------------------------------------------------- the fuzz target
@pytest.fixture
def world(aws, monkeypatch):
    """One user with a running job on one agent."""
    from depu.jobs import work

    # a conforming claim may ask to long-poll for up to 20 s; one second keeps the fuzzing fast and still
    # goes through the waiting loop
    monkeypatch.setattr(work, "CLAIM_WAIT_SECONDS", 1)
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    agent = register_agent(api, enrol_provider(7001), name="a")
    job = submit_job()
    run_matcher()
    status, offer = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])
    assert status == 200
    return {"api": api, "token": agent["agent_token"], "agent_id": agent["agent_id"], "job_id": job.job_id}


def check_invariants(world: dict[str, Any]) -> None:
    from depu import credits
    from depu.jobs.models import Job

    jobs = list(Job.scan())
    assert len(jobs) == 1, "fuzzing must not create or lose jobs"
    job = jobs[0]
    assert job.status in JOB_STATES
    assert job.agent_id in (None, world["agent_id"]), "the job moved to an agent that never claimed it"
    balance = credits.balance(USER_ID)
    assert balance.credits >= 0 and balance.held >= 0
    if job.status in ("queued", "assigned", "running"):
        assert balance.held == int(job.max_cost)
    else:
        assert job.settled and balance.held == 0
        assert balance.credits == 6000 - int(job.charged or 0)  # starter 1000 + 5000, charged once


def as_schemathesis_response(status: int, answer: Any, url: str) -> schemathesis.Response:
    """The in-process answer in the shape schemathesis validates (it would get the same over HTTP)."""
    request = requests.Request("POST", url, json={}).prepare()
    content = b"" if answer is None else json.dumps(answer).encode()
    headers = {"content-type": ["application/json"]} if content else {}
    return schemathesis.Response(status_code=status, headers=headers, content=content, request=request, elapsed=0.0,
                                 verify=False, message="", encoding="utf-8", http_version="1.1")


def body_of(case: Any) -> Any:
    """The drawn body; an operation whose body is optional may be drawn without one (the route's defaults)."""
    return None if isinstance(case.body, NotSet) else case.body


def exercise(world: dict[str, Any], path: str, case: Any, own_job: bool, conforms: bool) -> None:
    concrete = path.replace("{job_id}", world["job_id"] if own_job else "jfuzz0000").replace("{task_id}", "f_fuzz.1")
    body = body_of(case)
    token = None if path == "/agent/register" else world["token"]
    if body is None:
        raw = ""
    elif isinstance(body, bytes):  # a negative case may send raw bytes instead of a JSON document
        raw = body.decode("latin-1")
    else:
        raw = json.dumps(body, allow_nan=True)
    status, answer = world["api"].call(concrete, raw, token)
    documented = {int(code) for code in operation(path)["responses"]}
    assert status in documented, (path, body, status, answer)
    SCHEMA[path]["POST"].validate_response(as_schemathesis_response(status, answer, f"http://127.0.0.1{concrete}"))
    if conforms and status == 400 and path not in PROSE_RULES:
        raise AssertionError(f"{path}: a body that conforms to the published schema was refused: {body} -> {answer}")
    check_invariants(world)


FUZZ_SETTINGS = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.filter_too_much])
PATHS = sorted(SPEC["paths"])


@FUZZ_SETTINGS
@given(data=st.data(), path=st.sampled_from(PATHS), own_job=st.booleans())
def test_schema_conforming_bodies_get_documented_answers(world, data, path, own_job):
    case = data.draw(SCHEMA[path]["POST"].as_strategy(GenerationMode.POSITIVE), label="case")
    exercise(world, path, case, own_job, conforms=True)


@FUZZ_SETTINGS
@given(data=st.data(), path=st.sampled_from(PATHS), own_job=st.booleans())
def test_bodies_that_break_the_schema_get_documented_answers(world, data, path, own_job):
    case = data.draw(SCHEMA[path]["POST"].as_strategy(GenerationMode.NEGATIVE), label="case")
    exercise(world, path, case, own_job, conforms=False)


def test_the_document_and_the_models_agree():
    """Every body schemathesis draws as conforming to the document is accepted by the route's model, so the
    document (what clients read) and the models (what the server enforces) are one contract."""
    from depu.contracts import fork_hosts

    for path in PATHS:
        ref = operation(path)["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        model = getattr(contract, name, None) or getattr(fork_hosts, name)

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
        @given(SCHEMA[path]["POST"].as_strategy(GenerationMode.POSITIVE))
        def accepted(case):
            model.model_validate(body_of(case) or {})

        accepted()


# ---------------------------------------------------------------- schemathesis
@pytest.mark.e2e
def test_schemathesis_finds_no_contract_violation(aws, tmp_path):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    agent = register_agent(api, enrol_provider(7001))
    job = submit_job()  # a job this agent runs, so the job routes are reached with an id that exists
    run_matcher()
    assert api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])[0] == 200
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\n"path.job_id" = "{job.job_id}"\n')
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port()))
    runtime.functions = {name: fn for name, fn in runtime.functions.items() if name == "AgentApiFunction"}
    runtime.start()
    # The stdlib server under the local runtime answers methods it has no do_X for (TRACE, QUERY, ...) itself,
    # with an HTML 501, before any route or handler is reached (reported; pinned by a strict xfail in
    # test_abuse_floods.py). API Gateway sends every method to the route, so send them to it here too: what
    # is fuzzed is the handler's contract, not http.server's.
    handler_class = runtime._server.RequestHandlerClass

    def any_method(self, name: str):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    handler_class.__getattr__ = any_method
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "NO_COLOR": "1"}
        command = [
            sys.executable, "-m", "schemathesis.cli", "run", str(SPEC_PATH), "--url", runtime.url,
            "-H", f"Authorization: Bearer {agent['agent_token']}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases", os.environ.get("DEPU_SCHEMATHESIS_PHASES", "examples,fuzzing"), "--max-examples", "8", "--workers", "1", "--seed", "6",
            "--request-timeout", "30", "--generation-database", "none", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    finally:
        runtime.stop()
    output = done.stdout + done.stderr
    print(output[-6000:])
    assert done.returncode == 0, output[-6000:]
