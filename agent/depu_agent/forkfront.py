"""The authenticated front a fork host puts before each anvil.

anvil has no authentication and serves admin methods (``anvil_setBalance``, ``anvil_impersonateAccount``...)
to whoever reaches it, so it listens on 127.0.0.1 only. What the host advertises (``fork_rpc_base_url``) is
this front: it forwards a JSON-RPC body to its one anvil only when the request carries that fork's host
secret (``Authorization: Bearer <secret>``), which the API hands the host inside the provision or rebase
task and the DePU proxy presents on every forward. Anything else gets 401 and never reaches anvil, so the
proxy's allow-list, rate limit and journal cannot be bypassed by calling the host directly.

The secret lives only in this object's memory; it is never logged, written to disk or put on a command line.

Writes arrive with their journal seq (``X-DePU-Write-Seq``). The front applies them one at a time, in strictly
increasing seq order: a write whose seq is not above the last one applied reached the host after a later write
(its lease ran out while it was in flight) and is refused with 409, so the fork never applies writes in an
order other than the journal's. Answers from anvil are read up to ``MAX_ANSWER_BYTES``; a bigger one is
replaced by a clear JSON-RPC error, so the proxy is never sent more than that.

The front also keeps what a follow step (forkfollow.py) needs to move the fork onto a new mainnet head without
the API: its own copy of the journal it applied (the provision's replay plus every write since, with what each
did), the snapshot ids it handed out and the filters clients created. Both are mapped through the front: a
snapshot id or filter id a client holds keeps working when the anvil behind the front is replaced, because the
front translates it to the id the current anvil gave (``swap``). All of it can be rebuilt from the API's
journal, so nothing a restart needs lives only here. The front answers two DePU methods itself:
``depu_followStatus`` (what following did: base block, steps, upstream calls per block, conflicts) and
``depu_setFollow`` (the API switching follow mode; the proxy never lets a user send it).

Outside the local stack the front serves https (``tls``, from ``forktls.server_context``) with the certificate
whose fingerprint the API pinned at registration; the TLS handshake runs in the connection's own thread, so a
client that stalls it holds up nobody else.
"""
from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

log = logging.getLogger(__name__)
RECEIPT_POLL_S = 0.003  # a replayed transaction's block is sealed within milliseconds
MAX_BODY_BYTES = 512 * 1024  # the proxy forwards one request of a body it already capped at 128 KiB
MAX_DRAIN_BYTES = 8 * 1024 * 1024  # an oversized body is read and dropped up to this, then the connection closes
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # the proxy accepts at most 4 MiB of one answer anyway
FORWARD_TIMEOUT_S = 60.0
WRITE_SEQ_HEADER = "X-DePU-Write-Seq"
IDLE_CONNECTION_S = 60.0
UNAUTHORIZED = -32001
INVALID_REQUEST = -32600
FORK_UNAVAILABLE = -32003
LIMIT_EXCEEDED = -32005


TX_METHODS = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})
NEW_FILTERS = frozenset({"eth_newFilter", "eth_newBlockFilter", "eth_newPendingTransactionFilter"})
FILTER_USES = frozenset({"eth_getFilterChanges", "eth_getFilterLogs", "eth_uninstallFilter"})
MAX_FILTERS = 64  # per fork: anvil keeps each until it is uninstalled or expires
FOLLOW_STATUS, SET_FOLLOW = "depu_followStatus", "depu_setFollow"


def _error(code: int, message: str, request_id: Any = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}).encode()


def _result(request_id: Any, value: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": value}).encode()


def outcome_of(method: str, answer: dict[str, Any], receipt: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a write did, to compare two runs of it (the same facts depu.forks.outcomes compares)."""
    if "error" in answer:
        return {"kind": "error", "message": str((answer.get("error") or {}).get("message", ""))[:200]}
    if method in TX_METHODS:
        if not receipt:
            return {"kind": "tx", "pending": True}
        logs = [[str(log.get("address", "")).lower(), [str(t).lower() for t in log.get("topics", [])], str(log.get("data", "")).lower()]
                for log in receipt.get("logs") or []]
        return {"kind": "tx", "status": int(str(receipt.get("status") or "0x0"), 16), "logs": json.dumps(logs)}
    return {"kind": "call"}


def conflict_of(before: dict[str, Any] | None, after: dict[str, Any]) -> str | None:
    """Why a replayed write no longer does what it did (a short phrase), or None. Gas is not compared: it
    moves with the base block and is no conflict."""
    if not before:
        return None
    if after.get("kind") == "error" and before.get("kind") != "error":
        return f"now fails: {after.get('message', '')}"
    if before.get("kind") == "error" and after.get("kind") != "error":
        return "now succeeds (it failed before)"
    if after.get("kind") == "tx" and before.get("kind") == "tx" and not after.get("pending") and not before.get("pending"):
        if before.get("status") != after.get("status"):
            return "now reverts" if after.get("status") == 0 else "now succeeds (it reverted before)"
        if before.get("logs") != after.get("logs"):
            return "emits different events"
    return None


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _single(body: bytes) -> dict[str, Any] | None:
    """The body as one JSON-RPC request object, or None (a batch, or not JSON: forwarded as it is)."""
    if not body.lstrip().startswith(b"{"):
        return None
    request = _json(body)
    if isinstance(request, dict) and isinstance(request.get("method"), str) and isinstance(request.get("params", []), list):
        return request
    return None


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # concurrent clients (proxy containers, a batch of trace calls) never wait for a SYN retry

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed TLS handshake or a dropped connection is the client's problem, not a traceback on stderr."""
        log.debug("fork front connection from %s failed", client_address, exc_info=True)


class ForkFront:
    """A ThreadingHTTPServer on ``bind_host`` (port chosen by the kernel) that forwards to ``anvil_url``."""

    def __init__(self, bind_host: str, anvil_url: str, secret: str, last_seq: int = -1, tls: ssl.SSLContext | None = None):
        """``last_seq``: the highest journal seq the anvil already holds (replayed), so only later writes pass.
        ``tls``: serve https with this context (plain http without, on the local stack)."""
        if not secret:
            raise ValueError("a fork front needs its host secret")
        self.anvil_url = anvil_url
        self.last_seq = int(last_seq)
        self._write_lock = threading.Lock()
        self.state_lock = threading.Lock()  # guards journal, snapshots, filters (taken briefly, never across I/O)
        self.journal: list[dict[str, Any]] = []  # {"seq", "method", "params", "outcome"}, in seq order
        self.snapshots: dict[str, tuple[int, str]] = {}  # id the client holds -> (journal seq, current anvil id)
        self.filters: dict[str, dict[str, Any]] = {}  # id the client holds -> {"method", "params", "anvil_id"}
        self.revision = 0  # bumped by every change to the journal other than an append (a revert)
        self.follow: dict[str, Any] = {"following": False}
        self.on_set_follow: Any = None  # set by the host: called with True/False
        self._secret = secret.encode()
        self._local = threading.local()
        self._stopped = threading.Event()
        self.server = _Server((bind_host, 0), self._handler_class())
        self.server.daemon_threads = True
        self.tls = tls is not None
        if tls is not None:  # the handshake happens on the first read, in the connection's thread
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"fork-front-{self.port}", daemon=True)
        self._thread.start()

    def authorized(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        offered = value.strip().encode("utf-8", "surrogateescape")
        # compare even when the scheme is wrong, so the answer's timing says nothing about the secret
        matches = hmac.compare_digest(offered, self._secret)
        return scheme.lower() == "bearer" and matches

    def forward(self, body: bytes, write_seq: str | None = None) -> tuple[int, bytes]:
        """Forward one body to anvil; a write (``write_seq`` given) only in seq order, one at a time."""
        request = _single(body)
        if write_seq is None:
            if request is not None and request["method"] in (FOLLOW_STATUS, SET_FOLLOW):
                return 200, self._own(request)
            if request is not None and request["method"] in NEW_FILTERS | FILTER_USES:
                return self._filter(request)
            return self._forward(body)
        try:
            seq = int(write_seq)
        except ValueError:
            return 400, _error(INVALID_REQUEST, "bad write sequence number")
        with self._write_lock:
            if seq <= self.last_seq:
                return 409, _error(
                    LIMIT_EXCEEDED,
                    f"write refused: it reached the fork after a later write (seq {seq} <= {self.last_seq}); nothing was applied, retry it",
                )
            self.last_seq = seq
            if request is None:
                return self._forward(body)
            return self._write(seq, request)

    # ------------------------------------------------------------------ what the front keeps
    def _write(self, seq: int, request: dict[str, Any]) -> tuple[int, bytes]:
        """Apply one write (under the write lock) and keep it in the front's journal with what it did."""
        method, params = request["method"], request.get("params") or []
        if method == "evm_revert":
            return self._revert(seq, request)
        status, payload = self._forward(json.dumps(request).encode())
        answer = _json(payload)
        if status != 200 or not isinstance(answer, dict) or "error" in answer:
            return status, payload  # not applied: the proxy journals nothing either
        receipt = self._receipt(answer.get("result")) if method in TX_METHODS else None
        with self.state_lock:
            self.journal.append({"seq": seq, "method": method, "params": params, "outcome": outcome_of(method, answer, receipt)})
            if method == "evm_snapshot" and isinstance(answer.get("result"), str):
                self.snapshots[answer["result"]] = (seq, answer["result"])
        return status, payload

    def _revert(self, seq: int, request: dict[str, Any]) -> tuple[int, bytes]:
        params = request.get("params") or []
        held = str(params[0]) if params else ""
        with self.state_lock:
            mapped = self.snapshots.get(held)
        if mapped is None:
            return 200, _result(request.get("id"), False)
        status, payload = self._forward(json.dumps({**request, "params": [mapped[1]]}).encode())
        answer = _json(payload)
        if isinstance(answer, dict) and answer.get("result") is True:
            with self.state_lock:
                self.journal = [entry for entry in self.journal if entry["seq"] < mapped[0]]
                self.snapshots = {key: value for key, value in self.snapshots.items() if value[0] < mapped[0]}
                self.revision += 1
        return status, payload

    def _receipt(self, tx_hash: Any, timeout: float = 5.0) -> dict[str, Any] | None:
        """anvil answers a transaction's hash before its automine block is sealed: wait for the receipt."""
        import time

        deadline = time.monotonic() + timeout
        while isinstance(tx_hash, str):
            _status, payload = self._forward(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt",
                                                        "params": [tx_hash]}).encode())
            receipt = (_json(payload) or {}).get("result") if isinstance(_json(payload), dict) else None
            if receipt or time.monotonic() > deadline:
                return receipt
            time.sleep(RECEIPT_POLL_S)
        return None

    def _filter(self, request: dict[str, Any]) -> tuple[int, bytes]:
        """Filters by the id the client holds, translated to the current anvil's (see ``swap``)."""
        method, params = request["method"], list(request.get("params") or [])
        if method in NEW_FILTERS:
            with self.state_lock:
                if len(self.filters) >= MAX_FILTERS:
                    return 200, _error(LIMIT_EXCEEDED, f"this fork holds {MAX_FILTERS} filters already; uninstall some first",
                                       request.get("id"))
            status, payload = self._forward(json.dumps(request).encode())
            answer = _json(payload)
            if isinstance(answer, dict) and isinstance(answer.get("result"), str):
                with self.state_lock:
                    self.filters[answer["result"]] = {"method": method, "params": params, "anvil_id": answer["result"]}
            return status, payload
        held = str(params[0]) if params else ""
        with self.state_lock:
            known = self.filters.get(held)
            if method == "eth_uninstallFilter":
                self.filters.pop(held, None)
        if known is not None:
            params[0] = known["anvil_id"]
        status, payload = self._forward(json.dumps({**request, "params": params}).encode())
        if method == "eth_uninstallFilter" and known is not None:
            return 200, _result(request.get("id"), True)
        return status, payload

    def _own(self, request: dict[str, Any]) -> bytes:
        if request["method"] == SET_FOLLOW:
            params = request.get("params") or []
            enabled = bool(params[0]) if params else True
            if self.on_set_follow is not None:
                self.on_set_follow(enabled)
            self.follow["following"] = enabled
        with self.state_lock:
            status = {**{k: v for k, v in self.follow.items() if not k.startswith("_")},
                      "journal": len(self.journal), "filters": len(self.filters)}
        return _result(request.get("id"), status)

    def entries(self) -> tuple[list[dict[str, Any]], int]:
        """A copy of the front's journal and its revision (for a follow step's replay)."""
        with self.state_lock:
            return [dict(entry) for entry in self.journal], self.revision

    def adopt(self, entries: list[dict[str, Any]], snapshots: dict[str, Any]) -> None:
        """The journal a provision or rebase replayed (with each entry's outcome) and the snapshot ids its
        anvil gave: where the front's own copy starts."""
        with self.state_lock:
            self.journal = [dict(entry) for entry in entries]
            self.snapshots = {str(anvil_id): (int(seq), str(anvil_id)) for seq, anvil_id in snapshots.items()}

    @property
    def write_lock(self) -> threading.Lock:
        return self._write_lock

    def swap(self, anvil_url: str, outcomes: dict[int, dict[str, Any]], snapshot_ids: dict[int, str]) -> None:
        """Serve from another anvil (call with ``write_lock`` held): the replayed journal's new outcomes, the
        ids its anvil gave the journal's snapshots, and every client filter created again there."""
        with self.state_lock:
            for entry in self.journal:
                if entry["seq"] in outcomes:
                    entry["outcome"] = outcomes[entry["seq"]]
            self.snapshots = {held: (seq, snapshot_ids.get(seq, anvil_id)) for held, (seq, anvil_id) in self.snapshots.items()}
            filters = dict(self.filters)
        created = {}
        for held, spec in filters.items():  # on the new anvil first, so no poll finds a filter missing
            params = [{k: v for k, v in p.items() if k not in ("fromBlock", "toBlock")} if isinstance(p, dict) else p
                      for p in spec["params"]]
            _status, payload = self._forward(json.dumps({"jsonrpc": "2.0", "id": 1, "method": spec["method"], "params": params}).encode(),
                                             url=anvil_url)
            answer = _json(payload)
            if isinstance(answer, dict) and isinstance(answer.get("result"), str):
                created[held] = answer["result"]
        with self.state_lock:
            self.anvil_url = anvil_url
            for held, anvil_id in created.items():
                if held in self.filters:
                    self.filters[held]["anvil_id"] = anvil_id

    def _forward(self, body: bytes, url: str | None = None) -> tuple[int, bytes]:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            answer = session.post(url or self.anvil_url, data=body, headers={"Content-Type": "application/json"},
                                  timeout=FORWARD_TIMEOUT_S, stream=True)
        except requests.RequestException:
            return 502, _error(FORK_UNAVAILABLE, "the fork's anvil did not answer")
        try:
            chunks, total = [], 0
            for chunk in answer.iter_content(64 * 1024):
                total += len(chunk)
                if total > MAX_ANSWER_BYTES:
                    return 200, _error(LIMIT_EXCEEDED, f"the fork's answer is over {MAX_ANSWER_BYTES} bytes; ask for less "
                                                       "(e.g. a narrower block range for eth_getLogs)")
                chunks.append(chunk)
            return answer.status_code, b"".join(chunks)
        except requests.RequestException:
            return 502, _error(FORK_UNAVAILABLE, "the fork's anvil did not answer")
        finally:
            answer.close()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        self._stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the proxy keeps its connection open between forwards
            disable_nagle_algorithm = True  # headers and body are two writes: avoid the Nagle + delayed-ACK stall
            timeout = IDLE_CONNECTION_S

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    length = -1
                if length < 0:
                    self._answer(411, _error(INVALID_REQUEST, "a Content-Length is required"), close=True)
                    return
                fits = length <= MAX_BODY_BYTES
                # read (or drain, bounded) the body before answering: a socket closed with unread data resets,
                # and the client could lose the answer
                body = self.rfile.read(length) if fits else self._drain(length)
                if front._stopped.is_set():
                    self._answer(503, _error(FORK_UNAVAILABLE, "this fork is stopped"), close=True)
                elif not front.authorized(self.headers.get("Authorization")):
                    self._answer(401, _error(UNAUTHORIZED, "unauthorized: only the DePU proxy may call this fork"), close=not fits)
                elif not fits:
                    self._answer(413, _error(INVALID_REQUEST, f"request body over {MAX_BODY_BYTES} bytes"), close=True)
                else:
                    self._answer(*front.forward(body, self.headers.get(WRITE_SEQ_HEADER)))

            def _drain(self, length: int) -> bytes:
                left = min(length, MAX_DRAIN_BYTES)
                while left > 0:
                    chunk = self.rfile.read(min(left, 64 * 1024))
                    if not chunk:
                        break
                    left -= len(chunk)
                return b""

            def _answer(self, status: int, payload: bytes, close: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass  # request lines carry nothing useful; headers carry the secret

        return Handler
