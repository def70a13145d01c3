"""The authenticated front a fork host puts before each anvil.

anvil has no authentication and serves admin methods (``anvil_setBalance``, ``anvil_impersonateAccount``...)
to whoever reaches it, so it listens on 127.0.0.1 only. What the host advertises (``fork_rpc_base_url``) is
this front: it forwards a JSON-RPC body to its one anvil only when the request carries that fork's host
secret (``Authorization: Bearer <secret>``), which the API hands the host inside the provision or rebase
task and the DePU proxy presents on every forward. Anything else gets 401 and never reaches anvil, so the
proxy's allow-list, rate limit and journal cannot be bypassed by calling the host directly.

The secret lives only in this object's memory; it is never logged, written to disk or put on a command line.
"""
from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

MAX_BODY_BYTES = 512 * 1024  # the proxy forwards one request of a body it already capped at 128 KiB
MAX_DRAIN_BYTES = 8 * 1024 * 1024  # an oversized body is read and dropped up to this, then the connection closes
FORWARD_TIMEOUT_S = 60.0
IDLE_CONNECTION_S = 60.0
UNAUTHORIZED = -32001
INVALID_REQUEST = -32600
FORK_UNAVAILABLE = -32003


def _error(code: int, message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()


class ForkFront:
    """A ThreadingHTTPServer on ``bind_host`` (port chosen by the kernel) that forwards to ``anvil_url``."""

    def __init__(self, bind_host: str, anvil_url: str, secret: str):
        if not secret:
            raise ValueError("a fork front needs its host secret")
        self.anvil_url = anvil_url
        self._secret = secret.encode()
        self._local = threading.local()
        self._stopped = threading.Event()
        self.server = ThreadingHTTPServer((bind_host, 0), self._handler_class())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"fork-front-{self.port}", daemon=True)
        self._thread.start()

    def authorized(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        offered = value.strip().encode("utf-8", "surrogateescape")
        # compare even when the scheme is wrong, so the answer's timing says nothing about the secret
        matches = hmac.compare_digest(offered, self._secret)
        return scheme.lower() == "bearer" and matches

    def forward(self, body: bytes) -> tuple[int, bytes]:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            answer = session.post(self.anvil_url, data=body, headers={"Content-Type": "application/json"}, timeout=FORWARD_TIMEOUT_S)
        except requests.RequestException:
            return 502, _error(FORK_UNAVAILABLE, "the fork's anvil did not answer")
        return answer.status_code, answer.content

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
                    self._answer(*front.forward(body))

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
