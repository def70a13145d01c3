"""Why a job's process failed, in words its renter can act on: never a bare "failed".

The reason travels to the job record, the chat's progress message and ``/jobs <id>``, so it names the cause
(exit status and the program's last complaint on stderr, a signal, a limit) and stays short.
"""
from __future__ import annotations

import re
import signal

from .runner import Outcome

MAX_REASON_CHARS = 800
STDERR_LINES_QUOTED = 3
_OUT_OF_MEMORY = re.compile(r"\bMemoryError\b|OutOfMemoryError|out of memory|std::bad_alloc|Cannot allocate memory",
                            re.IGNORECASE)
_SIGNAL_MEANING = {
    signal.SIGKILL: "was killed by SIGKILL (out of memory, or stopped from outside)",
    signal.SIGXCPU: "was stopped at its CPU time limit (SIGXCPU)",
    signal.SIGXFSZ: "was stopped writing a file over the file size limit (SIGXFSZ)",
    signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGBUS: "crashed with a bus error (SIGBUS)",
}


def exit_reason(who: str, outcome: Outcome) -> str:
    """``who`` ("your script", "the train workload") ended on its own with a non-zero status: say why."""
    quoted = last_complaint(outcome.stderr_tail)
    code = outcome.returncode
    if code is not None and code < 0:
        try:
            number = signal.Signals(-code)
        except ValueError:
            what = f"was killed by signal {-code}"
        else:
            what = _SIGNAL_MEANING.get(number, f"was killed by {number.name}")
    else:
        what = f"exited with status {code}"
    reason = f"{who} {what}"
    if is_out_of_memory(outcome.stderr_tail):
        reason = f"out of memory: {reason}"
    if quoted:
        reason += f": {quoted}"
    return reason[:MAX_REASON_CHARS]


def last_complaint(stderr_tail: list[str]) -> str:
    """The last few lines written to stderr, joined on one line (the traceback's final line comes last)."""
    lines = [line.strip() for line in stderr_tail if line.strip()][-STDERR_LINES_QUOTED:]
    return " | ".join(lines)


def is_out_of_memory(stderr_tail: list[str]) -> bool:
    return any(_OUT_OF_MEMORY.search(line) for line in stderr_tail)
