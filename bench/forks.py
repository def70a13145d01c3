"""Shadow forks: creation time (command to first RPC answer), sync lag in blocks, and eth_call throughput
through DePU's authenticated proxy as a ratio to the same anvil fork called directly. One run, one table.

Everything runs on 127.0.0.1: moto executing the real state machines, the template's agent API and fork RPC
handlers behind a small HTTP front, one fork host (agent/depu_agent/forkhost.py) and a local "mainnet"
(local.devchain) that keeps producing blocks with transfer activity while we measure.
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import json
import os
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "layers" / "depu", ROOT / "agent"):
    sys.path.insert(0, str(extra))
for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}.items():
    os.environ.setdefault(name, value)

import logging  # noqa: E402

import requests  # noqa: E402

logging.disable(logging.WARNING)

CREATIONS = 3
SYNCS = 3
CALLS = 300
USER = 1


def front(endpoint: str) -> tuple[ThreadingHTTPServer, str]:
    from local.runtime import LocalRuntime
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), endpoint)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle + delayed ACK stall each answer ~40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, payload = runtime.handle_http("POST", self.path, list(self.headers.items()), body, "127.0.0.1")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def rpc(session: requests.Session, url: str, method: str, params: list) -> dict:
    return session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30).json()


def main() -> None:
    from local.devchain import DevChain
    from local.moto_server import MotoServer
    from local.provision import provision
    from local.template import LocalTemplate

    moto = MotoServer().start()
    os.environ["AWS_ENDPOINT_URL"] = moto.endpoint
    os.environ.update(LocalTemplate().environment(moto.endpoint))
    provision(LocalTemplate(), moto.endpoint, bot_token="bench", webhook_secret="bench")
    chain = DevChain().start()
    chain.deploy_defaults()
    chain.activity(rounds=2)
    server, api_url = front(moto.endpoint)
    os.environ["PUBLIC_API_URL"] = api_url
    os.environ["CHAIN_RPC_URL"] = chain.rpc_url
    from depu.config import get_settings

    get_settings.cache_clear()
    from depu.agents import registry, tokens as agent_tokens
    from depu.forks import service
    from depu.forks.models import Fork
    from depu_agent.api import ApiClient
    from depu_agent.forkhost import ForkHost

    registration = registry.register(agent_tokens.issue_enrolment_token(99), name="bench-host", gpus=[],
                                     capabilities=["fork_host"], benchmark={}, version="bench", fork_rpc_base_url="http://127.0.0.1")
    host = ForkHost(ApiClient(api_url, registration.agent_token), SimpleNamespace(
        fork_upstream_url=chain.rpc_url, fork_rpc_base_url="http://127.0.0.1", claim_wait_seconds=1))
    stop = threading.Event()
    threading.Thread(target=host.run, args=(stop,), daemon=True).start()
    session = requests.Session()
    rows: list[tuple[str, str, str]] = []
    try:
        # 1. creation: from create_fork (what the bot calls) to the first answer through the RPC URL
        created_s, kept = [], None
        for index in range(CREATIONS):
            started = time.perf_counter()
            created = service.create_fork(USER, USER, "latest")
            while "result" not in rpc(session, created.rpc_url, "eth_blockNumber", []):
                time.sleep(0.02)
            created_s.append(time.perf_counter() - started)
            if index < CREATIONS - 1:
                service.delete_fork(USER, created.fork.fork_id)
            else:
                kept = created
        assert kept is not None
        rows.append(("fork creation, command to first RPC answer (median of %d)" % CREATIONS,
                     f"{statistics.median(created_s):.2f} s", f"min {min(created_s):.2f} s, max {max(created_s):.2f} s"))

        # 2. sync lag: mainnet keeps mining (a block every 0.5 s) while the fork rebases onto its head
        mining = threading.Event()

        def produce() -> None:
            while not mining.is_set():
                chain.mine(1)
                mining.wait(0.5)

        threading.Thread(target=produce, daemon=True).start()
        lags, durations = [], []
        fork_id = kept.fork.fork_id
        for _ in range(SYNCS):
            before = Fork.get(fork_id).base_block
            started = time.perf_counter()
            service.sync_now(USER, fork_id)
            while True:
                fork = Fork.get(fork_id, consistent_read=True)
                if fork.status == "active" and fork.base_block != before:
                    break
                time.sleep(0.05)
            durations.append(time.perf_counter() - started)
            lags.append(chain.block_number() - int(fork.base_block))
            time.sleep(1.0)
        mining.set()
        rows.append((f"sync: mainnet blocks behind when the sync lands (median of {SYNCS}, 2 blocks/s)",
                     f"{statistics.median(lags):.0f} blocks", f"sync took median {statistics.median(durations):.2f} s"))

        # 3. eth_call throughput: through the proxy vs the same anvil directly
        fork = Fork.get(fork_id)
        token = chain.tokens["DUSD"].address
        call = [{"to": token, "data": "0x70a08231" + "00" * 12 + chain.accounts[0][2:].lower()}, "latest"]
        results = {}
        host_session = requests.Session()  # the host's front admits only the fork's host secret, as the proxy presents it
        host_session.headers["Authorization"] = f"Bearer {fork.host_secrets[fork.host_rpc_url]}"
        for label, url, client in (("direct", fork.host_rpc_url, host_session), ("proxy", kept.rpc_url, session)):
            answer = rpc(client, url, "eth_call", call)
            assert "result" in answer, answer
            started = time.perf_counter()
            for _ in range(CALLS):
                rpc(client, url, "eth_call", call)
            results[label] = CALLS / (time.perf_counter() - started)
        from depu.forks.proxy import ForkProxy

        core, payload = ForkProxy(), json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": call}).encode()
        token_part = kept.rpc_url.rsplit("/", 1)[1]
        started = time.perf_counter()
        for _ in range(CALLS):
            assert core.handle(token_part, payload).status == 200
        results["core"] = CALLS / (time.perf_counter() - started)
        rows.append(("eth_call/s, the fork host directly (its front, then anvil)", f"{results['direct']:.0f}", f"{CALLS} sequential calls"))
        rows.append(("eth_call/s, through the RPC URL (local HTTP front + fork_rpc handler)", f"{results['proxy']:.0f}",
                     "token check, allow-list, rate limit, forward"))
        rows.append(("proxy / direct throughput, through the RPC URL", f"{results['proxy'] / results['direct']:.2f}", "1.00 = no overhead"))
        rows.append(("proxy / direct throughput, proxy core in-process", f"{results['core'] / results['direct']:.2f}",
                     "depu.forks.proxy without HTTP/Lambda plumbing"))
        service.delete_fork(USER, fork_id)
    finally:
        stop.set()
        time.sleep(1.5)
        host.shutdown()
        server.shutdown()
        chain.stop()
        moto.stop()
    print("| measure | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nLocal run: moto (state machines executed), handlers in-process behind a local HTTP front; "
          "in AWS the proxy adds API Gateway and Lambda latency instead.")
    headline("shadow fork creation, command to first RPC answer (median)", f"{statistics.median(created_s):.2f} s",
             "Step Functions + host provisioning; no reference tool creates forks this way", "-")
    headline("fork sync lag when a sync lands (mainnet at 2 blocks/s)", f"{statistics.median(lags):.0f} blocks",
             "Tenderly Mirror Mode (published, paid)", "within ~12 s of each block")
    headline("eth_call throughput through the fork RPC URL", f"{results['proxy']:.0f} calls/s", "anvil directly (host front)",
             f"{results['direct']:.0f} calls/s", f"ratio {results['proxy'] / results['direct']:.2f} "
             f"(proxy core in-process {results['core'] / results['direct']:.2f})")
    print(json.dumps({"forks_bench": {"creation_s": created_s, "sync_lag_blocks": lags, "calls_per_s": results}}))


if __name__ == "__main__":
    main()
