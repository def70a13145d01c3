"""An Ethereum signer over an AWS KMS key (KeySpec ECC_SECG_P256K1, KeyUsage SIGN_VERIFY).

KMS signs a 32-byte digest (``MessageType=DIGEST``) and answers a DER ECDSA signature; Ethereum wants
``(v, r, s)`` with ``s`` in the lower half of the curve order (EIP-2) and ``v`` the recovery id, which KMS
does not give: it is found by recovering the public key for both candidates and keeping the one that matches
the key's own public key. The private key never leaves KMS; only its public half is read (once).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import boto3
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class SignerError(RuntimeError):
    """KMS answered something that is not a valid secp256k1 signature of the digest."""


@dataclass(frozen=True)
class Signature:
    v: int  # recovery id, 0 or 1 (the y parity of a typed transaction)
    r: int
    s: int


def address_of(public_key_der: bytes) -> str:
    """The Ethereum address of a DER SubjectPublicKeyInfo secp256k1 key: Keccak-256 of x||y, last 20 bytes."""
    public = load_der_public_key(public_key_der)
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256k1":
        raise SignerError("the treasury key is not a secp256k1 key")
    point = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
    return to_checksum_address(keccak(point)[-20:])


def low_s(s: int) -> int:
    return SECP256K1_N - s if s > SECP256K1_N // 2 else s


class KmsSigner:
    def __init__(self, key_id: str, client=None) -> None:  # noqa: ANN001 - a boto3 KMS client
        self.key_id = key_id
        self._client = client

    @property
    def client(self):  # noqa: ANN201
        if self._client is None:
            self._client = boto3.client("kms")
        return self._client

    @property
    def address(self) -> str:
        return _cached_address(self.key_id, self.client)

    def sign_digest(self, digest: bytes) -> Signature:
        if len(digest) != 32:
            raise ValueError("an Ethereum signing digest is 32 bytes")
        answer = self.client.sign(KeyId=self.key_id, Message=digest, MessageType="DIGEST",
                                  SigningAlgorithm="ECDSA_SHA_256")
        r, s = decode_dss_signature(answer["Signature"])
        s = low_s(s)
        for v in (0, 1):
            try:
                recovered = keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest)
            except Exception:  # noqa: BLE001 - a candidate that does not recover is just not the one
                continue
            if recovered.to_checksum_address() == self.address:
                return Signature(v, r, s)
        raise SignerError("the KMS signature does not recover to the treasury address")


@lru_cache(maxsize=8)
def _cached_address(key_id: str, client) -> str:  # noqa: ANN001
    return address_of(client.get_public_key(KeyId=key_id)["PublicKey"])
