"""The ClientHello reader the egress proxy checks a tunnel's server name with (depu_agent.tls_hello): real
hellos from Python's own TLS stack (1.2-only and 1.3, several names, none), the same split over many records
and cut short at every byte, hellos built field by field for the cases a TLS stack will not send (ECH, two
names, an unknown name type, a repeated extension, bytes left over), and fuzzing: whatever the bytes, the
reader answers a hello, None (more to come) or BadHello, nothing else. The proxy acting on it is tested in
test_agent_egress.py and, inside a real job, in test_abuse_provider_egress.py."""
from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depu_agent.tls_hello import MAX_FRAGMENT, BadHello, read_hello

NAMES = ["allowed.test", "files.example.org", "a.b.c.d.e.example.net", "x" * 63 + ".example.com", "UPPER.Example.Org"]


def client_hello(name: str | None, *, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """The bytes Python's TLS client sends first for ``server_hostname=name`` (None or an address: no SNI)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


def records(message: bytes, cuts: list[int], version: bytes = b"\x03\x01") -> bytes:
    """``message`` (a handshake message) as TLS handshake records split at ``cuts``."""
    points = [0, *sorted({cut for cut in cuts if 0 < cut < len(message)}), len(message)]
    return b"".join(b"\x16" + version + (end - start).to_bytes(2, "big") + message[start:end]
                    for start, end in zip(points, points[1:]))


def vector(data: bytes, size: int) -> bytes:
    return len(data).to_bytes(size, "big") + data


def server_name(*entries: tuple[int, bytes]) -> bytes:
    return vector(b"".join(bytes([kind]) + vector(name, 2) for kind, name in entries), 2)


def built_hello(extensions: list[tuple[int, bytes]] | None, *, version: int = 0x0303, session: bytes = b"\x11" * 32,
                suites: bytes = b"\x13\x01\x13\x02", compression: bytes = b"\x00", tail: bytes = b"") -> bytes:
    """A ClientHello handshake message field by field (RFC 8446 4.1.2); ``extensions`` None: none at all."""
    body = version.to_bytes(2, "big") + b"\x22" * 32 + vector(session, 1) + vector(suites, 2) + vector(compression, 1)
    if extensions is not None:
        body += vector(b"".join(kind.to_bytes(2, "big") + vector(data, 2) for kind, data in extensions), 2)
    body += tail
    return b"\x01" + len(body).to_bytes(3, "big") + body


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("name", NAMES)
def test_a_real_client_hello_gives_the_name_it_asks_for_and_every_prefix_of_it_asks_for_more(name, maximum):
    data = client_hello(name, maximum=maximum)
    hello = read_hello(data)
    assert hello is not None and hello.server_name == name and hello.consumed == len(data)
    assert hello.extensions[0] == 0 and hello.hidden_name is None
    assert (43 in hello.extensions) == (maximum == ssl.TLSVersion.TLSv1_3)  # supported_versions: 1.3 only
    for end in range(len(data)):
        assert read_hello(data[:end]) is None, end
    assert read_hello(data + b"\x17\x03\x03\x00\x05early").server_name == name  # what follows is not read


@pytest.mark.parametrize("name", [None, "127.0.0.1", "::1"])
def test_a_real_client_hello_without_sni_has_no_name(name):
    hello = read_hello(client_hello(name))
    assert hello is not None and hello.server_name is None and 0 not in hello.extensions


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=30), name=st.sampled_from(NAMES))
def test_a_hello_split_over_many_records_reads_the_same(cuts, name):
    data = client_hello(name)
    message = data[5:]
    split = records(message, cuts)
    hello = read_hello(split)
    assert hello is not None and hello.server_name == name and hello.consumed == len(split)
    for end in range(0, len(split), 7):
        assert read_hello(split[:end]) is None


def test_built_hellos_read_as_built_and_each_bad_shape_is_refused_with_its_reason():
    named = built_hello([(10, b"\x00\x02\x00\x1d"), (0, server_name((0, b"front.test")))])
    assert read_hello(records(named, [])).server_name == "front.test"
    assert read_hello(records(built_hello(None), [])).server_name is None
    assert read_hello(records(built_hello([]), [])).server_name is None
    ech = read_hello(records(built_hello([(0, server_name((0, b"public.test"))), (0xFE0D, b"\x00" * 40)]), []))
    assert ech.server_name == "public.test" and ech.hidden_name == "encrypted_client_hello"
    assert read_hello(records(built_hello([(0xFFCE, b"\x00" * 8)]), [])).hidden_name == "encrypted_server_name (draft)"
    bad = {
        "appears twice": built_hello([(0, server_name((0, b"a.test"))), (0, server_name((0, b"b.test")))]),
        "more than one host_name": built_hello([(0, server_name((0, b"a.test"), (0, b"b.test")))]),
        "not host_name": built_hello([(0, server_name((1, b"a.test")))]),
        "not ASCII": built_hello([(0, server_name((0, "bücher.test".encode())))]),
        "server name list has a length out of range": built_hello([(0, server_name())]),
        "truncated in its server name list": built_hello([(0, b"")]),
        "left over after the ClientHello's extension data": built_hello([(0, server_name((0, b"a.test")) + b"x")]),
        "left over after the ClientHello's body": built_hello([], tail=b"\x00"),
        "host name has a length out of range": built_hello([(0, server_name((0, b"")))]),
        "session id has a length out of range": built_hello([], session=b"\x00" * 33),
        "cipher suites have an odd length": built_hello([], suites=b"\x13\x01\x13"),
        "cipher suites has a length out of range": built_hello([], suites=b""),
        "compression methods has a length out of range": built_hello([], compression=b""),
        "ClientHello version 0x0300": built_hello([], version=0x0300),
        "not a ClientHello": b"\x02" + built_hello([])[1:],
        "more handshake bytes after the ClientHello": built_hello([]) + b"\x01\x00\x00\x00",
    }
    for reason, message in bad.items():
        with pytest.raises(BadHello, match=reason):
            read_hello(records(message, []))
    hello = built_hello([])
    record_bad = {
        "not a TLS handshake": b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        "not a TLS record version": b"\x16\x04\x01",
        "record version 0x0300": records(hello, [], version=b"\x03\x00"),
        "an empty record": b"\x16\x03\x01\x00\x00" + records(hello, []),
        "a record over 16 KiB": b"\x16\x03\x01" + (MAX_FRAGMENT + 1).to_bytes(2, "big"),
        "another record type inside the ClientHello": records(hello, [10])[:15] + b"\x15\x03\x03\x00\x02\x02\x28",
        "a ClientHello over 16 KiB": b"\x16\x03\x01\x00\x04\x01\x00\x40\x01",
    }
    for reason, data in record_bad.items():
        with pytest.raises(BadHello, match=reason):
            read_hello(data)


def _answer(data: bytes):
    try:
        return read_hello(data)
    except BadHello as refused:
        assert str(refused)
        return refused


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=700))
def test_any_bytes_give_a_hello_none_or_a_refusal_and_nothing_else(data):
    _answer(data)
    _answer(b"\x16\x03\x01" + data)
    _answer(b"\x16\x03\x03" + len(data).to_bytes(2, "big") + b"\x01" + data)


REAL = client_hello("allowed.test")


@settings(max_examples=1500, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=len(REAL) - 1), st.integers(0, 255)),
                      min_size=1, max_size=4), cut=st.integers(min_value=1, max_value=len(REAL)))
def test_a_real_hello_with_bytes_changed_or_cut_never_crashes_the_reader(edits, cut):
    data = bytearray(REAL)
    for index, value in edits:
        data[index] = value
    answer = _answer(bytes(data[:cut]))
    if answer is not None and not isinstance(answer, BadHello):
        assert answer.consumed <= cut  # a hello read from changed bytes never claims bytes it was not given


@settings(max_examples=500, deadline=None)
@given(extensions=st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=6),
       cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=5))
def test_built_hellos_with_random_extensions_never_crash_and_name_only_what_they_carry(extensions, cuts):
    answer = _answer(records(built_hello(extensions), cuts))
    if isinstance(answer, BadHello):
        return
    assert answer is not None  # complete records of a complete hello: never "more to come"
    assert answer.extensions == tuple(kind for kind, _ in extensions)
    if answer.server_name is not None:
        assert 0 in answer.extensions
