"""Run template.yaml's functions in this process, the way API Gateway, SQS and EventBridge would invoke them.

Why in-process: the local stack must start in seconds on a laptop and let a debugger step from an HTTP request
into a handler. Everything is derived from ``LocalTemplate`` (routes, queues, batch sizes, schedules,
timeouts, environment), so adding a function to the template is all it takes to run it locally.

Three event sources:

* an HTTP server (stdlib ``ThreadingHTTPServer``) that turns each request into an API Gateway REST *proxy*
  event (payload v1) for the route's function and turns the function's answer back into an HTTP response
  (``stop()`` also ends the keep-alive connections it serves, see ``local/http_server.py``);
* one poller thread per SQS event source, which long-polls the queue in moto, invokes the function with a
  real-shaped batch and deletes only what succeeded (``batchItemFailures``), so retries, visibility timeouts
  and dead-letter redrive are moto's real behaviour;
* one timer thread per ``Schedule`` event, invoking the function with an EventBridge scheduled event.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from local.http_server import ClosingHTTPServer
from local import signing_key
from local.isolation import isolate_invocation_state
from local.template import ACCOUNT_ID, REGION, ROOT, Function, LocalTemplate, Route

log = logging.getLogger("local.runtime")

LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024  # synchronous invocation payload limit; API Gateway's own is 10 MB
API_GATEWAY_TIMEOUT = 29.0  # API Gateway's integration timeout, whatever the function's Timeout says
LAYER_PATHS = (ROOT / "layers" / "depu",)


class HandlerMissing(Exception):
    """The function's code is not written yet (functions/<name>/app.py absent)."""


class InvocationError(Exception):
    """The function raised, timed out or could not be loaded: what Lambda reports as a function error."""


# ---------------------------------------------------------------------------------------------- invocation
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, function: Function, physical_name: str, deadline: float):
        self.function_name = physical_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{physical_name}"
        self.memory_limit_in_mb = function.memory_size
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{physical_name}"
        self.log_stream_name = f"{datetime.now(timezone.utc):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class ExecutionEnvironment:
    """One Lambda execution environment: its own copy of the handler module, serving one invocation at a time.

    Module globals (a Powertools resolver keeps the current event on its module-level ``app``) must never be
    shared by two concurrent invocations, so concurrency creates more environments, as Lambda does."""

    number: int
    handler: Callable[[dict[str, Any], Any], Any]


@dataclass
class LocalFunction:
    """One template function: a pool of execution environments, created on demand (cold starts), reused."""

    spec: Function
    physical_name: str
    _idle: list[ExecutionEnvironment] = field(default_factory=list, repr=False)
    _created: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _slots: threading.BoundedSemaphore | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.spec.reserved_concurrency:
            # ReservedConcurrentExecutions: the notifier and the indexer rely on running one at a time
            self._slots = threading.BoundedSemaphore(self.spec.reserved_concurrency)

    @property
    def name(self) -> str:
        return self.spec.logical_id

    @property
    def source_file(self) -> Path:
        module_name = self.spec.handler.rsplit(".", 1)[0]
        return self.spec.code_dir / (module_name.replace(".", "/") + ".py")

    @property
    def environments(self) -> int:
        """How many execution environments exist (the peak concurrency so far)."""
        return self._created

    def available(self) -> bool:
        return self.source_file.exists()

    def _take_environment(self) -> ExecutionEnvironment:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the most recently used one: warm, like Lambda's
            self._created += 1
            number = self._created
        try:
            return ExecutionEnvironment(number, _load_handler(self.spec, self.source_file, number))
        except BaseException:
            with self._lock:
                self._created -= 1
            raise

    def _return_environment(self, environment: ExecutionEnvironment) -> None:
        with self._lock:
            self._idle.append(environment)

    def invoke(self, event: dict[str, Any], *, timeout: float | None = None) -> Any:
        """Invoke the handler in a worker thread and wait at most the function's Timeout.

        A handler that overruns cannot be killed in-process; it is left to finish in the background (keeping
        its environment busy) while the caller sees the timeout Lambda would report.
        """
        if self._slots:
            self._slots.acquire()  # waiting for a free slot is not part of the function's time
        try:
            environment = self._take_environment()
        except BaseException:
            if self._slots:
                self._slots.release()
            raise
        limit = min(timeout or self.spec.timeout, self.spec.timeout)
        context = LambdaContext(self.spec, self.physical_name, time.monotonic() + self.spec.timeout)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = environment.handler(event, context)
            except BaseException as error:  # noqa: BLE001 - reported to the caller like Lambda's error
                outcome["error"] = error
            finally:
                self._return_environment(environment)
                if self._slots:
                    self._slots.release()

        worker = threading.Thread(target=run, name=f"depu-local-invoke-{self.name}", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            log.error("%s timed out after %.0f s (request %s)", self.name, limit, context.aws_request_id)
            raise InvocationError(f"{self.name} timed out after {limit:.0f} seconds")
        if "error" in outcome:
            error = outcome["error"]
            log.error("%s failed (request %s)", self.name, context.aws_request_id, exc_info=error)
            raise InvocationError(f"{self.name} raised {type(error).__name__}") from error
        return outcome.get("result")


_import_lock = threading.Lock()


def _load_handler(spec: Function, source: Path, environment: int = 1) -> Callable[[dict[str, Any], Any], Any]:
    """Import ``functions/<dir>/app.py`` as its own module.

    Every handler file is called app.py, so each (function, execution environment) gets a unique module name,
    and the function's folder is on sys.path only while it is imported (sibling modules it imports are renamed away afterwards, so two
    functions may both have, say, a ``models.py``).
    """
    if not source.exists():
        raise HandlerMissing(f"{spec.logical_id}: {_relative(source)} not written yet")
    module_name, attribute = spec.handler.rsplit(".", 1)
    unique = f"depu_local_fn_{spec.logical_id}_{module_name.replace('.', '_')}_env{environment}"
    code_dir = str(spec.code_dir)
    with _import_lock:
        before = set(sys.modules)
        sys.path.insert(0, code_dir)
        try:
            module_spec = importlib.util.spec_from_file_location(unique, source)
            if module_spec is None or module_spec.loader is None:
                raise InvocationError(f"cannot import {source}")
            module: ModuleType = importlib.util.module_from_spec(module_spec)
            sys.modules[unique] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(unique, None)
                raise
        finally:
            sys.path.remove(code_dir)
            for name in set(sys.modules) - before:
                loaded = getattr(sys.modules.get(name), "__file__", None) or ""
                if name != unique and loaded.startswith(code_dir + os.sep):
                    sys.modules[f"{unique}__{name}"] = sys.modules.pop(name)
    return getattr(module, attribute)


# ---------------------------------------------------------------------------------------------- API Gateway
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


def _json_response(status: int, payload: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], json.dumps(payload).encode()


def proxy_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Turn a proxy integration result into (status, headers, body); malformed results are API Gateway's 502."""
    try:
        oversized = len(json.dumps(result, default=str)) > LAMBDA_PAYLOAD_LIMIT
    except (TypeError, ValueError):
        oversized = False
    if oversized:
        log.error("Lambda response over the 6 MB payload limit")
        return _json_response(502, {"message": "Internal server error"})
    if not isinstance(result, dict) or not isinstance(result.get("statusCode", 200), int):
        log.error("malformed Lambda proxy response: %s", type(result).__name__)
        return _json_response(502, {"message": "Internal server error"})
    headers: list[tuple[str, str]] = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers = [(k, v) for k, v in headers if k.lower() != str(name).lower()]
        headers.extend((str(name), str(value)) for value in values)
    body = result.get("body") or ""
    if not isinstance(body, str):
        log.error("malformed Lambda proxy response: body is %s", type(body).__name__)
        return _json_response(502, {"message": "Internal server error"})
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
    return int(result.get("statusCode", 200)), headers, raw


class StageThrottle:
    """API Gateway's stage throttling (a token bucket: ``burst`` at once, refilled at ``rate`` per second).

    Over the limit API Gateway answers 429 without invoking the function; the template's ``MethodSettings``
    for ``/*`` say how much, so the local API refuses floods where the deployed one would."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


def stage_throttles(template: LocalTemplate) -> dict[str, StageThrottle]:
    """Each function's stage throttle, from its API's ``MethodSettings`` (ResourcePath ``/*``)."""
    apis: dict[str, StageThrottle] = {}
    for api_id, resource in template.of_type("AWS::Serverless::Api").items():
        for setting in template.resolve(resource.get("Properties", {})).get("MethodSettings", []):
            if setting.get("ResourcePath") == "/*" and "ThrottlingRateLimit" in setting:
                apis[api_id] = StageThrottle(float(setting["ThrottlingRateLimit"]),
                                             int(setting.get("ThrottlingBurstLimit", setting["ThrottlingRateLimit"])))
    throttles = {}
    for function_id, resource in template.of_type("AWS::Serverless::Function").items():
        for event in resource.get("Properties", {}).get("Events", {}).values():
            api_ref = event.get("Properties", {}).get("RestApiId")
            if event.get("Type") == "Api" and isinstance(api_ref, dict) and api_ref.get("Ref") in apis:
                throttles[function_id] = apis[api_ref["Ref"]]
    return throttles


# ---------------------------------------------------------------------------------------------- runtime
DELETE_ATTEMPTS = 60  # one a second: longer than any outage the fault tests inject


@dataclass
class RuntimeOptions:
    host: str = "127.0.0.1"
    port: int = 3000
    stage: str = "local"
    fast_schedules: float | None = None  # seconds between scheduled runs instead of the template's rate
    poll_wait_seconds: int = 1  # SQS long-poll wait; short so Ctrl-C is quick
    extra_environment: dict[str, str] = field(default_factory=dict)
    # How long stop() waits, in all, for invocations in flight (an indexer run follows the head for ~50 s).
    # Tests keep the default so nothing of one test runs on into the next; `make up`, whose process ends right
    # after, waits briefly: an abandoned invocation is like a Lambda timeout, and every function resumes from
    # its own checkpoint or message.
    stop_wait_seconds: float = 11.0


class LocalRuntime:
    """API Gateway, SQS event source mappings and EventBridge schedules for a ``LocalTemplate``, in-process."""

    def __init__(self, template: LocalTemplate, aws_endpoint: str, options: RuntimeOptions | None = None):
        self.template = template
        self.aws_endpoint = aws_endpoint
        self.options = options or RuntimeOptions()
        self.functions = {
            logical_id: LocalFunction(spec, template.physical_name(logical_id))
            for logical_id, spec in template.functions(aws_endpoint).items()
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ClosingHTTPServer | None = None
        self._saved_env: dict[str, str | None] = {}
        self.throttles = stage_throttles(template)
        self.skipped: list[str] = []  # what did not start because its handler is missing

    @property
    def routes(self) -> list[Route]:
        return [route for function in self.functions.values() for route in function.spec.routes]

    @property
    def url(self) -> str:
        port = self._server.server_address[1] if self._server else self.options.port
        return f"http://{self.options.host}:{port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalRuntime":
        runtime = self.template.raw.get("Globals", {}).get("Function", {}).get("Runtime")
        here = f"python{sys.version_info.major}.{sys.version_info.minor}"
        if runtime and runtime != here:  # handlers run in this interpreter: on another Python they prove little
            raise RuntimeError(f"the template's functions run {runtime} but this interpreter is {here}; "
                               f"`make deps` builds the venv with {runtime}")
        for layer in LAYER_PATHS:  # what Lambda's layer gives every function: ``import depu``
            if str(layer) not in sys.path:
                sys.path.append(str(layer))
        isolate_invocation_state()  # concurrent invocations on threads must not share "the current event"
        self._apply_environment()
        self._server = ClosingHTTPServer((self.options.host, self.options.port), _make_request_handler(self))
        self._spawn("depu-local-api", self._server.serve_forever)
        for function in self.functions.values():
            if not function.available():
                log.warning("%s: %s is not written yet; its routes answer 501 and its events are skipped",
                            function.name, _relative(function.source_file))
                self.skipped.append(function.name)
            for queue_id, batch_size in function.spec.queues:
                if function.available():
                    self._spawn(f"depu-local-sqs-{function.name}", self._poll_queue, function, queue_id, batch_size)
            for period in function.spec.schedules:
                if function.available():
                    every = self.options.fast_schedules or period
                    self._spawn(f"depu-local-schedule-{function.name}", self._run_schedule, function, every)
        log.info("local API on %s with %d routes", self.url, len(self.routes))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server:
            self._server.close()  # keep-alive connections opened before end too: a stopped API answers nobody
        deadline = time.monotonic() + self.options.stop_wait_seconds
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.info("stopping without waiting for %s (an invocation in flight, as at a Lambda timeout)",
                         thread.name)
        self._threads.clear()
        self._restore_environment()

    def __enter__(self) -> "LocalRuntime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _apply_environment(self) -> None:
        """Every function's resolved environment (they share the same values) plus the local AWS endpoint."""
        env: dict[str, str] = {}
        for function in self.functions.values():
            for name, value in function.spec.environment.items():
                if env.get(name, value) != value:
                    log.warning("%s sets %s differently from another function; in-process, one value wins",
                                function.name, name)
                env[name] = value
        env.update(
            {
                "AWS_ENDPOINT_URL": self.aws_endpoint,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
                # the local agent API signs install.sh and the package with the stack's own key (deployed: none)
                signing_key.KEY_FILE_ENV: str(signing_key.key_path()),
            }
        )
        env.update(self.options.extra_environment)
        for name, value in env.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _clear_settings_cache()

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        _clear_settings_cache()

    # ------------------------------------------------------------------ API Gateway
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

    def handle_http(
        self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path = urlsplit(raw_path).path
        found = self.find_route(method, path)
        if found is None:
            # API Gateway REST answers an unknown resource and a method the resource does not declare alike:
            # 403 "Missing Authentication Token". Local answers the same, so a client that treats 404 as "gone"
            # (the agent's outbox) behaves here as it will in the cloud; the log says what was missing.
            log.info("no route for %s %s in template.yaml", method, path)
            status, json_headers, payload = _json_response(403, {"message": "Missing Authentication Token"})
            return status, [*json_headers, ("x-amzn-ErrorType", "MissingAuthenticationTokenException")], payload
        route, params = found
        function = self.functions[route.function]
        if not function.available():
            return _json_response(501, {"message": f"{function.name} is not implemented yet locally"})
        throttle = self.throttles.get(function.name)
        if throttle is not None and not throttle.allow():
            return _json_response(429, {"message": "Too Many Requests"})
        event = proxy_event(route, params, method, raw_path, headers, body, source_ip, self.options.stage)
        if len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT:
            return _json_response(413, {"message": "Request Entity Too Large"})
        try:
            result = function.invoke(event, timeout=API_GATEWAY_TIMEOUT)
        except InvocationError as error:
            if "timed out" in str(error):
                return _json_response(504, {"message": "Endpoint request timed out"})
            return _json_response(502, {"message": "Internal server error"})
        except HandlerMissing:
            return _json_response(501, {"message": f"{function.name} is not implemented yet locally"})
        except Exception:  # noqa: BLE001 - an import error in a handler is a 502, not a dead server
            log.exception("%s could not be loaded", function.name)
            return _json_response(502, {"message": "Internal server error"})
        return proxy_response(result)

    # ------------------------------------------------------------------ SQS
    def _poll_queue(self, function: LocalFunction, queue_id: str, batch_size: int) -> None:
        from local.provision import client

        sqs = client("sqs", self.aws_endpoint)
        queue_url = self.template.queue_url(queue_id, self.aws_endpoint)
        queue_arn = self.template.arn(queue_id)
        partial = queue_id in function.spec.partial_batch_queues
        while not self._stop.is_set():
            try:
                received = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=max(1, min(batch_size, 10)),
                    WaitTimeSeconds=self.options.poll_wait_seconds,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as error:  # noqa: BLE001 - moto restarting or stopping: wait and retry
                if self._stop.is_set():
                    break
                log.warning("polling %s failed: %s", queue_id, error)
                self._stop.wait(1)
                continue
            if not received:
                continue
            event = sqs_event(received, queue_arn)
            succeeded = self._invoke_batch(function, event, partial)
            done = [m for m in received if m["MessageId"] in succeeded]
            for start in range(0, len(done), 10):
                self._delete(sqs, queue_url, queue_id, done[start:start + 10])

    def _delete(self, sqs: Any, queue_url: str, queue_id: str, messages: list[dict[str, Any]]) -> None:
        """Delete handled messages, retrying while the endpoint is away (as Lambda's event source mapping
        does): a delete lost to an outage would hand an already handled message out again."""
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        for _attempt in range(DELETE_ATTEMPTS):
            try:
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
                return
            except Exception as error:  # noqa: BLE001 - the endpoint is away: try again shortly
                log.warning("deleting handled messages from %s failed: %s", queue_id, error)
                if self._stop.wait(1):
                    return
        log.error("gave up deleting %d handled messages from %s: they will be offered again", len(entries), queue_id)

    @staticmethod
    def _invoke_batch(function: LocalFunction, event: dict[str, Any], partial: bool) -> set[str]:
        """Message ids to delete: all of them, none (the function failed) or those not in batchItemFailures."""
        ids = {record["messageId"] for record in event["Records"]}
        try:
            result = function.invoke(event)
        except Exception:  # noqa: BLE001 - the whole batch goes back to the queue, like Lambda
            return set()
        if not partial or not isinstance(result, dict) or not result.get("batchItemFailures"):
            return ids
        failed = {item.get("itemIdentifier") for item in result["batchItemFailures"] if isinstance(item, dict)}
        if len(failed) != len(result["batchItemFailures"]) or not failed <= ids:
            log.error("%s returned invalid batchItemFailures; the whole batch is retried", function.name)
            return set()
        return ids - failed

    # ------------------------------------------------------------------ EventBridge
    def _run_schedule(self, function: LocalFunction, every: float) -> None:
        rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{function.physical_name}-schedule"
        next_run = time.monotonic() + every
        running: list[threading.Thread] = []

        def invoke() -> None:
            try:
                function.invoke(scheduled_event(rule_arn))
            except Exception:  # noqa: BLE001 - already logged; the next tick tries again
                pass

        while not self._stop.wait(max(0.0, next_run - time.monotonic())):
            # EventBridge invokes asynchronously: a run longer than the rate overlaps the next one (the
            # indexer hands its follower lease over that way), up to the function's reserved concurrency
            running = [thread for thread in running if thread.is_alive()]
            if len(running) < (function.spec.reserved_concurrency or 1):
                thread = threading.Thread(target=invoke, name=f"depu-local-tick-{function.name}", daemon=True)
                thread.start()
                running.append(thread)
            next_run += every
            if next_run < time.monotonic():  # missed ticks are skipped, not run back to back
                next_run = time.monotonic() + every


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping passes: one record per received message."""
    records = []
    for message in messages:
        attributes = dict(message.get("Attributes", {}))
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": attributes,
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": (base64.b64encode(value["BinaryValue"]).decode()
                                        if value.get("BinaryValue") else None),
                        "stringListValues": value.get("StringListValues", []),
                        "binaryListValues": value.get("BinaryListValues", []),
                        "dataType": value.get("DataType"),
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def scheduled_event(rule_arn: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def _make_request_handler(runtime: LocalRuntime) -> type[BaseHTTPRequestHandler]:
    class ApiGatewayHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms per request
        disable_nagle_algorithm = True
        server_version = "DePU-local"

        def _handle(self) -> None:
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                self.close_connection = True
                return self._send(*_json_response(411, {"message": "Length Required"}))
            try:
                size = int(length or 0)
            except ValueError:
                self.close_connection = True
                return self._send(*_json_response(400, {"message": "Invalid Content-Length"}))
            if size > LAMBDA_PAYLOAD_LIMIT:
                self.close_connection = True  # the unread body must not be parsed as the next request
                return self._send(*_json_response(413, {"message": "Request Entity Too Large"}))
            body = self.rfile.read(size) if size else b""
            status, headers, payload = runtime.handle_http(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
            self._send(status, headers, payload)

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


def _clear_settings_cache() -> None:
    settings = sys.modules.get("depu.config")
    if settings is not None:
        settings.get_settings.cache_clear()


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
