"""What `make up` starts dies with it: Ctrl-C, SIGTERM, SIGHUP (its terminal closing) and even SIGKILL.

The stack stops its parts itself on the first three (``python -m local up`` turns each into the same clean
stop). For the rest, each child process gets Linux's parent-death signal before it runs: when the stack's
process dies, the agent (which then hands its jobs back and stops its forks' anvils) and the local chain get
SIGTERM from the kernel.
"""
from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def ends_with_this_process() -> Callable[[], None]:
    """A ``preexec_fn`` for a child started from the stack's main thread (the signal follows the thread)."""
    stack_pid = os.getpid()

    def set_parent_death_signal() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != stack_pid:  # the stack died before the call: nobody would signal us
            os._exit(1)

    return set_parent_death_signal
