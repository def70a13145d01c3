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


def _error(code: int, message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()


class _Server(ThreadingHTTPServer):
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
        if write_seq is None:
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
            return self._forward(body)

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            answer = session.post(self.anvil_url, data=body, headers={"Content-Type": "application/json"},
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
