"""Make moto's KMS sign a ``MessageType=DIGEST`` message the way AWS KMS does: as the digest itself.

moto hashes every message again (its docs say DIGEST is not implemented), which would give a signature over
sha256(digest). DePU's payout worker hands KMS a Keccak-256 transaction digest and must get a signature of
exactly that digest, so the local AWS needs the real behaviour. Installed by ``local.moto_server`` before the
server starts.
"""
from __future__ import annotations

import base64
import json

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from moto.kms.responses import KmsResponse
    from moto.kms.utils import ECDSAPrivateKey

    original = KmsResponse.sign
    digest_sizes = {"ECDSA_SHA_256": (32, hashes.SHA256()), "ECDSA_SHA_384": (48, hashes.SHA384()),
                    "ECDSA_SHA_512": (64, hashes.SHA512())}

    def sign(self: KmsResponse) -> str:
        if self._get_param("MessageType") != "DIGEST":
            return original(self)
        key = self.kms_backend.describe_key(self._get_param("KeyId"))
        algorithm = self._get_param("SigningAlgorithm")
        message = self._get_param("Message")  # moto's parser has already base64-decoded the blob
        if isinstance(message, str):
            message = message.encode("latin-1")
        if not isinstance(key.private_key, ECDSAPrivateKey) or algorithm not in digest_sizes:
            return original(self)
        size, hash_algorithm = digest_sizes[algorithm]
        if len(message) != size:
            from moto.kms.exceptions import ValidationException

            raise ValidationException(f"Digest is invalid length for algorithm {algorithm}.")
        signature = key.private_key.private_key.sign(message, ec.ECDSA(utils.Prehashed(hash_algorithm)))
        return json.dumps({"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(),
                           "SigningAlgorithm": algorithm})

    KmsResponse.sign = sign
    _installed = True
