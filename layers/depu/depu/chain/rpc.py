"""A small batched JSON-RPC client: many calls per HTTP request, a few requests in flight, a rate limit.

Paid providers bill and throttle per request (and per call within a batch), so the client spends a token per
call from a token bucket before sending; transient failures (connection errors, 429, 5xx, a batch answered
with an error object) are retried with exponential backoff a bounded number of times.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import requests

Call = tuple[str, list[Any]]


class RpcError(RuntimeError):
    """The node answered a call with an error object (not retried when the node says the call is invalid)."""

    def __init__(self, method: str, error: Any):
        self.method = method
        self.error = error
        message = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"{method}: {message}")


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``take(n)`` blocks until n are available."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self, count: float = 1.0) -> float:
        """Spend ``count`` tokens, sleeping as needed; returns the seconds slept."""
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


@dataclass
class RpcStats:
    requests: int = 0
    calls: int = 0
    retries: int = 0


class RpcClient:
    """JSON-RPC over HTTP. ``batch_size`` calls per request, ``workers`` requests in flight,
    ``rate`` calls per second (None: unlimited, e.g. a local node)."""

    RETRY_STATUS = {429, 500, 502, 503, 504}

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 50,
        workers: int = 4,
        rate: float | None = None,
        retries: int = 4,
        timeout: float = 30.0,
    ):
        self.url = url
        self.batch_size = batch_size
        self.workers = workers
        self.bucket = TokenBucket(rate) if rate else None
        self.retries = retries
        self.timeout = timeout
        self.stats = RpcStats()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post(self, payload: Any, calls: int) -> Any:
        delay = 0.2
        for attempt in range(self.retries + 1):
            if self.bucket:
                self.bucket.take(calls)
            try:
                response = self._session().post(self.url, json=payload, timeout=self.timeout)
                if response.status_code in self.RETRY_STATUS:
                    raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
                response.raise_for_status()
                self.stats.requests += 1
                self.stats.calls += calls
                return response.json()
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as error:
                status = getattr(getattr(error, "response", None), "status_code", None)
                if attempt == self.retries or (status is not None and status not in self.RETRY_STATUS):
                    raise
                self.stats.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def call(self, method: str, *params: Any) -> Any:
        body = self._post({"jsonrpc": "2.0", "id": 0, "method": method, "params": list(params)}, 1)
        if "error" in body:
            raise RpcError(method, body["error"])
        return body.get("result")

    def _batch_once(self, calls: Sequence[Call], allow_errors: bool) -> list[Any]:
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        body = self._post(payload, len(calls))
        if isinstance(body, dict):  # a node that rejects the whole batch answers with one error object
            raise RpcError("batch", body.get("error", body))
        results: list[Any] = [None] * len(calls)
        for answer in body:
            index = answer["id"]
            if "error" in answer:
                if not allow_errors:
                    raise RpcError(calls[index][0], answer["error"])
                results[index] = RpcError(calls[index][0], answer["error"])
            else:
                results[index] = answer.get("result")
        return results

    def batch(self, calls: Sequence[Call], *, allow_errors: bool = False) -> list[Any]:
        """Results in the order of ``calls``; chunks go out concurrently. With ``allow_errors`` a failed call's
        slot holds its RpcError instead of raising (metadata lookups on contracts without symbol())."""
        chunks = [list(calls[i : i + self.batch_size]) for i in range(0, len(calls), self.batch_size)]
        if len(chunks) <= 1 or self.workers <= 1:
            return [result for chunk in chunks for result in self._batch_once(chunk, allow_errors)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            answers = list(pool.map(lambda chunk: self._batch_once(chunk, allow_errors), chunks))
        return [result for answer in answers for result in answer]

    # -------------------------------------------------------------- the calls the indexer makes
    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def blocks(self, numbers: Sequence[int], full: bool = True) -> list[dict[str, Any] | None]:
        return self.batch([("eth_getBlockByNumber", [hex(n), full]) for n in numbers])

    def logs(self, start: int, end: int, topics: list[Any], span: int = 500) -> list[dict[str, Any]]:
        """eth_getLogs over [start, end] in spans of ``span`` blocks (providers cap a call's range)."""
        calls = [
            ("eth_getLogs", [{"fromBlock": hex(a), "toBlock": hex(min(a + span - 1, end)), "topics": topics}])
            for a in range(start, end + 1, span)
        ]
        return [log for answer in self.batch(calls) for log in answer]

    def receipts(self, tx_hashes: Sequence[str]) -> list[dict[str, Any] | None]:
        return self.batch([("eth_getTransactionReceipt", [h]) for h in tx_hashes])
