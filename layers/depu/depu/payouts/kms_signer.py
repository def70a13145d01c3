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
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# SubjectPublicKeyInfo of an EC key on secp256k1 (OIDs 1.2.840.10045.2.1 and 1.3.132.0.10), then the
# 65-byte uncompressed point in a BIT STRING: the fixed DER prefix KMS's GetPublicKey answers with
SPKI_SECP256K1_PREFIX = bytes.fromhex("3056301006072a8648ce3d020106052b8104000a034200")


class SignerError(RuntimeError):
    """KMS answered something that is not a valid secp256k1 signature of the digest."""


@dataclass(frozen=True)
class Signature:
    v: int  # recovery id, 0 or 1 (the y parity of a typed transaction)
    r: int
    s: int


def address_of(public_key_der: bytes) -> str:
    """The Ethereum address of a DER SubjectPublicKeyInfo secp256k1 key: Keccak-256 of x||y, last 20 bytes.
    (Parsed by hand: the layer carries no ASN.1 library, and the prefix of such a key is fixed.)"""
    key = bytes(public_key_der)
    if len(key) != len(SPKI_SECP256K1_PREFIX) + 65 or not key.startswith(SPKI_SECP256K1_PREFIX + b"\x04"):
        raise SignerError("the treasury key is not an uncompressed secp256k1 public key")
    return to_checksum_address(keccak(key[len(SPKI_SECP256K1_PREFIX) + 1:])[-20:])


def decode_der_signature(der: bytes) -> tuple[int, int]:
    """``(r, s)`` of a DER ECDSA signature: SEQUENCE { INTEGER r, INTEGER s } (short lengths: 72 bytes at most)."""
    data = bytes(der)

    def integer(at: int) -> tuple[int, int]:
        if data[at] != 0x02 or data[at + 1] > 33:
            raise SignerError("not a DER ECDSA signature")
        end = at + 2 + data[at + 1]
        return int.from_bytes(data[at + 2:end], "big"), end

    if len(data) < 8 or data[0] != 0x30 or data[1] != len(data) - 2:
        raise SignerError("not a DER ECDSA signature")
    r, after_r = integer(2)
    s, after_s = integer(after_r)
    if after_s != len(data) or not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignerError("not a DER ECDSA signature")
    return r, s


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
        r, s = decode_der_signature(answer["Signature"])
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
