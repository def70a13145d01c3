"""The few JSON-RPC calls a payout needs, one request each (payouts are rare; no batching, no rate limit)."""
from __future__ import annotations

from typing import Any

import requests

from depu.chain.rpc import RpcError

BALANCE_OF = "0x70a08231"


class Chain:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()

    def call(self, method: str, *params: Any) -> Any:
        response = self.session.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                      "params": list(params)}, timeout=self.timeout)
        response.raise_for_status()
        body = response.json()
        if "error" in body:
            raise RpcError(method, body["error"])
        return body.get("result")

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def pending_nonce(self, address: str) -> int:
        return int(self.call("eth_getTransactionCount", address, "pending"), 16)

    def fees(self) -> tuple[int, int]:
        """(max fee, priority fee) per gas: twice the latest base fee plus the node's suggested tip."""
        block = self.call("eth_getBlockByNumber", "latest", False) or {}
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        tip = int(self.call("eth_maxPriorityFeePerGas"), 16)
        return 2 * base + tip, tip

    def send_raw(self, raw_hex: str) -> str:
        return self.call("eth_sendRawTransaction", raw_hex)

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        return self.call("eth_getTransactionByHash", tx_hash)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.call("eth_getTransactionReceipt", tx_hash)

    def token_balance(self, token: str, holder: str) -> int:
        data = BALANCE_OF + holder.lower().removeprefix("0x").rjust(64, "0")
        return int(self.call("eth_call", {"to": token, "data": data}, "latest") or "0x0", 16)
