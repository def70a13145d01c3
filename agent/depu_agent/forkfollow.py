"""Follow mode: the fork host moves each of its following forks onto every new mainnet head, by itself.

Why on the host and not in a cloud loop: a step is a few local calls to anvil plus the reads mainnet's new block
needs, so it takes tens of milliseconds to a second; a Step Functions round trip per block (state transitions,
an SQS task token, the host's long poll, a callback) costs more than a 2 s block by itself, and a rebase through
it starts a fresh anvil and a new URL each time. The host already holds everything a step needs (the fork's
journal as its front applied it, forkfront.py) and nothing a restart needs: a restarted or replaced host gets
the journal from the API in its provision task, as before. The API keeps the say: it switches following per
fork (``depu_setFollow`` through the proxy, and ``follow`` in every provision or rebase task).

A step, for a fork at base B when mainnet's head is H > B:

- empty journal: **advance**, ``anvil_reset`` of the serving anvil to H (tens of ms; filters survive it);
- otherwise **rebase**: reset the fork's spare anvil (the one it served from before the last rebase) to H,
  replay the journal there while the serving anvil keeps answering, then, holding the front's write lock,
  replay the writes that arrived meanwhile and swap the front onto it. Snapshot and filter ids clients hold
  are translated by the front, so they keep working.

Heads that come faster than a step takes are coalesced: a step always goes to the newest head seen. Each
entry's outcome on the new base is compared with the previous one (``forkfront.conflict_of``): a replayed
transaction that now reverts or fails is reported (``depu_followStatus`` ``conflicts``, with its seq, method,
reason and block) and the fork stays on the new head, usable, with the entry's new effect. Upstream calls per
step come from the host's RPC cache (forkcache.py), which every fork's anvil reads mainnet through.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from depu_agent.forkfront import conflict_of

if TYPE_CHECKING:
    from depu_agent.forkcache import UpstreamCache
    from depu_agent.forkhost import AnvilFork

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25
MAX_CONFLICTS_KEPT = 20
RECENT_STEPS = 50


class Follower:
    """One per fork host: watches mainnet's head and runs one worker thread per following fork."""

    def __init__(self, forks: Callable[[], dict[str, "AnvilFork"]], head: Callable[[], int], upstream: str,
                 cache: "UpstreamCache | None" = None, poll_seconds: float = POLL_SECONDS):
        self._forks = forks
        self._head = head
        self.upstream = upstream
        self.cache = cache
        self.poll_seconds = poll_seconds
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self.head: int | None = None

    def run(self, stop_event: threading.Event) -> None:
        while not stop_event.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - an upstream blip must not end following
                log.debug("follow tick failed", exc_info=True)
            stop_event.wait(self.poll_seconds)
        with self._lock:
            for worker in self._workers.values():
                worker.stop()

    def tick(self) -> None:
        head = self._head()
        self.head = head
        forks = self._forks()
        with self._lock:
            for fork_id in list(self._workers):
                if fork_id not in forks:
                    self._workers.pop(fork_id).stop()
            for fork_id, fork in forks.items():
                state = fork.front.follow
                state["head_seen"] = head
                if not state.get("following") or fork.block >= head:
                    continue
                worker = self._workers.get(fork_id)
                if worker is None or not worker.alive():
                    worker = self._workers[fork_id] = _Worker(self, fork_id)
                worker.wake(head)

    def fork(self, fork_id: str) -> "AnvilFork | None":
        return self._forks().get(fork_id)


class _Worker:
    def __init__(self, follower: Follower, fork_id: str):
        self.follower = follower
        self.fork_id = fork_id
        self._wanted: int | None = None
        self._event = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{fork_id}", daemon=True)
        self._thread.start()

    def wake(self, head: int) -> None:
        self._wanted = head
        self._event.set()

    def stop(self) -> None:
        self._stopped.set()
        self._event.set()

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._event.wait()
            self._event.clear()
            if self._stopped.is_set():
                return
            head = self._wanted  # the newest head seen: older ones are coalesced away
            fork = self.follower.fork(self.fork_id)
            if fork is None:
                return
            if head is None or head <= fork.block or not fork.front.follow.get("following"):
                continue
            try:
                step(fork, head, self.follower.upstream, self.follower.cache)
            except Exception as error:  # noqa: BLE001 - the fork keeps serving its current base
                log.warning("fork %s: follow step to %s failed: %s", self.fork_id, head, error)
                fork.front.follow["last_error"] = str(error)[:200]
                self._stopped.wait(1.0)


def step(fork: "AnvilFork", head: int, upstream: str, cache: "UpstreamCache | None" = None) -> dict[str, Any]:
    """Move ``fork`` onto ``head`` (see the module docstring); returns what the step did."""
    from depu_agent.forkhost import AnvilProcess, outcomes_of

    started = time.monotonic()
    calls_before = cache.upstream_calls if cache else 0
    round_trips_before = cache.upstream_requests if cache else 0
    if cache is not None and fork.block < head:
        cache.prefetch(fork.block, head)  # what the fork read at its base, at the new head, in a few batches
    front = fork.front
    entries, revision = front.entries()
    mode = "rebase"
    conflicts: list[dict[str, Any]] = []
    if not entries:
        with front.write_lock:
            entries, revision = front.entries()
            if not entries:
                fork.anvil.reset(upstream, head)
                mode = "advance"
    if mode == "rebase":
        spare = fork.spare
        if spare is None or spare.process.poll() is not None:
            spare = AnvilProcess(fork.binary, fork.chain_id)
            spare.wait_started()
        fork.spare = None
        try:
            spare.reset(upstream, head)
            reports, snapshots = spare.replay(entries)
            with front.write_lock:
                now, now_revision = front.entries()
                if now_revision != revision:  # a revert meanwhile: replay what the journal is now
                    spare.reset(upstream, head)
                    reports, snapshots = spare.replay(now)
                else:
                    more, more_snapshots = spare.replay(now[len(entries):])
                    reports, snapshots = reports + more, {**snapshots, **more_snapshots}
                outcomes = outcomes_of(now, reports)
                for entry in now:
                    reason = conflict_of(entry.get("outcome"), outcomes.get(entry["seq"], {}))
                    if reason:
                        conflicts.append({"seq": entry["seq"], "method": entry["method"], "reason": reason, "block": head})
                front.swap(spare.local_url, outcomes, {int(seq): value for seq, value in snapshots.items()})
                fork.anvil, spare = spare, fork.anvil
        finally:
            fork.spare = spare  # the process no longer serving: the next step's (in-flight reads finish first)
            if fork.front.stopped:  # the fork was stopped meanwhile: leave no anvil of it behind
                fork.anvil.stop()
                spare.stop()
        entries = now
    fork.block = head
    took_ms = (time.monotonic() - started) * 1000
    calls = (cache.upstream_calls - calls_before) if cache else None
    round_trips = (cache.upstream_requests - round_trips_before) if cache else None
    _record(front.follow, head, mode, took_ms, calls, len(entries), conflicts)
    front.follow["upstream_round_trips_last_step"] = round_trips
    return {"mode": mode, "block": head, "ms": took_ms, "upstream_calls": calls, "upstream_round_trips": round_trips,
            "conflicts": conflicts}


def _record(state: dict[str, Any], head: int, mode: str, took_ms: float, calls: int | None, replayed: int,
            conflicts: list[dict[str, Any]]) -> None:
    recent = state.setdefault("_recent", deque(maxlen=RECENT_STEPS))
    recent.append((took_ms, calls))
    kept = list(state.get("conflicts") or []) + conflicts
    counted = [c for _ms, c in recent if c is not None]
    state.update({
        "base_block": head, "steps": int(state.get("steps", 0)) + 1, "last_mode": mode, "last_step_ms": round(took_ms, 1),
        "replayed": replayed, "synced_at": time.time(), "last_error": None,
        "upstream_calls_last_step": calls,
        "upstream_calls_per_block": round(sum(counted) / len(counted), 2) if counted else None,
        "conflicts": kept[-MAX_CONFLICTS_KEPT:], "conflicts_total": int(state.get("conflicts_total", 0)) + len(conflicts),
    })
