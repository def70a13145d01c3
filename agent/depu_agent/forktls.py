"""The TLS key of this machine's fork fronts, and the fingerprint DePU pins for it.

Outside the local stack the DePU proxy reaches a fork host over https (docs/security.md, "The proxy-to-host
link"). There is no certificate authority in the loop: the host makes one self-signed certificate, once, and
registers its SHA-256 fingerprint (``fork_tls_sha256``) with its ``fork_rpc_base_url``. The proxy then accepts
exactly that certificate from this host and nothing else, so a machine in the middle that does not hold this
key learns neither users' traffic nor the fork's host secret.

The key and certificate live in ``<work_dir>/fork-tls/`` (mode 600, directory 700) and are kept across restarts:
the API knows only this fingerprint, so a lost key means registering the machine again. They are made with the
``openssl`` command line (an EC P-256 key, which every TLS stack serves and accepts, in TLS 1.2 as in 1.3).
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

CERT_DAYS = 3650  # the pin, not the validity period, is what the proxy checks; rotation means re-registering
SUBJECT = "/CN=depu-fork-host"


def paths(work_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    directory = Path(work_dir) / "fork-tls"
    return directory / "cert.pem", directory / "key.pem"


def ensure(work_dir: str | os.PathLike[str], host: str) -> tuple[Path, Path]:
    """This machine's fork certificate and key, made on first use (for ``host``, the name or address of
    ``fork_rpc_base_url``); never replaced once made."""
    cert, key = paths(work_dir)
    if cert.is_file() and key.is_file():
        return cert, key
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cert.parent, 0o700)
    try:
        ipaddress.ip_address(host)
        alt_name = f"IP:{host}"
    except ValueError:
        alt_name = f"DNS:{host}"
    partial_key, partial_cert = key.with_suffix(".new"), cert.with_suffix(".new")
    old_umask = os.umask(0o077)  # the key is never readable by anyone else, not even for a moment
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(partial_key), "-out", str(partial_cert), "-days", str(CERT_DAYS), "-subj", SUBJECT,
             "-addext", f"subjectAltName={alt_name}"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )
    except FileNotFoundError:
        raise RuntimeError("the openssl command is needed to make the fork TLS certificate (install openssl)") from None
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"openssl could not make the fork TLS certificate: {error.stderr.decode(errors='replace')[-300:]}") from None
    finally:
        os.umask(old_umask)
    for made in (partial_key, partial_cert):
        os.chmod(made, 0o600)
    os.replace(partial_key, key)
    os.replace(partial_cert, cert)
    return cert, key


def fingerprint(cert: str | os.PathLike[str]) -> str:
    """The SHA-256 of the certificate's DER bytes, in lowercase hex: what the API pins."""
    der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    return hashlib.sha256(der).hexdigest()


def pin_for_registration(work_dir: str | os.PathLike[str], base_url: str) -> str | None:
    """The fingerprint to register with an https ``fork_rpc_base_url`` (making the certificate if need be);
    None for a plain-http base, which only the local stack accepts."""
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    cert, _key = ensure(work_dir, parts.hostname)
    return fingerprint(cert)


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """What a fork front serves https with: this certificate, TLS 1.2 at least."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context
