"""An EIP-1559 (type 2) transaction calling ``transfer(to, amount)`` on an ERC-20, signed by digest.

Built by hand (RLP) so the signature can come from KMS: ``digest`` is what is signed, ``raw`` the bytes sent.
"""
from __future__ import annotations

from dataclasses import dataclass

import rlp
from eth_utils import keccak, to_bytes, to_canonical_address

from depu.payouts.kms_signer import Signature

TRANSFER_SELECTOR = keccak(text="transfer(address,uint256)")[:4]
TRANSFER_GAS = 90_000  # an ERC-20 transfer to a fresh holder costs ~52k; the rest is headroom


def transfer_calldata(to: str, amount: int) -> bytes:
    return TRANSFER_SELECTOR + to_canonical_address(to).rjust(32, b"\0") + int(amount).to_bytes(32, "big")


@dataclass(frozen=True)
class Transfer:
    chain_id: int
    nonce: int
    token: str
    to: str
    amount: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    gas: int = TRANSFER_GAS

    def _fields(self) -> list:
        return [self.chain_id, self.nonce, self.max_priority_fee_per_gas, self.max_fee_per_gas, self.gas,
                to_canonical_address(self.token), 0, transfer_calldata(self.to, self.amount), []]

    def digest(self) -> bytes:
        return keccak(b"\x02" + rlp.encode(self._fields()))

    def raw(self, signature: Signature) -> bytes:
        return b"\x02" + rlp.encode(self._fields() + [signature.v, signature.r, signature.s])


def tx_hash(raw: bytes) -> str:
    return "0x" + keccak(raw).hex()


def from_hex(value: str) -> bytes:
    return to_bytes(hexstr=value)
