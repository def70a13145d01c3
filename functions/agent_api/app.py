"""Agent API: the REST API provider agents pull work from (docs/agent-api.openapi.json, generated from the
models in depu.contracts by scripts/openapi.py).

Every route but register needs ``Authorization: Bearer <agent_token>``; without a valid one the answer is 401
and nothing is read or written. An agent sees only its own jobs (another's answers 404, like a missing one);
an illegal move answers 409 with the job's current state. Bodies are parsed under the route's size limit and
validated against the route's model before the handler runs (Powertools' ``enable_validation``); a body that
does not fit answers 400 saying which field is wrong, and the domain gets typed values only.
"""
from __future__ import annotations

import threading
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.agents import challenges, package, registry, tokens
from depu.agents.registry import Agent, RegistrationError
from depu.contracts import agent_api as c
from depu.contracts import fork_hosts as f
from depu.contracts.common import answers
from depu.forks import hosts, tasks
from depu.jobs import lifecycle, work
from depu.jobs.leases import HEARTBEAT_SECONDS, LEASE_SECONDS
from depu.web import bodies, errors
from depu.web.bearer import bearer_token
from depu.web.responses import error_response, json_response

logger = Logger()
tracer = tracing.tracer()

MAX_BODY_BYTES = 256 * 1024
# register is the one route that needs no token (the provider token is in the body): an outsider's body gets
# a small limit. A 16-GPU machine's registration is under 8 KiB.
REGISTER_MAX_BODY_BYTES = 32 * 1024
REVEAL_MAX_BODY_BYTES = 1024 * 1024  # 16 devices x 2 rows of 8192 packed entries with proofs
FORK_HOST_MAX_BODY_BYTES = 512 * 1024  # a fork's replay journal comes back in its task's result
PACKAGE_SHA256_HEADER = "X-Depu-Package-Sha256"
PACKAGE_SIGNATURE_HEADER = "X-Depu-Package-Signature"


def _body_limit() -> int:
    path = app.current_event.path
    if path.endswith("/agent/register"):
        return REGISTER_MAX_BODY_BYTES
    if path.endswith("/agent/challenge/reveal"):
        return REVEAL_MAX_BODY_BYTES
    if "/agent/forks/" in path:
        return FORK_HOST_MAX_BODY_BYTES
    return MAX_BODY_BYTES


def _token_first() -> None:
    """Every route but register checks the token before its body is read (register's token is in the body)."""
    if not app.current_event.path.endswith("/agent/register"):
        _agent()


app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=bodies.limited_json(_body_limit, _token_first),
                             response_validation_error_http_code=500)
errors.install(app)

AUTH = [(400, "The body does not fit the contract; `error` says which field."), (401, "Missing or wrong token."),
        (413, "The body is over the route's limit (register 32 KiB, reveal 1 MiB, others 256 KiB).")]
JOB = AUTH + [(404, "No such job of this agent's.")]
BUDGET = (413, "Over the route's size limit, or the job's log or artifact budget; `error` says which.")
CONFLICT: dict[int, dict[str, Any]] = {409: {"description": "Not legal from the job's current state.",
                                             "content": {"application/json": {"model": c.ConflictReply}}}}
CHALLENGE_CONFLICT = (409, "No such pending challenge of this agent's, or this agent may not take one.")


class Unauthorized(Exception):
    pass


class NoWork(Exception):
    """No job within the wait (204)."""


def _bearer() -> str | None:
    return bearer_token(app.current_event.headers)


# The agent the request in this thread authenticated as, so the token check before the body and the
# route's own call cost one lookup. Per thread and tied to the request's event object, not kept in the
# resolver's context: that dict is shared by concurrent requests (the local runtime's threads), and one
# request must never see another's agent.
_authenticated = threading.local()


def _agent() -> Agent:
    """The calling agent; Unauthorized without a valid token."""
    event = app.current_event
    if getattr(_authenticated, "event", None) is event:
        return _authenticated.agent
    agent = registry.authenticate(_bearer())
    if agent is None:
        raise Unauthorized()
    _authenticated.event, _authenticated.agent = event, agent
    return agent


def _renew_hint() -> bool:
    """Whether the token of this request should be renewed now (less than the renewal window left)."""
    expires_at = registry.token_expires_at(_bearer())
    return expires_at is not None and expires_at - time.time() < tokens.AGENT_TOKEN_RENEW_WINDOW_SECONDS


@app.exception_handler(Unauthorized)
def _unauthorized(_: Unauthorized) -> Response:
    return error_response(401, "unauthorized")


@app.exception_handler(NoWork)
def _no_work(_: NoWork) -> Response:
    return json_response(204, None)


@app.exception_handler(work.NotFound)
def _not_found(_: work.NotFound) -> Response:
    return error_response(404, "not found")


@app.exception_handler(lifecycle.Conflict)
def _conflict(error: lifecycle.Conflict) -> Response:
    return error_response(409, "conflict", state=error.current)


@app.exception_handler(work.OverBudget)
def _over_budget(error: work.OverBudget) -> Response:
    return error_response(413, str(error))


@app.exception_handler(work.BadRequest)
@app.exception_handler(RegistrationError)
def _bad_request(error: ValueError) -> Response:
    return error_response(400, str(error))


@app.post("/agent/register", operation_id="register",
          summary="Register a machine with a provider enrolment token from /provider.",
          responses=answers("Registered. The agent token is shown once; only its hash is stored.",
                            (400, "The body does not fit the contract, or the machine's details are refused."),
                            (401, "No such enrolment token (or it was used)."),
                            (413, "The body is over 32 KiB (it is read before any token is checked)."), status=201))
def register(request: Annotated[c.RegisterRequest, Body()] = c.RegisterRequest()) -> Response[c.RegisterReply]:
    registration = registry.register(
        request.provider_token,
        name=request.name,
        gpus=[gpu.model_dump(exclude_none=True) for gpu in request.gpus],
        capabilities=list(request.capabilities),
        benchmark=dict(request.benchmark),
        version=request.version,
        fork_rpc_base_url=request.fork_rpc_base_url,
        fork_tls_sha256=request.fork_tls_sha256,
        fault=request.fault,
        cpu_slots=request.cpu_slots,
        egress=request.egress,
        egress_hosts=request.egress_hosts,
    )
    if registration is None:
        raise Unauthorized()
    logger.info("agent registered", extra={"agent_id": registration.agent_id, "gpu_class": registration.gpu_class,
                                            "verified": registration.verified})
    # the status travels in the Response: a route's status_code= is looked up in the resolver's shared
    # context, which concurrent requests (the local runtime's threads) clear under each other
    return Response(201, "application/json", c.RegisterReply(
        agent_id=registration.agent_id, agent_token=registration.agent_token,
        token_expires_in=tokens.AGENT_TOKEN_TTL_SECONDS, heartbeat_seconds=HEARTBEAT_SECONDS,
        lease_seconds=LEASE_SECONDS, gpu_class=registration.gpu_class, verified=registration.verified,
        verdict=registration.verdict, challenge_due=registration.challenge_due))


@app.post("/agent/heartbeat", operation_id="heartbeat", responses=answers("Leases renewed; `cancel` lists jobs to stop now.", *AUTH),
          summary="Say the agent is alive, report GPU metrics, renew the leases of running jobs.")
def heartbeat(report: Annotated[c.HeartbeatRequest, Body()] = c.HeartbeatRequest()) -> c.HeartbeatReply:
    agent = _agent()
    cancel = work.heartbeat(agent, report.metrics, report.running_jobs, report.free_gpus, report.fault,
                            env_hashes=report.env_hashes, egress=report.egress,
                            image_digests=report.image_digests,
                            container_registries=report.container_registries,
                            egress_hosts=report.egress_hosts)
    return c.HeartbeatReply(cancel=cancel, lease_seconds=LEASE_SECONDS, heartbeat_seconds=HEARTBEAT_SECONDS,
                            renew_token=_renew_hint(), challenge_due=challenges.is_due(agent),
                            verified=bool(agent.verified))


@app.post("/agent/token/renew", operation_id="renewToken", responses=answers("The fresh token (store it, mode 600, before using it).", *AUTH),
          summary="Replace this agent's token with a fresh one (the old one works for overlap_seconds more).")
def renew_token(_: Annotated[c.EmptyRequest, Body()] = c.EmptyRequest()) -> c.RenewReply:
    """A fresh agent token; the one this request used keeps working for a short overlap only."""
    agent = _agent()
    try:
        renewal = registry.renew_token(agent, _bearer() or "")
    except registry.TokenSuperseded as error:
        raise Unauthorized() from error
    logger.info("agent token renewed", extra={"agent_id": agent.agent_id})
    return c.RenewReply(agent_token=renewal.agent_token, expires_in=renewal.expires_at - int(time.time()),
                        overlap_seconds=tokens.AGENT_TOKEN_OVERLAP_SECONDS)


# Hardware challenges (depu.agents.challenges): issue -> commit (in time) -> reveal (checked)
@app.exception_handler(challenges.NoChallenge)
def _no_challenge(_: challenges.NoChallenge) -> Response:
    return error_response(409, "no such challenge: unknown, already answered, or not this agent's")


@app.exception_handler(challenges.ChallengeRefused)
def _challenge_refused(error: challenges.ChallengeRefused) -> Response:
    return error_response(409, f"no challenge for this agent: {error}")


@app.post("/agent/challenge", operation_id="challenge", responses=answers("The challenge: compute, then commit within deadline_seconds.", *AUTH, CHALLENGE_CONFLICT),
          summary="Get a hardware challenge (the only way an agent becomes verified; docs/scheduling.md).")
def challenge(_: Annotated[c.EmptyRequest, Body()] = c.EmptyRequest()) -> c.ChallengeIssued:
    return c.ChallengeIssued(**challenges.issue(_agent()))


@app.post("/agent/challenge/commit", operation_id="challengeCommit", responses=answers("The checks to reveal, or the failed verdict (late or malformed).", *AUTH, CHALLENGE_CONFLICT),
          summary="Commit to the computed chain (one Merkle root per device) before the deadline.")
def challenge_commit(request: Annotated[c.CommitRequest, Body()] = c.CommitRequest()) -> c.ChecksToReveal | c.ChallengeVerdict:
    step = challenges.commit(_agent(), request.challenge_id, request.roots)
    return c.ChecksToReveal(**step) if "checks" in step else c.ChallengeVerdict(**step)


@app.post("/agent/challenge/reveal", operation_id="challengeReveal", responses=answers("The verdict; either outcome ends the challenge.", *AUTH, CHALLENGE_CONFLICT),
          summary="Reveal the checked rows with their Merkle proofs and the memory values; the verdict.")
def challenge_reveal(request: Annotated[c.RevealRequest, Body()] = c.RevealRequest()) -> c.ChallengeVerdict:
    agent = _agent()
    outcome = challenges.reveal(agent, request.challenge_id, request.devices)
    logger.info("challenge answered", extra={"agent_id": agent.agent_id, "passed": outcome["passed"]})
    return c.ChallengeVerdict(**outcome)


@app.post("/agent/claim", operation_id="claim",
          responses=answers("A job to run now on `gpu_index`.", *AUTH, extra={204: {"description": "No job within the wait.", "content": {}}}),
          summary="Long poll for the next job assigned to this agent (starts its first lease).")
def claim(request: Annotated[c.ClaimRequest, Body()] = c.ClaimRequest()) -> c.ClaimReply:
    agent = _agent()
    offer = work.claim(agent, request.free_gpus, request.wait_seconds)
    if offer is None:
        raise NoWork()
    logger.info("claimed", extra={"agent_id": agent.agent_id, "job_id": offer.job.job_id})
    return c.ClaimReply(job=offer.as_contract(), lease_seconds=LEASE_SECONDS)


@app.post("/agent/jobs/<job_id>/progress", operation_id="progress", responses=answers("The job's state after the call.", *JOB, extra=CONFLICT),
          summary="Report how far the job is (0..1), with a one-line message and the GPU's readings.")
def progress(job_id: str, report: Annotated[c.ProgressRequest, Body()] = c.ProgressRequest()) -> c.StateReply:
    job = work.progress(_agent(), job_id, report.progress, report.message, report.metrics, phase=report.phase)
    return c.StateReply(state=job.status)


@app.post("/agent/jobs/<job_id>/logs", operation_id="logs", responses=answers("Stored, or a repeat (accepted false).", *JOB[:-2], BUDGET, JOB[-1], extra=CONFLICT),
          summary="Append one numbered chunk of log lines (a repeated seq is accepted and ignored).")
def logs(job_id: str, chunk: Annotated[c.LogsRequest, Body()]) -> c.LogsReply:
    return c.LogsReply(accepted=work.append_logs(_agent(), job_id, chunk.seq, chunk.lines))


@app.post("/agent/jobs/<job_id>/artifacts", operation_id="artifactUpload",
          responses=answers("PUT with Content-Length `size` and `upload_headers`; report `key` in complete. A key that "
                            "holds an object already answers 412 (an earlier upload landed).", *JOB[:-2], BUDGET, JOB[-1], extra=CONFLICT),
          summary="A write-once presigned PUT URL for one output file of exactly `size` bytes.")
def artifacts(job_id: str, request: Annotated[c.ArtifactRequest, Body()]) -> c.ArtifactReply:
    return c.ArtifactReply(**work.artifact_upload(_agent(), job_id, request.name, request.size))


@app.post("/agent/jobs/<job_id>/complete", operation_id="complete", responses=answers("Succeeded (also for a retry after success).", *JOB, extra=CONFLICT),
          summary="Finish the job successfully. Safe to retry; the user is charged once.")
def complete(job_id: str, report: Annotated[c.CompleteRequest, Body()] = c.CompleteRequest()) -> c.CompleteReply:
    job = work.complete(_agent(), job_id, report.result, report.artifacts)
    return c.CompleteReply(state=job.status, charged=int(job.charged or 0))


@app.post("/agent/jobs/<job_id>/fail", operation_id="fail", responses=answers("The job's state after the call.", *JOB, extra=CONFLICT),
          summary="The attempt failed. Retryable with attempts left -> queued for another agent; else failed.")
def fail(job_id: str, report: Annotated[c.FailRequest, Body()] = c.FailRequest()) -> c.StateReply:
    job = work.fail(_agent(), job_id, report.error, report.retryable)
    return c.StateReply(state=job.status)


@app.post("/agent/release", operation_id="release", responses=answers("The ids actually handed back (others were not this agent's or ended).", *AUTH),
          summary="Graceful shutdown; hand back assigned or running jobs (requeued, not counted as failures).")
def release(request: Annotated[c.ReleaseRequest, Body()] = c.ReleaseRequest()) -> c.ReleaseReply:
    return c.ReleaseReply(released=work.release(_agent(), request.job_ids))


# Fork hosts (depu.forks.hosts, depu.forks.tasks): only an agent an operator approved as a fork host may claim;
# it gets only tasks addressed to it.
class ForkHostRefused(Exception):
    pass


@app.exception_handler(ForkHostRefused)
def _fork_host_refused(error: ForkHostRefused) -> Response:
    return error_response(403, str(error))


@app.exception_handler(tasks.TaskNotFound)
def _task_not_found(_: tasks.TaskNotFound) -> Response:
    return error_response(404, "not found")


@app.exception_handler(tasks.TaskExpired)
def _task_expired(_: tasks.TaskExpired) -> Response:
    return error_response(410, "the task is no longer awaited; drop what was built")


@app.exception_handler(tasks.BadReport)
def _bad_report(error: tasks.BadReport) -> Response:
    return error_response(400, str(error))


FORK_AUTH = [(400, AUTH[0][1]), (401, AUTH[1][1]), (413, "The body is over 512 KiB.")]


@app.post("/agent/forks/claim", operation_id="claimForkTask",
          responses=answers("A task (or null) and the forks to stop.", *FORK_AUTH, (403, "Not an approved fork host.")),
          summary="A fork host's long poll: the next task addressed to it, and the forks it must stop.")
def claim_fork_task(request: Annotated[f.ForkClaimRequest, Body()] = f.ForkClaimRequest()) -> f.ForkClaimReply:
    agent = _agent()
    if not hosts.may_host(agent):  # approved by an operator, not suspended: never the agent's own say
        raise ForkHostRefused(hosts.why_not(agent))
    hosts.seen(agent.agent_id)
    task = tasks.claim(agent.agent_id, request.wait)
    return f.ForkClaimReply(task=f.ForkTask(**task.to_dict()) if task else None,
                            stop=tasks.to_stop(agent.agent_id, list(request.running)))


@app.post("/agent/forks/tasks/<task_id>/result",
          operation_id="reportForkTask",
          responses=answers("What the waiting state machine was told.", *FORK_AUTH, (404, "Not this host's task."),
                            (410, "The state machine stopped waiting; drop what was built.")),
          summary="A fork host's answer to one task: what it built, or why it could not.")
def report_fork_task(task_id: str, report: Annotated[f.ForkReport, Body()] = f.ForkReport()) -> f.ForkReportReply:
    agent = _agent()
    declared = urlsplit(agent.fork_rpc_base_url).hostname if agent.fork_rpc_base_url else None
    told = tasks.finish(agent.agent_id, task_id, report.model_dump(), allowed_url_host=declared)
    return f.ForkReportReply(accepted=True, told={k: v for k, v in told.items() if k != "conflicts_json"})


@app.exception_handler(package.NotFound)
def _package_not_found(_: package.NotFound) -> Response:
    return error_response(404, "not found")


@app.exception_handler(package.Unavailable)
def _package_unavailable(_: package.Unavailable) -> Response:
    return error_response(503, "the agent package is being published; try again in a minute")


def _text(body: str, content_type: str, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(status_code=200, content_type=content_type, body=body,
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", **(headers or {})})


# What /provider's command downloads (no auth: it holds no secret). Served here so that install.sh piped into
# bash on a provider's machine finds the agent package without a checkout (depu.agents.package). Trust comes
# from the signatures, checked on the provider's machine against the key pinned in the command, not from here.
# Not JSON and not part of the agent's contract: left out of the OpenAPI document.
@app.get("/agent/install.sh", include_in_schema=False)
def install_script() -> Response[str]:
    return _text(package.install_script().text, "text/x-shellscript; charset=utf-8")


@app.get("/agent/install.sh.sig", include_in_schema=False)
def install_script_signature() -> Response[str]:
    return _signature(package.install_script().signature)


@app.get("/agent/package.b64", include_in_schema=False)
def agent_package() -> Response[str]:
    served = package.agent_package()
    headers = {PACKAGE_SHA256_HEADER: served.sha256}
    if served.signature:  # in the same answer as the package, so a publish in between cannot mix two versions
        headers[PACKAGE_SIGNATURE_HEADER] = served.signature
    return _text(served.encoded, "text/plain; charset=us-ascii", headers)


@app.get("/agent/package.sig", include_in_schema=False)
def agent_package_signature() -> Response[str]:
    return _signature(package.agent_package().signature)


@app.get("/agent/package.sha256", include_in_schema=False)
def agent_package_sha256() -> Response[str]:
    served = package.agent_package()
    return _text(f"{served.sha256}  {package.TOP_DIR}.tar.gz\n", "text/plain; charset=us-ascii",
                 {PACKAGE_SHA256_HEADER: served.sha256})


def _signature(signature: str | None) -> Response[str]:
    if not signature:
        raise package.NotFound("not signed")
    return _text(signature + "\n", "text/plain; charset=us-ascii")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
