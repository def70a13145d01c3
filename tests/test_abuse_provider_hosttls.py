"""Attacks on the proxy-to-host link (issue 12 item 6): outside the local stack it is TLS, and the proxy accepts
exactly the certificate the host registered (``fork_tls_sha256``). Real pieces throughout: a fork host's
certificate made by ``forktls`` with the openssl command line, a real ``ForkFront`` serving https on 127.0.0.1
before a real anvil, the real proxy forward, moto for the agent and fork items.

- a man in the middle with another certificate gets nothing: the proxy drops the connection after the
  handshake, before a byte of the request (its body, the bearer host secret) is written;
- a host with no pinned certificate gets no connection at all;
- plain http is refused outside the local stack;
- the base-block check after a build goes through the same pinned link.
"""
from __future__ import annotations

import socket
import ssl
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from depu.agents import registry, tokens as agent_tokens
from depu.agents.registry import Agent
from depu.forks import chainids, hosts, policy, proxy, tokens
from depu.forks.models import ACTIVE, Fork, utcnow_iso
from depu_agent import forkfront, forktls
from depu_agent.forkhost import ForkHost
from forks_support import Anvil, wait_for

pytestmark = pytest.mark.e2e
FORK_ID = "f0tls0001"
HOST_ID = "ag_tlshost"
SECRET = "host-secret-of-the-tls-fork"


# ------------------------------------------------------------------------------------------------ pieces
@pytest.fixture
def chain():
    anvil = Anvil()
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture
def tls_front(tmp_path, chain):
    """The host's https front before a real anvil, with the host's own certificate; yields (front, pin)."""
    cert, key = forktls.ensure(tmp_path / "host-work", "127.0.0.1")
    front = forkfront.ForkFront("127.0.0.1", chain.url, SECRET, tls=forktls.server_context(cert, key))
    try:
        yield front, forktls.fingerprint(cert)
    finally:
        front.stop()


class Recorder:
    """A listener that records what a client sends it: over TLS with its own (attacker's) certificate, or
    plain TCP. ``connections`` counts accepted connections, ``handshakes`` completed TLS handshakes."""

    def __init__(self, context: ssl.SSLContext | None):
        self.context = context
        self.received = b""
        self.connections = 0
        self.handshakes = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.settimeout(5)
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                    self.handshakes += 1
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    self.received += chunk
                    if b"\r\n\r\n" in self.received:  # a whole request head: answer, so a client would go on
                        body = b'{"jsonrpc":"2.0","id":1,"result":"0x0"}'
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(body)).encode() + b"\r\n\r\n" + body)
                        break
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def recorders():
    made: list[Recorder] = []

    def start(context: ssl.SSLContext | None) -> Recorder:
        recorder = Recorder(context)
        made.append(recorder)
        return recorder

    yield start
    for recorder in made:
        recorder.stop()


def host_agent(pin: str | None) -> None:
    now = int(time.time())
    Agent(HOST_ID, provider_id=77, gpu_class="cpu", last_seen_at=now, registered_at=now, name="tls host", gpu_count=1,
          capabilities=["fork_host"], fork_rpc_base_url="https://127.0.0.1", fork_tls_sha256=pin).save()


def save_fork(url: str) -> Fork:
    _token, token_hash = tokens.issue(FORK_ID, 41, int(time.time()) + 3600)
    Fork(FORK_ID, user_id=41, chat_id=41, created_at=utcnow_iso(), status=ACTIVE, host_rpc_url=url,
         host_secrets={url: SECRET}, rpc_token_hash=token_hash, expires_at=int(time.time()) + 3600, base_block=0,
         chain_id=chainids.for_fork(FORK_ID), host_agent_id=HOST_ID).save()
    return Fork.get(FORK_ID, consistent_read=True)


def ask(fork: Fork, method: str = "eth_blockNumber") -> dict:
    return proxy.ForkProxy().call(fork, {"jsonrpc": "2.0", "id": 1, "method": method, "params": []})


def attacker_context(tmp_path: Path) -> ssl.SSLContext:
    """A certificate of the attacker's own, for the same address and name as the host's."""
    cert, key = forktls.ensure(tmp_path / "attacker-work", "127.0.0.1")
    return forktls.server_context(cert, key)


# ------------------------------------------------------------------------------------------------ the host's key
def test_the_host_makes_its_certificate_once_keeps_the_key_private_and_registers_its_fingerprint(aws, local_stage, tmp_path):
    work = tmp_path / "work"
    pin = forktls.pin_for_registration(work, "https://127.0.0.1")
    cert, key = forktls.paths(work)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cert.parent.stat().st_mode) == 0o700
    assert "PRIVATE KEY" in key.read_text() and "PRIVATE" not in cert.read_text()
    assert forktls.pin_for_registration(work, "https://127.0.0.1") == pin == forktls.fingerprint(cert)  # kept, not remade
    assert forktls.pin_for_registration(work, "http://127.0.0.1") is None
    context = forktls.server_context(cert, key)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2

    registration = registry.register(agent_tokens.issue_enrolment_token(5), name="host", gpus=[], capabilities=["fork_host"],
                                     benchmark={}, version="t", fork_rpc_base_url="https://127.0.0.1",
                                     fork_tls_sha256=":".join(pin[i:i + 2].upper() for i in range(0, 64, 2)))
    assert Agent.get(registration.agent_id).fork_tls_sha256 == pin
    assert hosts.describe(Agent.get(registration.agent_id))["fork_tls_sha256"] == pin


def test_an_https_host_cannot_register_without_a_well_formed_pin(aws, local_stage):
    for pin, why in ((None, "required"), ("", "required"), ("abc", "64 hex"), ("g" * 64, "64 hex"), (123, "64 hex")):
        with pytest.raises(registry.RegistrationError, match=why):
            registry.register(agent_tokens.issue_enrolment_token(6), name="host", gpus=[], capabilities=["fork_host"],
                              benchmark={}, version="t", fork_rpc_base_url="https://127.0.0.1", fork_tls_sha256=pin)
    assert list(Agent.scan()) == []


def test_the_fork_host_serves_the_certificate_it_registered(aws, local_stage, tmp_path, chain):
    """What the agent registers (daemon.register: forktls.pin_for_registration) is what its ForkHost's fronts
    serve, so the proxy's pin check passes for the genuine host."""
    config = SimpleNamespace(fork_rpc_base_url="https://127.0.0.1", work_dir=str(tmp_path / "agent-work"),
                             fork_upstream_url=chain.url)
    pin = forktls.pin_for_registration(config.work_dir, config.fork_rpc_base_url)
    host = ForkHost(api=None, config=config)
    assert host.tls is not None
    front = forkfront.ForkFront(host.bind_host, chain.url, SECRET, tls=host.tls)
    try:
        host_agent(pin)
        assert ask(save_fork(f"{host.public_base}:{front.port}"))["result"] == chain.rpc("eth_blockNumber")
    finally:
        front.stop()
        host.shutdown()
    assert ForkHost(api=None, config=SimpleNamespace(fork_rpc_base_url="http://127.0.0.1", work_dir=str(tmp_path))).tls is None


# ------------------------------------------------------------------------------------------------ the link
def test_the_proxy_reaches_the_hosts_https_front_with_the_pinned_certificate(aws, local_stage, tls_front, chain):
    front, pin = tls_front
    host_agent(pin)
    fork = save_fork(f"https://127.0.0.1:{front.port}")
    chain.rpc("evm_mine")
    assert ask(fork)["result"] == chain.rpc("eth_blockNumber") == "0x1"
    assert ask(fork, "eth_chainId")["result"] == chain.rpc("eth_chainId")


def test_a_man_in_the_middle_with_another_certificate_gets_neither_the_request_nor_the_host_secret(
        aws, local_stage, tls_front, recorders, tmp_path):
    _front, pin = tls_front
    host_agent(pin)  # the host registered its own certificate...
    mitm = recorders(attacker_context(tmp_path))  # ...and the traffic reaches a machine with another one
    fork = save_fork(f"https://127.0.0.1:{mitm.port}")
    answer = ask(fork)
    assert answer["error"]["code"] == policy.FORK_UNAVAILABLE
    assert "did not present the TLS certificate it registered" in answer["error"]["message"]
    wait_for(lambda: mitm.handshakes >= 1, 5, "the handshake to be counted")  # TLS was spoken: the refusal is the pin's, after the handshake...
    assert mitm.received == b""  # ...and before a byte of the request: no body, no "Authorization: Bearer"


def test_a_wrong_pin_is_refused_even_for_the_genuine_front(aws, local_stage, tls_front, chain):
    """The pin, not a certificate authority, decides: the genuine front under a different pin is refused too."""
    front, pin = tls_front
    host_agent(("0" if pin[0] != "0" else "1") + pin[1:])
    answer = ask(save_fork(f"https://127.0.0.1:{front.port}"))
    assert "did not present the TLS certificate" in answer["error"]["message"]


def test_a_host_without_a_pin_gets_no_connection(aws, local_stage, recorders, tmp_path):
    host_agent(None)
    listener = recorders(attacker_context(tmp_path))
    answer = ask(save_fork(f"https://127.0.0.1:{listener.port}"))
    assert answer["error"]["code"] == policy.FORK_UNAVAILABLE and "fork_tls_sha256" in answer["error"]["message"]
    time.sleep(0.3)
    assert listener.connections == 0


def test_plain_http_is_refused_outside_the_local_stack(aws, production, recorders, monkeypatch):
    listener = recorders(None)
    host_agent(None)
    fork = save_fork(f"http://127.0.0.1:{listener.port}")
    answer = ask(fork)
    assert answer["error"]["code"] == policy.FORK_UNAVAILABLE and "https" in answer["error"]["message"]
    # and should a plain-http URL slip past the URL check, the link itself still refuses it
    monkeypatch.setattr(proxy.ForkProxy, "_check_host", lambda self, url: None)
    answer = ask(fork)
    assert "reached over https only" in answer["error"]["message"]
    time.sleep(0.3)
    assert listener.connections == 0 and listener.received == b""


def test_the_local_stack_keeps_plain_http_on_loopback(aws, local_stage, chain):
    host_agent(None)
    assert ask(save_fork(chain.url))["result"] == chain.rpc("eth_blockNumber")


def test_the_base_block_check_after_a_build_uses_the_pinned_link(aws, local_stage, tls_front, chain, recorders, tmp_path,
                                                                 monkeypatch):
    front, pin = tls_front
    host_agent(pin)
    genesis = chain.rpc("eth_getBlockByNumber", "0x0", False)["hash"]
    monkeypatch.setattr(hosts, "_mainnet_block", lambda number: genesis)  # the chain behind the front is "mainnet"
    monkeypatch.setattr(proxy, "_default", None)  # a fresh proxy: no pin cached from another test's host
    hosts.check_base(f"https://127.0.0.1:{front.port}", SECRET, 0, host_agent_id=HOST_ID)  # genuine: passes
    mitm = recorders(attacker_context(tmp_path))
    with pytest.raises(hosts.Unverifiable):
        hosts.check_base(f"https://127.0.0.1:{mitm.port}", SECRET, 0, host_agent_id=HOST_ID)
    wait_for(lambda: mitm.handshakes >= 1, 5, "the handshake to be counted")
    assert mitm.received == b""
