"""Run DePU functions with X-Ray tracing on, as in Lambda, and keep every trace entity they emit.

Run as a script by tests/test_abuse_provider_edge.py, in its own process: turning tracing on patches botocore
for the whole process, which must not leak into other tests. Usage::

    python tests/trace_probe.py PLAN.json OUT.json

PLAN is ``{"calls": [{"function": "agent_api", "event": {...}}, ...]}``. OUT gets ``{"responses": [...],
"entities": [serialized segment documents], "control": ...}``. The process runs with ``LAMBDA_TASK_ROOT`` and
``_X_AMZN_TRACE_ID`` set (sampled), so the X-Ray SDK works exactly as in Lambda (a facade segment, each closed
subsegment streamed), except that the emitter keeps the documents in memory instead of sending UDP.

The control: one extra traced function with Powertools' defaults returns a marker; the test checks that the
marker is in the entities, so an empty result means "nothing recorded" and not "recording was broken".
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "layers" / "depu", ROOT / "agent", ROOT / "tests"):
    sys.path.insert(0, str(extra))

CONTROL_MARKER = "control-marker-5f0e8d"


class MemoryEmitter:
    """Stands in for the SDK's UDP emitter: keeps each entity's JSON document."""

    def __init__(self) -> None:
        self.documents: list[str] = []

    def send_entity(self, entity) -> None:
        self.documents.append(entity.serialize())

    def set_daemon_address(self, address) -> None:
        pass

    @property
    def ip(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return 2000


def main(plan_path: str, out_path: str) -> None:
    from aws_xray_sdk.core import xray_recorder

    emitter = MemoryEmitter()
    xray_recorder.configure(emitter=emitter, sampling=False, context_missing="LOG_ERROR")

    from telegram_harness import FakeLambdaContext, load_function

    plan = json.loads(Path(plan_path).read_text())
    responses = []
    modules = {}
    for call in plan["calls"]:
        name = call["function"]
        module = modules.get(name) or modules.setdefault(name, load_function(name))
        assert not module.tracer.disabled, "tracing did not turn on"
        responses.append(module.lambda_handler(call["event"], FakeLambdaContext()))

    from aws_lambda_powertools import Tracer

    @Tracer().capture_method
    def control() -> dict:
        return {"marker": CONTROL_MARKER}

    control()
    Path(out_path).write_text(json.dumps({"responses": responses, "entities": emitter.documents}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
