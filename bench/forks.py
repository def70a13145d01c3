"""Shadow forks: creation time (command to first RPC answer), sync lag in blocks, follow-mode lag (blocks
behind mainnet sampled every second, at 2 s and 12 s blocks, journals of 0, 10 and 100 entries, beside the
state-machine rebase loop as the reference), and eth_call throughput through DePU's authenticated proxy as a
ratio to the same anvil fork called directly. One run, one table.

    python bench/forks.py                 # every section, FOLLOW_SECONDS of sampling per follow configuration
    python bench/forks.py --short         # 20 s per follow configuration (a quick check, a few minutes in all)
    python bench/forks.py --follow-only --seconds 180

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
FOLLOW_SECONDS = 100
BLOCK_TIMES = (2.0, 12.0)
JOURNALS = (0, 10, 100)
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil's public test key 0


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


class _Done(Exception):
    """--follow-only: the other sections are skipped."""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))] if ordered else float("nan")


def fill_journal(session: requests.Session, url: str, chain_id: int, entries: int) -> None:
    """``entries`` writes through the RPC URL, as a developer makes them: balances, storage, signed transfers."""
    from eth_account import Account

    account = Account.create()
    rpc(session, url, "anvil_setBalance", [account.address, hex(10**20)])
    nonce = 0
    for index in range(entries - 1):
        if index % 3 == 0:
            tx = {"to": "0x000000000000000000000000000000000000dEaD", "value": 1, "nonce": nonce, "gas": 21000,
                  "chainId": chain_id, "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 1}
            answer = rpc(session, url, "eth_sendRawTransaction", ["0x" + account.sign_transaction(tx).raw_transaction.hex()])
            nonce += 1
        elif index % 3 == 1:
            answer = rpc(session, url, "anvil_setStorageAt", ["0x" + "0c" * 20, hex(index), "0x" + "00" * 31 + "01"])
        else:
            answer = rpc(session, url, "anvil_setBalance", ["0x" + f"{index:040x}", hex(index)])
        assert "result" in answer, answer


def follow_lag(chain, service, session: requests.Session, seconds: float, user_base: int) -> list[dict]:
    """Blocks behind mainnet, sampled every second, for each block time and journal size; then the reference:
    the state-machine rebase loop ('sync now' back to back) at 2 s blocks with a 10-entry journal."""
    from depu.errors import UserError
    from depu.forks.models import Fork

    results = []
    configs = [(block_time, entries, "follow") for block_time in BLOCK_TIMES for entries in JOURNALS]
    configs.append((BLOCK_TIMES[0], 10, "state-machine loop"))
    for number, (block_time, entries, mode) in enumerate(configs):
        user = user_base + number
        created = service.create_fork(user, user, "latest")
        fork_id = created.fork.fork_id
        while Fork.get(fork_id, consistent_read=True).status != "active":
            time.sleep(0.1)
        fork = Fork.get(fork_id)
        if mode != "follow":
            service.set_follow(user, fork_id, False)
        fill_journal(session, created.rpc_url, int(fork.chain_id), entries)
        producing = threading.Event()

        def produce() -> None:
            while not producing.wait(block_time):  # one block per interval, with a transfer in it (automine)
                chain.w3.eth.send_transaction({"from": chain.accounts[1], "to": chain.accounts[2], "value": 1})

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        behind, steps_ms, calls = [], [], []
        deadline = time.monotonic() + seconds
        syncing = None
        while time.monotonic() < deadline:
            tick = time.monotonic()
            if mode == "follow":
                status = rpc(session, created.rpc_url, "depu_followStatus", []).get("result") or {}
                base = status.get("base_block")
                if status.get("last_step_ms") is not None:
                    steps_ms.append(status["last_step_ms"])
                if status.get("upstream_calls_last_step") is not None:
                    calls.append(status["upstream_calls_last_step"])
            else:
                current = Fork.get(fork_id, consistent_read=True)
                base = current.base_block
                if current.status == "active" and (syncing is None or time.monotonic() - syncing > 0.5):
                    try:
                        service.sync_now(user, fork_id)
                        syncing = time.monotonic()
                    except UserError:  # the last sync had not finished after all
                        pass
            if base is not None:
                behind.append(max(0, chain.block_number() - int(base)))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        producing.set()
        producer.join(timeout=block_time + 5)
        service.delete_fork(user, fork_id)
        results.append({"mode": mode, "block_time_s": block_time, "journal": entries, "samples": len(behind),
                        "p50": percentile(behind, 0.5), "p95": percentile(behind, 0.95), "max": max(behind, default=0),
                        "step_ms_p50": percentile(steps_ms, 0.5) if steps_ms else None,
                        "upstream_calls_p50": percentile(calls, 0.5) if calls else None})
        print("| " + " | ".join(follow_rows(results[-1:])[0]) + " |", file=sys.stderr, flush=True)  # progress
    return results


def follow_rows(results: list[dict]) -> list[tuple[str, str, str]]:
    rows = []
    for item in results:
        label = (f"{item['mode']}: blocks behind at {item['block_time_s']:g} s blocks, journal {item['journal']} "
                 f"({item['samples']} samples, 1/s)")
        note = f"p95 {item['p95']:.0f}, max {item['max']:.0f}"
        if item["step_ms_p50"] is not None:
            note += f"; step p50 {item['step_ms_p50']:.0f} ms"
        if item["upstream_calls_p50"] is not None:
            note += f", upstream calls per synced block p50 {item['upstream_calls_p50']:.0f}"
        rows.append((label, f"p50 {item['p50']:.0f}", note))
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="20 s of sampling per follow configuration")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of sampling per follow configuration")
    parser.add_argument("--follow-only", action="store_true", help="only the follow-mode lag section")
    args = parser.parse_args()
    follow_seconds = args.seconds or (20.0 if args.short else FOLLOW_SECONDS)
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
    from depu.forks import hosts

    hosts.approve(registration.agent_id)  # an operator approves every fork host
    host = ForkHost(ApiClient(api_url, registration.agent_token), SimpleNamespace(
        fork_upstream_url=chain.rpc_url, fork_rpc_base_url="http://127.0.0.1", claim_wait_seconds=1))
    stop = threading.Event()
    threading.Thread(target=host.run, args=(stop,), daemon=True).start()
    session = requests.Session()
    rows: list[tuple[str, str, str]] = []
    lagging: list[dict] = []
    created_s, lags, results = [], [], {}
    try:
        lagging = follow_lag(chain, service, session, follow_seconds, user_base=1000)
        rows.extend(follow_rows(lagging))
        if args.follow_only:
            raise _Done()
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
    except _Done:
        pass
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
    followed = [item for item in lagging if item["mode"] == "follow"]
    if followed:
        worst = max(followed, key=lambda item: (item["p95"], item["p50"]))
        reference = [item for item in lagging if item["mode"] != "follow"]
        headline("follow mode: blocks behind mainnet, worst configuration (p50 / p95)", f"{worst['p50']:.0f} / {worst['p95']:.0f}",
                 "state-machine rebase loop, 2 s blocks, journal 10 (p50 / p95)",
                 f"{reference[0]['p50']:.0f} / {reference[0]['p95']:.0f}" if reference else "-",
                 f"worst: {worst['block_time_s']:g} s blocks, journal {worst['journal']}; goal p50 <= 1, p95 <= 2")
    print(json.dumps({"forks_follow": lagging}))
    if args.follow_only:
        return
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
