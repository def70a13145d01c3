"""A local chain with DUSD and a funded treasury (the KMS key's address), for the payout tests."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import requests

from depu import credits
from depu.config import get_settings
from depu.profiles import ensure_profile
from local.devchain import DevChain

DUSD = 10**18  # one DUSD in base units (18 decimals)


@pytest.fixture
def payout_chain(aws, monkeypatch):
    with DevChain(accounts=4) as chain:
        token = chain.deploy_token("DePU Dollar", "DUSD", 18, 10**9 * DUSD)
        monkeypatch.setenv("PAYOUT_TOKEN_ADDRESS", token.address)
        monkeypatch.setenv("PAYOUT_CHAIN_RPC_URL", chain.rpc_url)
        monkeypatch.setenv("PAYOUT_CONFIRMATIONS", "2")
        get_settings.cache_clear()
        chain.token = token
        chain.treasury = treasury_address()
        yield chain
    get_settings.cache_clear()


def treasury_address() -> str:
    from depu.payouts.kms_signer import KmsSigner

    return KmsSigner(get_settings().treasury_key_id, boto3.client("kms")).address


def fund_treasury(chain: DevChain, dusd: int = 1_000_000, eth: int = 10) -> None:
    chain.transfer(chain.token, chain.accounts[0], chain.treasury, dusd * DUSD)
    chain.send_eth(chain.accounts[0], chain.treasury, eth * 10**18)


def provider_with_earnings(provider_id: int, earned: int, payer: int = 91999) -> None:
    """A provider who earned ``earned`` credits renting out a GPU (a settled job at a 100% share)."""
    ensure_profile(provider_id, "Provider")
    ensure_profile(payer, "Renter")
    credits.grant(payer, earned, f"grant#test-{provider_id}", "test credits")
    credits.hold(payer, earned, f"job-{provider_id}")
    credits.settle(payer, f"job-{provider_id}", earned, provider_id=provider_id, job_id=f"job-{provider_id}",
                   provider_share_pct=100)


def transfers_to(chain: DevChain, address: str) -> list[dict]:
    topic = "0x" + "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    logs = chain.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": chain.token.address,
                                     "topics": [topic, None, "0x" + address.lower()[2:].rjust(64, "0")]})
    return logs


class KillingRpcProxy:
    """JSON-RPC in front of anvil that, once it has forwarded an eth_sendRawTransaction and anvil accepted it,
    kills ``victim`` (a process) before the answer goes back: the worker dies after sending, before recording."""

    def __init__(self, upstream: str) -> None:
        self.victim = None
        self.killed = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = requests.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30)
                if json.loads(body).get("method") == "eth_sendRawTransaction" and proxy.victim is not None:
                    proxy.victim.kill()
                    proxy.victim.wait(10)
                    proxy.killed.set()
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
