"""The first message of a TLS handshake (the ClientHello), read only as far as the server name it asks for.

The egress proxy opens a CONNECT tunnel to a name the job may reach; inside the tunnel the client's TLS
handshake names the site it wants again (SNI, RFC 6066 section 3), and a front that serves several sites on one
address picks the site by that second name. So before the proxy connects anywhere it reads the client's first
bytes, and this module says what they are: a ClientHello and its server name, or ``BadHello`` with the reason
(the proxy refuses the tunnel then). Written from RFC 8446 (record layer 5.1, handshake 4, ClientHello 4.1.2,
extensions 4.2) and RFC 6066; nothing is decrypted and nothing is answered.

Strict on purpose, since a hello that this parser and the server would read differently is a way past it: one
record type only (handshake), record versions 0x0301..0x0303, no empty or over-long records, the ClientHello
alone in its records (it may be split over several), every vector exactly filling its parent, no extension twice,
one ``host_name`` and no other name type. A ClientHello carrying encrypted_client_hello (0xfe0d, and the old
ESNI draft's 0xffce) hides its real name, so its outer name is not taken as the name.
"""
from __future__ import annotations

from dataclasses import dataclass

RECORD_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
RECORD_VERSIONS = range(0x0301, 0x0304)  # TLS 1.0..1.2 on the wire (TLS 1.3 keeps 0x0303 there)
HELLO_VERSIONS = range(0x0301, 0x0304)  # ClientHello.legacy_version (1.3 says 0x0303 and lists 1.3 elsewhere)
MAX_FRAGMENT = 2 ** 14  # a record's payload (RFC 8446 5.1)
RECORD_HEADER = 5
MAX_HELLO = 2 ** 14  # a ClientHello's body: real ones are under 2 KiB, even with post-quantum key shares
MAX_READ = 2 * (MAX_FRAGMENT + RECORD_HEADER)  # what the proxy reads at most: a full-size hello in two records

EXT_SERVER_NAME = 0
NAME_TYPE_HOST = 0
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D
EXT_ENCRYPTED_SERVER_NAME_DRAFT = 0xFFCE
HIDDEN_NAME_EXTENSIONS = {EXT_ENCRYPTED_CLIENT_HELLO: "encrypted_client_hello",
                          EXT_ENCRYPTED_SERVER_NAME_DRAFT: "encrypted_server_name (draft)"}


class BadHello(Exception):
    """The bytes are not a ClientHello this proxy can read; the message says why (logged, never shown raw)."""


@dataclass(frozen=True)
class ClientHello:
    """What the proxy needs from a ClientHello: the name it asks for (None: no server_name extension), its
    extension types in order, and how many bytes of records it took (``consumed``)."""

    server_name: str | None
    extensions: tuple[int, ...]
    consumed: int

    @property
    def hidden_name(self) -> str | None:
        """The extension that hides the real name (ECH), if the hello carries one."""
        return next((HIDDEN_NAME_EXTENSIONS[kind] for kind in self.extensions if kind in HIDDEN_NAME_EXTENSIONS), None)


def read_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of ``data`` (TLS records as the client sent them); None while more bytes
    could still complete one; ``BadHello`` once they cannot. The caller bounds how long and how much it reads
    (``MAX_READ``)."""
    found = _handshake_message(data)
    if found is None:
        return None
    body, consumed = found
    name, extensions = _parse_client_hello(body)
    return ClientHello(name, extensions, consumed)


def _handshake_message(data: bytes) -> tuple[bytes, int] | None:
    """The first handshake message's body, reassembled from as many records as it spans, and the record bytes
    it took; None when the records so far hold only part of it."""
    if data[:1] and data[0] != RECORD_HANDSHAKE:
        raise BadHello("the tunnel's first bytes are not a TLS handshake")
    if len(data) >= 2 and data[1] != 3:
        raise BadHello("not a TLS record version")
    message, position = b"", 0
    while True:
        if len(data) - position < RECORD_HEADER:
            if data[position:position + 1] and data[position] != RECORD_HANDSHAKE:
                raise BadHello("another record type inside the ClientHello")
            return None
        kind, version = data[position], int.from_bytes(data[position + 1:position + 3], "big")
        length = int.from_bytes(data[position + 3:position + 5], "big")
        if kind != RECORD_HANDSHAKE:
            raise BadHello("another record type inside the ClientHello")
        if version not in RECORD_VERSIONS:
            raise BadHello(f"record version {version:#06x} is not TLS 1.0-1.3")
        if not 0 < length <= MAX_FRAGMENT:
            raise BadHello("an empty record" if not length else "a record over 16 KiB")
        fragment = data[position + RECORD_HEADER:position + RECORD_HEADER + length]
        message += fragment
        if message and message[0] != HANDSHAKE_CLIENT_HELLO:
            raise BadHello("the first handshake message is not a ClientHello")
        if len(message) >= 4:
            size = int.from_bytes(message[1:4], "big")
            if size > MAX_HELLO:
                raise BadHello("a ClientHello over 16 KiB")
            if len(message) > 4 + size:
                raise BadHello("more handshake bytes after the ClientHello in its record")
        if len(fragment) < length:
            return None  # this record has not all come yet
        position += RECORD_HEADER + length
        if len(message) >= 4 and len(message) == 4 + int.from_bytes(message[1:4], "big"):
            return message[4:], position


class _Reader:
    """Bytes read front to back; every shortfall is a ``BadHello`` naming the field."""

    def __init__(self, data: bytes, what: str):
        self.data, self.position, self.what = data, 0, what

    def take(self, size: int, what: str) -> bytes:
        if self.position + size > len(self.data):
            raise BadHello(f"the ClientHello is truncated in its {what}")
        chunk = self.data[self.position:self.position + size]
        self.position += size
        return chunk

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str, low: int = 0, high: int | None = None) -> _Reader:
        """A length-prefixed vector (RFC 8446 3.4) as its own reader, its length within ``low``..``high``."""
        size = self.number(length_size, what)
        if size < low or (high is not None and size > high):
            raise BadHello(f"the ClientHello's {what} has a length out of range")
        return _Reader(self.take(size, what), what)

    @property
    def left(self) -> int:
        return len(self.data) - self.position

    def end(self) -> None:
        if self.left:
            raise BadHello(f"bytes left over after the ClientHello's {self.what}")


def _parse_client_hello(body: bytes) -> tuple[str | None, tuple[int, ...]]:
    hello = _Reader(body, "body")
    version = hello.number(2, "version")
    if version not in HELLO_VERSIONS:
        raise BadHello(f"ClientHello version {version:#06x} is not TLS 1.0-1.3")
    hello.take(32, "random")
    hello.vector(1, "session id", 0, 32)
    suites = hello.vector(2, "cipher suites", 2)
    if suites.left % 2:
        raise BadHello("the ClientHello's cipher suites have an odd length")
    hello.vector(1, "compression methods", 1)
    if not hello.left:
        return None, ()  # a hello without extensions (RFC 5246 allows it) names no server
    extensions = hello.vector(2, "extensions")
    hello.end()
    kinds: list[int] = []
    name = None
    while extensions.left:
        kind = extensions.number(2, "extension type")
        data = extensions.vector(2, "extension data")
        if kind in kinds:
            raise BadHello(f"extension {kind} appears twice")
        kinds.append(kind)
        if kind == EXT_SERVER_NAME:
            name = _server_name(data)
    return name, tuple(kinds)


def _server_name(data: _Reader) -> str:
    """The one host_name of a server_name extension (RFC 6066 3)."""
    names = data.vector(2, "server name list", 1)
    data.end()
    host = None
    while names.left:
        kind = names.number(1, "server name type")
        if kind != NAME_TYPE_HOST:
            raise BadHello(f"server name type {kind} is not host_name")
        value = names.vector(2, "host name", 1).data
        if host is not None:
            raise BadHello("more than one host_name")
        try:
            host = value.decode("ascii")
        except UnicodeDecodeError:
            raise BadHello("the server name is not ASCII") from None
    if host is None:  # cannot happen: the list is non-empty and every entry is a host_name
        raise BadHello("no host_name")
    return host
