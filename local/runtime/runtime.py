"""The local runtime: API Gateway, SQS event source mappings and EventBridge schedules for a template.

Why in-process: the local stack must start in seconds on a laptop and let a debugger step from an HTTP request
into a handler. Everything is derived from ``LocalTemplate`` (routes, queues, batch sizes, schedules,
timeouts, environment), so adding a function to the template is all it takes to run it locally. This module
only starts and stops the pieces; each event source is its own module (``api_gateway``, ``sqs``,
``schedules``).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from local.http_server import ClosingHTTPServer
from local.isolation import isolate_invocation_state
from local.runtime.api_gateway import ApiGateway, HttpAnswer, request_handler
from local.runtime.environments import LocalFunction
from local.runtime.loader import add_layers, relative
from local.runtime.schedules import run_schedule
from local.runtime.sqs import QueuePoller
from local.runtime.throttle import stage_throttles
from local.runtime.variables import ProcessEnvironment
from local.template import LocalTemplate, Route

log = logging.getLogger("local.runtime")


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
        # callers may narrow this down before start() (a test that needs only the agent API)
        self.functions = {
            logical_id: LocalFunction(spec, template.physical_name(logical_id))
            for logical_id, spec in template.functions(aws_endpoint).items()
        }
        self.throttles = stage_throttles(template)
        self.skipped: list[str] = []  # what did not start because its handler is missing
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ClosingHTTPServer | None = None
        self._environment = ProcessEnvironment()

    @property
    def routes(self) -> list[Route]:
        return self._gateway().routes

    @property
    def url(self) -> str:
        port = self._server.server_address[1] if self._server else self.options.port
        return f"http://{self.options.host}:{port}"

    def find_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        return self._gateway().find_route(method, path)

    def handle_http(self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes,
                    source_ip: str) -> HttpAnswer:
        """One HTTP request as API Gateway handles it (also for fronts of their own, see tests/forks_support)."""
        return self._gateway().handle(method, raw_path, headers, body, source_ip)

    def _gateway(self) -> ApiGateway:
        return ApiGateway(self.functions, self.throttles, self.options.stage)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalRuntime":
        runtime = self.template.raw.get("Globals", {}).get("Function", {}).get("Runtime")
        here = f"python{sys.version_info.major}.{sys.version_info.minor}"
        if runtime and runtime != here:  # handlers run in this interpreter: on another Python they prove little
            raise RuntimeError(f"the template's functions run {runtime} but this interpreter is {here}; "
                               f"`make deps` builds the venv with {runtime}")
        add_layers()
        isolate_invocation_state()  # concurrent invocations on threads must not share "the current event"
        self._environment.apply(self.functions.values(), self.aws_endpoint, self.options.extra_environment)
        self._server = ClosingHTTPServer((self.options.host, self.options.port), request_handler(self._gateway()))
        self._spawn("depu-local-api", self._server.serve_forever)
        for function in self.functions.values():
            if not function.available():
                log.warning("%s: %s is not written yet; its routes answer 501 and its events are skipped",
                            function.name, relative(function.source_file))
                self.skipped.append(function.name)
                continue
            for queue_id, batch_size in function.spec.queues:
                poller = QueuePoller(function, self.template, self.aws_endpoint, queue_id, batch_size,
                                     self.options.poll_wait_seconds, self._stop)
                self._spawn(f"depu-local-sqs-{function.name}", poller.run)
            for period in function.spec.schedules:
                every = self.options.fast_schedules or period
                self._spawn(f"depu-local-schedule-{function.name}", run_schedule, function, every, self._stop)
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
        self._environment.restore()

    def __enter__(self) -> "LocalRuntime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
