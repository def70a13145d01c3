"""DePU's public REST API, ``/v1``: jobs, forks, analytics, exports, profile and credits, for API keys.

Before any route runs, ``depu.publicapi.gate`` decides who is calling (body size, key, scope, throttle), from
the method and path alone; routes then act only for that key's user, through the same domain services as the
chat. Powertools validates every request and response against the Pydantic models in
``depu.publicapi.models``, and the OpenAPI document generated from them is served at ``/v1/openapi.json``
(checked in as docs/public-api.openapi.json). Every POST honours an ``Idempotency-Key`` header through the
Idempotency utility: a repeat within a day gets the first answer, a reuse with another body a 422. Every
error has one shape (``depu.publicapi.errors``).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from functools import lru_cache
from typing import Annotated, Any, Callable, Optional

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.analytics import export as analytics_export
from depu.analytics import export_quota
from depu.apikeys.keys import Caller
from depu.config import get_settings
from depu.errors import UserError
from depu.jobs import upload_room
from depu.publicapi import errors, gate, models, views
from depu.publicapi.errors import ApiError

logger = Logger()
tracer = tracing.tracer()
app = APIGatewayRestResolver(enable_validation=True)

API_VERSION = "1.0.0"
FOLLOW_MAX_WAIT_S = 20  # under API Gateway's 29 s, with room for the last page
FOLLOW_POLL_S = 1.0
IDEMPOTENCY_SECONDS = 24 * 3600
_JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

idempotency_config = IdempotencyConfig(
    event_key_jmespath="id", payload_validation_jmespath="body", expires_after_seconds=IDEMPOTENCY_SECONDS,
    raise_on_no_idempotency_key=True,
)
JobId = Annotated[str, Path(pattern=models.ID_PATTERN, description="a job id, as submit returned it")]
ForkId = Annotated[str, Path(pattern=models.ID_PATTERN, description="a fork id, as create returned it")]
ExportId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="an export id, as create returned it")]
Address = Annotated[str, Path(pattern=models.ADDRESS_PATTERN, description="0x and 40 hex digits")]
IdempotencyKey = Annotated[Optional[str], Header(alias="idempotency-key", max_length=128,
                                                 description="repeat a POST safely: the same key within a day "
                                                             "gets the first answer")]


# ------------------------------------------------------------------------------------------- plumbing
def caller() -> Caller:
    return app.context["caller"]


def _request_id() -> str | None:
    try:
        return app.current_event.request_context.request_id
    except (AttributeError, KeyError, TypeError):
        return None


def _error_response(error: ApiError, request_id: str | None) -> Response:
    return Response(status_code=error.status, content_type="application/json",
                    body=json.dumps(errors.body(error, request_id)), headers={**_JSON_HEADERS, **error.headers})


@lru_cache(maxsize=1)
def _run_once() -> Callable[..., dict[str, Any]]:
    persistence = DynamoDBPersistenceLayer(table_name=get_settings().idempotency_table)

    @idempotent_function(data_keyword_argument="request", persistence_store=persistence,
                         config=idempotency_config, key_prefix="public-api")
    def run_once(request: dict[str, str], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return run()

    return run_once


def once(idempotency_key: str | None, run: Callable[[], dict[str, Any]], secret_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """``run()`` once per (user, route, Idempotency-Key). The stored answer never holds ``secret_fields`` (a
    fork's RPC URL is shown once): a replay gets them as null."""
    fresh: dict[str, Any] = {}

    def run_and_redact() -> dict[str, Any]:
        fresh.update(run())
        return {name: (None if name in secret_fields else value) for name, value in fresh.items()}

    if not idempotency_key:
        return run()
    if not idempotency_key.isascii() or not idempotency_key.isprintable():
        raise ApiError(400, "invalid_request", "The Idempotency-Key header is printable ASCII, at most 128 characters.")
    event = app.current_event
    digest = hashlib.sha256((event.body or "").encode("utf-8", "surrogatepass")).hexdigest()
    scope = f"{caller().user_id}:{event.http_method} {event.path}:{idempotency_key}"
    stored = _run_once()(request={"id": scope, "body": digest}, run=run_and_redact)
    return fresh or stored


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"No such {what} of yours.")


GATE_STATUS = {gate.NO_KEY: 401, gate.NOT_ALLOWED: 403, gate.TOO_LARGE: 413, gate.THROTTLED: 429, gate.UNREADABLE: 400}


def _gate_error(refused: gate.Refused) -> ApiError:
    headers = {"WWW-Authenticate": 'Bearer realm="depu"'} if refused.reason == gate.NO_KEY else {}
    if refused.retry_after_s is not None:
        headers["Retry-After"] = str(refused.retry_after_s)
    return ApiError(GATE_STATUS[refused.reason], refused.reason, refused.message, headers=headers)


def _user_error(error: UserError) -> ApiError:
    return ApiError(400, "invalid_request", errors.plain(error.message))


# ------------------------------------------------------------------------------------------- errors
@app.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response:
    return _error_response(error, _request_id())


@app.exception_handler(RequestValidationError)
def _invalid(error: RequestValidationError) -> Response:
    details = [{"loc": list(item.get("loc", ())), "msg": str(item.get("msg", "")), "type": str(item.get("type", ""))}
               for item in error.errors()][:20]
    return _error_response(ApiError(422, "validation_failed", "The request does not match the API's schema.",
                                    details=details), _request_id())


@app.exception_handler(export_quota.ExportLimited)
def _export_limited(error: export_quota.ExportLimited) -> Response:
    return _error_response(ApiError(429, "quota_exceeded", errors.plain(error.message)), _request_id())


@app.exception_handler(upload_room.UploadsFull)
def _uploads_full(error: upload_room.UploadsFull) -> Response:
    return _error_response(ApiError(429, "quota_exceeded", errors.plain(error.message),
                                    headers={"Retry-After": str(error.retry_after_s)}), _request_id())


@app.exception_handler(UserError)
def _refused(error: UserError) -> Response:
    return _error_response(_user_error(error), _request_id())


@app.exception_handler(analytics_export.ExportError)
def _bad_export(error: analytics_export.ExportError) -> Response:
    return _error_response(ApiError(400, "invalid_request", errors.plain(str(error))), _request_id())


@app.exception_handler(IdempotencyValidationError)
def _reused_key(_: IdempotencyValidationError) -> Response:
    return _error_response(ApiError(422, "idempotency_key_reused",
                                    "This Idempotency-Key was used with another request body."), _request_id())


@app.exception_handler(IdempotencyAlreadyInProgressError)
def _in_progress(_: IdempotencyAlreadyInProgressError) -> Response:
    return _error_response(ApiError(409, "conflict", "A request with this Idempotency-Key is still running; "
                                                     "retry shortly.", headers={"Retry-After": "1"}), _request_id())


@app.not_found
def _no_route(_: NotFoundError) -> Response:
    return _error_response(ApiError(404, "not_found", "No such route. See /v1/openapi.json."), _request_id())


@app.exception_handler(Exception)
def _bug(error: Exception) -> Response:
    logger.exception("public API request failed")
    return _error_response(ApiError(500, "internal", "Something went wrong on our side; quote the request id."),
                           _request_id())


# ------------------------------------------------------------------------------------------- contract
ERROR_STATUSES = {
    400: "The request cannot be done as asked (the message says why)",
    401: "No live API key (missing, unknown, revoked or expired)",
    403: "The key's scopes do not allow this",
    404: "No such thing of yours",
    409: "A request with the same Idempotency-Key is still running",
    413: "The body is over 2 MiB",
    422: "The request does not match the schema, or an Idempotency-Key was reused with another body",
    429: "Throttled (see Retry-After) or over a quota",
    500: "Our fault: quote the request id",
}


def openapi_document() -> dict[str, Any]:
    """The contract, generated from the routes' models. Powertools documents its own validation error shape;
    DePU answers every error with ``ErrorBody``, so each operation's error responses are set to that."""
    document = _generated_document()
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    error_schema = models.ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, description in ERROR_STATUSES.items():
                operation["responses"][str(status)] = {"description": description, "content": reference}
    return document


def _generated_document() -> dict[str, Any]:
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return json.loads(app.get_openapi_json_schema(
        title="DePU public API", version=API_VERSION,
        description="Jobs on rented GPUs, shadow forks of Ethereum mainnet and chain analytics, for your own "
                    "programs. Authenticate with an API key from the chat (/profile → API keys): "
                    "`Authorization: Bearer dpk_...`. Errors are always `{\"error\": {\"code\", \"message\", "
                    "\"request_id\"}}`.",
        security_schemes={"apiKey": HTTPBearer(description="a DePU API key (dpk_...)")},
        security=[{"apiKey": []}],
    ))


@app.get("/v1/openapi.json", include_in_schema=False)
def get_openapi() -> dict[str, Any]:
    return openapi_document()


# ------------------------------------------------------------------------------------------- profile
@app.get("/v1/profile", tags=["profile"], summary="Who the key belongs to, and their credits")
def get_profile() -> models.ProfileOut:
    from depu import credits
    from depu.profiles import get_profile as profile_of

    who = caller()
    profile = profile_of(who.user_id)
    return models.ProfileOut(
        user_id=who.user_id, first_name=profile.first_name if profile else None,
        username=profile.username if profile else None, credits=views.credits(credits.balance(who.user_id)),
        key_id=who.key_id, scopes=who.scopes,
    )


@app.get("/v1/credits/ledger", tags=["profile"], summary="Credit balance and the most recent movements")
def get_ledger(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> models.LedgerOut:
    from depu import credits

    user = caller().user_id
    return models.LedgerOut(credits=views.credits(credits.balance(user)),
                            entries=[views.ledger_entry(e) for e in credits.history(user, limit)])


# ------------------------------------------------------------------------------------------- jobs
def _owned_job(job_id: str):
    from depu.jobs import service

    job = service.user_job(caller().user_id, job_id)
    if job is None:
        raise not_found("job")
    return job


@app.post("/v1/jobs", tags=["jobs"], summary="Submit a job (the chat's /rent_gpu spec)", status_code=201)
def submit_job(spec: models.JobSpec, idempotency_key: IdempotencyKey = None) -> models.JobOut:
    def run() -> dict[str, Any]:
        from depu.jobs import service

        from depu.publicapi import uploads

        script, params = _workload(spec)
        uploaded = uploads.confirm(caller(), spec.inputs) if spec.inputs else None  # before anything is held
        user = caller().user_id
        job = service.submit(user, user, gpu_class=spec.gpu_class, workload=spec.workload, params=params,
                             time_limit_s=spec.time_limit_s, script=script, uploaded=uploaded)
        return views.job(job).model_dump(mode="json")

    return models.JobOut.model_validate(once(idempotency_key, run))


@app.post("/v1/uploads", tags=["jobs"], summary="An upload link for one input file of a job (up to the cap)",
          status_code=201)
def create_upload(request: models.UploadRequest, idempotency_key: IdempotencyKey = None) -> models.UploadOut:
    """A replay under the same Idempotency-Key is the same upload with a freshly signed form: the stored
    answer holds no signed form."""
    from depu.publicapi import uploads

    def run() -> dict[str, Any]:
        made = uploads.start(caller(), request.file_name, request.size)
        return _upload_out(made.upload_id, made.link)

    answer = once(idempotency_key, run, secret_fields=("url", "fields"))
    if answer.get("url") is None:
        answer = _upload_out(answer["upload_id"], uploads.form(caller(), answer["upload_id"]))
    return models.UploadOut.model_validate(answer)


def _upload_out(upload_id: str, link) -> dict[str, Any]:
    return {"upload_id": upload_id, "name": link.name, "url": link.url, "fields": link.fields,
            "expires_in": link.expires_in, "max_bytes": link.max_bytes}


JOB_ONLY_FIELDS = ("command", "requirements", "env", "gpu_count", "image", "network", "egress_hosts")


def _workload(spec: models.JobSpec) -> tuple[bytes | None, dict[str, Any]]:
    """The script and params ``service.submit`` takes; a ``job`` spec's fields pass through unjudged (the
    domain's ``JobSpec`` refuses what is not allowed, as the chat's "My own job" does)."""
    if spec.workload == "job":
        if spec.epochs is not None or spec.dataset is not None:
            raise ApiError(400, "unsupported", "epochs and dataset belong to the 'train' workload, not to 'job'.")
        params = {name: getattr(spec, name) for name in JOB_ONLY_FIELDS if getattr(spec, name) is not None}
        if spec.script_b64 is None:
            return None, params
        script = _script(spec)
        return script, {**params, "file_name": spec.file_name or "script.py", "file_size": len(script)}
    given = [name for name in (*JOB_ONLY_FIELDS, "inputs") if getattr(spec, name) is not None]
    if given:
        raise ApiError(400, "unsupported", f"{', '.join(given)}: only the 'job' workload takes these (your own "
                                           "command or script, requirements, env, GPU count, network and input files).")
    if spec.workload == "train":
        return None, {k: v for k, v in (("epochs", spec.epochs), ("dataset", spec.dataset)) if v is not None}
    if spec.workload != "script":
        return None, {}
    if not spec.script_b64:
        raise ApiError(400, "invalid_request", "A script job needs script_b64 (the .py file, base64).")
    script = _script(spec)
    return script, {"file_name": spec.file_name or "script.py", "file_size": len(script)}


def _script(spec: models.JobSpec) -> bytes:
    try:
        script = base64.b64decode(spec.script_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_request", "script_b64 is not valid base64.") from None
    return script


@app.get("/v1/jobs", tags=["jobs"], summary="Your jobs, newest first")
def list_jobs(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> models.JobList:
    from depu.jobs import service

    return models.JobList(jobs=[views.job(j) for j in service.user_jobs(caller().user_id, limit)])


@app.get("/v1/jobs/<job_id>", tags=["jobs"], summary="One job: state, progress, result, cost")
def get_job(job_id: JobId) -> models.JobOut:
    return views.job(_owned_job(job_id))


@app.get("/v1/jobs/<job_id>/logs", tags=["jobs"], summary="The job's log from a cursor (follow: wait for more)")
def get_logs(job_id: JobId, cursor: Annotated[int, Query(ge=-1, le=10_000_000)] = -1,
             follow: bool = False) -> models.LogPageOut:
    from depu.jobs import lifecycle, logs

    job = _owned_job(job_id)
    deadline = time.monotonic() + FOLLOW_MAX_WAIT_S
    while True:
        finished = job.status in lifecycle.TERMINAL  # read before the page: no chunk lands after a terminal state
        page = logs.read(job.job_id, cursor)
        if page.lines or page.cursor != cursor or finished or not follow or time.monotonic() >= deadline:
            return models.LogPageOut(job_id=job.job_id, lines=page.lines, cursor=page.cursor, more=page.more,
                                     finished=finished and not page.more, status=job.status)
        time.sleep(FOLLOW_POLL_S)
        job = _owned_job(job_id)


@app.post("/v1/jobs/<job_id>/cancel", tags=["jobs"], summary="Cancel a job (the agent stops it within 10 s)")
def cancel_job(job_id: JobId, idempotency_key: IdempotencyKey = None) -> models.JobOut:
    def run() -> dict[str, Any]:
        from depu.jobs import service

        _owned_job(job_id)
        return views.job(service.cancel(caller().user_id, job_id)).model_dump(mode="json")

    return models.JobOut.model_validate(once(idempotency_key, run))


@app.get("/v1/jobs/<job_id>/artifacts", tags=["jobs"], summary="The files the job produced, as download links")
def get_artifacts(job_id: JobId) -> models.ArtifactList:
    from depu.jobs import artifacts

    job = _owned_job(job_id)
    return models.ArtifactList(job_id=job.job_id, artifacts=[views.artifact(a) for a in artifacts.artifacts(job)])


# ------------------------------------------------------------------------------------------- forks
def _owned_fork(fork_id: str):
    from depu.forks import service

    try:
        return service.owned(caller().user_id, fork_id)
    except UserError:
        raise not_found("shadow fork") from None


@app.post("/v1/forks", tags=["forks"], summary="Create a shadow fork; its RPC URL is shown once", status_code=201)
def create_fork(request: models.ForkCreate, idempotency_key: IdempotencyKey = None) -> models.ForkCreated:
    def run() -> dict[str, Any]:
        from depu.forks import service

        user = caller().user_id
        created = service.create_fork(user, user, request.block if request.block is not None else "latest",
                                      keep_mainnet_chain_id=request.keep_mainnet_chain_id)
        return {"fork": views.fork(created.fork).model_dump(mode="json"), "rpc_url": created.rpc_url}

    return models.ForkCreated.model_validate(once(idempotency_key, run, secret_fields=("rpc_url",)))


@app.get("/v1/forks", tags=["forks"], summary="Your shadow forks, newest first (deleted ones too)")
def list_forks() -> models.ForkList:
    from depu.forks import service

    return models.ForkList(forks=[views.fork(f) for f in service.list_forks(caller().user_id)])


@app.get("/v1/forks/<fork_id>", tags=["forks"], summary="One fork: state, base block, journal, lag behind mainnet")
def get_fork(fork_id: ForkId) -> models.ForkDetail:
    from depu.forks import service

    _owned_fork(fork_id)
    found = service.info(caller().user_id, fork_id)
    return models.ForkDetail(fork=views.fork(found.fork), journal_size=found.journal_size,
                             mainnet_head=found.mainnet_head, blocks_behind=found.blocks_behind)


@app.delete("/v1/forks/<fork_id>", tags=["forks"], summary="Delete a fork (its RPC URL stops at once)")
def delete_fork(fork_id: ForkId) -> models.Deleted:
    from depu.forks import service

    _owned_fork(fork_id)
    fork = service.delete_fork(caller().user_id, fork_id)
    return models.Deleted(id=fork.fork_id, status="deleting")


@app.post("/v1/forks/<fork_id>/sync", tags=["forks"], summary="Rebase the fork on mainnet's head now", status_code=202)
def sync_fork(fork_id: ForkId, idempotency_key: IdempotencyKey = None) -> models.SyncStarted:
    def run() -> dict[str, Any]:
        from depu.forks import service

        _owned_fork(fork_id)
        execution = service.sync_now(caller().user_id, fork_id)
        return {"fork_id": fork_id, "execution": execution.rsplit(":", 1)[-1]}

    return models.SyncStarted.model_validate(once(idempotency_key, run))


@app.post("/v1/forks/<fork_id>/fund", tags=["forks"], summary="Add ETH to an address on the fork (gas-free)")
def fund_fork(fork_id: ForkId, request: models.FundRequest, idempotency_key: IdempotencyKey = None) -> models.FundOut:
    def run() -> dict[str, Any]:
        from depu.forks import service

        _owned_fork(fork_id)
        balance = service.fund(caller().user_id, fork_id, request.address, request.eth)
        return {"fork_id": fork_id, "address": service.checksum_address(request.address), "balance_wei": str(balance)}

    return models.FundOut.model_validate(once(idempotency_key, run))


@app.post("/v1/forks/<fork_id>/impersonate", tags=["forks"], summary="Send as an address without its key (or stop)")
def impersonate(fork_id: ForkId, request: models.ImpersonateRequest,
                idempotency_key: IdempotencyKey = None) -> models.ImpersonateOut:
    def run() -> dict[str, Any]:
        from depu.forks import service

        _owned_fork(fork_id)
        account = service.impersonate(caller().user_id, fork_id, request.address, stop=request.stop)
        return {"fork_id": fork_id, "address": account, "impersonating": not request.stop}

    return models.ImpersonateOut.model_validate(once(idempotency_key, run))


@app.post("/v1/forks/<fork_id>/snapshots", tags=["forks"], summary="Snapshot the fork's state")
def snapshot(fork_id: ForkId, idempotency_key: IdempotencyKey = None) -> models.SnapshotOut:
    def run() -> dict[str, Any]:
        from depu.forks import service

        _owned_fork(fork_id)
        return {"fork_id": fork_id, "snapshot_id": service.snapshot(caller().user_id, fork_id)}

    return models.SnapshotOut.model_validate(once(idempotency_key, run))


@app.post("/v1/forks/<fork_id>/revert", tags=["forks"], summary="Revert the fork to a snapshot")
def revert(fork_id: ForkId, request: models.RevertRequest, idempotency_key: IdempotencyKey = None) -> models.RevertOut:
    def run() -> dict[str, Any]:
        from depu.forks import service

        _owned_fork(fork_id)
        return {"fork_id": fork_id, "reverted": service.revert(caller().user_id, fork_id, request.snapshot_id)}

    return models.RevertOut.model_validate(once(idempotency_key, run))


@app.post("/v1/forks/<fork_id>/rpc-url", tags=["forks"], summary="A new RPC URL (the old one stops answering)")
def new_rpc_url(fork_id: ForkId, idempotency_key: IdempotencyKey = None) -> models.RpcUrlOut:
    def run() -> dict[str, Any]:
        from depu.forks import service

        _owned_fork(fork_id)
        return {"fork_id": fork_id, "rpc_url": service.rotate_url(caller().user_id, fork_id)}

    return models.RpcUrlOut.model_validate(once(idempotency_key, run, secret_fields=("rpc_url",)))


# ------------------------------------------------------------------------------------------- analytics
def _address(text: str) -> str:
    return text.lower()  # the path's pattern checked its shape


@app.get("/v1/analytics/chain", tags=["analytics"], summary="Blocks, transactions, transfers and gas over a window")
def chain_view(window: models.Window = "1h") -> models.ChainViewOut:
    from depu.analytics import views as analytics

    return views.chain_view(analytics.chain_view(window))


@app.get("/v1/analytics/tokens/<address>", tags=["analytics"], summary="A token's volume, transfers and top movers")
def token_view(address: Address, window: models.Window = "24h") -> models.TokenViewOut:
    from depu.analytics import views as analytics

    return views.token_view(analytics.token_view(_address(address), window))


@app.get("/v1/analytics/addresses/<address>", tags=["analytics"], summary="An address's flows and counterparties")
def address_view(address: Address, window: models.Window = "24h") -> models.AddressViewOut:
    from depu.analytics import views as analytics

    return views.address_view(analytics.address_view(_address(address), window))


def _export_out(found) -> models.ExportOut:
    request = found.request
    return models.ExportOut(
        export_id=found.export_id, status=found.status, dataset=request.dataset, from_block=request.start,
        to_block=request.end, format=request.format, token=request.asset, created_at=found.created_at,
        size=found.size, download_url=found.download_url, filename=request.filename, rows=found.rows,
        percent=found.percent,
    )


@app.post("/v1/exports", tags=["analytics"], summary="Start an export (CSV, JSON lines, Parquet); poll for the link",
          status_code=202)
def create_export(request: models.ExportCreate, idempotency_key: IdempotencyKey = None) -> models.ExportOut:
    def run() -> dict[str, Any]:
        from depu.publicapi import exports

        started = exports.start(caller().user_id, request.dataset, request.from_block, request.to_block,
                                request.format, request.token, notify_chat=request.notify_chat)
        return _export_out(started).model_dump(mode="json")

    return models.ExportOut.model_validate(once(idempotency_key, run))


@app.get("/v1/exports/<export_id>", tags=["analytics"], summary="An export's state, and its download link when ready")
def get_export(export_id: ExportId) -> models.ExportOut:
    from depu.publicapi import exports

    found = exports.find(caller().user_id, export_id)
    if found is None:
        raise not_found("export")
    return _export_out(found)


# ------------------------------------------------------------------------------------------- entry
def _header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def _refusal(error: ApiError, event: dict[str, Any]) -> dict[str, Any]:
    request_id = (event.get("requestContext") or {}).get("requestId")
    return {"statusCode": error.status, "isBase64Encoded": False,
            "headers": {"Content-Type": "application/json", **_JSON_HEADERS, **error.headers},
            "body": json.dumps(errors.body(error, request_id))}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    raw = event.get("body") or ""
    size = len(raw) * 3 // 4 if event.get("isBase64Encoded") else len(raw.encode("utf-8", "surrogatepass"))
    try:
        who = gate.admit(str(event.get("httpMethod", "GET")), str(event.get("path", "")),
                         _header(event, "authorization"), size)
        gate.readable_body(raw, bool(event.get("isBase64Encoded")))
    except gate.Refused as refused:
        error = _gate_error(refused)
        logger.info("request refused", extra={"status": error.status, "code": error.code})
        return _refusal(error, event)
    if who is not None:
        logger.append_keys(user_id=who.user_id, key_id=who.key_id)
    app.append_context(caller=who)
    response = app.resolve(event, context)
    response.setdefault("headers", {}).update(_JSON_HEADERS)
    return response
