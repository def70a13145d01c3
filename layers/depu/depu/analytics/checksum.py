"""EIP-55 mixed-case checksums, checked only when a user types a mixed-case address (web3 stays out of the
webhook's imports; keccak comes from eth_hash, which web3 installs and which is cheap to import)."""
from __future__ import annotations


def _keccak_hex(text: str) -> str:
    from eth_hash.auto import keccak

    return keccak(text.encode()).hex()


def to_checksum(address: str) -> str:
    body = address.lower().removeprefix("0x")
    digest = _keccak_hex(body)
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(body))


def is_checksum_valid(address: str) -> bool:
    return to_checksum(address) == address
