"""The JSON-RPC front door of every fork: authenticate the URL token, allow only fork-safe methods,
rate-limit, forward to the fork's host, and journal every write in the order the fork applied it.

Every forward carries the host secret filed for that host URL (``Fork.host_secrets``): the host's front
refuses anything without it, so this proxy is the only way in.

Snapshots are journal positions: ``evm_snapshot`` returns the seq of its journal entry as the snapshot id, and
``evm_revert`` to it drops that entry and every later one, so the journal always equals what the fork did and
a rebuilt fork replays to the same state. The host's own snapshot ids live in ``Fork.host_snapshots``.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from depu import jsonbody
from depu.forks import journal, outcomes, policy, tokens
from depu.forks.models import PROVISIONING, REQUESTED, SERVING, Fork

log = logging.getLogger(__name__)

FORWARD_TIMEOUT_S = 30.0
FORK_CACHE_SECONDS = 1.0
RECEIPT_WAIT_S = 5.0


@dataclass
class RpcReply:
    status: int
    body: Any


def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def result(request_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


class Unavailable(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ForkProxy:
    def __init__(self, bucket: policy.TokenBucket | None = None, cache_seconds: float | None = None):
        self.bucket = bucket or policy.TokenBucket()
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, tokens.ForkRpcToken, Fork]] = {}
        self._local = threading.local()

    # ------------------------------------------------------------------ entry point
    def handle(self, token: str, raw: bytes | str | None) -> RpcReply:
        """One HTTP request to ``/rpc/{token}``: a single JSON-RPC request or a batch."""
        # sized before anything else (surrogatepass: a lone surrogate must not crash the count; the parser
        # refuses it below), so an outsider without a token gets no more than a size check and one lookup
        size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw or b"")
        if size > policy.MAX_BODY_BYTES:
            return RpcReply(413, error(None, policy.INVALID_REQUEST, f"request body over {policy.MAX_BODY_BYTES} bytes"))
        try:
            fork = self._resolve(token)
        except Unavailable as refused:
            return RpcReply(refused.status, error(None, refused.code, refused.message))
        try:
            payload = jsonbody.loads(raw or b"", max_bytes=policy.MAX_BODY_BYTES)
        except jsonbody.NotUnicode as refused:
            return RpcReply(200, error(None, policy.PARSE_ERROR, f"parse error: {refused}"))
        except ValueError:
            return RpcReply(200, error(None, policy.PARSE_ERROR, "parse error: the body is not JSON"))
        if isinstance(payload, list):
            if not payload or len(payload) > policy.MAX_BATCH:
                return RpcReply(200, error(None, policy.INVALID_REQUEST, f"a batch holds 1 to {policy.MAX_BATCH} requests"))
            if not self.bucket.take(fork.fork_id, len(payload)):
                return RpcReply(429, error(None, policy.LIMIT_EXCEEDED, "rate limit exceeded for this fork"))
            return RpcReply(200, [self.call(fork, request) for request in payload])
        if not self.bucket.take(fork.fork_id):
            return RpcReply(429, error(None, policy.LIMIT_EXCEEDED, "rate limit exceeded for this fork"))
        return RpcReply(200, self.call(fork, payload))

    def _resolve(self, token: str) -> Fork:
        now = time.monotonic()
        cached = self._cache.get(token)
        ttl = FORK_CACHE_SECONDS if self.cache_seconds is None else self.cache_seconds
        if cached and now - cached[0] < ttl:
            fork = cached[2]
        else:
            record = tokens.fork_for(token)
            if record is None:
                raise Unavailable(401, policy.UNAUTHORIZED, "unknown or revoked fork RPC token")
            try:
                fork = Fork.get(record.fork_id)
            except Fork.DoesNotExist:
                raise Unavailable(404, policy.FORK_UNAVAILABLE, "this fork no longer exists") from None
            if fork.rpc_token_hash != record.token_hash:
                raise Unavailable(401, policy.UNAUTHORIZED, "unknown or revoked fork RPC token")
            self._cache[token] = (now, record, fork)
        if fork.expires_at and fork.expires_at < time.time():
            raise Unavailable(404, policy.FORK_UNAVAILABLE, "this fork has expired")
        if fork.status in (REQUESTED, PROVISIONING):
            raise Unavailable(503, policy.FORK_UNAVAILABLE, "this fork is being built; try again in a moment")
        if fork.status not in SERVING or not fork.host_rpc_url:
            raise Unavailable(404, policy.FORK_UNAVAILABLE, "this fork no longer exists")
        return fork

    # ------------------------------------------------------------------ one request
    def call(self, fork: Fork, request: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request on ``fork`` (also used by the bot for funding and impersonation)."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return error(None, policy.INVALID_REQUEST, "invalid request: expected an object with a method")
        request_id = request.get("id")
        method = request["method"]
        params = request.get("params", [])
        if not isinstance(params, list):
            return error(request_id, policy.INVALID_PARAMS, "params must be a list")
        if not policy.is_allowed(method):
            return error(request_id, policy.METHOD_NOT_ALLOWED, "method not allowed on DePU forks")
        try:
            if method == policy.REVERT:
                return self._revert(fork, request_id, params)
            canonical = policy.canonical_write(method)
            if canonical:
                return self._write(fork, request_id, canonical, params)
            return self._forward(fork, method, params, request_id)
        except journal.WriteRefused as refused:
            reason = "another write to this fork is in progress" if refused.reason == "busy" else f"the fork is {refused.reason}"
            return error(request_id, policy.LIMIT_EXCEEDED, f"write not accepted now: {reason}; retry shortly")
        except requests.RequestException:
            log.warning("fork %s host unreachable", fork.fork_id)
            return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host did not answer; retry shortly")

    def _write(self, fork: Fork, request_id: Any, method: str, params: list[Any]) -> dict[str, Any]:
        current, seq, lease = journal.begin_write(fork.fork_id)
        snapshots = None
        try:
            answer = self._forward(current, method, params, request_id)
            if "error" in answer:
                return answer  # the fork did not change: nothing to journal
            value = answer.get("result")
            if method in outcomes.TX_METHODS:
                outcome = outcomes.of_receipt(self._receipt(current, value))
            else:
                outcome = outcomes.of_result(value)
            journal.record(fork.fork_id, seq, method, params, outcome)
            if method == "evm_snapshot":
                snapshots = {**(current.host_snapshots or {}), str(seq): value}
                answer = result(request_id, hex(seq))
            return answer
        finally:
            journal.end_write(fork.fork_id, lease, snapshots)

    def _revert(self, fork: Fork, request_id: Any, params: list[Any]) -> dict[str, Any]:
        snapshot_seq = _snapshot_id(params[0] if params else None)
        if snapshot_seq is None:
            return error(request_id, policy.INVALID_PARAMS, "evm_revert takes a snapshot id")
        current, _seq, lease = journal.begin_write(fork.fork_id)
        snapshots = dict(current.host_snapshots or {})
        changed = None
        try:
            host_id = snapshots.get(str(snapshot_seq))
            if host_id is None:
                return result(request_id, False)
            answer = self._forward(current, "evm_revert", [host_id], request_id)
            if answer.get("result") is True:
                journal.truncate_from(fork.fork_id, snapshot_seq)
                changed = {key: value for key, value in snapshots.items() if int(key) < snapshot_seq}
            return answer
        finally:
            journal.end_write(fork.fork_id, lease, changed)

    def _receipt(self, fork: Fork, tx_hash: Any) -> dict[str, Any] | None:
        """The transaction's receipt: anvil answers the hash before its automine block is sealed."""
        deadline = time.monotonic() + RECEIPT_WAIT_S
        while True:
            receipt = self._forward(fork, "eth_getTransactionReceipt", [tx_hash], 0).get("result")
            if receipt or time.monotonic() > deadline:
                return receipt
            time.sleep(0.02)

    def _forward(self, fork: Fork, method: str, params: list[Any], request_id: Any) -> dict[str, Any]:
        url = fork.host_rpc_url
        if not url:
            raise requests.ConnectionError("no host")
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        secret = (fork.host_secrets or {}).get(url)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        response = session.post(
            url, json={"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, headers=headers,
            timeout=FORWARD_TIMEOUT_S,
        )
        if response.status_code == 401:
            log.warning("fork %s host refused the proxy's secret", fork.fork_id)
            return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host did not accept the DePU proxy; retry shortly")
        answer = response.json()
        if not isinstance(answer, dict):
            return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host answered nonsense")
        answer["id"] = request_id
        return answer


_default: ForkProxy | None = None


def default_proxy() -> ForkProxy:
    global _default
    if _default is None:
        _default = ForkProxy()
    return _default


def _snapshot_id(value: Any) -> int | None:
    """A snapshot id as ``evm_snapshot`` hands it out (a hex string) or as clients echo it back (an integer or
    a decimal string); anything else is not a snapshot id."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str):
        try:
            number = int(value, 16) if value.lower().startswith("0x") else int(value, 10)
        except ValueError:
            return None
        return number if number >= 0 else None
    return None
