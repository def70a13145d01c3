"""The refusals every API answers alike: a body that does not fit its contract (400, saying which field),
one over the route's size limit (413), one that is not JSON or not valid Unicode (400), one that is not
JSON at all by its content type (415). ``install`` registers them on a resolver."""
from __future__ import annotations

from collections.abc import Mapping

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from depu import jsonbody
from depu.web.bodies import validation_message
from depu.web.responses import error_response


def install(app: ApiGatewayResolver, headers: Mapping[str, str] | None = None, hint: str | None = None) -> None:
    """Map the body refusals to their answers on ``app`` (``headers`` go on each, e.g. security headers;
    ``hint``, what a right body looks like, follows each 400's message)."""

    def bad(message: str) -> Response:
        return error_response(400, f"{message} ({hint})" if hint else message, headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(error: RequestValidationError) -> Response:
        return bad(validation_message(list(error.errors())))

    @app.exception_handler(RequestUnsupportedContentType)
    def _not_json(_: RequestUnsupportedContentType) -> Response:
        return error_response(415, "send the body as application/json", headers)

    @app.exception_handler(jsonbody.TooLarge)
    def _too_large(error: jsonbody.TooLarge) -> Response:
        return error_response(413, str(error), headers)

    @app.exception_handler(jsonbody.NotUnicode)
    @app.exception_handler(jsonbody.TooDeep)
    @app.exception_handler(UnicodeDecodeError)
    def _unreadable(error: ValueError) -> Response:
        return bad(str(error) if isinstance(error, jsonbody.NotUnicode | jsonbody.TooDeep) else "the body is not valid UTF-8")
