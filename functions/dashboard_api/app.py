"""The live dashboard's API and its single-page app, under ``/dashboard/``.

Routes:
- ``GET  /dashboard/app/`` (and ``/dashboard/app/<file>``): the static page, with a strict CSP.
- ``GET  /dashboard/login?code=``: the bot's one-time browser link; redirects to the page with the code in
  the URL fragment (never consumed by a GET, so link previews cannot burn it; the page redeems it).
- ``POST /dashboard/session``: ``{"init_data": ...}`` (inside Telegram) or ``{"login_code": ...}`` (browser)
  in, a 15-minute bearer session out. ``DELETE`` signs out.
- ``GET  /dashboard/overview``: the session user's credits, jobs with GPU metrics, forks, watches, chain.
- ``POST /dashboard/uploads``: an upload link (presigned POST) for one input file of the user's job draft
  (``depu.jobs.uploads``), for files over Telegram's 20 MB.
- ``GET/POST /dashboard/api-keys``, ``DELETE /dashboard/api-keys/<key_id>``: the user's API keys for the public
  API and the ``depu`` command (``depu.apikeys.keys``): listed without the keys, made (shown once), revoked.
- ``GET  /dashboard/jobs``, ``/dashboard/jobs/<job_id>/logs?cursor=``, ``/dashboard/jobs/<job_id>/outputs``: the
  user's jobs, one job's log from a cursor (polled every ~2 s while it runs), its outputs as short-lived links
  (``depu.dashboard.jobs``); another user's job answers 404, like a job that does not exist.

Live updates are polling: the page asks for the overview every few seconds. API Gateway REST APIs cannot
push; the upgrade path is an API Gateway WebSocket API fed by the jobs' metric writes.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.apikeys import keys
from depu.config import get_settings
from depu.contracts import dashboard_api as c
from depu.contracts.common import answers
from depu.dashboard import initdata, overview, sessions, site
from depu.dashboard import jobs as dashboard_jobs
from depu.errors import UserError
from depu.jobs.logs import BadPosition
from depu.jobs import storage
from depu.web import bodies, errors
from depu.web.bodies import validation_message
from depu.web.bearer import bearer_token
from depu.web.responses import error_response, json_response

logger = Logger()
tracer = tracing.tracer()

_LOGIN_CODE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# POST /dashboard/session parses before it authenticates: an outsider's body gets a small limit. Telegram's
# initData is a few hundred bytes to a few KiB; a login code is under 256 characters.
SESSION_MAX_BODY_BYTES = 16 * 1024
_JSON_HEADERS = {**site.SECURITY_HEADERS, "Cache-Control": "no-store"}
app = APIGatewayRestResolver(enable_validation=True, response_validation_error_http_code=500,
                             json_body_deserializer=bodies.limited_json(lambda: SESSION_MAX_BODY_BYTES))
SEND = "send a JSON object with init_data (inside Telegram) or login_code (from the bot's link)"
errors.install(app, _JSON_HEADERS, hint=SEND)


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response:
    """As errors.install answers, but the sign-in hint only where a sign-in body was expected: a bad query
    on a jobs route is told what is wrong with the query alone."""
    message = validation_message(list(error.errors()))
    signing_in = app.current_event.path.rstrip("/").endswith("/dashboard/session")
    return error_response(400, f"{message} ({SEND})" if signing_in else message, _JSON_HEADERS)


class NoCredentials(Exception):
    """A session request with neither init_data nor login_code."""


@app.exception_handler(NoCredentials)
def _no_credentials(_: NoCredentials) -> Response:
    return error_response(400, SEND, _JSON_HEADERS)


def _bot_token() -> str:
    return str(parameters.get_secret(get_settings().telegram_bot_token_secret, max_age=300))


def _session() -> sessions.Session:
    return sessions.session_for(bearer_token(app.current_event.headers))


@app.exception_handler(UserError)
def _user_error(error: UserError) -> Response:
    return error_response(400, error.message, _JSON_HEADERS)


@app.exception_handler(sessions.SessionError)
def _refused_session(error: sessions.SessionError) -> Response:
    return error_response(401, str(error), _JSON_HEADERS)


@app.exception_handler(initdata.InitDataError)
def _refused_init_data(error: initdata.InitDataError) -> Response:
    logger.info("initData refused", extra={"reason": str(error)})
    return error_response(401, str(error), _JSON_HEADERS)


# ------------------------------------------------------------------------------------------- the page
@app.get("/dashboard/app", include_in_schema=False)
def app_index() -> Response[str]:
    # The page uses relative URLs (stage prefixes differ per deployment), so it must be served from
    # ``.../app/``. The resolver matches ``/app`` and ``/app/`` alike; the raw path tells them apart.
    if not app.current_event.path.endswith("/"):
        return Response(status_code=302, body="", headers={"Location": "app/", "Cache-Control": "no-store"})
    return _static(None)


@app.get("/dashboard/app/<name>", include_in_schema=False)
def app_file(name: str) -> Response[str]:
    return _static(name)


def _static(name: str | None) -> Response[str]:
    try:
        found = site.static_file(name)
    except site.NotFound:
        return Response(status_code=404, content_type="text/plain", body="not found", headers=site.SECURITY_HEADERS)
    headers = site.page_headers(storage.post_origin()) if found.content_type.startswith("text/html") else site.SECURITY_HEADERS
    return Response(status_code=200, content_type=found.content_type, body=found.body, headers=headers)


@app.get("/dashboard/login", operation_id="loginLink",
         responses={302: {"description": "To the page, with the code in the URL fragment.", "content": {}}},
         summary="The bot's one-time browser link (never redeemed by a GET, so link previews cannot burn it).")
def login_link(code: Annotated[str, Query()] = "") -> Response[None]:
    target = f"app/#login={code}" if _LOGIN_CODE.fullmatch(code) else "app/#login_error=1"
    return Response(
        status_code=302, body="", headers={"Location": target, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


# ------------------------------------------------------------------------------------------- sessions
@app.post("/dashboard/session", operation_id="openSession",
          responses=answers("A 15-minute bearer session.",
                            (400, "Neither init_data nor login_code, or a body that does not fit."),
                            (401, "initData refused (signature, age) or the login code is unknown or used."),
                            (413, "The body is over 16 KiB (it is read before anything is checked)."), status=201),
          summary="Open a session: init_data inside Telegram, login_code from the bot's browser link.")
def open_session(request: Annotated[c.SessionRequest, Body()] = c.SessionRequest()) -> Response[c.SessionReply]:
    init_data, login_code = request.init_data, request.login_code
    if init_data:
        user = initdata.verify(init_data, _bot_token())
        token, session = sessions.open_session(user.id)
        who = c.SessionUser(id=user.id, first_name=user.first_name, username=user.username)
    elif login_code:
        token, session = sessions.redeem_login_code(login_code)
        who = c.SessionUser(id=session.user_id, first_name=_first_name(session.user_id))
    else:
        raise NoCredentials()
    logger.info("dashboard session opened", extra={"user_id": session.user_id})
    return Response(201, "application/json", c.SessionReply(token=token, expires_at=int(session.expires_at), user=who),
                    headers=_JSON_HEADERS)


@app.delete("/dashboard/session", operation_id="closeSession",
            responses={204: {"description": "Signed out (also when already signed out).", "content": {}}},
            summary="Sign out: the session's token stops working at once.")
def close_session() -> Response[None]:
    token = bearer_token(app.current_event.headers)
    if token:
        sessions.close_session(token)
    return json_response(204, None, _JSON_HEADERS)


def _first_name(user_id: int) -> str:
    try:
        from depu.profiles import get_profile

        profile = get_profile(user_id)
    except Exception:  # the greeting is cosmetic; the session is what matters
        logger.exception("profile lookup failed")
        return ""
    return (profile.first_name or "") if profile else ""


# ------------------------------------------------------------------------------------------- data
@app.get("/dashboard/overview", operation_id="overview",
         responses=answers("The overview; each section has its own state.", (401, "No session, or it expired or was closed.")),
         summary="The session user's credits, jobs with GPU metrics, forks, watches and chain (polled).")
def get_overview() -> Response[c.Overview]:
    return Response(200, "application/json", _overview(_session()), headers=_JSON_HEADERS)


@tracer.capture_method(capture_response=False, capture_error=False)
def _overview(session: sessions.Session) -> c.Overview:
    return c.Overview(**overview.build_overview(session.user_id), session_expires_at=int(session.expires_at))


@app.post("/dashboard/topup", operation_id="topUp",
          responses=answers("The invoice is in the user's private chat; Telegram's Pay button is there.",
                            (400, "Not one of the packs on offer, or a body that does not fit."),
                            (413, "The body is over 16 KiB."),
                            (401, "No session, or it expired or was closed."), status=201),
          summary="Top up: send the invoice for one credit pack (paid in Telegram Stars) to the chat.")
def post_topup(request: Annotated[c.TopUpRequest, Body()]) -> Response[c.TopUpReply]:
    from depu.payments.invoices import send_topup_invoice
    from depu.telegram.client import bot_api

    order = send_topup_invoice(bot_api(), _session().user_id, request.stars)  # UserError: not a pack on offer
    return Response(201, "application/json", c.TopUpReply(sent=True, stars=int(order.stars), credits=int(order.credits)),
                    headers=_JSON_HEADERS)


# ------------------------------------------------------------------------------------------- uploads
@app.post("/dashboard/uploads", operation_id="uploadLink", status_code=201,
          responses=answers("The upload form for the file: POST it to S3 within expires_in seconds.",
                            (400, "No job draft at its input files step, too many files, a name already taken, or "
                                  "over the cap."),
                            (401, "No session, or it expired or was closed."),
                            (413, "The body is over 16 KiB."), status=201),
          summary="An upload link for one input file of the user's job draft (files over Telegram's 20 MB).")
def post_upload(request: Annotated[c.UploadRequest, Body()]) -> Response[c.UploadLinkReply]:
    from depu.bot import rental

    session = _session()
    link = rental.request_upload(session.user_id, request.file_name, request.size)  # UserError: 400
    logger.info("upload link made", extra={"user_id": session.user_id, "size": request.size})
    return Response(201, "application/json", c.UploadLinkReply(name=link.name, url=link.url, fields=link.fields,
                                                               expires_in=link.expires_in, max_bytes=link.max_bytes),
                    headers=_JSON_HEADERS)


# ------------------------------------------------------------------------------------------- API keys
def _key_info(info: Any) -> c.ApiKeyInfo:
    return c.ApiKeyInfo(key_id=info.key_id, name=info.name, hint=info.hint, scopes=list(info.scopes),
                        created_at=info.created_at, expires_at=info.expires_at, last_used_at=info.last_used_at,
                        expired=info.expired)


@app.exception_handler(keys.KeyRequestError)
def _bad_key_request(error: keys.KeyRequestError) -> Response:
    return error_response(400, str(error), _JSON_HEADERS)


@app.get("/dashboard/api-keys", operation_id="apiKeys",
         responses=answers("The session user's API keys (never the keys themselves).",
                           (401, "No session, or it expired or was closed.")),
         summary="The API keys of the public API and the depu command: list.")
def list_api_keys() -> Response[c.ApiKeyList]:
    listed = keys.list_keys(_session().user_id)
    return Response(200, "application/json", c.ApiKeyList(keys=[_key_info(i) for i in listed],
                                                          max_keys=keys.MAX_KEYS_PER_USER), headers=_JSON_HEADERS)


@app.post("/dashboard/api-keys", operation_id="makeApiKey", status_code=201,
          responses=answers("A new key, shown this once.",
                            (400, "Unknown scopes, no area, a lifetime outside 1-365 days, or 10 keys already."),
                            (401, "No session, or it expired or was closed."),
                            (413, "The body is over 16 KiB (it is read before anything is checked)."), status=201),
          summary="Make an API key (shown once, stored hashed).")
def make_api_key(request: Annotated[c.ApiKeyRequest, Body()] = c.ApiKeyRequest()) -> Response[c.ApiKeyMade]:
    session = _session()
    key, info = keys.create(session.user_id, request.name, request.scopes, request.days)
    logger.info("API key made from the dashboard", extra={"user_id": session.user_id, "key_id": info.key_id})
    return Response(201, "application/json", c.ApiKeyMade(key=key, info=_key_info(info)), headers=_JSON_HEADERS)


@app.delete("/dashboard/api-keys/<key_id>", operation_id="revokeApiKey",
            responses=answers("The revoked key: it stops working at once.",
                              (400, "No such API key of yours."), (401, "No session, or it expired or was closed.")),
            summary="Revoke one of the user's API keys.")
def revoke_api_key(key_id: str) -> Response[c.ApiKeyInfo]:
    info = keys.revoke(_session().user_id, key_id)
    return Response(200, "application/json", _key_info(info), headers=_JSON_HEADERS)


# ------------------------------------------------------------------------------------------- jobs
JobId = Annotated[str, Path(pattern=dashboard_jobs.ID_PATTERN, description="a job id, as the jobs list gives it")]
Cursor = Annotated[str, Query(max_length=24, description="'<chunk>:<line>' from the previous page; 0:0 for the start")]
NO_SESSION = (401, "No session, or it expired or was closed.")
NO_SUCH_JOB = (404, "No such job of yours (another user's job answers the same).")


@app.exception_handler(dashboard_jobs.JobNotFound)
def _no_such_job(_: dashboard_jobs.JobNotFound) -> Response:
    return error_response(404, "no such job of yours", _JSON_HEADERS)


@app.exception_handler(BadPosition)
def _bad_cursor(error: BadPosition) -> Response:
    return error_response(400, str(error), _JSON_HEADERS)


def _job_item(job: Any) -> c.JobItem:
    return c.JobItem(
        job_id=job.job_id, status=job.status, phase=dashboard_jobs.phase(job),
        finished=dashboard_jobs.finished(job), gpu_class=job.gpu_class, workload=job.workload,
        progress=float(job.progress or 0), message=job.message, error=job.error, created_at=job.created_at,
        started_at=_seconds(job.started_at), finished_at=_seconds(job.finished_at),
    )


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value)


@app.get("/dashboard/jobs", operation_id="jobs",
         responses=answers("The session user's jobs, newest first.", (400, "limit is not 1-50."), NO_SESSION),
         summary="The user's GPU jobs with their state (the Mini App's Jobs section).")
def list_jobs(limit: Annotated[int, Query(ge=1, le=dashboard_jobs.MAX_LISTED)] = dashboard_jobs.DEFAULT_LISTED) -> Response[c.JobList]:
    listed = dashboard_jobs.user_jobs(_session().user_id, limit)
    return Response(200, "application/json", c.JobList(jobs=[_job_item(job) for job in listed]), headers=_JSON_HEADERS)


@app.get("/dashboard/jobs/<job_id>/logs", operation_id="jobLogs",
         responses=answers("The lines after the cursor, the job's state, and whether to keep polling.",
                           (400, "A job id or cursor that is not one this API gives out."), NO_SESSION, NO_SUCH_JOB),
         summary="One job's log from a cursor: poll every ~2 s until finished (at most 500 lines a page).")
def job_logs(job_id: JobId, cursor: Cursor = "0:0") -> Response[c.JobLogPage]:
    read = dashboard_jobs.job_log(_session().user_id, job_id, cursor)
    page = c.JobLogPage(job=_job_item(read.job), lines=read.page.lines, cursor=str(read.page.cursor),
                        more=read.page.more, finished=read.finished)
    return Response(200, "application/json", page, headers=_JSON_HEADERS)


@app.get("/dashboard/jobs/<job_id>/outputs", operation_id="jobOutputs",
         responses=answers("The files the job completed with, as links valid for 10 minutes.",
                           (400, "A job id that is not one this API gives out."), NO_SESSION, NO_SUCH_JOB),
         summary="One job's outputs (name, size, a short-lived download link), once it has ended.")
def job_outputs(job_id: JobId) -> Response[c.JobOutputs]:
    found = dashboard_jobs.job_outputs(_session().user_id, job_id)
    outputs = [c.JobOutput(name=item.name, state=item.state, size=item.size, url=item.url) for item in found.outputs]
    reply = c.JobOutputs(job_id=found.job.job_id, finished=dashboard_jobs.finished(found.job), outputs=outputs,
                         links_expire_at=found.links_expire_at)
    return Response(200, "application/json", reply, headers=_JSON_HEADERS)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
