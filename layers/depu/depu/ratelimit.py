"""Token buckets, in two kinds with two names, because they answer "over the limit" in opposite ways.

- ``BlockingBucket``: one bucket that *waits*. ``take(n)`` sleeps until n tokens are there, so the caller is
  slowed to the rate and never refused. The chain RPC client uses it: a paid node bills and throttles per
  call, and the indexer would rather be slow than fail.
- ``KeyedBuckets``: one bucket per key that *refuses*. ``take(key, n)`` returns False at once when the key's
  bucket is short, and the caller answers "rate limited". The fork RPC proxy keys it by fork: a user's flood
  must be answered, not queued inside a Lambda.

Both refill continuously at ``rate`` tokens a second up to ``burst`` saved up, both are in-process state
(exact per warm container), and both are thread-safe.
"""
from __future__ import annotations

import threading
import time


class BlockingBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``take(n)`` blocks until n are available."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self, count: float = 1.0) -> float:
        """Spend ``count`` tokens (at most the capacity), sleeping as needed; returns the seconds slept."""
        count = min(count, self.capacity)
        slept = 0.0
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= count:
                    self.tokens -= count
                    return slept
                wait = (count - self.tokens) / self.rate
            time.sleep(wait)
            slept += wait


class KeyedBuckets:
    """One bucket per key, ``rate`` tokens per second and ``burst`` at most each; ``take`` never waits."""

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self._levels: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` from ``key``'s bucket: True if it had them, False (spending nothing) if not."""
        now = time.monotonic()
        with self._lock:
            level, at = self._levels.get(key, (self.burst, now))
            level = min(self.burst, level + (now - at) * self.rate)
            if level < cost:
                self._levels[key] = (level, now)
                return False
            self._levels[key] = (level - cost, now)
            return True
