"""API Gateway REST in front of the template's functions: routing, proxy events (payload 1.0) and answers.

The local API is a stdlib ``ThreadingHTTPServer`` (``ClosingHTTPServer``: ``stop()`` also ends the keep-alive
connections it serves). Each request becomes a proxy integration event for the route's function, and the
function's answer becomes the HTTP response, with API Gateway's own answers where it would give them (403 for
an unknown route, 413, 429, 502, 504).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from local.runtime.environments import InvocationError, LocalFunction
from local.runtime.loader import HandlerMissing
from local.runtime.throttle import StageThrottle
from local.template import ACCOUNT_ID, Route

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("local.runtime")

LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024  # synchronous invocation payload limit; API Gateway's own is 10 MB
API_GATEWAY_TIMEOUT = 29.0  # API Gateway's integration timeout, whatever the function's Timeout says

HttpAnswer = tuple[int, list[tuple[str, str]], bytes]


def proxy_event(
    route: Route,
    params: dict[str, str],
    method: str,
    raw_path: str,
    header_pairs: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    stage: str,
) -> dict[str, Any]:
    """An API Gateway REST proxy integration event (payload format 1.0) for one HTTP request."""
    split = urlsplit(raw_path)
    present = {name.lower() for name, _ in header_pairs}
    # what API Gateway adds in front of every integration
    header_pairs = header_pairs + [(name, value) for name, value in (
        ("X-Forwarded-For", source_ip), ("X-Forwarded-Proto", "http"),
        ("X-Amzn-Trace-Id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"),
    ) if name.lower() not in present]
    query_pairs = parse_qsl(split.query, keep_blank_values=True)
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in header_pairs:
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in query_pairs:
        query[name] = value
        multi_query.setdefault(name, []).append(value)
    text_body, is_base64 = _event_body(body)
    now = datetime.now(timezone.utc)
    request_id = str(uuid.uuid4())
    user_agent = next((value for name, value in header_pairs if name.lower() == "user-agent"), None)
    return {
        "resource": route.path,
        "path": split.path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "resourceId": hashlib.sha1(route.path.encode()).hexdigest()[:6],
            "resourcePath": route.path,
            "httpMethod": method,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "path": f"/{stage}{split.path}",
            "stage": stage,
            "protocol": "HTTP/1.1",
            "domainName": "127.0.0.1",
            "identity": {
                "sourceIp": source_ip,
                "userAgent": user_agent,
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
            },
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


def _event_body(body: bytes) -> tuple[str | None, bool]:
    """Text bodies pass as text; bytes that are not UTF-8 are base64-encoded (as with binary media types)."""
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def json_answer(status: int, payload: dict[str, Any]) -> HttpAnswer:
    return status, [("Content-Type", "application/json")], json.dumps(payload).encode()


def proxy_response(result: Any) -> HttpAnswer:
    """Turn a proxy integration result into (status, headers, body); malformed results are API Gateway's 502."""
    try:
        oversized = len(json.dumps(result, default=str)) > LAMBDA_PAYLOAD_LIMIT
    except (TypeError, ValueError):
        oversized = False
    if oversized:
        log.error("Lambda response over the 6 MB payload limit")
        return json_answer(502, {"message": "Internal server error"})
    if not isinstance(result, dict) or not isinstance(result.get("statusCode", 200), int):
        log.error("malformed Lambda proxy response: %s", type(result).__name__)
        return json_answer(502, {"message": "Internal server error"})
    headers: list[tuple[str, str]] = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers = [(k, v) for k, v in headers if k.lower() != str(name).lower()]
        headers.extend((str(name), str(value)) for value in values)
    body = result.get("body") or ""
    if not isinstance(body, str):
        log.error("malformed Lambda proxy response: body is %s", type(body).__name__)
        return json_answer(502, {"message": "Internal server error"})
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
    return int(result.get("statusCode", 200)), headers, raw


class ApiGateway:
    """The routes of a set of functions, and what API Gateway does with one request."""

    def __init__(self, functions: Mapping[str, LocalFunction], throttles: Mapping[str, StageThrottle], stage: str):
        self.functions = functions
        self.throttles = throttles
        self.stage = stage

    @property
    def routes(self) -> list[Route]:
        return [route for function in self.functions.values() for route in function.spec.routes]

    def find_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The most specific matching route: literal paths beat parameters, parameters beat ``{proxy+}``."""
        candidates = []
        for route in self.routes:
            params = route.match(method, path)
            if params is not None:
                greedy = "+}" in route.path
                candidates.append(((greedy, route.path.count("{"), -len(route.path)), route, params))
        if not candidates:
            return None
        _, route, params = min(candidates, key=lambda item: item[0])
        return route, params

    def handle(self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes,
               source_ip: str) -> HttpAnswer:
        path = urlsplit(raw_path).path
        found = self.find_route(method, path)
        if found is None:
            # API Gateway REST answers an unknown resource and a method the resource does not declare alike:
            # 403 "Missing Authentication Token". Local answers the same, so a client that treats 404 as "gone"
            # (the agent's outbox) behaves here as it will in the cloud; the log says what was missing.
            log.info("no route for %s %s in template.yaml", method, path)
            status, json_headers, payload = json_answer(403, {"message": "Missing Authentication Token"})
            return status, [*json_headers, ("x-amzn-ErrorType", "MissingAuthenticationTokenException")], payload
        route, params = found
        function = self.functions[route.function]
        if not function.available():
            return json_answer(501, {"message": f"{function.name} is not implemented yet locally"})
        throttle = self.throttles.get(function.name)
        if throttle is not None and not throttle.allow():
            return json_answer(429, {"message": "Too Many Requests"})
        event = proxy_event(route, params, method, raw_path, headers, body, source_ip, self.stage)
        if len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT:
            return json_answer(413, {"message": "Request Entity Too Large"})
        try:
            result = function.invoke(event, timeout=API_GATEWAY_TIMEOUT)
        except InvocationError as error:
            if "timed out" in str(error):
                return json_answer(504, {"message": "Endpoint request timed out"})
            return json_answer(502, {"message": "Internal server error"})
        except HandlerMissing:
            return json_answer(501, {"message": f"{function.name} is not implemented yet locally"})
        return proxy_response(result)


def request_handler(gateway: ApiGateway) -> type[BaseHTTPRequestHandler]:
    """The HTTP side: read a request (refusing what API Gateway refuses unread), hand it on, write the answer."""

    class ApiGatewayHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms per request
        disable_nagle_algorithm = True
        server_version = "DePU-local"

        def _handle(self) -> None:
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                self.close_connection = True
                return self._send(*json_answer(411, {"message": "Length Required"}))
            try:
                size = int(length or 0)
            except ValueError:
                self.close_connection = True
                return self._send(*json_answer(400, {"message": "Invalid Content-Length"}))
            if size > LAMBDA_PAYLOAD_LIMIT:
                self.close_connection = True  # the unread body must not be parsed as the next request
                return self._send(*json_answer(413, {"message": "Request Entity Too Large"}))
            body = self.rfile.read(size) if size else b""
            self._send(*gateway.handle(self.command, self.path, list(self.headers.items()), body,
                                       self.client_address[0]))

        def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "")
            for name, value in headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def __getattr__(self, name: str) -> Any:
            """Every method (TRACE, QUERY, custom ones) takes the JSON path, as API Gateway sends them all to
            routing; without this http.server answers those it has no ``do_X`` for with its own HTML 501."""
            if name.startswith("do_"):
                return self._handle
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s %s", self.address_string(), format % args)

    return ApiGatewayHandler
