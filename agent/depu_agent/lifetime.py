"""Processes the agent starts die with it, even when it is killed without a chance to clean up (SIGKILL, an
OOM kill, a power cut of the service manager): Linux's parent-death signal, set in the child before exec.

The signal fires when the *thread* that started the child exits, so start such children from a thread that
lives as long as they should (the job's own thread, the fork host's loop), never from a short-lived helper.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
try:  # resolved before any fork: the child only makes the call
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: children are stopped by the agent's own shutdown only
    _prctl = None


def die_with_parent(signum: int = signal.SIGTERM, then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``signum`` when its parent dies (and exits at once if the parent died
    before the call), then runs ``then`` (for example the sandbox's limits)."""
    parent = os.getpid()

    def in_child() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)
        if then is not None:
            then()

    return in_child
