"""A template function as Lambda runs it: a pool of execution environments, created on demand, reused warm.

An execution environment is the function's own copy of its handler module serving one invocation at a time,
so concurrency creates environments (cold starts) as Lambda's does, and ``ReservedConcurrentExecutions`` caps
them. Invocations run on threads of this process, so a debugger can step from a request into a handler and
tests may adjust DePU's modules for the handlers they serve; ``local/isolation.py`` keeps the per-invocation
state that Lambda isolates by process apart per thread.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.runtime.context import LambdaContext
from local.runtime.loader import Handler, load_handler, source_file
from local.template import Function

log = logging.getLogger("local.runtime")


class InvocationError(Exception):
    """The function raised, timed out or could not be loaded: what Lambda reports as a function error."""


@dataclass
class ExecutionEnvironment:
    """One Lambda execution environment: its own copy of the handler module, serving one invocation at a time.

    Module globals (a Powertools resolver keeps the current event on its module-level ``app``) must never be
    shared by two concurrent invocations, so concurrency creates more environments, as Lambda does."""

    number: int
    handler: Handler


@dataclass
class LocalFunction:
    """One template function: its spec, its physical name and its pool of execution environments."""

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
        return source_file(self.spec)

    @property
    def environments(self) -> int:
        """How many execution environments exist (the peak concurrency so far)."""
        return self._created

    def available(self) -> bool:
        return self.source_file.exists()

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
        context = LambdaContext(self.physical_name, self.spec.memory_size, self.spec.timeout)
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

    def _take_environment(self) -> ExecutionEnvironment:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the most recently used one: warm, like Lambda's
            self._created += 1
            number = self._created
        module_name = f"depu_local_fn_{self.name}_{self.spec.handler.rsplit('.', 1)[0].replace('.', '_')}_env{number}"
        try:
            return ExecutionEnvironment(number, load_handler(self.spec, module_name))
        except BaseException:
            with self._lock:
                self._created -= 1
            raise

    def _return_environment(self, environment: ExecutionEnvironment) -> None:
        with self._lock:
            self._idle.append(environment)


