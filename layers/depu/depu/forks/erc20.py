"""Give an address N units of any ERC-20 token on a fork: ``depu_setErc20Balance(token, holder, amount)``.

Tokens keep balances in a mapping, at ``keccak(holder . slot)`` (Solidity) or ``keccak(slot . holder)`` (Vyper),
with ``slot`` the mapping's position in the contract's storage, which differs from token to token. So the slot
is found by probing, without changing the fork: ``eth_call balanceOf(holder)`` with a state override that puts a
probe value in a candidate slot; the slot whose probe ``balanceOf`` returns exactly (for two different probes)
is the balance. Then the balance is written with one ``anvil_setStorageAt``, which goes through the proxy's
write path: journaled like any write, so it survives rebases and rebuilds (the slot does not move with the
chain's head).

Where that cannot work the user is told so and nothing is written: a token whose ``balanceOf`` is computed
rather than stored (rebasing or share-based tokens such as stETH or aTokens, where balance = shares × rate), a
proxy whose balances live somewhere no probed slot reaches, or an address that is not a token at all.
``totalSupply`` is left as it is (as other fork tools do).
"""
from __future__ import annotations

from typing import Any

from depu.forks import policy

# the proxy calls this module with itself (its _forward and _write), so nothing here imports depu.forks.proxy
ForkProxy = Any
Fork = Any

BALANCE_OF = "70a08231"
MAX_SLOT = 60  # mapping positions tried, for each layout
PROBES = (0x1D0E_5EED_0000_0001, 0x2B1D_5EED_0000_0002)
MAX_AMOUNT = 2**256 - 1


class Erc20Refused(ValueError):
    """Why a token's balance cannot be set; ``invalid`` marks bad parameters (a JSON-RPC -32602)."""

    def __init__(self, message: str, invalid: bool = False):
        super().__init__(message)
        self.invalid = invalid


def _address(value: Any, name: str) -> str:
    text = str(value or "").strip().lower()
    if len(text) != 42 or not text.startswith("0x") or any(c not in "0123456789abcdef" for c in text[2:]):
        raise Erc20Refused(f"{name} must be an address (0x and 40 hex digits)", invalid=True)
    return text


def _amount(value: Any) -> int:
    if isinstance(value, bool):
        raise Erc20Refused("the amount must be a number of the token's smallest units", invalid=True)
    try:
        number = value if isinstance(value, int) else (int(value, 16) if str(value).lower().startswith("0x") else int(str(value)))
    except (TypeError, ValueError):
        raise Erc20Refused("the amount must be a number of the token's smallest units (hex or decimal)", invalid=True) from None
    if not 0 <= number <= MAX_AMOUNT:
        raise Erc20Refused("the amount must fit in uint256", invalid=True)
    return number


def slot_key(holder: str, position: int, vyper: bool = False) -> str:
    """The storage key of ``holder``'s entry in a mapping at ``position``."""
    from eth_utils import keccak

    address = bytes(12) + bytes.fromhex(holder[2:])
    index = position.to_bytes(32, "big")
    return "0x" + keccak(index + address if vyper else address + index).hex()


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


class _Probe:
    def __init__(self, proxy: ForkProxy, fork: Fork, token: str, holder: str):
        self.proxy, self.fork, self.token = proxy, fork, token
        self.data = "0x" + BALANCE_OF + "00" * 12 + holder[2:]

    def balance(self, overrides: dict[str, str] | None = None) -> int | None:
        params: list[Any] = [{"to": self.token, "data": self.data}, "latest"]
        if overrides:
            params.append({self.token: {"stateDiff": overrides}})
        answer = self.proxy._forward(self.fork, "eth_call", params, 0)
        result = answer.get("result")
        if not isinstance(result, str) or len(result) < 66:
            return None
        return int(result[:66], 16)


def find_slot(proxy: ForkProxy, fork: Fork, token: str, holder: str) -> str:
    """The storage key that holds ``holder``'s balance of ``token``; Erc20Refused when there is none."""
    probe = _Probe(proxy, fork, token, holder)
    if probe.balance() is None:
        raise Erc20Refused(f"{token} does not answer balanceOf on this fork: it is not an ERC-20 token here")
    moved = False
    for position in range(MAX_SLOT):
        for vyper in (False, True):
            key = slot_key(holder, position, vyper)
            first = probe.balance({key: _word(PROBES[0])})
            if first == PROBES[0] and probe.balance({key: _word(PROBES[1])}) == PROBES[1]:
                return key
            if first not in (None, PROBES[0]) and first != probe.balance():
                moved = True  # the slot feeds balanceOf, but not as the balance itself
    if moved:
        raise Erc20Refused(f"{token}'s balanceOf is computed from storage (a rebasing or share-based token), not "
                           "stored: DePU cannot set it to an exact amount. Fund the account with ETH and acquire the "
                           "token through its own contract instead.")
    raise Erc20Refused(f"{token}'s balances are not in a storage mapping DePU can find (checked {MAX_SLOT} positions "
                       "in both Solidity and Vyper layouts): it may be a rebasing token, or keep balances elsewhere.")


def set_balance_call(proxy: ForkProxy, fork: Fork, request_id: Any, params: list[Any]) -> dict[str, Any]:
    """The JSON-RPC method: params ``[token, holder, amount]``; the result names the slot and the new balance."""
    def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}

    def result(request_id: Any, value: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request_id, "result": value}

    try:
        if len(params) < 3:
            raise Erc20Refused("depu_setErc20Balance takes [token, holder, amount]", invalid=True)
        token, holder, amount = _address(params[0], "token"), _address(params[1], "holder"), _amount(params[2])
        key = find_slot(proxy, fork, token, holder)
    except Erc20Refused as refused:
        return error(request_id, policy.INVALID_PARAMS, str(refused))
    written = proxy._write(fork, request_id, "anvil_setStorageAt", [token, key, _word(amount)])
    if "error" in written:
        return written
    balance = _Probe(proxy, fork, token, holder).balance()
    if balance != amount:
        return error(request_id, policy.INVALID_PARAMS, f"{token}'s balance reads {balance} after the write, not {amount}")
    return result(request_id, {"token": token, "holder": holder, "slot": key, "balance": hex(amount)})
