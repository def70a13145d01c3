"""Ed25519 signatures over what a provider's machine runs as root: install.sh and the agent package.

Why: a SHA-256 announced by the same server that serves the file proves only that the download was not cut
short. Whoever can change the file (a write to ``site/agent/`` in the artifacts bucket, a compromised
function, a proxy) can change the checksum with it. A signature made with a key that never reaches AWS (the
operator keeps it; scripts/publish_agent.py reads it from a file or from Secrets Manager) and checked against
a public key pinned in the command /provider shows cannot be forged by any of them.

The public key travels as the base64 body of its PEM form (``MCowBQYDK2VwAyEA`` + 44 characters: the DER of
an Ed25519 SubjectPublicKeyInfo), because that is what ``openssl pkeyutl -verify`` reads on the provider's
machine once it is wrapped in the two PEM lines, and its fixed prefix pins the algorithm. Signatures are the
64 raw bytes, base64-encoded (text, so API Gateway needs no binary media types). They are made over the exact
bytes the provider verifies: install.sh as served, and the package's gzipped tarball (not its base64).

Signing needs the ``cryptography`` package, which the operator's machine and the local stack have; deployed
functions never sign (they serve what was published) and never import it.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path
from typing import Any

# the DER prefix of every Ed25519 SubjectPublicKeyInfo (RFC 8410), base64: SEQUENCE, AlgorithmIdentifier
# 1.3.101.112, BIT STRING of 32 bytes; then the 32 key bytes (43 characters and one '=')
PUBLIC_KEY_PATTERN = re.compile(r"^MCowBQYDK2VwAyEA[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
SIGNATURE_BYTES = 64


class SigningKeyError(ValueError):
    """The signing key could not be read or is not an Ed25519 private key (the message never holds the key)."""


def is_public_key(text: str) -> bool:
    """Whether ``text`` is an Ed25519 public key in the pinned form."""
    return bool(PUBLIC_KEY_PATTERN.match(text or ""))


def public_key_pem(public_key: str) -> str:
    """The PEM file ``openssl pkeyutl -pubin -inkey`` reads, for a pinned public key."""
    if not is_public_key(public_key):
        raise SigningKeyError("not an Ed25519 public key in the pinned form (MCowBQYDK2VwAyEA...)")
    return f"-----BEGIN PUBLIC KEY-----\n{public_key}\n-----END PUBLIC KEY-----\n"


def load_private_key(pem: bytes) -> Any:
    """An Ed25519 private key from its PEM (PKCS#8, what ``openssl genpkey -algorithm ed25519`` writes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError("the signing key is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError("the signing key is not an Ed25519 key (openssl genpkey -algorithm ed25519)")
    return key


def read_key_file(path: Path) -> Any:
    """The private key in ``path``; a file other users can read is refused (the key must stay the operator's)."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SigningKeyError(f"{path} is readable by other users; run `chmod 600 {path}`")
        return load_private_key(path.read_bytes())
    except OSError as error:
        raise SigningKeyError(f"cannot read the signing key {path}: {error.strerror}") from None


def read_key_secret(secret_id: str) -> Any:
    """The private key stored as the PEM text of a Secrets Manager secret (read with the caller's credentials;
    no function of the stack may read it)."""
    import boto3

    value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    return load_private_key(value["SecretString"].encode("ascii", "strict"))


def public_key_of(private_key: Any) -> str:
    """The pinned form of ``private_key``'s public key."""
    from cryptography.hazmat.primitives import serialization

    der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def sign(private_key: Any, data: bytes) -> str:
    """base64 of the Ed25519 signature over ``data``."""
    return base64.b64encode(private_key.sign(data)).decode("ascii")


def verify(public_key: str, data: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s over ``data``; publish checks its own work with it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        key = serialization.load_der_public_key(base64.b64decode(public_key, validate=True))
        key.verify(raw, data)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return len(raw) == SIGNATURE_BYTES


def generate_key_file(path: Path) -> Any:
    """Create a new private key in ``path`` (mode 600 from the first byte; an existing file is never
    overwritten) and return it: what the local stack does on its first start."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return key
