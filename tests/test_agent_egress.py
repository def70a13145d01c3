"""The egress proxy's rules without a sandbox (depu_agent.egress): which addresses are public, however they
are written; what a proxy request's head may be; that every address a name resolves to is checked. The same
proxy inside a real job is attacked in test_abuse_provider_egress.py; here, on its own socket, a host list's
CONNECT tunnels are shown to reach a stand-in front only with a ClientHello naming the CONNECT host."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest
from test_agent_tls_hello import built_hello, client_hello, records, server_name

from depu_agent import egress
from depu_agent.egress import EgressPolicy, Refused, address_refusal, parse_head

OPEN = frozenset({80, 443})

# (how it is written, what the refusal must say)
REFUSED = [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("0.0.0.0", "unspecified"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.0.1", "private"),
    ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"), ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"), ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"),
    ("255.255.255.255", "reserved"), ("240.0.0.1", "reserved"), ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"), ("192.0.0.8", "IETF"),
    # non-standard IPv4 spellings a resolver would read as an address
    ("2130706433", "non-standard"), ("0x7f000001", "non-standard"), ("0X7F000001", "non-standard"),
    ("0177.0.0.1", "non-standard"), ("0177.0000.0000.0001", "non-standard"), ("127.1", "non-standard"),
    ("127.0.1", "non-standard"), ("0x7f.0.0.1", "non-standard"), ("0x7f.1", "non-standard"),
    ("017700000001", "non-standard"), ("010.0.0.1", "non-standard"), ("2852039166", "non-standard"),
    ("0xa9fea9fe", "non-standard"), ("127.0.0.1.", "non-standard"), ("1.2.3.4.5", "non-standard"),
    ("0", "non-standard"), ("example.123", "non-standard"),
    # IPv6, bracketed or not, and the forms that carry an IPv4 address
    ("[::1]", "loopback"), ("::1", "loopback"), ("[0:0:0:0:0:0:0:1]", "loopback"), ("[::]", "unspecified"),
    ("[::ffff:127.0.0.1]", "carries 127.0.0.1: loopback"), ("[::ffff:7f00:1]", "carries 127.0.0.1: loopback"),
    ("[::ffff:169.254.169.254]", "carries 169.254.169.254: link-local"),
    ("[::ffff:10.0.0.1]", "carries 10.0.0.1: private"), ("[64:ff9b::127.0.0.1]", "carries 127.0.0.1: loopback"),
    ("[64:ff9b::a9fe:a9fe]", "carries 169.254.169.254: link-local"),
    ("[2002:a9fe:a9fe::1]", "carries 169.254.169.254: link-local"), ("[2002:7f00:1::]", "carries 127.0.0.1"),
    ("[::127.0.0.1]", "IPv4-compatible"), ("[::ffff:0:7f00:1]", "IPv4-translated"),
    ("[64:ff9b:1::1]", "local-use NAT64"), ("[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "Teredo"),
    ("[fd00:ec2::254]", "unique-local"), ("[fc00::1]", "unique-local"), ("[fe80::1]", "link-local"),
    ("[fe80::a9fe:a9fe]", "link-local"), ("[fec0::1]", "site-local"), ("[ff02::1]", "multicast"),
    ("[ff05::1:3]", "multicast"), ("[2001:db8::1]", "documentation"), ("[100::1]", "discard-only"),
    ("[fe80::1%eth0]", "zone index"), ("[fe80::1%25eth0]", "zone index"), ("[::ffff:127.0.0.1:80]", "not a valid"),
    # names that are not names
    ("localhost:", "not a valid"), ("-bad.example.org", "not a valid host name"),
    ("a..b.org", "not a valid host name"), ("bücher.example", "not a valid host name"), ("", "not a valid"),
    ("x" * 64 + ".org", "not a valid host name"), ("exa mple.org", "not a valid host name"),
]
PUBLIC = ["93.184.216.34", "1.1.1.1", "8.8.8.8", "[2606:4700:4700::1111]", "2a00:1450:4001:82b::200e",
          "[64:ff9b::5db8:d822]", "[2002:5db8:d822::1]", "100.63.255.255", "100.128.0.1", "172.15.255.255",
          "172.32.0.1", "11.0.0.1", "169.253.255.255"]


@pytest.mark.parametrize("host, reason", REFUSED, ids=[host or "empty" for host, _ in REFUSED])
def test_each_address_egress_must_never_reach_is_refused_however_it_is_written(host, reason):
    policy = EgressPolicy(resolver=lambda name, port: pytest.fail(f"{name!r} is an address, not a name to resolve"))
    with pytest.raises(Refused, match=reason.replace(".", r"\.")):
        policy.addresses(host, 443)


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_are_allowed(host):
    [address] = EgressPolicy().addresses(host, 443)
    assert address == ipaddress.ip_address(host.strip("[]"))


def test_every_address_a_name_resolves_to_is_checked_and_only_checked_ones_are_returned():
    answers = {"mixed.example.org": ["93.184.216.34", "10.0.0.5"], "public.example.org": ["93.184.216.34", "1.1.1.1",
               "93.184.216.34"], "metadata.example.org": ["::ffff:169.254.169.254"], "scoped.example.org": ["fe80::1%2"],
               "empty.example.org": [], "rebind.127.0.0.1.nip.io": ["127.0.0.1"]}
    policy = EgressPolicy(resolver=lambda name, port: answers[name])
    with pytest.raises(Refused, match="mixed.example.org resolves to 10.0.0.5: private"):
        policy.addresses("mixed.example.org", 443)
    assert policy.addresses("Public.Example.Org.", 443) == [ipaddress.ip_address("93.184.216.34"),
                                                            ipaddress.ip_address("1.1.1.1")]
    with pytest.raises(Refused, match="carries 169.254.169.254"):
        policy.addresses("metadata.example.org", 80)
    with pytest.raises(Refused, match="zone index"):
        policy.addresses("scoped.example.org", 80)
    with pytest.raises(Refused, match="no address"):
        policy.addresses("empty.example.org", 80)
    with pytest.raises(Refused, match="resolves to 127.0.0.1: loopback"):
        policy.addresses("rebind.127.0.0.1.nip.io", 80)


def test_localhost_by_name_is_refused_after_the_hosts_own_resolution():
    with pytest.raises(Refused, match="localhost resolves to (127.0.0.1|::1): loopback"):
        EgressPolicy().addresses("localhost", 443)


def test_only_ports_80_and_443_are_open_by_default():
    for port in (22, 25, 53, 465, 587, 8080, 6379, 0):
        with pytest.raises(Refused, match=f"port {port} is closed"):
            EgressPolicy().addresses("93.184.216.34", port)
    assert EgressPolicy().ports == OPEN


def test_the_public_stand_in_is_exact_and_off_by_default():
    stand_in = EgressPolicy(treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}))
    assert stand_in.addresses("127.0.0.1", 80) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(Refused, match="loopback"):
        stand_in.addresses("127.0.0.2", 80)
    with pytest.raises(Refused, match="non-standard"):
        stand_in.addresses("2130706433", 80)  # spelled otherwise, it is still refused
    assert EgressPolicy().treat_as_public == frozenset()
    assert address_refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"


def test_proxy_request_heads():
    tunnel = parse_head(b"CONNECT files.example.org:443 HTTP/1.1\r\nHost: files.example.org:443\r\n\r\n")
    assert (tunnel.host, tunnel.port, tunnel.tunnel, tunnel.upstream_head) == ("files.example.org", 443, True, None)
    v6 = parse_head(b"CONNECT [2606:4700::1111]:443 HTTP/1.1\r\n\r\n")
    assert (v6.host, v6.port) == ("[2606:4700::1111]", 443)
    plain = parse_head(b"GET http://user:pw@Example.org:8080/a/b?c=d HTTP/1.1\r\nHost: example.org\r\n"
                       b"Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n")
    assert (plain.host, plain.port, plain.tunnel) == ("example.org", 8080, False)
    assert plain.upstream_head == b"GET /a/b?c=d HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n"
    assert parse_head(b"GET http://[::1]/ HTTP/1.1\r\n\r\n").host == "::1"
    for head, reason in [(b"GET /relative HTTP/1.1\r\n\r\n", "absolute http://"),
                         (b"GET https://example.org/ HTTP/1.1\r\n\r\n", "CONNECT"),
                         (b"GET ftp://example.org/ HTTP/1.1\r\n\r\n", "absolute http://"),
                         (b"CONNECT example.org HTTP/1.1\r\n\r\n", "host:port"),
                         (b"CONNECT example.org:99999 HTTP/1.1\r\n\r\n", "1..65535"),
                         (b"CONNECT example.org:0 HTTP/1.1\r\n\r\n", "1..65535"),
                         (b"GET http://example.org:99999/ HTTP/1.1\r\n\r\n", "1..65535"),
                         (b"HELLO\r\n\r\n", "HTTP/1.x"), (b"GET http://example.org/ SPDY/3\r\n\r\n", "HTTP/1.x")]:
        with pytest.raises(Refused, match=reason):
            parse_head(head)


def test_the_sandbox_side_names_the_bridge_and_the_proxy_variables():
    env = egress.sandbox_environment()
    assert {env[name] for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")} == {
        f"http://127.0.0.1:{egress.PROXY_PORT}"}
    argv = egress.bridge_program("/usr/bin/python3", ["/bin/sh", "-c", "pip download x"])
    assert argv[-4:] == ["--", "/bin/sh", "-c", "pip download x"]
    assert argv[3] == f"{egress.SANDBOX_FOLDER}/{egress.BRIDGE_NAME}"
    compile(egress.BRIDGE_SOURCE, "bridge.py", "exec")


# ---------------------------------------------------------------- a host list's tunnels: the ClientHello's name
class Recorder:
    """A TCP server on 127.0.0.1 (standing in for a public front) that records every connection and the bytes
    each one sent before it closed its side."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                sock.settimeout(5)
                data = b"".join(iter(lambda: sock.recv(65536), b""))
                self.received.append(data)
                sock.sendall(b"got %d" % len(data))


@pytest.fixture
def front():
    recorder = Recorder()
    yield recorder
    recorder.listener.close()


def sni_proxy(front: Recorder, hosts: tuple[str, ...] | None = ("allowed.test", "*.wild.test"), head_seconds=5.0):
    lines: list[str] = []
    policy = EgressPolicy(ports=frozenset({front.port}), resolver=lambda name, port: ["127.0.0.1"], hosts=hosts,
                          treat_as_public=frozenset({ipaddress.ip_address("127.0.0.1")}), head_seconds=head_seconds)
    return egress.EgressProxy(policy, lines.append), lines


def tunnel(proxy, authority: str, pieces: list[bytes], pause: float = 0.0) -> tuple[bytes, bytes]:
    """A CONNECT to ``authority`` through the proxy's socket, then ``pieces`` sent one TCP write each: the
    proxy's status line and whatever came back after it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(proxy.folder / egress.SOCKET_NAME))
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        status = b""
        while b"\r\n\r\n" not in status:
            chunk = sock.recv(1)
            if not chunk:
                break
            status += chunk
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(pause)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy closed already
        try:
            rest = b"".join(iter(lambda: sock.recv(65536), b""))
        except OSError:
            rest = b"(reset)"
    return status.split(b"\r\n")[0], rest


def test_a_host_lists_tunnel_reaches_the_front_only_with_a_clienthello_naming_the_connect_host(front):
    proxy, lines = sni_proxy(front)
    try:
        port = front.port
        hello = client_hello("allowed.test")
        assert tunnel(proxy, f"allowed.test:{port}", [hello]) == (b"HTTP/1.1 200 Connection established",
                                                                  b"got %d" % len(hello))
        # the same hello split over TCP writes, and over TLS records; names differing in case and a trailing dot
        split = records(hello[5:], [3, 40, 41, 300])
        assert tunnel(proxy, f"allowed.test:{port}", [split[:2], split[2:9], split[9:200], split[200:]], 0.05)[1] \
            == b"got %d" % len(split)
        upper = client_hello("Deep.API.wild.test.")
        assert tunnel(proxy, f"deep.api.WILD.test:{port}", [upper])[1] == b"got %d" % len(upper)
        assert front.received == [hello, split, upper]  # exactly the bytes read for the check, forwarded

        attacks = {
            "asks for other.test, not allowed.test": [client_hello("other.test")],
            "asks for evil.wild.test, not deep.api.wild.test": [client_hello("evil.wild.test")],
            "names no server (SNI)": [client_hello(None)],
            "carries encrypted_client_hello": [records(built_hello(
                [(0, server_name((0, b"allowed.test"))), (0xFE0D, b"\x00" * 32)]), [])],
            "first bytes are not a TLS handshake": [b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"],
            "appears twice": [records(built_hello([(0, server_name((0, b"allowed.test"))),
                                                   (0, server_name((0, b"other.test")))]), [])],
            "closed before its ClientHello ended": [hello[:100]],
            # a 16 KiB hello one byte a record: over the read cap long before it ends
            "no ClientHello in the first": [b"\x16\x03\x01\x00\x04\x01\x00\x40\x00"
                                            + b"\x16\x03\x01\x00\x01\x00" * 7000],
        }
        for reason, pieces in attacks.items():
            authority = f"{'deep.api.wild.test' if 'wild' in reason else 'allowed.test'}:{port}"
            status, rest = tunnel(proxy, authority, pieces)
            assert status == b"HTTP/1.1 200 Connection established" and rest in (b"", b"(reset)"), (reason, rest)
            assert any(line.startswith(f"[depu] egress refused {authority}: ") and reason in line for line in lines), \
                (reason, lines)
        assert len(front.received) == 3, "a refused tunnel reached the front"
        assert proxy.destinations == [f"allowed.test:{port}"] * 2 + [f"deep.api.WILD.test:{port}"]
        assert len(proxy.refusals) == len(attacks)
    finally:
        proxy.close()


def test_a_silent_tunnel_is_refused_after_the_head_time_and_a_tunnel_without_a_host_list_is_not_read(front):
    proxy, lines = sni_proxy(front, head_seconds=0.5)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(proxy.folder / egress.SOCKET_NAME))
            sock.sendall(f"CONNECT allowed.test:{front.port} HTTP/1.1\r\n\r\n".encode())
            assert b"".join(iter(lambda: sock.recv(4096), b"")) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert any("no ClientHello within 0.5 s" in line for line in lines), lines
        assert front.received == []
    finally:
        proxy.close()
    proxy, lines = sni_proxy(front, hosts=None)
    try:  # no host list: the tunnel is connected first and carries anything, as before
        assert tunnel(proxy, f"other.test:{front.port}", [b"plain bytes"]) == (
            b"HTTP/1.1 200 Connection established", b"got 11")
        assert front.received == [b"plain bytes"] and not proxy.refusals
    finally:
        proxy.close()
