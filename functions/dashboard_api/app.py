"""The live dashboard's API and its single-page app, under ``/dashboard/``.

Routes:
- ``GET  /dashboard/app/`` (and ``/dashboard/app/<file>``): the static page, with a strict CSP.
- ``GET  /dashboard/login?code=``: the bot's one-time browser link; redirects to the page with the code in
  the URL fragment (never consumed by a GET, so link previews cannot burn it; the page redeems it).
- ``POST /dashboard/session``: ``{"init_data": ...}`` (inside Telegram) or ``{"login_code": ...}`` (browser)
  in, a 15-minute bearer session out. ``DELETE`` signs out.
- ``GET  /dashboard/overview``: the session user's credits, jobs with GPU metrics, forks, watches, chain.

Live updates are polling: the page asks for the overview every few seconds. API Gateway REST APIs cannot
push; the upgrade path is an API Gateway WebSocket API fed by the jobs' metric writes.
"""
from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import jsonbody, tracing
from depu.config import get_settings
from depu.dashboard import initdata, overview, sessions, site

logger = Logger()
tracer = tracing.tracer()
app = APIGatewayRestResolver(json_body_deserializer=jsonbody.loads)

_LOGIN_CODE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# POST /dashboard/session parses before it authenticates: an outsider's body gets a small limit. Telegram's
# initData is a few hundred bytes to a few KiB; a login code is under 256 characters.
SESSION_MAX_BODY_BYTES = 16 * 1024
_JSON_HEADERS = {**site.SECURITY_HEADERS, "Cache-Control": "no-store"}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body), headers=_JSON_HEADERS)


def _bot_token() -> str:
    return str(parameters.get_secret(get_settings().telegram_bot_token_secret, max_age=300))


def _bearer() -> str | None:
    header = app.current_event.headers.get("Authorization") or app.current_event.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    # tokens are ASCII; anything else (a lone surrogate included) is no token, not a crash in hashing
    return value.strip() if scheme.lower() == "bearer" and value.strip() and value.isascii() else None


def _session() -> sessions.Session:
    return sessions.session_for(_bearer())


@app.exception_handler(sessions.SessionError)
def _refused_session(error: sessions.SessionError) -> Response:
    return _json(401, {"error": str(error)})


@app.exception_handler(initdata.InitDataError)
def _refused_init_data(error: initdata.InitDataError) -> Response:
    logger.info("initData refused", extra={"reason": str(error)})
    return _json(401, {"error": str(error)})


# ------------------------------------------------------------------------------------------- the page
@app.get("/dashboard/app")
def app_index() -> Response:
    # The page uses relative URLs (stage prefixes differ per deployment), so it must be served from
    # ``.../app/``. The resolver matches ``/app`` and ``/app/`` alike; the raw path tells them apart.
    if not app.current_event.path.endswith("/"):
        return Response(status_code=302, body="", headers={"Location": "app/", "Cache-Control": "no-store"})
    return _static(None)


@app.get("/dashboard/app/<name>")
def app_file(name: str) -> Response:
    return _static(name)


def _static(name: str | None) -> Response:
    try:
        found = site.static_file(name)
    except site.NotFound:
        return Response(status_code=404, content_type="text/plain", body="not found", headers=site.SECURITY_HEADERS)
    return Response(status_code=200, content_type=found.content_type, body=found.body, headers=site.SECURITY_HEADERS)


@app.get("/dashboard/login")
def login_link() -> Response:
    code = app.current_event.get_query_string_value("code", "") or ""
    target = f"app/#login={code}" if _LOGIN_CODE.fullmatch(code) else "app/#login_error=1"
    return Response(
        status_code=302, body="", headers={"Location": target, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


# ------------------------------------------------------------------------------------------- sessions
@app.post("/dashboard/session")
def open_session() -> Response:
    event = app.current_event
    raw = event.body or ""
    if len(raw) > 2 * SESSION_MAX_BODY_BYTES:  # sized before any base64 decoding (4/3 growth)
        return _json(413, {"error": f"body over {SESSION_MAX_BODY_BYTES} bytes"})
    try:
        body = jsonbody.loads(event.decoded_body or "", max_bytes=SESSION_MAX_BODY_BYTES)
    except jsonbody.TooLarge as error:
        return _json(413, {"error": str(error)})
    except jsonbody.NotUnicode as error:
        return _json(400, {"error": str(error)})
    except (ValueError, TypeError):
        body = None
    if not isinstance(body, dict):
        return _json(400, {"error": "send a JSON object with init_data or login_code"})
    init_data, login_code = body.get("init_data"), body.get("login_code")
    if isinstance(init_data, str) and init_data:
        user = initdata.verify(init_data, _bot_token())
        token, session = sessions.open_session(user.id)
        who = {"id": user.id, "first_name": user.first_name, "username": user.username}
    elif isinstance(login_code, str) and login_code:
        token, session = sessions.redeem_login_code(login_code)
        who = {"id": session.user_id, "first_name": _first_name(session.user_id), "username": None}
    else:
        return _json(400, {"error": "send init_data (inside Telegram) or login_code (from the bot's link)"})
    logger.info("dashboard session opened", extra={"user_id": session.user_id})
    return _json(201, {"token": token, "expires_at": session.expires_at, "user": who})


@app.delete("/dashboard/session")
def close_session() -> Response:
    token = _bearer()
    if token:
        sessions.close_session(token)
    return Response(status_code=204, body="", headers=_JSON_HEADERS)


def _first_name(user_id: int) -> str:
    try:
        from depu.profiles import get_profile

        profile = get_profile(user_id)
    except Exception:  # the greeting is cosmetic; the session is what matters
        logger.exception("profile lookup failed")
        return ""
    return (profile.first_name or "") if profile else ""


# ------------------------------------------------------------------------------------------- data
@app.get("/dashboard/overview")
@tracer.capture_method(capture_response=False, capture_error=False)
def get_overview() -> Response:
    session = _session()
    data = overview.build_overview(session.user_id)
    data["session_expires_at"] = session.expires_at
    return _json(200, data)


@app.post("/dashboard/topup")
def post_topup() -> Response:
    """The Mini App's Top up button: the invoice for ``{"stars": N}`` goes to the user's private chat."""
    from depu.errors import UserError
    from depu.payments.invoices import send_topup_invoice
    from depu.telegram.client import bot_api

    session = _session()
    try:
        body = jsonbody.loads(app.current_event.decoded_body or "", max_bytes=1024)
    except (ValueError, TypeError):
        body = None
    stars = body.get("stars") if isinstance(body, dict) else None
    if isinstance(stars, bool) or not isinstance(stars, int):
        return _json(400, {"error": "send {\"stars\": N} for one of the packs"})
    try:
        order = send_topup_invoice(bot_api(), session.user_id, stars)
    except UserError as error:
        return _json(400, {"error": error.message})
    return _json(201, {"sent": True, "stars": int(order.stars), "credits": int(order.credits)})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
