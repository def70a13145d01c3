"""Which fork-host URLs the API and the proxy will talk to.

A fork host is a stranger's machine, and the URL it gives is where the proxy POSTs users' traffic with a bearer
header. A prefix check on the string is not enough: ``http://2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``
or a name that resolves to ``169.254.169.254`` all reach loopback or the cloud metadata service. So a host URL
is judged by where it actually leads:

- outside the local stack it must be ``https`` (the local stack, ``STAGE=local``, also allows ``http``);
- no credentials in the URL, a real host name or address, a valid port;
- **every** address its name resolves to must be public: not loopback (except on the local stack), private,
  link-local (the metadata address 169.254.169.254), shared (100.64/10), multicast, reserved or unspecified,
  including IPv4 addresses embedded in IPv6 (mapped ``::ffff:a.b.c.d``, 6to4, NAT64) and the metadata
  address over IPv6 (``fd00:ec2::254``, a unique-local address).

``check_url`` answers with a clear reason and is called when a host registers its ``fork_rpc_base_url``, when it
reports a fork's RPC URL, and before the proxy forwards. ``guarded_session`` is what the proxy forwards with: it
re-resolves and re-checks at **every new connection** and connects to the address it checked (so a name that
re-binds to a private address after the check gains nothing), and it never follows a redirect.

``guarded_session(pin)`` also pins the host's TLS certificate: an https connection is accepted only if the
certificate the host presents has the SHA-256 ``pin`` it registered (``Agent.fork_tls_sha256``). The check
runs right after the handshake, before a byte of the request (body, bearer secret) is written; no certificate
authority is consulted, since the pin says exactly which certificate is the host's (docs/security.md,
"The proxy-to-host link").
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from depu.config import get_settings

LOCAL_STAGE = "local"
_NO_PIN = "0" * 64  # matches no certificate: an https session without a pin fails every handshake check
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostUrlRefused(ValueError):
    """The URL may not be used as a fork host's address; the message says why (safe to show the host)."""


def local_stage() -> bool:
    return get_settings().stage == LOCAL_STAGE


def forbidden(address: Address, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be a fork host's, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden(embedded, allow_loopback)
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a private address"
    return None


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (numeric spellings such as ``0x7f.1`` resolve like the OS would)."""
    try:
        infos = _lookup(host, port)
    except (socket.gaierror, UnicodeError) as error:
        raise HostUrlRefused(f"the host name {host!r} does not resolve") from error
    addresses = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        addresses.append(ipaddress.ip_address(text))
    if not addresses:
        raise HostUrlRefused(f"the host name {host!r} does not resolve")
    return addresses


def _lookup(host: str, port: int) -> list:
    """The OS resolver (one place, so a test can stand in for DNS)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def checked_addresses(host: str, port: int) -> list[Address]:
    """``host``'s addresses, all of them allowed, or HostUrlRefused naming the first that is not."""
    allow_loopback = local_stage()
    addresses = resolve(host, port)
    for address in addresses:
        reason = forbidden(address, allow_loopback)
        if reason:
            raise HostUrlRefused(f"{host!r} resolves to {address}, {reason}: a fork host must be on a public address")
    return addresses


def check_url(url: str, require_port: bool = False) -> str:
    """``url`` if a fork host may use it, else HostUrlRefused with the reason. ``require_port``: a fork's RPC
    URL names its port; a host's base URL does not need to."""
    if not isinstance(url, str) or not url or len(url) > 300:
        raise HostUrlRefused("a fork host URL must be a non-empty string of at most 300 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise HostUrlRefused(f"not a valid URL: {error}") from None
    allowed_schemes = ("https", "http") if local_stage() else ("https",)
    if parts.scheme not in allowed_schemes:
        raise HostUrlRefused("a fork host URL must be https" + (" (or http on the local stack)" if local_stage() else ""))
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise HostUrlRefused("a fork host URL may not carry credentials")
    if not parts.hostname:
        raise HostUrlRefused("a fork host URL needs a host name")
    if require_port and port is None:
        raise HostUrlRefused("a fork's RPC URL must name its port")
    checked_addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    return url


class _Checked:
    """Mixed into urllib3's connections: resolve, check every address, connect to a checked one."""

    def _new_conn(self):  # noqa: ANN202 - urllib3's signature
        host, port = self._dns_host, self.port
        try:
            addresses = checked_addresses(host, port)
        except HostUrlRefused as refused:
            raise NewConnectionError(self, f"refused: {refused}") from None
        last: Exception | None = None
        for address in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (str(address), port), self.timeout, source_address=self.source_address, socket_options=self.socket_options
                )
                return sock
            except socket.timeout as error:
                last = ConnectTimeoutError(self, f"Connection to {host} timed out. (connect timeout={self.timeout})")
                last.__cause__ = error
            except socket.gaierror as error:
                last = NameResolutionError(host, self, error)
            except OSError as error:
                last = NewConnectionError(self, f"Failed to establish a new connection: {error}")
        raise last or NewConnectionError(self, "no address to connect to")


class _CheckedHTTPConnection(_Checked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_Checked, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def __init__(self, pin: str | None = None):
        self.pin = pin
        super().__init__()

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # noqa: ANN001, ANN201 - requests'
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") == "https":
            # exactly the pinned certificate, whatever ``verify`` says; no pin: a certificate nobody vouches for
            # would be taken on trust, so the connection is never made (see _pinned below)
            pool_kwargs = {"cert_reqs": "CERT_NONE", "assert_fingerprint": self.pin or _NO_PIN}
        return host_params, pool_kwargs

    def cert_verify(self, conn, url, verify, cert):  # noqa: ANN001, ANN201 - requests' signature
        super().cert_verify(conn, url, verify, cert)
        if url.lower().startswith("https"):
            conn.cert_reqs, conn.ca_certs, conn.ca_cert_dir = "CERT_NONE", None, None
            conn.assert_fingerprint = self.pin or _NO_PIN

    def init_poolmanager(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - requests' signature
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}


class _NoRedirects(requests.Session):
    """Never follows a redirect, whatever the caller passes: a host's 3xx is answered as it is."""

    def get_redirect_target(self, resp):  # noqa: ANN001, ANN201 - requests' signature
        return None


def guarded_session(pin: str | None = None) -> requests.Session:
    """A Session whose every new connection is checked like ``check_url`` (after its own DNS lookup), that
    never follows redirects and ignores environment proxies. A 3xx is the caller's error to report. Over https
    it accepts only the certificate whose SHA-256 is ``pin`` (without a pin, no https connection succeeds)."""
    session = _NoRedirects()
    session.trust_env = False  # an HTTP(S)_PROXY variable would otherwise carry the connection elsewhere
    adapter = _CheckedAdapter(pin)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
