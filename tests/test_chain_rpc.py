"""The JSON-RPC client against a small local JSON-RPC server on 127.0.0.1 that throttles and fails on purpose:
batches keep their order, 429/5xx are retried a bounded number of times, the token bucket spaces calls."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from depu.chain.rpc import MissingAnswer, RpcClient, RpcError
from depu.ratelimit import BlockingBucket


class FlakyNode(BaseHTTPRequestHandler):
    """Answers ``echo`` with its params; the first ``fail_first`` requests get HTTP ``fail_status``."""

    fail_first = 0
    fail_status = 429
    requests_seen = 0
    calls_seen: list[int] = []
    seen: list[tuple[str, str | None]] = []  # (request target, Authorization header) of each request
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with FlakyNode.lock:
            FlakyNode.requests_seen += 1
            FlakyNode.seen.append((self.path, self.headers.get("Authorization")))
            failing = FlakyNode.requests_seen <= FlakyNode.fail_first
            FlakyNode.calls_seen.append(len(body) if isinstance(body, list) else 1)
        if failing:
            self.send_response(FlakyNode.fail_status)
            self.end_headers()
            return

        def answer(call):
            if call["method"] == "bad":
                return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32000, "message": "execution reverted"}}
            return {"jsonrpc": "2.0", "id": call["id"], "result": call["params"]}

        result = [answer(c) for c in reversed(body)] if isinstance(body, list) else answer(body)  # any order
        payload = json.dumps(result).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def node():
    FlakyNode.fail_first, FlakyNode.fail_status, FlakyNode.requests_seen, FlakyNode.calls_seen = 0, 429, 0, []
    FlakyNode.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyNode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_batches_keep_order_across_concurrent_chunks(node):
    client = RpcClient(node, batch_size=7, workers=3)
    calls = [("echo", [i]) for i in range(50)]
    assert client.batch(calls) == [[i] for i in range(50)]
    assert sorted(FlakyNode.calls_seen) == sorted([7] * 7 + [1])
    assert client.stats.calls == 50 and client.stats.requests == 8


def test_throttling_and_server_errors_are_retried_then_given_up(node):
    FlakyNode.fail_first = 2
    client = RpcClient(node, retries=3)
    assert client.call("echo", "x") == ["x"]
    assert client.stats.retries == 2
    FlakyNode.fail_first, FlakyNode.requests_seen, FlakyNode.fail_status = 100, 0, 503
    with pytest.raises(requests.HTTPError):
        RpcClient(node, retries=2).call("echo", 1)
    assert FlakyNode.requests_seen == 3  # bounded: first try + 2 retries


def test_call_errors_are_raised_or_returned_in_place(node):
    client = RpcClient(node)
    with pytest.raises(RpcError, match="execution reverted"):
        client.batch([("echo", [1]), ("bad", [])])
    results = client.batch([("echo", [1]), ("bad", [])], allow_errors=True)
    assert results[0] == [1] and isinstance(results[1], RpcError)


def test_token_bucket_limits_calls_per_second(node):
    client = RpcClient(node, batch_size=5, workers=1, rate=50.0)  # burst 50, then 50 calls/s
    started = time.monotonic()
    client.batch([("echo", [i]) for i in range(100)])
    assert time.monotonic() - started >= 0.9  # 50 beyond the burst at 50/s
    bucket = BlockingBucket(rate=1000.0, burst=1)
    assert bucket.take() == 0.0 and bucket.take() > 0.0


# ---------------------------------------------------------------- against a real anvil, through a faulty relay
class Relay(BaseHTTPRequestHandler):
    """Forwards every request to a real anvil and, for the first ``faulty`` batch requests, spoils anvil's
    answer the way ``fault`` says: ``drop`` leaves one call unanswered, ``error`` swaps one answer for a
    transient error object, ``foreign`` renumbers one answer to an id nobody asked for. Answers always go
    back reversed, as a node may order them."""

    upstream = ""
    fault = "none"
    faulty = 0
    batches_seen = 0
    requests_seen = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        answer = requests.post(Relay.upstream, data=raw, headers={"Content-Type": "application/json"}, timeout=30).json()
        with Relay.lock:
            Relay.requests_seen += 1
            if isinstance(answer, list):
                Relay.batches_seen += 1
                spoil = Relay.batches_seen <= Relay.faulty
            else:
                spoil = False
        if isinstance(answer, list):
            answer = list(reversed(answer))
            if spoil and Relay.fault == "drop":
                answer = answer[1:]
            elif spoil and Relay.fault == "error":
                answer[0] = {"jsonrpc": "2.0", "id": answer[0]["id"],
                             "error": {"code": -32005, "message": "limit exceeded, try again"}}
            elif spoil and Relay.fault == "foreign":
                answer[0] = dict(answer[0], id=10**9)
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def anvil():
    from local.devchain import DevChain

    with DevChain(accounts=2) as chain:
        chain.mine(40)
        yield chain


@pytest.fixture
def relay(anvil):
    Relay.upstream, Relay.fault, Relay.faulty, Relay.batches_seen, Relay.requests_seen = anvil.rpc_url, "none", 0, 0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def truth(anvil, numbers):
    return [anvil.rpc("eth_getBlockByNumber", hex(n), False) for n in numbers]


@pytest.mark.parametrize("fault", ["drop", "error", "foreign"])
def test_a_spoiled_batch_answer_from_anvil_is_retried_never_read_as_block_not_found(anvil, relay, fault):
    Relay.fault, Relay.faulty = fault, 2
    client = RpcClient(relay, batch_size=8, workers=1)
    numbers = list(range(1, 25))
    assert client.blocks(numbers, full=False) == truth(anvil, numbers)  # every block, in order, none None
    assert client.stats.retries == 2 and Relay.batches_seen == 3 + 2


def test_an_answer_that_stays_missing_is_an_error_not_none(anvil, relay):
    Relay.fault, Relay.faulty = "drop", 100
    client = RpcClient(relay, batch_size=5, retries=2)
    with pytest.raises(MissingAnswer, match="got no answer"):
        client.blocks([1, 2, 3], full=False)
    assert Relay.batches_seen == 3  # first try + 2 retries, bounded


def test_a_block_anvil_does_not_have_is_none_and_an_invalid_call_is_not_retried(anvil, relay):
    client = RpcClient(relay)
    head = anvil.block_number()
    assert client.blocks([head, head + 1000], full=False) == [anvil.block(head), None]
    Relay.requests_seen = 0
    with pytest.raises(RpcError) as raised:
        client.call("eth_noSuchMethod")
    assert raised.value.invalid and Relay.requests_seen == 1 and client.stats.retries == 0
    results = client.batch([("eth_blockNumber", []), ("eth_getBalance", ["not an address", "latest"])], allow_errors=True)
    assert int(results[0], 16) == head and isinstance(results[1], RpcError)


def test_the_environments_proxy_and_netrc_still_apply_though_read_once(node, monkeypatch, tmp_path):
    """The client reads the environment's request settings once per client, not per request: a proxy and
    netrc credentials given there must still be used, on every request of every thread."""
    monkeypatch.setenv("HTTP_PROXY", node)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine node.invalid login reader password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = RpcClient("http://node.invalid:8545/", batch_size=2, workers=3, retries=0)  # resolvable only via the proxy
    assert client.call("echo", 5) == [5]
    assert client.batch([("echo", [i]) for i in range(6)]) == [[i] for i in range(6)]
    assert len(FlakyNode.seen) == 4
    expected = "Basic " + __import__("base64").b64encode(b"reader:s3cret").decode()
    assert all(target == "http://node.invalid:8545/" and auth == expected for target, auth in FlakyNode.seen)
