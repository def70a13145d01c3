"""The JSON-RPC front door of every fork: authenticate the URL token, allow only fork-safe methods,
rate-limit, forward to the fork's host, and journal every write in the order the fork applied it.

Every forward carries the host secret filed for that host URL (``Fork.host_secrets``): the host's front
refuses anything without it, so this proxy is the only way in.

Snapshots are journal positions: ``evm_snapshot`` returns the seq of its journal entry as the snapshot id, and
``evm_revert`` to it drops that entry and every later one, so the journal always equals what the fork did and
a rebuilt fork replays to the same state. The host's own snapshot ids live in ``Fork.host_snapshots``.

What a host may be sent and what it may send back is bounded (docs/security.md, "Fork chain ids, bounded
writes and host URLs"):

- ``eth_sendRawTransaction`` must be signed for the fork's own chain id (``chainids``); an unprotected
  (pre-EIP-155) transaction, valid on every chain, is refused before anything is journaled.
- Mining counts and time jumps are capped per call and per minute (``limits``, charged under the lease).
- Every write carries its journal seq to the host's front, which applies writes in seq order only.
- Forwards go only to a host URL that passes ``hosturl.check_url`` (https, public addresses, re-checked at
  every new connection), never follow a redirect, and read at most ``MAX_ANSWER_BYTES`` of an answer
  (``MAX_RESPONSE_BYTES`` for a whole batch), so a host cannot make the proxy exceed Lambda's response limit.

The link itself is TLS outside the local stack (docs/security.md, "The proxy-to-host link"): an https host is
reached only if it presents the certificate whose SHA-256 it registered (``Agent.fork_tls_sha256`` of the
fork's host), checked before the request, its body or the bearer host secret are written. A host without a pin,
or plain http outside the local stack, gets nothing.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from depu import jsonbody
from depu.forks import chainids, hosturl, journal, limits, outcomes, policy, tokens
from depu.forks.models import PROVISIONING, REQUESTED, SERVING, Fork
from depu.ratelimit import KeyedBuckets

log = logging.getLogger(__name__)

FORWARD_TIMEOUT_S = 30.0
FORK_CACHE_SECONDS = 1.0
RECEIPT_WAIT_S = 5.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # one forwarded answer
MAX_RESPONSE_BYTES = 5 * 1024 * 1024  # one HTTP response (a batch), under Lambda's 6 MB response limit
HOST_URL_CHECK_SECONDS = 30.0  # a host URL's pre-check is cached; every new connection is checked regardless
WRITE_SEQ_HEADER = "X-DePU-Write-Seq"
MAX_SESSIONS = 64  # pinned sessions (one per host certificate) one proxy container keeps


class HostTlsRefused(ValueError):
    """The link to the fork's host would not be the pinned TLS one: nothing is sent."""


class AnswerTooLarge(Exception):
    """The host's answer is over the cap: the user gets a clear error, the proxy never holds more."""


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
    def __init__(self, bucket: KeyedBuckets | None = None, cache_seconds: float | None = None):
        self.bucket = bucket or policy.fork_buckets()
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
            return RpcReply(200, self._batch(fork, payload))
        if not self.bucket.take(fork.fork_id):
            return RpcReply(429, error(None, policy.LIMIT_EXCEEDED, "rate limit exceeded for this fork"))
        return RpcReply(200, self.call(fork, payload))

    def _batch(self, fork: Fork, requests_: list[Any]) -> list[dict[str, Any]]:
        """Answer a batch within MAX_RESPONSE_BYTES in all: each forward may read only what is left."""
        answers, left = [], MAX_RESPONSE_BYTES
        for request in requests_:
            self._local.cap = max(0, min(MAX_ANSWER_BYTES, left - 1024))
            try:
                answer = self.call(fork, request)
            finally:
                self._local.cap = None
            left -= len(json.dumps(answer, separators=(",", ":")))
            answers.append(answer)
        return answers

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
            if method == "eth_sendRawTransaction":
                refused_tx = self._wrong_chain(fork, params)
                if refused_tx:
                    return error(request_id, policy.WRONG_CHAIN, refused_tx)
            if method == policy.REVERT:
                return self._revert(fork, request_id, params)
            canonical = policy.canonical_write(method)
            if canonical:
                return self._write(fork, request_id, canonical, params)
            return self._forward(fork, method, params, request_id)
        except journal.WriteRefused as refused:
            if refused.detail:  # the per-minute budget, or a write overtaken by a sync or rebuild
                return error(request_id, policy.LIMIT_EXCEEDED, f"write refused: {refused.detail}")
            reason = "another write to this fork is in progress" if refused.reason == "busy" else f"the fork is {refused.reason}"
            return error(request_id, policy.LIMIT_EXCEEDED, f"write not accepted now: {reason}; retry shortly")
        except limits.LimitRefused as refused:
            return error(request_id, policy.INVALID_PARAMS if refused.invalid else policy.LIMIT_EXCEEDED, f"write refused: {refused}")
        except AnswerTooLarge as too_large:
            return error(request_id, policy.LIMIT_EXCEEDED, str(too_large))
        except HostTlsRefused as refused:
            log.warning("fork %s host link refused: %s", fork.fork_id, refused)
            return error(request_id, policy.FORK_UNAVAILABLE, f"the fork's host cannot be reached safely: {refused}")
        except requests.exceptions.SSLError:
            log.warning("fork %s host failed the TLS pin check", fork.fork_id)
            return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host did not present the TLS certificate it "
                         "registered with DePU; nothing was sent to it")
        except hosturl.HostUrlRefused as refused:
            log.warning("fork %s host URL refused: %s", fork.fork_id, refused)
            return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host address is not allowed (a fork host must be on a public https address)")
        except requests.RequestException:
            log.warning("fork %s host unreachable", fork.fork_id)
            return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host did not answer; retry shortly")

    @staticmethod
    def _wrong_chain(fork: Fork, params: list[Any]) -> str | None:
        """Why this raw transaction may not go to ``fork``, or None: it must be signed for the fork's chain id,
        so that nothing signed on a fork is valid on mainnet (or on another fork)."""
        try:
            signed_for = chainids.signed_chain_id(params[0] if params else None)
        except chainids.RawTxRefused as refused:
            return str(refused)
        expected = fork.chain_id
        if expected is None:
            return "this fork has no chain id yet; retry shortly"
        if signed_for != int(expected):
            return (f"transaction signed for chain id {signed_for}, but this fork's chain id is {int(expected)}: "
                    f"sign it for chain id {int(expected)} (eth_chainId tells you)")
        return None

    def _write(self, fork: Fork, request_id: Any, method: str, params: list[Any]) -> dict[str, Any]:
        current, seq, lease = journal.begin_write(fork.fork_id)
        snapshots = None
        try:
            cost = limits.cost(method, params, lambda: self._latest_timestamp(current))
            journal.charge(current, lease, cost)
            answer = self._forward(current, method, params, request_id, write_seq=seq)
            if "error" in answer:
                return answer  # the fork did not change: nothing to journal
            value = answer.get("result")
            if method in outcomes.TX_METHODS:
                outcome = outcomes.of_receipt(self._receipt(current, value))
            else:
                outcome = outcomes.of_result(value)
            journal.record(fork.fork_id, seq, method, params, outcome, lease=lease)
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
        current, revert_seq, lease = journal.begin_write(fork.fork_id)
        snapshots = dict(current.host_snapshots or {})
        changed = None
        try:
            host_id = snapshots.get(str(snapshot_seq))
            if host_id is None:
                return result(request_id, False)
            answer = self._forward(current, "evm_revert", [host_id], request_id, write_seq=revert_seq)
            if answer.get("result") is True:
                journal.truncate_from(fork.fork_id, snapshot_seq)
                changed = {key: value for key, value in snapshots.items() if int(key) < snapshot_seq}
            return answer
        finally:
            journal.end_write(fork.fork_id, lease, changed)

    def _latest_timestamp(self, fork: Fork) -> int:
        block = self._forward(fork, "eth_getBlockByNumber", ["latest", False], 0).get("result") or {}
        try:
            return int(block["timestamp"], 16)
        except (KeyError, TypeError, ValueError):
            raise requests.ConnectionError("the host gave no latest block") from None

    def _receipt(self, fork: Fork, tx_hash: Any) -> dict[str, Any] | None:
        """The transaction's receipt: anvil answers the hash before its automine block is sealed."""
        deadline = time.monotonic() + RECEIPT_WAIT_S
        while True:
            receipt = self._forward(fork, "eth_getTransactionReceipt", [tx_hash], 0).get("result")
            if receipt or time.monotonic() > deadline:
                return receipt
            time.sleep(0.02)

    def _forward(self, fork: Fork, method: str, params: list[Any], request_id: Any,
                 write_seq: int | None = None) -> dict[str, Any]:
        url = fork.host_rpc_url
        if not url:
            raise requests.ConnectionError("no host")
        self._check_host(url)
        pin = self._pin(fork, url)
        sessions = getattr(self._local, "sessions", None)
        if sessions is None or len(sessions) > MAX_SESSIONS:
            sessions = self._local.sessions = {}
        session = sessions.get(pin)
        if session is None:
            session = sessions[pin] = hosturl.guarded_session(pin)
        secret = (fork.host_secrets or {}).get(url)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        if write_seq is not None:
            headers[WRITE_SEQ_HEADER] = str(write_seq)
        cap = getattr(self._local, "cap", None)
        cap = MAX_ANSWER_BYTES if cap is None else cap
        response = session.post(
            url, json={"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, headers=headers,
            timeout=FORWARD_TIMEOUT_S, allow_redirects=False, stream=True,
        )
        try:
            if response.status_code == 401:
                log.warning("fork %s host refused the proxy's secret", fork.fork_id)
                return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host did not accept the DePU proxy; retry shortly")
            if 300 <= response.status_code < 400:
                log.warning("fork %s host answered a redirect (%s): not followed", fork.fork_id, response.status_code)
                return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host answered with a redirect, which DePU never follows")
            body = _read_capped(response, cap)
        finally:
            response.close()
        try:
            answer = jsonbody.loads(body, max_bytes=cap)  # already read within the cap
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return error(request_id, policy.FORK_UNAVAILABLE, "the fork's host answered nonsense")
        answer["id"] = request_id
        return answer

    def _pin(self, fork: Fork, url: str) -> str | None:
        """The certificate fingerprint an https ``url`` must present: the one its host registered. None for
        plain http, which only the local stack allows (``check_url`` refuses it elsewhere; refused here too)."""
        if urlsplit(url).scheme != "https":
            if not hosturl.local_stage():
                raise HostTlsRefused("a fork host is reached over https only")
            return None
        agent_id = fork.host_agent_id or fork.assigned_host
        if not agent_id:
            raise HostTlsRefused("the fork has no host whose TLS certificate DePU knows")
        pins = getattr(self._local, "pins", None)
        if pins is None or len(pins) > MAX_SESSIONS:
            pins = self._local.pins = {}
        now = time.monotonic()
        cached = pins.get(agent_id)
        if cached and cached[0] > now:
            return cached[1]
        from depu.agents.registry import get_agent

        agent = get_agent(agent_id)
        pin = agent.fork_tls_sha256 if agent else None
        if not pin:
            raise HostTlsRefused("its host registered no TLS certificate fingerprint (fork_tls_sha256)")
        pins[agent_id] = (now + HOST_URL_CHECK_SECONDS, pin)
        return pin

    def _check_host(self, url: str) -> None:
        """The host URL passes ``hosturl.check_url`` (cached briefly; the session re-checks every connection)."""
        checked = getattr(self._local, "checked", None)
        if checked is None:
            checked = self._local.checked = {}
        now = time.monotonic()
        if checked.get(url, -1e9) > now:
            return
        hosturl.check_url(url, require_port=False)
        checked[url] = now + HOST_URL_CHECK_SECONDS


def _read_capped(response: requests.Response, cap: int) -> bytes:
    """The response body, or AnswerTooLarge once it passes ``cap`` bytes (never reading much more)."""
    too_large = AnswerTooLarge(
        f"the fork's answer is over {cap} bytes, more than DePU forwards; ask for less "
        "(e.g. a narrower block range for eth_getLogs, or fewer requests in a batch)"
    )
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise too_large
    chunks, total = [], 0
    for chunk in response.iter_content(64 * 1024):
        total += len(chunk)
        if total > cap:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


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
