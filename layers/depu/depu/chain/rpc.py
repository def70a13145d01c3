"""A small batched JSON-RPC client: many calls per HTTP request, a few requests in flight, a rate limit.

Paid providers bill and throttle per request (and per call within a batch), so the client spends a token per
call from a blocking bucket before sending. Transient failures are retried by the ``CHAIN_RPC`` policy
(depu.retry): connection errors, 429 and 5xx, an error object the node may not give next time (overloaded,
internal error, limit exceeded), and a batch answered incompletely. A call the node calls invalid (unknown
method, bad params, a revert) is raised at once: asking again gets the same answer.

Batch answers are matched to calls by their ids, never by position: a node may answer in any order. Each id is
unique within the client, so an answer to some other request cannot be taken for this one's; a call left
without an answer is an error (``MissingAnswer``), never a ``None`` that reads as "block not found".

Providers cap what one eth_getLogs may return ("query returned more than 10000 results", "log response size
exceeded", "block range is too large"). Such an answer is not retried as it stands: the span is halved and
each half asked for, down to a single block (``RpcError.too_large``, ``RpcStats.splits``), so a caller may
ask for big spans and still gets every log exactly once.
"""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import orjson
import requests
from requests.utils import get_netrc_auth
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from depu.ratelimit import BlockingBucket
from depu.retry import CHAIN_RPC

if TYPE_CHECKING:
    import pyarrow as pa

Call = tuple[str, list[Any]]

# JSON-RPC's own codes for a request the node will never accept, and EIP-1474's "execution reverted"
_INVALID_CODES = frozenset({-32700, -32600, -32601, -32602, 3})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_JSON_HEADERS = {"Content-Type": "application/json"}
# how nodes and providers word "this eth_getLogs asks for too much": halve the span and ask again
_TOO_LARGE_PHRASES = ("query returned more than", "too many results", "too many logs", "response size exceeded",
                      "response size is larger", "response is too big", "block range", "range is too large",
                      "range too large", "max results", "logs matched by query exceeds")


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

    @property
    def too_large(self) -> bool:
        """The node refuses this eth_getLogs for the size of its span or answer: a smaller span will do."""
        if self.method != "eth_getLogs" or not isinstance(self.error, dict):
            return False
        message = str(self.error.get("message", "")).lower()
        return any(phrase in message for phrase in _TOO_LARGE_PHRASES)


class MissingAnswer(RpcError):
    """A batch came back without an answer for some call, or with one for a call never made: retried."""

    def __init__(self, method: str, detail: str):
        super().__init__(method, {"message": detail})


def _transient(error: BaseException) -> bool:
    if isinstance(error, RpcError):
        return not (error.invalid or error.too_large)  # a span too large is split, not asked again
    if isinstance(error, requests.HTTPError):
        status = getattr(error.response, "status_code", None)
        return status is None or status in _RETRY_STATUS
    return isinstance(error, (requests.ConnectionError, requests.Timeout))


@dataclass
class RpcStats:
    requests: int = 0
    calls: int = 0
    retries: int = 0
    splits: int = 0  # eth_getLogs spans halved because the node refused them as too large


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
        self._environment_lock = threading.Lock()
        self._settings: dict[str, Any] | None = None
        self._ids = itertools.count(1)  # next() on a count is atomic under the GIL: ids unique across threads

    def _session(self) -> requests.Session:
        """This thread's session. The environment's proxy, CA and netrc settings for the node's URL are read
        once per client (``_environment``), not on every request: requests otherwise looks them all up again
        for each post, about 0.9 ms of the 2.3 ms of client CPU a 1.9 MB eth_getLogs exchange cost."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            settings = self._environment()
            session.trust_env = False
            session.proxies.update(settings["proxies"])
            session.verify = settings["verify"]
            session.cert = settings["cert"]
            session.auth = settings["auth"]
            self._local.session = session
        return session

    def _environment(self) -> dict[str, Any]:
        """What requests would take from the environment for this URL (proxies, CA bundle, client cert,
        netrc credentials), with requests' own lookups."""
        with self._environment_lock:
            if self._settings is None:
                settings = requests.Session().merge_environment_settings(self.url, {}, None, None, None)
                self._settings = settings | {"auth": get_netrc_auth(self.url)}
            return self._settings

    def _post(self, payload: Any, calls: int) -> Any:
        """One HTTP exchange, its answer parsed; raises on a status worth retrying (and on any other non-2xx)."""
        return orjson.loads(self._post_raw(payload, calls))  # not JSON: a json.JSONDecodeError, as before

    def _post_raw(self, payload: Any, calls: int) -> bytes:
        """One HTTP exchange, its answer's body as it came."""
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
        return content

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

    def _batch_once(self, calls: Sequence[Call], keep: Callable[[RpcError], bool] | None) -> list[Any]:
        """One chunk, sent again as a whole while it fails transiently. An error object ``keep`` accepts is
        that call's answer (kept in place), not a failure of the chunk."""

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
                    if keep is None or not keep(error):
                        raise error
                    results.append(error)
                else:
                    results.append(answer.get("result"))
            return results

        return self._with_retries(exchange)

    def batch(self, calls: Sequence[Call], *, allow_errors: bool = False,
              keep: Callable[[RpcError], bool] | None = None) -> list[Any]:
        """Results in the order of ``calls``; chunks go out concurrently. With ``allow_errors`` a failed call's
        slot holds its RpcError instead of raising (metadata lookups on contracts without symbol()); with
        ``keep``, only the errors it accepts do."""
        if allow_errors:
            keep = _keep_every_error
        chunks = [list(calls[i : i + self.batch_size]) for i in range(0, len(calls), self.batch_size)]
        if len(chunks) <= 1 or self.workers <= 1:
            return [result for chunk in chunks for result in self._batch_once(chunk, keep)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            answers = list(pool.map(lambda chunk: self._batch_once(chunk, keep), chunks))
        return [result for answer in answers for result in answer]

    # -------------------------------------------------------------- the calls the indexer makes
    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def blocks(self, numbers: Sequence[int], full: bool = True) -> list[dict[str, Any] | None]:
        return self.batch([("eth_getBlockByNumber", [hex(n), full]) for n in numbers])

    def logs(self, start: int, end: int, topics: list[Any], span: int = 500) -> list[dict[str, Any]]:
        """eth_getLogs over [start, end] in spans of ``span`` blocks (providers cap a call's range), in one
        batch; a span the node refuses as too large is halved until it answers."""
        spans = _spans(start, end, span)
        answers = self.batch([("eth_getLogs", [_log_filter(a, b, topics)]) for a, b in spans],
                             keep=_too_large)
        found: list[dict[str, Any]] = []
        for (a, b), answer in zip(spans, answers):
            if isinstance(answer, RpcError):
                found += self._split(answer, a, b, lambda x, y: self._logs_halving(x, y, topics), list.__add__)
            else:
                found += answer
        return found

    def _logs_halving(self, start: int, end: int, topics: list[Any]) -> list[dict[str, Any]]:
        try:
            return self.call("eth_getLogs", _log_filter(start, end, topics))
        except RpcError as error:
            return self._split(error, start, end, lambda a, b: self._logs_halving(a, b, topics), list.__add__)

    def logs_table(self, start: int, end: int, topics: list[Any], span: int = 500) -> "pa.StructArray":
        """The logs of [start, end] as Arrow columns (``depu.chain.transfer_table``): each answer's body is
        parsed by pyarrow, never into a Python dict per log. One request per span, halved like ``logs``."""
        import pyarrow as pa

        from depu.chain.log_schema import empty_logs

        parts = [self._logs_table_halving(a, b, topics) for a, b in _spans(start, end, span)]
        parts = [part for part in parts if len(part)]
        return pa.concat_arrays(parts) if parts else empty_logs()

    def _logs_table_halving(self, start: int, end: int, topics: list[Any]) -> "pa.StructArray":
        import pyarrow as pa

        try:
            return self._logs_table_once(start, end, topics)
        except RpcError as error:
            return self._split(error, start, end, lambda a, b: self._logs_table_halving(a, b, topics),
                               lambda x, y: pa.concat_arrays([x, y]))

    def _split(self, error: RpcError, start: int, end: int, fetch: Callable[[int, int], Any],
               join: Callable[[Any, Any], Any]) -> Any:
        """The answer for [start, end] from its two halves, when ``error`` says the span was too large
        (``fetch`` halves again as needed); any other error, or a single block refused, is raised."""
        if not error.too_large or start >= end:
            raise error
        self.stats.splits += 1
        middle = (start + end) // 2
        return join(fetch(start, middle), fetch(middle + 1, end))

    def _logs_table_once(self, start: int, end: int, topics: list[Any]) -> "pa.StructArray":
        from depu.chain.transfer_table import read_answer

        def exchange() -> "pa.StructArray":
            call_id = next(self._ids)
            payload = {"jsonrpc": "2.0", "id": call_id, "method": "eth_getLogs",
                       "params": [_log_filter(start, end, topics)]}
            answer = read_answer(self._post_raw(payload, 1))
            if answer["error"] is not None:
                raise RpcError("eth_getLogs", answer["error"])
            if answer["id"] != call_id or answer["result"] is None:
                raise MissingAnswer("eth_getLogs", "the answer is not for this call")
            return answer["result"]

        return self._with_retries(exchange)

    def receipts(self, tx_hashes: Sequence[str]) -> list[dict[str, Any] | None]:
        return self.batch([("eth_getTransactionReceipt", [h]) for h in tx_hashes])


def _keep_every_error(error: RpcError) -> bool:
    return True


def _too_large(error: RpcError) -> bool:
    return error.too_large


def _spans(start: int, end: int, span: int) -> list[tuple[int, int]]:
    return [(a, min(a + span - 1, end)) for a in range(start, end + 1, span)]


def _log_filter(start: int, end: int, topics: list[Any]) -> dict[str, Any]:
    return {"fromBlock": hex(start), "toBlock": hex(end), "topics": topics}
