"""Egress for a job that asked for it, on a machine whose provider allows it: a filtering forward proxy.

The sandbox keeps its own network namespace (only its own loopback, no route anywhere). The agent runs this
proxy OUTSIDE the sandbox, listening on a unix socket in a folder of its own; that folder is bound read-only
into the sandbox at ``SANDBOX_FOLDER``, and a tiny bridge (``BRIDGE_SOURCE``, stdlib only) started inside the
namespace listens on 127.0.0.1:``PROXY_PORT`` there and carries each connection to the socket, so the usual
``HTTP(S)_PROXY`` variables work for pip, requests and curl: HTTP CONNECT (https) and plain http.

The proxy, not the job, resolves a destination's name, checks EVERY address it resolves to, and connects
only to an address it checked (a name that answers a public address to the check and a private one to the
connect, DNS rebinding, has nothing to rebind). Refused: loopback, RFC 1918 and other private ranges,
link-local (the cloud metadata address 169.254.169.254 among them), carrier-grade NAT 100.64/10, unique-local
IPv6 (EC2's metadata at fd00:ec2::254 among them), multicast, unspecified, reserved and documentation
ranges, the IPv4 inside IPv4-mapped, NAT64 and 6to4 IPv6 forms, and any address written in a non-standard
form (decimal ``2130706433``, hex ``0x7f000001``, octal ``0177.0.0.1``, short ``127.1``), which resolvers
would quietly read as an address. Only ports 80 and 443 by default.

A job may name the only hosts it reaches (the job spec's ``egress_hosts``: names, or ``*.name`` for every name
below one): then a CONNECT or http request for any other host, or for an address, is refused on its name
before anything is resolved (``EgressPolicy.hosts``), a plain http request whose Host header names another
host than its URL is refused too (one front serving several sites would otherwise pick the site by that
header), and an allowed name still goes through every address check above. A CONNECT tunnel of such a job
is answered 200 and then, BEFORE anything is connected, the client's first bytes are read (within the head
time, at most ``tls_hello.MAX_READ`` bytes) and must be a TLS ClientHello whose server name (SNI) is the
CONNECT host (case and a trailing dot aside): otherwise (plain bytes, no SNI, another name, an
encrypted_client_hello that hides the name, a malformed or truncated hello) the tunnel is closed and counted
as refused. A front that serves an allowed and another site on one address picks the site by that name, so a
tunnel opened to the allowed name cannot ask it for the other. What the proxy still cannot see: the Host
header inside the encrypted tunnel (a front that routes on it alone), and any later ClientHello (after a
HelloRetryRequest or a TLS 1.2 renegotiation), which the server must hold to the first one's name.

Bounded per job: connections at once, bytes both ways together, idle time per connection, time to send the
request head and to connect. Each destination (host:port and the address used, never a payload) goes to the
job's log, up to ``MAX_LOG_LINES`` lines.

``EgressPolicy.treat_as_public`` exists for tests alone (they cannot reach the internet, so they let one
loopback address stand for a public one): it is a constructor argument, never read from the agent's config
or a job's fields, and ``policy_for`` always builds it empty.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import hostlist, tls_hello

log = logging.getLogger(__name__)

NETWORK_NONE, NETWORK_EGRESS = "none", "egress"
SANDBOX_FOLDER = "/run/depu-egress"  # where the proxy's folder appears inside the sandbox (read-only)
SOCKET_NAME = "proxy.sock"
BRIDGE_NAME = "bridge.py"
PROXY_PORT = 3128  # the bridge's port on the sandbox's own loopback
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_PORTS = frozenset({80, 443})
MAX_HEAD_BYTES = 16 * 1024
MAX_LOG_LINES = 200
CHUNK = 64 * 1024
ACCEPT_POLL_SECONDS = 0.2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class Refused(Exception):
    """A destination the policy does not allow; the message says why (shown to the job, logged)."""


# ---------------------------------------------------------------- which addresses are public
def _nets(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(text), reason) for text, reason in pairs)


REFUSED_V4 = _nets(
    ("0.0.0.0/8", "unspecified (this network)"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private (LAN)"),
    ("172.16.0.0/12", "private (LAN)"),
    ("192.168.0.0/16", "private (LAN)"),
    ("169.254.0.0/16", "link-local (the cloud metadata address is 169.254.169.254)"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
REFUSED_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("fc00::/7", "unique-local (private; EC2's metadata address is fd00:ec2::254)"),
    ("ff00::/8", "multicast"),
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refusal(address: IPAddress) -> str | None:
    """Why a job may not connect to ``address`` (None: a public address). An IPv6 form that carries an IPv4
    address (mapped, NAT64, 6to4) is judged by the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "an address with a zone index"
        carried = address.ipv4_mapped or address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64 else None)
        if carried is not None:
            inner = address_refusal(carried)
            return f"it carries {carried}: {inner}" if inner else None
        table = REFUSED_V6
    else:
        table = REFUSED_V4
    for network, reason in table:
        if address in network:
            return reason
    if address.is_multicast:
        return "multicast"
    if not address.is_global:
        return "not a public address"
    return None


# ---------------------------------------------------------------- what a destination is
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMBERISH = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_TOP_LABEL = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` is, if it is one written the standard way (``a.b.c.d``, or IPv6 in or out of
    brackets); None for a name. Any other way of writing a number (decimal, hex, octal, fewer parts, a zone
    index) is refused: resolvers read them as addresses, and the check must see the address they mean."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        raise Refused("an IPv6 zone index is not a destination")
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise Refused("not a valid IPv6 address") from None
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    looks_numeric = all(_NUMBERISH.match(label) for label in labels) or bool(_NUMBERISH.match(labels[-1]))
    try:
        socket.inet_aton(text)
        looks_numeric = True
    except OSError:
        pass
    if looks_numeric:
        raise Refused("an address in a non-standard form (write it as a.b.c.d)")
    return None


def check_name(host: str) -> str:
    """A DNS name as the resolver gets it (lower case, no trailing dot), or Refused."""
    name = host.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels) \
            or not _TOP_LABEL.match(labels[-1]):
        raise Refused("not a valid host name")
    return name


def system_resolver(name: str, port: int) -> list[str]:
    """Every address the host's resolver gives for ``name`` (the proxy checks all of them)."""
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise Refused(f"cannot resolve {name} ({error.strerror or error})") from None
    return [info[4][0] for info in found]


@dataclass(frozen=True)
class EgressPolicy:
    """What a job's egress may reach and how much of it. Built by ``policy_for`` from the provider's settings;
    ``treat_as_public`` (exact addresses that count as public) is for tests only and never comes from a
    setting or a job."""

    ports: frozenset[int] = DEFAULT_PORTS
    max_connections: int = 16
    max_bytes: int = 2 * 1024 ** 3
    idle_seconds: float = 60.0
    connect_seconds: float = 10.0
    head_seconds: float = 10.0
    resolver: Resolver = system_resolver
    treat_as_public: frozenset[IPAddress] = field(default_factory=frozenset)
    hosts: tuple[str, ...] | None = None  # the provider's and the job's lists combined; None: any public host

    def name_refusal(self, host: str) -> str | None:
        """Why ``host`` (as the job wrote it) is not among the hosts this job may reach (its own list within the
        provider's, ``effective_hosts``); None when it is, or when neither named any. Decided on the name
        alone: nothing is resolved for a name that is not allowed."""
        if self.hosts is None:
            return None
        literal = literal_address(host)
        if literal is not None:
            return f"{literal} is an address; this job reaches only listed hosts (egress_hosts)"
        name = check_name(host)
        if host_allowed(name, self.hosts):
            return None
        return f"{name} is not among the hosts this job may reach (its egress_hosts, within the provider's)"

    def refusal(self, address: IPAddress) -> str | None:
        if address in self.treat_as_public:
            return None
        return address_refusal(address)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses to connect to for ``host``:``port``, resolved here once; Refused with the
        reason when the port is closed, the host is malformed, or ANY address it resolves to is not public."""
        if port not in self.ports:
            raise Refused(f"port {port} is closed for egress (open: {', '.join(map(str, sorted(self.ports)))})")
        named = self.name_refusal(host)
        if named:
            raise Refused(named)
        literal = literal_address(host)
        if literal is not None:
            reason = self.refusal(literal)
            if reason:
                raise Refused(f"{literal}: {reason}")
            return [literal]
        name = check_name(host)
        found: list[IPAddress] = []
        for text in self.resolver(name, port):
            address = ipaddress.ip_address(text.split("%", 1)[0])
            reason = self.refusal(address) if "%" not in text else "an address with a zone index"
            if reason:
                raise Refused(f"{name} resolves to {address}: {reason}")
            if address not in found:
                found.append(address)
        if not found:
            raise Refused(f"{name} has no address")
        return found


def destination(policy: EgressPolicy, request: Request) -> list[IPAddress]:
    """The checked addresses for one proxy request. With a host list, a plain http request must carry a Host
    header naming its URL's host: the server at an allowed address would otherwise be asked for another site."""
    if policy.hosts is not None and not request.tunnel:
        header = (request.host_header or "").strip().lower()
        named = header.rsplit(":", 1)[0] if re.fullmatch(r"[^:\[\]]+:[0-9]+", header) else header
        if named.rstrip(".") != request.host.lower().rstrip("."):
            raise Refused(f"the Host header ({_printable(header)[:100] or 'none'}) does not name the URL's host")
    return policy.addresses(request.host, request.port)


def host_allowed(name: str, hosts: tuple[str, ...]) -> bool:
    """``name`` (lower case, no trailing dot) is one of ``hosts``, or below a ``*.`` entry of it."""
    return hostlist.allowed(name, hosts)


MAX_JOB_HOSTS = hostlist.MAX_HOSTS  # the cloud's job spec allows as many (the same rule: depu_agent.hostlist)


def job_hosts(value) -> tuple[str, ...] | None:
    """A job's ``egress_hosts`` as the agent takes them, checked again here with the cloud's own rule
    (depu_agent.hostlist, of which the cloud holds a copy); None: the job named none. Refused says what is
    wrong."""
    if value is None:
        return None
    try:
        return hostlist.clean_list(value)
    except hostlist.HostListError as error:
        raise Refused(str(error)) from None


def effective_hosts(provider: tuple[str, ...] | None, job: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The only hosts a job's egress reaches on this machine: the provider's list (None: any public host) and
    the job's own (None: any public host), as one list of the names both allow (``hostlist.intersect``). A
    job without a list on a restricted machine gets the provider's list; an empty result reaches nothing."""
    if provider is None:
        return job
    if job is None:
        return provider
    return hostlist.intersect(job, provider)


def policy_for(config) -> EgressPolicy:
    """The provider's bounds for one job's egress (agent settings ``egress_*``, its host list among them);
    nothing counts as public that is not. The job's own list is combined with it at the job's start
    (``effective_hosts``)."""
    return EgressPolicy(
        max_connections=max(1, int(config.egress_max_connections)),
        max_bytes=max(1, int(config.egress_max_mb)) * 1024 * 1024,
        idle_seconds=max(1.0, float(config.egress_idle_seconds)),
        hosts=provider_hosts(config),
    )


def provider_hosts(config) -> tuple[str, ...] | None:
    """The provider's own host list (checked at config load), None when it set none."""
    return tuple(config.egress_hosts or ()) or None


# ---------------------------------------------------------------- the proxy (outside the sandbox)
@dataclass(frozen=True)
class Request:
    """One proxy request's head: where to, and the bytes to send upstream first (None for CONNECT)."""

    host: str
    port: int
    tunnel: bool
    upstream_head: bytes | None
    host_header: str | None = None  # a plain request's Host header, as sent


def _authority(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise Refused("CONNECT needs host:port")
    number = int(port)
    if not 0 < number < 65536:
        raise Refused("the port is not 1..65535")
    return host, number


def parse_head(head: bytes) -> Request:
    """CONNECT host:port, or an absolute http:// request (rewritten to the origin form its server expects,
    without Proxy-* headers)."""
    text = head.decode("latin-1")  # every byte decodes: a head is bytes, its fields ASCII
    first, _, rest = text.partition("\r\n")
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise Refused("not an HTTP/1.x proxy request")
    method, target, version = parts
    if method == "CONNECT":
        host, port = _authority(target)
        return Request(host, port, True, None)
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise Refused("plain requests need an absolute http:// URL (https goes through CONNECT)")
    try:
        port = url.port or 80
    except ValueError:
        raise Refused("the port is not 1..65535") from None
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = [line for line in rest.split("\r\n") if line and not line.lower().startswith("proxy-")]
    upstream = "\r\n".join([f"{method} {path} {version}", *headers]) + "\r\n\r\n"
    host_header = next((line.split(":", 1)[1].strip() for line in headers if line.lower().startswith("host:")), None)
    return Request(url.hostname, port, False, upstream.encode("latin-1"), host_header)


class EgressProxy:
    """One job's proxy: a unix socket in a fresh folder (``folder``, bound into the sandbox), a thread per
    connection, every connection and the byte budget ended by ``close``."""

    def __init__(self, policy: EgressPolicy, on_line: Callable[[str], None], root: str | None = None):
        self.policy = policy
        self.on_line = on_line
        self.folder = Path(tempfile.mkdtemp(prefix="depu-egress-", dir=root))
        os.chmod(self.folder, 0o711)  # bwrap runs as the job's uid and must reach the socket to bind it
        (self.folder / BRIDGE_NAME).write_text(BRIDGE_SOURCE, encoding="utf-8")
        os.chmod(self.folder / BRIDGE_NAME, 0o644)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.folder / SOCKET_NAME))
        os.chmod(self.folder / SOCKET_NAME, 0o666)  # the job's uid connects; the agent may not chown to it
        self.listener.listen(64)
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.open_sockets: set[socket.socket] = set()
        self.connections = 0  # client connections being served now
        self.bytes_moved = 0
        self.log_lines = 0
        self.spent_said = False
        self.destinations: list[str] = []  # "host:port" of each allowed connection (for tests and the log)
        self.refusals: list[str] = []
        self.thread = threading.Thread(target=self._accept_loop, name="egress-proxy", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ accept
    def _accept_loop(self) -> None:
        while not self.closed.is_set():
            ready, _, _ = select.select([self.listener], [], [], ACCEPT_POLL_SECONDS)
            if not ready or self.closed.is_set():
                continue
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            with self.lock:
                spent = self.bytes_moved >= self.policy.max_bytes
                full = self.connections >= self.policy.max_connections
                if not (spent or full):
                    self.connections += 1
                    self.open_sockets.add(client)
            if spent or full:
                self._say("[depu] egress refused a connection: " + (
                    "the job's byte budget is used up" if spent else f"{self.policy.max_connections} already open"))
                _reply(client, 503, "byte budget used up" if spent else "too many connections at once")
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), name="egress-conn", daemon=True).start()

    # ------------------------------------------------------------------ one connection
    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            head, extra = _read_head(client, self.policy.head_seconds)
            request = parse_head(head)
            where = f"{_printable(request.host)[:200]}:{request.port}"
            try:
                addresses = destination(self.policy, request)
            except Refused as refused:
                self.refusals.append(where)
                self._say(f"[depu] egress refused {where}: {_printable(str(refused))[:300]}")
                _reply(client, 403, f"egress refused: {refused}")
                return
            checked = request.tunnel and self.policy.hosts is not None
            if checked:  # the ClientHello must name the CONNECT host before anything is connected
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                try:
                    hello, extra = read_client_hello(client, extra, self.policy.head_seconds)
                    reason = sni_refusal(request.host, hello)
                except tls_hello.BadHello as bad:
                    reason = str(bad)
                if reason:  # no HTTP answer: the client speaks TLS by now
                    self.refusals.append(where)
                    self._say(f"[depu] egress refused {where}: {_printable(reason)[:300]}")
                    return
            upstream = self._connect(addresses, request.port)
            if upstream is None:
                self._say(f"[depu] egress to {where} failed: no connection")
                if not checked:
                    _reply(client, 502, "could not connect")
                return
            self.destinations.append(where)
            self._say(f"[depu] egress {'CONNECT' if request.tunnel else 'HTTP'} {where} "
                      f"({upstream.getpeername()[0]})")
            if request.tunnel and not checked:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            elif not request.tunnel:
                upstream.sendall(request.upstream_head or b"")
            if extra:
                upstream.sendall(extra)
                self._count(len(extra))
            self._splice(client, upstream)
        except Refused as refused:
            self._say(f"[depu] egress refused a request: {_printable(str(refused))[:300]}")
            _reply(client, 400, str(refused))
        except OSError:
            pass  # the job or the far end closed; nothing to report
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self.lock:
                        self.open_sockets.discard(sock)
                    sock.close()
            with self.lock:
                self.connections -= 1

    def _connect(self, addresses: list[IPAddress], port: int) -> socket.socket | None:
        """A connection to the first checked address that answers (the name is never resolved again)."""
        for address in addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(self.policy.connect_seconds)
            try:
                sock.connect((str(address), port))
            except OSError:
                sock.close()
                continue
            with self.lock:
                if self.closed.is_set():
                    sock.close()
                    return None
                self.open_sockets.add(sock)
            return sock
        return None

    def _splice(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        for sock in peers:  # a side that stops reading blocks a send for at most the idle time
            sock.settimeout(self.policy.idle_seconds)
        open_ends = set(peers)
        while open_ends and not self.closed.is_set():
            ready, _, _ = select.select(list(open_ends), [], [], self.policy.idle_seconds)
            if not ready:
                return  # idle too long
            for sock in ready:
                data = sock.recv(CHUNK)
                if not data:
                    open_ends.discard(sock)
                    try:
                        peers[sock].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                if not self._count(len(data)):
                    return
                peers[sock].sendall(data)

    # ------------------------------------------------------------------ bounds and log
    def _count(self, size: int) -> bool:
        with self.lock:
            self.bytes_moved += size
            over = self.bytes_moved > self.policy.max_bytes
        if over and not self.spent_said:
            self.spent_said = True
            self._say(f"[depu] egress stopped: this job's budget of {self.policy.max_bytes} bytes is used up")
        if over:
            self.close_connections()
        return not over

    def _say(self, line: str) -> None:
        with self.lock:
            self.log_lines += 1
            count = self.log_lines
        if count <= MAX_LOG_LINES:
            self.on_line(line)
        elif count == MAX_LOG_LINES + 1:
            self.on_line(f"[depu] egress: more than {MAX_LOG_LINES} lines, the rest are not logged")

    def close_connections(self) -> None:
        with self.lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """End of the job: no new connection, every open one cut, the folder gone."""
        self.closed.set()
        self.thread.join(timeout=ACCEPT_POLL_SECONDS * 5)
        self.listener.close()
        self.close_connections()
        shutil.rmtree(self.folder, ignore_errors=True)


def _printable(text: str) -> str:
    """A host as the job's log shows it: control characters (a terminal escape in a CONNECT line) as '?'."""
    return "".join(char if char.isprintable() else "?" for char in text)


def _read_head(client: socket.socket, seconds: float) -> tuple[bytes, bytes]:
    """The request head (up to the blank line) and whatever came after it, within ``seconds``."""
    client.settimeout(seconds)
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            raise Refused(f"the request head is over {MAX_HEAD_BYTES // 1024} KiB")
        chunk = client.recv(4096)
        if not chunk:
            raise OSError("closed before the request head ended")
        data += chunk
    head, _, extra = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", extra


def read_client_hello(client: socket.socket, first: bytes, seconds: float) -> tuple[tls_hello.ClientHello, bytes]:
    """The tunnel's ClientHello and every byte read for it (``first``: what came after the CONNECT head), read
    within ``seconds`` and ``tls_hello.MAX_READ`` bytes, however the client splits it over TCP reads and TLS
    records; ``tls_hello.BadHello`` says why there is none."""
    deadline = time.monotonic() + seconds
    data = first
    while True:
        hello = tls_hello.read_hello(data)
        if hello is not None:
            return hello, data
        if len(data) >= tls_hello.MAX_READ:
            raise tls_hello.BadHello(f"no ClientHello in the first {tls_hello.MAX_READ} bytes")
        left = deadline - time.monotonic()
        if left <= 0:
            raise tls_hello.BadHello(f"no ClientHello within {seconds:g} s")
        client.settimeout(left)
        try:
            chunk = client.recv(min(4096, tls_hello.MAX_READ - len(data)))
        except TimeoutError:
            raise tls_hello.BadHello(f"no ClientHello within {seconds:g} s") from None
        if not chunk:
            raise tls_hello.BadHello("the tunnel closed before its ClientHello ended")
        data += chunk


def sni_refusal(host: str, hello: tls_hello.ClientHello) -> str | None:
    """Why a tunnel opened to ``host`` may not carry this ClientHello (None: it asks for ``host`` itself). A
    hello that hides its real name (ECH) is refused whatever its outer name says."""
    if hello.hidden_name:
        return f"the ClientHello carries {hello.hidden_name}, which hides the name it asks for"
    if hello.server_name is None:
        return "the ClientHello names no server (SNI); this job's tunnels must name the host they opened"
    asked = hello.server_name.lower().rstrip(".")
    if asked != host.strip().lower().rstrip("."):
        return f"the ClientHello asks for {_printable(asked)[:100]}, not {host}"
    return None


def _reply(client: socket.socket, status: int, reason: str) -> None:
    body = (reason[:300] + "\n").encode("utf-8", "replace")
    words = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    try:
        client.sendall(f"HTTP/1.1 {status} {words}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                       "Connection: close\r\n\r\n".encode() + body)
    except OSError:
        pass


# ---------------------------------------------------------------- inside the sandbox
def sandbox_environment() -> dict[str, str]:
    """The variables that send a job's http(s) clients to the bridge."""
    url = f"http://127.0.0.1:{PROXY_PORT}"
    return {name: url for name in PROXY_VARIABLES}


def bridge_program(python: str, program: list[str]) -> list[str]:
    """The job's program, run by the bridge (which listens first, then starts it and exits as it does)."""
    return [python, "-s", "-I", f"{SANDBOX_FOLDER}/{BRIDGE_NAME}", f"{SANDBOX_FOLDER}/{SOCKET_NAME}", str(PROXY_PORT),
            "--", *program]


BRIDGE_SOURCE = r'''"""DePU's egress bridge, inside the job's sandbox: 127.0.0.1:PORT -> the agent's proxy socket.
It starts the job's program once it listens and exits the way the program does."""
import os, signal, socket, subprocess, sys, threading


def pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass


def carry(client, path):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    back.start()
    pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(listener, path):
    while True:
        client, _ = listener.accept()
        threading.Thread(target=carry, args=(client, path), daemon=True).start()


def main():
    path, port, program = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    child = subprocess.Popen(program)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda signum, _frame: child.send_signal(signum))
    threading.Thread(target=serve, args=(listener, path), daemon=True).start()
    code = child.wait()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


main()
'''
