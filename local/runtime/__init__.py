"""Run template.yaml's functions the way API Gateway, SQS and EventBridge would invoke them.

One module per idea: ``loader`` (import a handler), ``context`` (Lambda's context object), ``environments``
(a function's pool of execution environments), ``variables`` (the environment the functions see),
``api_gateway`` (routes, proxy events, the HTTP server's handler), ``throttle`` (stage throttling), ``sqs``
(event source mappings), ``schedules`` (EventBridge timers) and ``runtime`` (starting and stopping them).
"""
from __future__ import annotations

from local.runtime.api_gateway import proxy_event, proxy_response
from local.runtime.context import LambdaContext
from local.runtime.environments import InvocationError, LocalFunction
from local.runtime.loader import HandlerMissing
from local.runtime.runtime import LocalRuntime, RuntimeOptions
from local.runtime.schedules import scheduled_event
from local.runtime.sqs import sqs_event
from local.runtime.throttle import StageThrottle

__all__ = [
    "HandlerMissing", "InvocationError", "LambdaContext", "LocalFunction", "LocalRuntime", "RuntimeOptions",
    "StageThrottle", "proxy_event", "proxy_response", "scheduled_event", "sqs_event",
]
