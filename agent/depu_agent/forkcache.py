"""The fork host's RPC cache: every anvil it runs reads mainnet through this, on 127.0.0.1.

Following mainnet moves each fork onto every new head, and a fork at a new block reads the accounts and storage
it touches from the upstream again. What a request at an explicit block number (or hash) answers never
changes, so it is kept (a bounded LRU) and shared by every fork on this host: forks following the same head,
a rebuild at the same block, and the replay of the same journal all read it once. Requests at a moving tag
(``latest``, ``pending``) pass through.

When a fork moves from block B to block H, what its anvil read at B it will mostly read again at H (the
accounts and storage its journal touches, the block itself). ``prefetch(B, H)`` asks the upstream for all of
it at H in a few JSON-RPC batches before the step resets and replays, instead of the one-by-one requests anvil
makes: with a remote upstream that is a few round trips per block rather than one per account and slot.

It also counts: ``upstream_calls`` (requests that went out) and ``hits``, which the follow loop turns into
upstream calls per synced block (``depu_followStatus``).

The upstream URL usually carries the provider's API key: it stays in this object's memory. anvil gets
``http://127.0.0.1:<port>/<random path>``, handed over by ``anvil_reset`` (never on a command line), and the
cache answers only that path, so another local user who finds the port cannot spend the provider's key.
"""
from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

log = logging.getLogger(__name__)
MAX_ENTRIES = 200_000
MAX_ENTRY_BYTES = 256 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
UPSTREAM_TIMEOUT_S = 30.0
# methods whose answer at an explicit block is fixed: (index of the block parameter, or None = always fixed)
BLOCK_PARAM = {
    "eth_getBalance": 1, "eth_getCode": 1, "eth_getTransactionCount": 1, "eth_getStorageAt": 2, "eth_getProof": 2,
    "eth_getAccount": 1, "eth_getAccountInfo": 1, "eth_call": 1,
    "eth_getBlockByNumber": 0, "eth_getBlockByHash": None, "eth_getBlockReceipts": 0,
    "eth_getTransactionByHash": None, "eth_getTransactionReceipt": None, "eth_chainId": None, "net_version": None,
}
MOVING_TAGS = frozenset({"latest", "pending", "safe", "finalized"})
PREFETCH_BATCH = 100
PREFETCH_MAX = 2_000  # reads remembered per block for prefetching
BLOCKS_REMEMBERED = 8


def cacheable(method: str, params: list[Any]) -> bool:
    """Whether ``method(params)`` answers the same forever (an explicit block, a hash)."""
    if method not in BLOCK_PARAM:
        return False
    index = BLOCK_PARAM[method]
    if index is None:
        return True
    block = params[index] if len(params) > index else "latest"
    if isinstance(block, dict):  # EIP-1898 {"blockHash": ...} or {"blockNumber": ...}
        block = block.get("blockHash") or block.get("blockNumber") or "latest"
    return isinstance(block, str) and block.lower() not in MOVING_TAGS and block.startswith("0x")


class _Server(ThreadingHTTPServer):
    # anvil opens a dozen connections at once when it forks: with the default backlog of 5 the rest wait for a
    # SYN retransmit (1 s), which made every follow step a second slower
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An anvil that went away mid-answer is no traceback on stderr."""
        log.debug("fork RPC cache connection failed", exc_info=True)


class UpstreamCache:
    def __init__(self, upstream: str, max_entries: int = MAX_ENTRIES):
        self._upstream = upstream
        self.max_entries = max_entries
        self._path = "/" + secrets.token_urlsafe(18)
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()
        self.upstream_calls = 0
        self.upstream_requests = 0  # HTTP round trips (a batch is one)
        self.hits = 0
        self._by_block: OrderedDict[str, dict[str, tuple[str, list[Any], int]]] = OrderedDict()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self._path}"
        threading.Thread(target=self.server.serve_forever, name="fork-rpc-cache", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ answering
    def answer(self, body: Any) -> Any:
        if isinstance(body, list):
            answers: list[Any] = [None] * len(body)
            missing = []
            for index, request in enumerate(body):
                found = self._cached(request)
                if found is None:
                    missing.append(index)
                else:
                    answers[index] = found
                    self._remember(request)
            if missing:
                fetched = self._upstream_call([body[i] for i in missing])
                by_id = {json.dumps(a.get("id")): a for a in fetched} if isinstance(fetched, list) else {}
                for index in missing:
                    reply = by_id.get(json.dumps(body[index].get("id"))) if isinstance(body[index], dict) else None
                    answers[index] = reply or {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": "no answer"}}
                    self._keep(body[index], answers[index])
            return answers
        found = self._cached(body)
        if found is not None:
            self._remember(body)
            return found
        reply = self._upstream_call(body)
        self._keep(body, reply)
        return reply

    @staticmethod
    def _key(request: Any) -> str | None:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return None
        params = request.get("params") or []
        if not isinstance(params, list) or not cacheable(request["method"], params):
            return None
        return json.dumps([request["method"], params], sort_keys=True, separators=(",", ":"))

    def _cached(self, request: Any) -> dict[str, Any] | None:
        key = self._key(request)
        if key is None:
            return None
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return {"jsonrpc": "2.0", "id": request.get("id"), "result": value}

    def _keep(self, request: Any, reply: Any, remember: bool = True) -> None:
        """Cache the reply; ``remember``: an anvil read it, so the next block's prefetch asks for it again
        (a prefetched answer is not remembered: only what a fork really reads is fetched ahead)."""
        key = self._key(request)
        if key is None or not isinstance(reply, dict) or "result" not in reply or reply["result"] is None:
            return  # errors and "not found yet" (a receipt still pending) are not kept
        if len(json.dumps(reply["result"])) > MAX_ENTRY_BYTES:
            return
        with self._lock:
            self._entries[key] = reply["result"]
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            index = BLOCK_PARAM.get(request["method"])
            params = request.get("params") or []
            if remember and index is not None and len(params) > index and isinstance(params[index], str):
                reads = self._by_block.setdefault(params[index].lower(), {})
                self._by_block.move_to_end(params[index].lower())
                if len(reads) < PREFETCH_MAX:
                    reads[key] = (request["method"], params, index)
                while len(self._by_block) > BLOCKS_REMEMBERED:
                    self._by_block.popitem(last=False)

    def _remember(self, request: dict[str, Any]) -> None:
        """A cached answer an anvil asked for (a prefetch hit): fetch it ahead at the next block too."""
        index = BLOCK_PARAM.get(request["method"])
        params = request.get("params") or []
        if index is None or len(params) <= index or not isinstance(params[index], str):
            return
        key = self._key(request)
        with self._lock:
            reads = self._by_block.setdefault(params[index].lower(), {})
            self._by_block.move_to_end(params[index].lower())
            if key and len(reads) < PREFETCH_MAX:
                reads[key] = (request["method"], params, index)
            while len(self._by_block) > BLOCKS_REMEMBERED:
                self._by_block.popitem(last=False)

    def prefetch(self, old_block: int, new_block: int) -> int:
        """Fetch at ``new_block``, in batches, what was read at ``old_block``; returns how many were fetched."""
        with self._lock:
            reads = list((self._by_block.get(hex(old_block)) or {}).values())
        wanted = []
        for method, params, index in reads:
            moved = list(params)
            moved[index] = hex(new_block)
            request = {"jsonrpc": "2.0", "id": len(wanted), "method": method, "params": moved}
            if self._key(request) not in self._entries:
                wanted.append(request)
        for start in range(0, len(wanted), PREFETCH_BATCH):
            chunk = wanted[start:start + PREFETCH_BATCH]
            try:
                answers = self._upstream_call(chunk)
            except (ValueError, requests.RequestException):
                return start
            by_id = {a.get("id"): a for a in answers} if isinstance(answers, list) else {}
            for request in chunk:
                if request["id"] in by_id:
                    self._keep(request, by_id[request["id"]], remember=False)
        return len(wanted)

    def _upstream_call(self, body: Any) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        with self._lock:
            self.upstream_calls += len(body) if isinstance(body, list) else 1
            self.upstream_requests += 1
        return session.post(self._upstream, json=body, timeout=UPSTREAM_TIMEOUT_S).json()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cache = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                if not hmac.compare_digest(self.path.encode(), cache._path.encode()) or not 0 < length <= MAX_BODY_BYTES:
                    self.rfile.read(min(max(length, 0), MAX_BODY_BYTES))
                    self._send(404, b'{"error":"not found"}')
                    return
                try:
                    payload = json.dumps(cache.answer(json.loads(self.rfile.read(length)))).encode()
                    self._send(200, payload)
                except (ValueError, requests.RequestException) as error:
                    log.debug("upstream call failed: %s", error)
                    self._send(502, json.dumps({"jsonrpc": "2.0", "id": None,
                                                "error": {"code": -32603, "message": "the upstream did not answer"}}).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
