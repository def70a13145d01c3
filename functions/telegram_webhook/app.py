"""Telegram webhook: check the shared secret, parse the update, run the bot once per ``update_id``.

Answers: 401 for a missing or wrong ``X-Telegram-Bot-Api-Secret-Token`` (nothing else is touched), 413 for
a body over 1 MB, 400 for a body that is not an update, 409 while the same update is still being processed
(Telegram retries later and then gets the stored outcome), and 200 for every accepted update, whether the
bot answered it, ignored it or a handler failed (the user got an apology; resending would fail again).

Feature modules are imported on the first update (``depu.bot.dispatch.load_features``), never here.
"""
from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import jsonbody, tracing
from depu.bot.dispatch import TelegramChat, dispatch
from depu.config import get_settings
from depu.payments import updates as payment_updates
from depu.telegram.client import bot_api
from depu.telegram.updates import MalformedUpdate, parse_body, parse_update

logger = Logger()
tracer = tracing.tracer()
app = APIGatewayRestResolver(json_body_deserializer=jsonbody.loads)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY_BYTES = 1024 * 1024
# Telegram keeps resending an unacknowledged update for up to a day; remember handled ones a bit longer
UPDATE_MEMORY_SECONDS = 36 * 3600
SECRET_MAX_AGE_SECONDS = 300

idempotency_config = IdempotencyConfig(
    event_key_jmespath="update_id",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=UPDATE_MEMORY_SECONDS,
)


def _reply(status: int, message: str) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body={"ok": status == 200, "message": message})


def _secret_matches(presented: str | None) -> bool:
    if not presented:
        return False
    expected = str(parameters.get_secret(get_settings().telegram_webhook_secret, max_age=SECRET_MAX_AGE_SECONDS))
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def handle_update(update: dict[str, Any]) -> str:
    """Run the bot for one update; returns the dispatcher's outcome ("ignored" when nothing was for us)."""
    if payment_updates.is_payment(update):  # answered here, not queued: Telegram waits 10 s at most
        from depu.payments import webhook as payments_webhook

        return payments_webhook.handle(update, bot_api())
    incoming = parse_update(update, get_settings().bot_username)
    if incoming is None:
        return "ignored"
    return dispatch(incoming, TelegramChat(bot_api(), incoming), correlation_id=str(update["update_id"]))


@lru_cache(maxsize=1)
def _handle_once():
    """``handle_update`` guarded by the idempotency table (built on first use: it needs a DynamoDB client)."""
    persistence = DynamoDBPersistenceLayer(table_name=get_settings().idempotency_table)

    @idempotent_function(
        data_keyword_argument="update",
        persistence_store=persistence,
        config=idempotency_config,
        key_prefix="telegram-update",
    )
    def handle_once(update: dict[str, Any]) -> dict[str, str]:
        return {"outcome": handle_update(update)}

    return handle_once


@app.post("/telegram/webhook")
def telegram_update() -> Response:
    event = app.current_event
    if not _secret_matches(event.get_header_value(SECRET_HEADER, case_sensitive=False)):
        logger.warning("webhook call without the right secret header",
                       extra={"source_ip": event.request_context.identity.source_ip})
        return _reply(401, "unauthorized")
    try:
        body = event.decoded_body or ""
    except ValueError:  # isBase64Encoded with a body that is not base64, or bytes that are not UTF-8
        return _reply(400, "body is not valid base64-encoded UTF-8 text")
    if len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        return _reply(413, "body too large")
    try:
        update = parse_body(body)
    except MalformedUpdate as exc:
        logger.warning("malformed update", extra={"reason": str(exc)})
        return _reply(400, str(exc))
    update_id = update["update_id"]
    # from here on the update id is the correlation id: it is what an apology quotes to the user
    logger.set_correlation_id(str(update_id))
    try:
        result = _handle_once()(update=update)
    except IdempotencyAlreadyInProgressError:
        logger.info("update already in progress; asking Telegram to retry later")
        return _reply(409, "in progress")
    logger.info("update handled", extra={"outcome": (result or {}).get("outcome")})
    return _reply(200, "accepted")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    return app.resolve(event, context)
