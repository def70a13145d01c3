"""The arithmetic of a hardware challenge, in pure Python: what the server recomputes to check an agent.

The agent (agent/depu_agent/challenge.py) computes the same thing with torch on its device; both must agree
bit for bit, so this module is the specification and tests compare the two.

Per device ``d`` of a challenge with seed ``s``, size ``n`` and chain length ``k``:

* ``A`` (n×n) has entries in {-1, 0, 1}; ``B_t`` (t = 1..k) has integer entries in [-R, R] with
  R = min(4095, (2**24 - 1) // n). Entry (i, j) of a matrix with 32-bit key K is ``mix(mix(K ^ i) ^ j)``,
  mapped into that range; the keys come from sha256(seed, label), so nothing can be computed before the seed
  is known and any single entry costs the server two integer mixes.
* ``G_0 = A``; ``C_t = G_{t-1} · B_t``; ``G_t = (C_t mod 3) - 1``. Every partial sum is below 2**24, so the
  products are exact in float32 (no rounding tolerance needed), and each step needs the whole previous one,
  so the chain cannot be skipped.
* The commitment is a Merkle root (sha256) over every row of every ``G_t``, each row packed 4 entries a
  byte. To check entry (i, j) of step t the server needs row i of ``G_{t-1}`` (revealed with its proof, or
  regenerated when t = 1) and column j of ``B_t``: one dot product of length n.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

MASK32 = 0xFFFFFFFF
MIX = 0x45D9F3B  # < 2**27, so x * MIX stays below 2**59 and the torch side can do it in int64
MAX_R = 4095
EXACT_LIMIT = 2**24 - 1  # float32 holds every integer up to 2**24 exactly
MEMORY_MASK = 0x7FFFFFFF
EMPTY = bytes(32)


def mix(x: int) -> int:
    x &= MASK32
    x = (((x >> 16) ^ x) * MIX) & MASK32
    x = (((x >> 16) ^ x) * MIX) & MASK32
    return (x >> 16) ^ x


def key(seed: str, label: str) -> int:
    """The 32-bit key of one matrix (or memory region) of a challenge."""
    return int.from_bytes(hashlib.sha256(bytes.fromhex(seed) + label.encode()).digest()[:4], "big")


def a_label(device: int) -> str:
    return f"A{device}"


def b_label(device: int, step: int) -> str:
    return f"B{device}.{step}"


def memory_label(device: int) -> str:
    return f"M{device}"


def value_range(n: int) -> int:
    return min(MAX_R, EXACT_LIMIT // n)


def raw(k: int, i: int, j: int) -> int:
    return mix(mix(k ^ i) ^ j)


def a_entry(k: int, i: int, j: int) -> int:
    return raw(k, i, j) % 3 - 1


def b_entry(k: int, i: int, j: int, r: int) -> int:
    return raw(k, i, j) % (2 * r + 1) - r


MEMORY_STRIDE = 0x9E3779B1  # odd; offset * stride < 2**58 for any chunk of up to 2**26 int32 values


def memory_value(k: int, chunk: int, offset: int) -> int:
    """What the agent wrote at ``offset`` (in int32 elements) of memory chunk ``chunk``: a per-chunk start from
    the seed plus a stride, so the GPU fills memory at close to its bandwidth (one pass, no hashing per value)."""
    return (mix(k ^ chunk) + offset * MEMORY_STRIDE) & MEMORY_MASK


def pack_row(values: Sequence[int]) -> bytes:
    """Entries in {-1, 0, 1}, four to a byte (lowest bits first)."""
    out = bytearray(len(values) // 4)
    for index in range(0, len(values) - len(values) % 4, 4):
        out[index // 4] = ((values[index] + 1) | (values[index + 1] + 1) << 2 | (values[index + 2] + 1) << 4
                           | (values[index + 3] + 1) << 6)
    return bytes(out)


def unpack_row(packed: bytes, n: int) -> list[int] | None:
    """The row's entries, or None if ``packed`` is not a valid packing of n entries."""
    if len(packed) * 4 != n:
        return None
    values = []
    for byte in packed:
        for shift in (0, 2, 4, 6):
            code = (byte >> shift) & 3
            if code == 3:
                return None
            values.append(code - 1)
    return values


def leaf(device: int, step: int, row: int, packed: bytes) -> bytes:
    return hashlib.sha256(b"depu-row" + device.to_bytes(2, "big") + step.to_bytes(4, "big")
                          + row.to_bytes(4, "big") + packed).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf_index(step: int, row: int, n: int) -> int:
    return (step - 1) * n + row


def verify_proof(root: bytes, index: int, leaf_hash: bytes, proof: Sequence[bytes], leaves: int) -> bool:
    """Does ``proof`` (sibling hashes, bottom up) lead from leaf ``index`` of a tree of ``leaves`` to root?"""
    if leaves <= 0 or leaves & (leaves - 1) or len(proof) != leaves.bit_length() - 1:
        return False
    current = leaf_hash
    for sibling in proof:
        current = node(sibling, current) if index & 1 else node(current, sibling)
        index >>= 1
    return current == root


def a_row(seed: str, device: int, row: int, n: int) -> list[int]:
    k = key(seed, a_label(device))
    return [a_entry(k, row, j) for j in range(n)]


def chain_entry(seed: str, device: int, step: int, previous_row: Sequence[int], column: int, n: int) -> int:
    """Entry (i, column) of G_step, given row i of G_{step-1}: one dot product of length n."""
    k = key(seed, b_label(device, step))
    r = value_range(n)
    total = 0
    for index, value in enumerate(previous_row):
        if value:
            total += value * b_entry(k, index, column, r)
    return total % 3 - 1
