"""Agent API routes for fork hosts, mounted by functions/agent_api/app.py with ``app.include_router(fork_router)``.

    POST /agent/forks/claim                  {"wait": s, "running": [fork_id, ...]}
        -> 200 {"task": {task_id, kind, fork_id, block, journal} | null, "stop": [fork_id, ...]}
    POST /agent/forks/tasks/<task_id>/result {"ok": true, "rpc_url", "base_block", "chain_id", "entries", "snapshots"}
                                             | {"ok": false, "error": "..."}
        -> 200 what the state machine was told; 404 not this host's task; 410 the state machine stopped waiting

Only an agent an operator approved as a fork host (depu.forks.hosts) may claim; it gets only tasks addressed
to it. Every route authenticates the agent's bearer token itself, so mounting adds no coupling to the app's own auth.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router

from depu import jsonbody
from depu.agents import registry
from depu.forks import hosts, tasks

fork_router = Router()
MAX_BODY_BYTES = 512 * 1024
FORK_HOST_CAPABILITY = hosts.FORK_HOST_CAPABILITY


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


def _agent() -> Any:
    header = fork_router.current_event.get_header_value("Authorization", default_value="", case_sensitive=False) or ""
    scheme, _, token = header.partition(" ")
    # tokens are ASCII; anything else (a lone surrogate included) is no token, not a crash in hashing
    return registry.authenticate(token.strip()) if scheme.lower() == "bearer" and token.isascii() else None


def _body() -> dict[str, Any] | None:
    raw = fork_router.current_event.body or ""
    try:
        body = jsonbody.loads(raw, max_bytes=MAX_BODY_BYTES) if raw else {}
    except ValueError:  # too large, not UTF-8, too deep or not JSON
        return None
    return body if isinstance(body, dict) else None


@fork_router.post("/agent/forks/claim")
def claim_fork_task() -> Response:
    agent = _agent()
    if agent is None:
        return _json(401, {"error": "unauthorized"})
    if not hosts.may_host(agent):  # approved by an operator, not suspended: never the agent's own say
        return _json(403, {"error": hosts.why_not(agent)})
    hosts.seen(agent.agent_id)
    body = _body()
    if body is None:
        return _json(400, {"error": "body must be a JSON object under 512 KiB"})
    running = [str(fork_id) for fork_id in body.get("running") or [] if isinstance(fork_id, str)]
    task = tasks.claim(agent.agent_id, float(body.get("wait") or 0))
    return _json(200, {"task": task.to_dict() if task else None, "stop": tasks.to_stop(agent.agent_id, running)})


@fork_router.post("/agent/forks/tasks/<task_id>/result")
def report_fork_task(task_id: str) -> Response:
    agent = _agent()
    if agent is None:
        return _json(401, {"error": "unauthorized"})
    body = _body()
    if body is None:
        return _json(400, {"error": "body must be a JSON object under 512 KiB"})
    declared = urlsplit(agent.fork_rpc_base_url).hostname if agent.fork_rpc_base_url else None
    try:
        told = tasks.finish(agent.agent_id, task_id, body, allowed_url_host=declared)
    except tasks.TaskNotFound:
        return _json(404, {"error": "not found"})
    except tasks.TaskExpired:
        return _json(410, {"error": "the task is no longer awaited; drop what was built"})
    except tasks.BadReport as error:
        return _json(400, {"error": str(error)})
    return _json(200, {"accepted": True, "told": {k: v for k, v in told.items() if k != "conflicts_json"}})
