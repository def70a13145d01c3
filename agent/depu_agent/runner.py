"""One child process per job: started in its own session, its output relayed line by line, its structured
events read from a separate pipe, and stopped the way the protocol promises: SIGTERM to the whole process
group, a grace period, then SIGKILL.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .lifetime import die_with_parent

log = logging.getLogger(__name__)

EVENTS_FD = "{events_fd}"  # placeholder in argv, replaced by the pipe's descriptor number
POLL_SECONDS = 0.1
ERROR_TAIL_LINES = 20


class StopRequest:
    """Why a running job must stop (cancelled, shutdown, lost); the first reason given wins."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None
        self._lock = threading.Lock()

    def request(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


@dataclass
class Outcome:
    reason: str  # exited | timeout | cancelled | shutdown | lost
    returncode: int | None
    duration_s: float
    output_truncated: bool
    stderr_tail: list[str] = field(default_factory=list)  # the last lines the child wrote to stderr


class ChildProcess:
    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        on_line: Callable[[str], None],
        on_event: Callable[[dict], None] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        user: int | None = None,
        group: int | None = None,
        max_output_bytes: int = 4_000_000,
        max_line_chars: int = 2000,
        pass_fds: tuple[int, ...] = (),
        supervised: bool = False,
    ):
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.on_line = on_line
        self.on_event = on_event
        self.preexec_fn = preexec_fn
        self.user = user
        self.group = group
        self.max_output_bytes = max_output_bytes
        self.max_line_chars = max_line_chars
        self.pass_fds = tuple(pass_fds)
        # The child is a supervisor (bubblewrap) whose death ends the whole sandbox at once: SIGTERM then goes
        # to the rest of its process group only, so the job itself gets the grace period.
        self.supervised = supervised
        self.process: subprocess.Popen | None = None
        self.output_bytes = 0
        self.output_truncated = False
        self.stderr_tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
        self._output_lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._started_at = 0.0

    # ------------------------------------------------------------------ start
    def start(self) -> "ChildProcess":
        read_fd = write_fd = None
        argv = list(self.argv)
        if self.on_event is not None:
            read_fd, write_fd = os.pipe()
            argv = [str(write_fd) if part == EVENTS_FD else part for part in argv]
        extra = {}
        if self.user is not None:
            extra = {"user": self.user, "group": self.group, "extra_groups": []}
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                pass_fds=((write_fd,) if write_fd is not None else ()) + self.pass_fds,
                preexec_fn=die_with_parent(signal.SIGKILL, then=self.preexec_fn),
                close_fds=True,
                **extra,
            )
        finally:
            if write_fd is not None:
                os.close(write_fd)
        self._started_at = time.monotonic()
        self._readers.append(threading.Thread(target=self._relay_output, args=(self.process.stdout, None),
                                              daemon=True, name="job-stdout"))
        self._readers.append(threading.Thread(target=self._relay_output, args=(self.process.stderr, self.stderr_tail),
                                              daemon=True, name="job-stderr"))
        if read_fd is not None:
            self._readers.append(
                threading.Thread(target=self._relay_events, args=(read_fd,), daemon=True, name="job-events")
            )
        for reader in self._readers:
            reader.start()
        return self

    def _relay_output(self, stream, tail: deque[str] | None) -> None:
        """Relay one of the child's streams line by line; stderr's last lines are also kept (``tail``) so a
        failure can say what the program last complained about, even after the output cap."""
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if len(line) > self.max_line_chars:
                line = line[: self.max_line_chars] + " [line truncated]"
            if tail is not None and line.strip():
                tail.append(line)
            with self._output_lock:
                self.output_bytes += len(raw)
                if self.output_bytes > self.max_output_bytes:
                    if not self.output_truncated:
                        self.output_truncated = True
                        self.on_line(f"[output truncated after {self.max_output_bytes} bytes]")
                    continue  # keep draining so the child never blocks on a full pipe
                self.on_line(line)

    def _relay_events(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and self.on_event:
                    self.on_event(event)

    # ------------------------------------------------------------------ wait / stop
    def wait(self, time_limit_s: float | None, stop: StopRequest, grace_s: float) -> Outcome:
        assert self.process
        deadline = self._started_at + time_limit_s if time_limit_s else None
        reason = "exited"
        while self.process.poll() is None:
            if stop.is_set():
                reason = stop.reason or "cancelled"
                self.terminate(grace_s)
                break
            if deadline is not None and time.monotonic() >= deadline:
                reason = "timeout"
                self.terminate(grace_s)
                break
            stop.event.wait(POLL_SECONDS)
        self._kill_group(signal.SIGKILL)  # leftovers the child spawned in its group
        for reader in self._readers:
            reader.join(timeout=5)
        returncode = self.process.returncode
        if self.supervised and returncode is not None and 128 < returncode < 128 + 65:
            returncode = 128 - returncode  # bwrap reports "killed by signal n" as 128 + n, like a shell
        return Outcome(
            reason=reason,
            returncode=returncode,
            duration_s=round(time.monotonic() - self._started_at, 3),
            output_truncated=self.output_truncated,
            stderr_tail=list(self.stderr_tail),
        )

    def terminate(self, grace_s: float) -> None:
        """SIGTERM to the process group, wait ``grace_s``, then SIGKILL."""
        assert self.process
        if self.supervised:
            self._signal_group_but_leader(signal.SIGTERM)
        else:
            self._kill_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.info("job process %s ignored SIGTERM for %.1f s: SIGKILL", self.process.pid, grace_s)
            self._kill_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group_but_leader(self, signum: int) -> None:
        """``signum`` to every process of the child's group except the child itself (a PID namespace's init
        among them ignores it, as the kernel ignores unhandled signals to an init from outside)."""
        assert self.process
        leader = self.process.pid
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == leader:
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    group = int(handle.read().rsplit(")", 1)[1].split()[2])
                if group == leader:
                    os.kill(int(entry), signum)
            except (OSError, ValueError, IndexError):
                continue

    def _kill_group(self, signum: int) -> None:
        assert self.process
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
