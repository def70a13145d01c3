"""The KMS signer's own parsing (no ASN.1 library in the layer), checked against cryptography's, and its
signatures against the treasury key in moto's KMS: low s, a v that recovers the treasury address."""
from __future__ import annotations

import os

import boto3
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from eth_keys import keys

from depu.config import get_settings
from depu.payouts.kms_signer import SECP256K1_N, KmsSigner, SignerError, address_of, decode_der_signature


def test_der_signatures_and_public_keys_parse_like_cryptography() -> None:
    for _ in range(100):
        key = ec.generate_private_key(ec.SECP256K1())
        signature = key.sign(os.urandom(32), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        assert decode_der_signature(signature) == utils.decode_dss_signature(signature)
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        private = keys.PrivateKey(key.private_numbers().private_value.to_bytes(32, "big"))
        assert address_of(der) == private.public_key.to_checksum_address()


@pytest.mark.parametrize("der", [b"", b"\x30\x02\x02\x00", b"\x30\x06\x02\x01\x00\x02\x01\x01", b"\x31" + b"\x00" * 70])
def test_malformed_signatures_are_refused(der: bytes) -> None:
    with pytest.raises(SignerError):
        decode_der_signature(der)


def test_a_p256_key_is_not_taken_for_the_treasury() -> None:
    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SignerError):
        address_of(der)


def test_kms_signatures_are_low_s_and_recover_the_treasury_address(aws) -> None:
    signer = KmsSigner(get_settings().treasury_key_id, boto3.client("kms"))
    for _ in range(20):
        digest = os.urandom(32)
        signature = signer.sign_digest(digest)
        assert signature.s <= SECP256K1_N // 2 and signature.v in (0, 1)
        recovered = keys.Signature(vrs=(signature.v, signature.r, signature.s)).recover_public_key_from_msg_hash(digest)
        assert recovered.to_checksum_address() == signer.address
