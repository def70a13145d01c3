"""Each shadow fork's own chain id, and what a signed transaction says about the chain it is for.

A fork that kept mainnet's chain id 1 would make every transaction a user signs on it valid on mainnet: the
journal keeps those raw transactions and hands them to hosts, and anyone who reads them could broadcast them
for real. So every fork gets its own id:

    7357 followed by the fork id's 32-bit number in ten decimal digits
    (fork f0000002a -> 73570000000042; the range is 73570000000000 .. 73574294967295)

- 7357 ("TEST") is the prefix Tenderly advises for chain ids of forks. The short ids in that family (7357,
  73571) are taken by public test networks, which is why DePU's have fourteen digits: no registered chain
  uses one in this range.
- Distinct per fork (fork ids are unique), so a transaction signed on one fork does not replay on another.
- Far below 4503599627370476, the largest chain id wallets accept (a JavaScript-safe integer bound), and well
  inside 64 bits, which is what anvil and the EIP-155 ``v`` arithmetic need.

"Keep mainnet's chain id" (1) is an explicit choice at creation, with a warning (see the bot).
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

import rlp

PREFIX = 7357
MAINNET = 1
_SPAN = 10**10
FIRST = PREFIX * _SPAN
_FORK_ID = re.compile(r"f([0-9a-f]{8})")


def for_fork(fork_id: str) -> int:
    """The chain id of fork ``fork_id`` (ids made by ``service.create_fork`` are 'f' + 8 hex digits)."""
    match = _FORK_ID.fullmatch(fork_id)
    number = int(match.group(1), 16) if match else int.from_bytes(hashlib.sha256(fork_id.encode()).digest()[:8], "big") % 2**32
    return FIRST + number


def is_forks(chain_id: int) -> bool:
    return FIRST <= int(chain_id) < FIRST + _SPAN


class RawTxRefused(ValueError):
    """Why a raw transaction may not go to this fork (the message is shown to the user as a JSON-RPC error)."""


def _number(item: Any) -> int:
    if not isinstance(item, bytes):
        raise RawTxRefused("malformed transaction: expected a number field")
    return int.from_bytes(item, "big")


def signed_chain_id(raw_hex: Any) -> int:
    """The chain id a raw signed transaction commits to, or RawTxRefused when it commits to none.

    Legacy transactions carry it in ``v`` (EIP-155: v = 35 + 2 * chainId + parity; 27/28 means unprotected,
    valid on every chain); typed envelopes 0x01 (EIP-2930), 0x02 (EIP-1559), 0x03 (EIP-4844, bare or in its
    network form with blobs) and 0x04 (EIP-7702) carry a chainId field first."""
    if not isinstance(raw_hex, str) or not raw_hex.startswith(("0x", "0X")):
        raise RawTxRefused("eth_sendRawTransaction takes the signed transaction as a 0x-prefixed hex string")
    try:
        raw = bytes.fromhex(raw_hex[2:])
    except ValueError:
        raise RawTxRefused("the raw transaction is not valid hex") from None
    if not raw:
        raise RawTxRefused("the raw transaction is empty")
    try:
        if raw[0] >= 0xC0:
            return _legacy_chain_id(rlp.decode(raw))
        kind, body = raw[0], rlp.decode(raw[1:])
    except rlp.exceptions.DecodingError:
        raise RawTxRefused("the raw transaction is not valid RLP") from None
    if not isinstance(body, list) or not body:
        raise RawTxRefused("malformed typed transaction")
    if kind == 0x03 and isinstance(body[0], list):
        body = body[0]  # network form: [tx_payload_body, blobs, commitments, proofs]
        if not body:
            raise RawTxRefused("malformed blob transaction")
    if kind not in (0x01, 0x02, 0x03, 0x04):
        raise RawTxRefused(f"unknown transaction type 0x{kind:02x}")
    chain_id = _number(body[0])
    if kind == 0x04:
        _check_authorizations(body, chain_id)
    return chain_id


def _legacy_chain_id(fields: Any) -> int:
    if not isinstance(fields, list) or len(fields) != 9:
        raise RawTxRefused("malformed legacy transaction")
    v = _number(fields[6])
    if v in (27, 28):
        raise RawTxRefused(
            "unprotected transaction (pre-EIP-155, no chain id): it would be valid on every chain, mainnet "
            "included, so DePU forks refuse it; sign with the fork's chain id"
        )
    if v < 35:
        raise RawTxRefused("malformed legacy transaction: bad v")
    return (v - 35) // 2


def _check_authorizations(body: list[Any], chain_id: int) -> None:
    """EIP-7702 authorizations are signatures of their own: one for chain 0 (any chain) or mainnet could be
    lifted from the journal and used on mainnet, so each must name the transaction's (the fork's) chain."""
    if len(body) < 10 or not isinstance(body[9], list):
        raise RawTxRefused("malformed EIP-7702 transaction")
    for authorization in body[9]:
        if not isinstance(authorization, list) or not authorization:
            raise RawTxRefused("malformed EIP-7702 authorization")
        if _number(authorization[0]) != chain_id:
            raise RawTxRefused(
                f"an EIP-7702 authorization is signed for chain id {_number(authorization[0])} (0 means every chain); "
                f"on this fork it must be signed for {chain_id}"
            )
