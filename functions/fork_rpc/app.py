"""Fork RPC proxy: ``POST /rpc/{token}`` answers JSON-RPC (single or batch) for the fork the token opens.

The token is in the path, so the full request path is never logged; only the fork id is.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import jsonbody, tracing
from depu.forks.policy import PARSE_ERROR
from depu.forks.proxy import default_proxy, error

logger = Logger()
tracer = tracing.tracer()
app = APIGatewayRestResolver(json_body_deserializer=jsonbody.loads)


@app.post("/rpc/<token>")
def rpc(token: str) -> Response:
    event = app.current_event
    raw = event.body or ""
    try:
        body = base64.b64decode(raw, validate=True) if event.is_base64_encoded else raw
    except ValueError:  # binascii.Error: not base64 at all
        return Response(status_code=200, content_type=content_types.APPLICATION_JSON,
                        body=json.dumps(error(None, PARSE_ERROR, "parse error: the body is not valid base64")))
    reply = default_proxy().handle(token, body)
    return Response(status_code=reply.status, content_type=content_types.APPLICATION_JSON, body=json.dumps(reply.body))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
