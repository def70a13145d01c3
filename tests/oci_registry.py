"""A minimal OCI distribution (registry v2) server for tests: the pull side of the OCI distribution spec, on
127.0.0.1 only, serving images the test builds in memory.

What it answers, as the spec's pull workflow asks:
  GET /v2/                                  200 (the API is here; no authentication)
  GET|HEAD /v2/<name>/manifests/<reference> the manifest by digest or tag, its media type and
                                            Docker-Content-Digest; 404 MANIFEST_UNKNOWN otherwise
  GET|HEAD /v2/<name>/blobs/<digest>        the blob (config or layer); 404 BLOB_UNKNOWN otherwise
Anything else is 404 NAME_UNKNOWN / 405. Every request is counted (``requests``, and its scheme in
``schemes``), so a test can show that a pull never reached it.

Given an ``ssl.SSLContext`` (``RegistryServer(tls=...)``) the same port speaks both: a connection whose first
byte opens a TLS handshake is served over TLS, any other as plain HTTP, so a client that gave up on TLS and
fell back to plain HTTP would be served, and seen (``schemes``). Every handshake's outcome is kept
(``handshakes``: "ok", or the server's error when the client refused the certificate). ``tamper`` makes it lie on purpose: ``"manifest"`` serves other manifest bytes under
the digest asked for, ``"blob"`` serves a layer whose content is not its digest.

The image (``build_image``) is one uncompressed layer made of a few of the host's binaries and the libraries
they load, plus a nonce file so each test run's digests are its own (safe to run twice and in parallel).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import ssl
import subprocess
import tarfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
_ROUTE = re.compile(r"^/v2/(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Image:
    """One image as a registry holds it: the manifest's bytes and every blob it names, by digest."""
    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def _libraries_of(binary: str) -> list[str]:
    answer = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    return sorted({word for line in answer.stdout.splitlines() for word in line.split() if word.startswith("/")})


def layer_of_host_binaries(binaries: tuple[str, ...], nonce: str) -> bytes:
    """An uncompressed tar of ``binaries``, the libraries they load, and /depu-nonce holding ``nonce``."""
    files = set(binaries)
    for binary in binaries:
        files.update(_libraries_of(binary))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(files):
            archive.add(os.path.realpath(path), arcname=path.lstrip("/"))
        marker = nonce.encode()
        info = tarfile.TarInfo("depu-nonce")
        info.size, info.mode = len(marker), 0o644
        archive.addfile(info, io.BytesIO(marker))
    return buffer.getvalue()


def build_image(binaries: tuple[str, ...] = ("/bin/sh", "/bin/cat", "/bin/echo"), nonce: str | None = None) -> Image:
    """An OCI image (manifest, config, one layer) whose digests are unique to ``nonce`` (fresh by default)."""
    layer = layer_of_host_binaries(binaries, nonce or uuid.uuid4().hex)
    layer_digest = sha256_digest(layer)
    config = json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},  # uncompressed: the diff id is the digest
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()
    return Image(manifest, {sha256_digest(config): config, layer_digest: layer})


@dataclass
class Registry:
    """The server's state: repositories by name (tag or digest -> image), what it was asked, how it lies."""
    repositories: dict[str, dict[str, Image]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    schemes: list[str] = field(default_factory=list)  # "https" or "http", one per request
    handshakes: list[str] = field(default_factory=list)  # "ok" or why the TLS handshake failed
    tamper: str | None = None  # None, "manifest" or "blob"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, name: str, image: Image, tag: str | None = None) -> str:
        """Hold ``image`` in repository ``name`` (by digest, and by ``tag`` if given); its digest."""
        held = self.repositories.setdefault(name, {})
        held[image.digest] = image
        if tag:
            held[tag] = image
        return image.digest

    def manifest(self, name: str, reference: str) -> bytes | None:
        image = self.repositories.get(name, {}).get(reference)
        if image is None:
            return None
        if self.tamper == "manifest":  # other bytes (a valid manifest too) under the digest asked for
            return json.dumps({**json.loads(image.manifest), "annotations": {"swapped": "yes"}}).encode()
        return image.manifest

    def blob(self, name: str, digest: str) -> bytes | None:
        for image in self.repositories.get(name, {}).values():
            if digest in image.blobs:
                data = image.blobs[digest]
                manifest = json.loads(image.manifest)
                if self.tamper == "blob" and digest in {layer["digest"] for layer in manifest["layers"]}:
                    return data[:-1] + bytes([data[-1] ^ 1])  # same size, one bit off
                return data
        return None


class _Handler(BaseHTTPRequestHandler):
    registry: Registry  # set on the subclass made per server
    scheme = "http"  # "https" on a connection the server wrapped in TLS

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json",
               digest: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, json.dumps({"errors": [{"code": code, "message": message, "detail": {}}]}).encode())

    def _serve(self) -> None:
        with self.registry.lock:
            self.registry.requests.append((self.command, self.path))
            self.registry.schemes.append(self.scheme)
        if self.path.rstrip("/") == "/v2":
            return self._reply(200, b"{}")
        route = _ROUTE.match(self.path.split("?", 1)[0])
        if route is None:
            return self._error(404, "NAME_UNKNOWN", "no such repository or route")
        name, kind, reference = route["name"], route["kind"], route["reference"]
        if kind == "manifests":
            body = self.registry.manifest(name, reference)
            if body is None:
                return self._error(404, "MANIFEST_UNKNOWN", f"manifest {reference} unknown")
            return self._reply(200, body, MANIFEST_TYPE, reference if reference.startswith("sha256:") else
                               sha256_digest(body))
        body = self.registry.blob(name, reference)
        if body is None:
            return self._error(404, "BLOB_UNKNOWN", f"blob {reference} unknown")
        return self._reply(200, body, "application/octet-stream", reference)

    def do_GET(self):  # noqa: N802
        self._serve()

    def do_HEAD(self):  # noqa: N802
        self._serve()

    def do_POST(self):  # noqa: N802  (pushes are not offered)
        self._error(405, "UNSUPPORTED", "this registry serves pulls only")

    do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


class _DualServer(ThreadingHTTPServer):
    """Plain HTTP, or TLS where the client opens with a handshake record (first byte 0x16)."""
    daemon_threads = True
    tls: ssl.SSLContext | None = None
    registry: Registry

    def finish_request(self, request, client_address):
        request.settimeout(15)
        try:
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if self.tls is not None and first == b"\x16":
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as error:  # the client refused our certificate (or vice versa)
                with self.registry.lock:
                    self.registry.handshakes.append(f"{type(error).__name__}: {error}")
                return
            with self.registry.lock:
                self.registry.handshakes.append("ok")
            try:
                self.RequestHandlerClass(request, client_address, self, scheme="https")
            finally:
                request.close()
            return
        self.RequestHandlerClass(request, client_address, self)


class RegistryServer:
    """A ``Registry`` served on 127.0.0.1 at a free port, in a thread; ``host`` is its ``host:port`` name.
    With ``tls`` (a server context holding the certificate to present) it also answers over TLS."""

    def __init__(self, registry: Registry | None = None, tls: ssl.SSLContext | None = None):
        self.registry = registry or Registry()

        def handler(request, client_address, server, scheme: str = "http"):
            made = type("RegistryHandler", (_Handler,), {"registry": self.registry, "scheme": scheme})
            return made(request, client_address, server)

        self._server = _DualServer(("127.0.0.1", 0), handler)
        self._server.tls, self._server.registry = tls, self.registry
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
