"""Per-invocation state that Lambda isolates by process, made per-thread for the in-process runtime.

In Lambda one execution environment (one process) serves one invocation at a time, so libraries may keep the
current invocation in process-wide state. Powertools' event handler does: ``resolve()`` stores the current
event and context on the ``BaseRouter`` *class*. The local runtime runs concurrent invocations on threads of
one process (long polls must not block other requests), so two requests in flight would read each other's
event: an agent could be answered with another agent's identity. Giving each thread its own copy of those
two attributes restores Lambda's isolation without changing a handler. Nothing changes for code that invokes
a handler on a single thread (tests calling ``lambda_handler`` directly).
"""
from __future__ import annotations

import threading
from typing import Any

_ATTRIBUTES = ("current_event", "lambda_context")
_installed = False
_install_lock = threading.Lock()


def isolate_invocation_state() -> None:
    """Make Powertools' class-level current event and Lambda context thread-local (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        try:
            from aws_lambda_powertools.event_handler import api_gateway
        except ImportError:  # Powertools not installed: nothing to isolate
            return
        base = api_gateway.BaseRouter
        state = threading.local()

        def accessor(name: str) -> property:
            def get(_owner: Any) -> Any:
                try:
                    return getattr(state, name)
                except AttributeError:
                    raise AttributeError(name) from None

            def set_(_owner: Any, value: Any) -> None:
                setattr(state, name, value)

            return property(get, set_)

        # ``BaseRouter.current_event = ...`` (a class-level assignment) goes through the metaclass's data
        # descriptor; ``resolver.current_event`` (an instance read or write) through the class's own.
        metaclass = type(f"ThreadLocal{type(base).__name__}", (type(base),),
                         {name: accessor(name) for name in _ATTRIBUTES})
        for name in _ATTRIBUTES:
            # before the metaclass swap, so these land in the class's own namespace; this also replaces a
            # value an earlier resolve() left on the class (process-wide, hence meaningless per thread)
            setattr(base, name, accessor(name))
        base.__class__ = metaclass
        _installed = True
