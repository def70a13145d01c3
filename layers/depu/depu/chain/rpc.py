"""A small batched JSON-RPC client: many calls per HTTP request, a few requests in flight, a rate limit.

Paid providers bill and throttle per request (and per call within a batch), so the client spends a token per
call from a blocking bucket before sending. Transient failures are retried by the ``CHAIN_RPC`` policy
(depu.retry): connection errors, 429 and 5xx, an error object the node may not give next time (overloaded,
internal error, limit exceeded), and a batch answered incompletely. A call the node calls invalid (unknown
method, bad params, a revert) is raised at once: asking again gets the same answer.

Batch answers are matched to calls by their ids, never by position: a node may answer in any order. Each id is
unique within the client, so an answer to some other request cannot be taken for this one's; a call left
without an answer is an error (``MissingAnswer``), never a ``None`` that reads as "block not found".
"""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import orjson
import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from depu.ratelimit import BlockingBucket
from depu.retry import CHAIN_RPC

Call = tuple[str, list[Any]]

# JSON-RPC's own codes for a request the node will never accept, and EIP-1474's "execution reverted"
_INVALID_CODES = frozenset({-32700, -32600, -32601, -32602, 3})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_JSON_HEADERS = {"Content-Type": "application/json"}


class RpcError(RuntimeError):
    """The node answered a call with an error object. Retried unless the node says the call is invalid
    (``invalid``): an unknown method, bad params, a parse error or a revert."""

    def __init__(self, method: str, error: Any):
        self.method = method
        self.error = error
        message = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"{method}: {message}")

    @property
    def invalid(self) -> bool:
        if not isinstance(self.error, dict):
            return False
        code = self.error.get("code")
        message = str(self.error.get("message", "")).lower()
        return code in _INVALID_CODES or "revert" in message


class MissingAnswer(RpcError):
    """A batch came back without an answer for some call, or with one for a call never made: retried."""

    def __init__(self, method: str, detail: str):
        super().__init__(method, {"message": detail})


def _transient(error: BaseException) -> bool:
    if isinstance(error, RpcError):
        return not error.invalid
    if isinstance(error, requests.HTTPError):
        status = getattr(error.response, "status_code", None)
        return status is None or status in _RETRY_STATUS
    return isinstance(error, (requests.ConnectionError, requests.Timeout))


@dataclass
class RpcStats:
    requests: int = 0
    calls: int = 0
    retries: int = 0


class RpcClient:
    """JSON-RPC over HTTP. ``batch_size`` calls per request, ``workers`` requests in flight,
    ``rate`` calls per second (None: unlimited, e.g. a local node), ``retries`` after the first try."""

    RETRY_STATUS = _RETRY_STATUS

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 50,
        workers: int = 4,
        rate: float | None = None,
        retries: int = CHAIN_RPC.attempts - 1,
        timeout: float = 30.0,
    ):
        self.url = url
        self.batch_size = batch_size
        self.workers = workers
        self.bucket = BlockingBucket(rate) if rate else None
        self.retries = retries
        self.policy = CHAIN_RPC.but(attempts=retries + 1)
        self.timeout = timeout
        self.stats = RpcStats()
        self._local = threading.local()
        self._ids = itertools.count(1)  # next() on a count is atomic under the GIL: ids unique across threads

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post(self, payload: Any, calls: int) -> Any:
        """One HTTP exchange; raises on a status worth retrying (and on any other non-2xx)."""
        if self.bucket:
            self.bucket.take(calls)
        # orjson both ways, and the body read in one call: a backfill's eth_getLogs answers run to megabytes,
        # and the standard library's json and requests' 10 kB read loop cost more than the node's work
        response = self._session().post(self.url, data=orjson.dumps(payload), headers=_JSON_HEADERS,
                                        timeout=self.timeout, stream=True)
        if response.status_code in self.RETRY_STATUS:
            response.close()
            raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
        if not response.ok:
            response.close()
            response.raise_for_status()
        try:
            content = response.raw.read(decode_content=True)  # read to the end: the connection goes back to the pool
        except (ReadTimeoutError, ProtocolError) as error:  # as requests' own body read would raise them
            response.close()
            raise requests.ConnectionError(error) from error
        self.stats.requests += 1
        self.stats.calls += calls
        return orjson.loads(content)  # a body that is not JSON raises a json.JSONDecodeError, as before

    def _with_retries(self, exchange: Any) -> Any:
        def count(error: BaseException, retry: int, wait: float) -> None:
            self.stats.retries += 1

        return self.policy.retrying(_transient, on_retry=count)(exchange)

    def call(self, method: str, *params: Any) -> Any:
        def exchange() -> Any:
            call_id = next(self._ids)
            body = self._post({"jsonrpc": "2.0", "id": call_id, "method": method, "params": list(params)}, 1)
            if not isinstance(body, dict) or (body.get("id") != call_id and "error" not in body):
                raise MissingAnswer(method, "the answer is not for this call")
            if "error" in body:
                raise RpcError(method, body["error"])
            return body.get("result")

        return self._with_retries(exchange)

    def _batch_once(self, calls: Sequence[Call], allow_errors: bool) -> list[Any]:
        """One chunk, sent again as a whole while it fails transiently. With ``allow_errors`` an error object
        is that call's answer (kept in place), not a failure of the chunk."""

        def exchange() -> list[Any]:
            ids = [next(self._ids) for _ in calls]
            slot = {call_id: index for index, call_id in enumerate(ids)}
            payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in zip(ids, calls)]
            body = self._post(payload, len(calls))
            if isinstance(body, dict):  # a node that rejects the whole batch answers with one error object
                raise RpcError("batch", body.get("error", body))
            answers: dict[int, Any] = {}
            for answer in body if isinstance(body, list) else []:
                index = slot.get(answer.get("id")) if isinstance(answer, dict) else None
                if index is None or index in answers:
                    raise MissingAnswer("batch", "an answer for a call this batch did not make")
                answers[index] = answer
            missing = [index for index in range(len(calls)) if index not in answers]
            if missing:
                raise MissingAnswer(calls[missing[0]][0], f"{len(missing)} of {len(calls)} calls got no answer")
            results: list[Any] = []
            for index, (method, _) in enumerate(calls):
                answer = answers[index]
                if "error" in answer:
                    error = RpcError(method, answer["error"])
                    if not allow_errors:
                        raise error
                    results.append(error)
                else:
                    results.append(answer.get("result"))
            return results

        return self._with_retries(exchange)

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
