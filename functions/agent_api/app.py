"""Agent API: the REST API provider agents pull work from (docs/agent-api.openapi.yaml describes it).

Every route but register needs ``Authorization: Bearer <agent_token>``; without a valid one the answer is 401
and nothing is read or written. An agent sees only its own jobs (another's answers 404, like a missing one);
an illegal move answers 409 with the job's current state.
"""
from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import jsonbody, tracing
from depu.agents import challenges, package, registry, tokens
from depu.agents.registry import Agent, RegistrationError
from depu.forks.host_api import fork_router
from depu.jobs import lifecycle, work
from depu.jobs.leases import HEARTBEAT_SECONDS, LEASE_SECONDS

logger = Logger()
tracer = tracing.tracer()
app = APIGatewayRestResolver()
app.include_router(fork_router)  # fork hosts: /agent/forks/... (depu.forks.host_api)

MAX_BODY_BYTES = 256 * 1024
# register is the one route that parses before it authenticates (the provider token is in the body): an
# outsider's body gets a small limit. A 16-GPU machine's registration is under 8 KiB.
REGISTER_MAX_BODY_BYTES = 32 * 1024
REVEAL_MAX_BODY_BYTES = 1024 * 1024  # 16 devices x 2 rows of 8192 packed entries with proofs, after auth
PACKAGE_SHA256_HEADER = "X-Depu-Package-Sha256"
PACKAGE_SIGNATURE_HEADER = "X-Depu-Package-Signature"


class Unauthorized(Exception):
    pass


class PayloadTooLarge(Exception):
    pass


def _json(status: int, body: dict[str, Any] | None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body) if body is not None else "",
    )


def _body(max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    raw = app.current_event.body or ""
    try:
        body = jsonbody.loads(raw, max_bytes=max_bytes) if raw else {}
    except jsonbody.TooLarge as error:
        raise PayloadTooLarge(f"body over {max_bytes} bytes") from error
    except jsonbody.NotUnicode as error:
        raise work.BadRequest(str(error)) from error
    except ValueError as error:
        raise work.BadRequest("body is not JSON") from error
    if not isinstance(body, dict):
        raise work.BadRequest("body must be a JSON object")
    return body


def _bearer() -> str | None:
    header = app.current_event.get_header_value("Authorization", default_value="", case_sensitive=False) or ""
    scheme, _, token = header.partition(" ")
    # tokens are ASCII; anything else (a lone surrogate included) is no token, not a crash in hashing
    return token.strip() if scheme.lower() == "bearer" and token.strip() and token.isascii() else None


def _agent() -> Agent:
    agent = registry.authenticate(_bearer())
    if agent is None:
        raise Unauthorized()
    return agent


def _renew_hint() -> bool:
    """Whether the token of this request should be renewed now (less than the renewal window left)."""
    expires_at = registry.token_expires_at(_bearer())
    return expires_at is not None and expires_at - time.time() < tokens.AGENT_TOKEN_RENEW_WINDOW_SECONDS


@app.exception_handler(Unauthorized)
def _unauthorized(_: Unauthorized) -> Response:
    return _json(401, {"error": "unauthorized"})


@app.exception_handler(PayloadTooLarge)
def _too_large(error: PayloadTooLarge) -> Response:
    return _json(413, {"error": str(error)})


@app.exception_handler(work.NotFound)
def _not_found(_: work.NotFound) -> Response:
    return _json(404, {"error": "not found"})


@app.exception_handler(lifecycle.Conflict)
def _conflict(error: lifecycle.Conflict) -> Response:
    return _json(409, {"error": "conflict", "state": error.current})


@app.exception_handler(work.OverBudget)
def _over_budget(error: work.OverBudget) -> Response:
    return _json(413, {"error": str(error)})


@app.exception_handler(work.BadRequest)
@app.exception_handler(RegistrationError)
def _bad_request(error: ValueError) -> Response:
    return _json(400, {"error": str(error)})


@app.post("/agent/register")
def register() -> Response:
    body = _body(REGISTER_MAX_BODY_BYTES)
    registration = registry.register(
        body.get("provider_token") if isinstance(body.get("provider_token"), str) else None,
        name=body.get("name"),
        gpus=body.get("gpus", []),
        capabilities=body.get("capabilities") if isinstance(body.get("capabilities"), list) else [],
        benchmark=body.get("benchmark") if isinstance(body.get("benchmark"), dict) else {},
        version=body.get("version") if isinstance(body.get("version"), str) else None,
        fork_rpc_base_url=body.get("fork_rpc_base_url") if isinstance(body.get("fork_rpc_base_url"), str) else None,
        fork_tls_sha256=body.get("fork_tls_sha256"),
        fault=body.get("fault"),
        cpu_slots=body.get("cpu_slots"),
    )
    if registration is None:
        raise Unauthorized()
    logger.info("agent registered", extra={"agent_id": registration.agent_id, "gpu_class": registration.gpu_class,
                                            "verified": registration.verified})
    return _json(
        201,
        {
            "agent_id": registration.agent_id,
            "agent_token": registration.agent_token,
            "token_expires_in": tokens.AGENT_TOKEN_TTL_SECONDS,
            "heartbeat_seconds": HEARTBEAT_SECONDS,
            "lease_seconds": LEASE_SECONDS,
            "gpu_class": registration.gpu_class,
            "verified": registration.verified,
            "verdict": registration.verdict,
            "challenge_due": registration.challenge_due,
        },
    )


@app.post("/agent/heartbeat")
def heartbeat() -> Response:
    agent = _agent()
    body = _body()
    cancel = work.heartbeat(agent, body.get("metrics"), body.get("running_jobs"), body.get("free_gpus"),
                            body.get("fault"), env_hashes=body.get("env_hashes"))
    return _json(200, {"cancel": cancel, "lease_seconds": LEASE_SECONDS, "heartbeat_seconds": HEARTBEAT_SECONDS,
                       "renew_token": _renew_hint(), "challenge_due": challenges.is_due(agent),
                       "verified": bool(agent.verified)})


@app.post("/agent/token/renew")
def renew_token() -> Response:
    """A fresh agent token; the one this request used keeps working for a short overlap only."""
    agent = _agent()
    try:
        renewal = registry.renew_token(agent, _bearer() or "")
    except registry.TokenSuperseded as error:
        raise Unauthorized() from error
    logger.info("agent token renewed", extra={"agent_id": agent.agent_id})
    return _json(200, {"agent_token": renewal.agent_token, "expires_in": renewal.expires_at - int(time.time()),
                       "overlap_seconds": tokens.AGENT_TOKEN_OVERLAP_SECONDS})


# Hardware challenges (depu.agents.challenges): issue -> commit (in time) -> reveal (checked)
@app.exception_handler(challenges.NoChallenge)
def _no_challenge(_: challenges.NoChallenge) -> Response:
    return _json(409, {"error": "no such challenge: unknown, already answered, or not this agent's"})


@app.exception_handler(challenges.ChallengeRefused)
def _challenge_refused(error: challenges.ChallengeRefused) -> Response:
    return _json(409, {"error": f"no challenge for this agent: {error}"})


@app.post("/agent/challenge")
def challenge() -> Response:
    agent = _agent()
    _body()
    return _json(200, challenges.issue(agent))


@app.post("/agent/challenge/commit")
def challenge_commit() -> Response:
    agent = _agent()
    body = _body()
    return _json(200, challenges.commit(agent, body.get("challenge_id"), body.get("roots")))


@app.post("/agent/challenge/reveal")
def challenge_reveal() -> Response:
    agent = _agent()
    body = _body(REVEAL_MAX_BODY_BYTES)
    outcome = challenges.reveal(agent, body.get("challenge_id"), body.get("devices"))
    logger.info("challenge answered", extra={"agent_id": agent.agent_id, "passed": outcome["passed"]})
    return _json(200, outcome)


@app.post("/agent/claim")
def claim() -> Response:
    agent = _agent()
    body = _body()
    offer = work.claim(agent, body.get("free_gpus"), body.get("wait_seconds", 0))
    if offer is None:
        return Response(status_code=204, content_type=content_types.APPLICATION_JSON, body="")
    logger.info("claimed", extra={"agent_id": agent.agent_id, "job_id": offer.job.job_id})
    return _json(200, {"job": offer.as_dict(), "lease_seconds": LEASE_SECONDS})


@app.post("/agent/jobs/<job_id>/progress")
def progress(job_id: str) -> Response:
    agent = _agent()
    body = _body()
    job = work.progress(agent, job_id, body.get("progress", 0), body.get("message"), body.get("metrics"),
                        phase=body.get("phase"))
    return _json(200, {"state": job.status})


@app.post("/agent/jobs/<job_id>/logs")
def logs(job_id: str) -> Response:
    agent = _agent()
    body = _body()
    accepted = work.append_logs(agent, job_id, body.get("seq"), body.get("lines"))
    return _json(200, {"accepted": accepted})


@app.post("/agent/jobs/<job_id>/artifacts")
def artifacts(job_id: str) -> Response:
    agent = _agent()
    body = _body()
    return _json(200, work.artifact_upload(agent, job_id, body.get("name"), body.get("size")))


@app.post("/agent/jobs/<job_id>/complete")
def complete(job_id: str) -> Response:
    agent = _agent()
    body = _body()
    job = work.complete(agent, job_id, body.get("result", {}), body.get("artifacts", []))
    return _json(200, {"state": job.status, "charged": int(job.charged or 0)})


@app.post("/agent/jobs/<job_id>/fail")
def fail(job_id: str) -> Response:
    agent = _agent()
    body = _body()
    job = work.fail(agent, job_id, body.get("error"), body.get("retryable", False))
    return _json(200, {"state": job.status})


@app.post("/agent/release")
def release() -> Response:
    agent = _agent()
    body = _body()
    return _json(200, {"released": work.release(agent, body.get("job_ids"))})


@app.exception_handler(package.NotFound)
def _package_not_found(_: package.NotFound) -> Response:
    return _json(404, {"error": "not found"})


@app.exception_handler(package.Unavailable)
def _package_unavailable(_: package.Unavailable) -> Response:
    return _json(503, {"error": "the agent package is being published; try again in a minute"})


def _text(body: str, content_type: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=200, content_type=content_type, body=body,
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", **(headers or {})})


# What /provider's command downloads (no auth: it holds no secret). Served here so that install.sh piped into
# bash on a provider's machine finds the agent package without a checkout (depu.agents.package). Trust comes
# from the signatures, checked on the provider's machine against the key pinned in the command, not from here.
@app.get("/agent/install.sh")
def install_script() -> Response:
    return _text(package.install_script().text, "text/x-shellscript; charset=utf-8")


@app.get("/agent/install.sh.sig")
def install_script_signature() -> Response:
    return _signature(package.install_script().signature)


@app.get("/agent/package.b64")
def agent_package() -> Response:
    served = package.agent_package()
    headers = {PACKAGE_SHA256_HEADER: served.sha256}
    if served.signature:  # in the same answer as the package, so a publish in between cannot mix two versions
        headers[PACKAGE_SIGNATURE_HEADER] = served.signature
    return _text(served.encoded, "text/plain; charset=us-ascii", headers)


@app.get("/agent/package.sig")
def agent_package_signature() -> Response:
    return _signature(package.agent_package().signature)


@app.get("/agent/package.sha256")
def agent_package_sha256() -> Response:
    served = package.agent_package()
    return _text(f"{served.sha256}  {package.TOP_DIR}.tar.gz\n", "text/plain; charset=us-ascii",
                 {PACKAGE_SHA256_HEADER: served.sha256})


def _signature(signature: str | None) -> Response:
    if not signature:
        raise package.NotFound("not signed")
    return _text(signature + "\n", "text/plain; charset=us-ascii")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
