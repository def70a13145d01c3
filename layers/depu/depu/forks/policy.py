"""Which JSON-RPC methods a DePU fork serves, which of them are journaled writes, and the proxy's limits.

Anything not listed is refused: admin methods (``anvil_reset``, ``anvil_dumpState``, ``anvil_setRpcUrl``...)
would let one user break the host or read the upstream URL, and filters/subscriptions hold host-local state a
rebuild would lose.
"""
from __future__ import annotations

from depu.ratelimit import KeyedBuckets

READS = frozenset(
    {
        "web3_clientVersion", "net_version", "net_listening", "eth_chainId", "eth_blockNumber", "eth_syncing",
        "eth_accounts", "eth_gasPrice", "eth_maxPriorityFeePerGas", "eth_feeHistory", "eth_blobBaseFee",
        "eth_getBalance", "eth_getCode", "eth_getStorageAt", "eth_getTransactionCount", "eth_getProof",
        "eth_call", "eth_estimateGas", "eth_createAccessList", "eth_getLogs",
        "eth_getBlockByNumber", "eth_getBlockByHash", "eth_getBlockReceipts",
        "eth_getBlockTransactionCountByNumber", "eth_getBlockTransactionCountByHash",
        "eth_getTransactionByHash", "eth_getTransactionReceipt",
        "eth_getTransactionByBlockNumberAndIndex", "eth_getTransactionByBlockHashAndIndex",
        "eth_getUncleCountByBlockNumber", "eth_getUncleCountByBlockHash",
    }
)

# user-facing name -> the canonical name journaled and sent to anvil (hardhat_* are aliases)
WRITES = {
    "eth_sendRawTransaction": "eth_sendRawTransaction",
    "eth_sendTransaction": "eth_sendTransaction",
    "anvil_setBalance": "anvil_setBalance",
    "hardhat_setBalance": "anvil_setBalance",
    "anvil_setStorageAt": "anvil_setStorageAt",
    "hardhat_setStorageAt": "anvil_setStorageAt",
    "anvil_setCode": "anvil_setCode",
    "hardhat_setCode": "anvil_setCode",
    "anvil_impersonateAccount": "anvil_impersonateAccount",
    "hardhat_impersonateAccount": "anvil_impersonateAccount",
    "anvil_stopImpersonatingAccount": "anvil_stopImpersonatingAccount",
    "hardhat_stopImpersonatingAccount": "anvil_stopImpersonatingAccount",
    "anvil_mine": "anvil_mine",
    "hardhat_mine": "anvil_mine",
    "evm_mine": "evm_mine",
    "evm_increaseTime": "evm_increaseTime",
    "evm_setNextBlockTimestamp": "evm_setNextBlockTimestamp",
    "evm_snapshot": "evm_snapshot",
}
REVERT = "evm_revert"

MAX_BODY_BYTES = 128 * 1024
MAX_BATCH = 50
# Per fork, per proxy container (see TokenBucket): API Gateway's stage throttling caps the total.
RATE_PER_SECOND = 200.0
BURST = 400.0

METHOD_NOT_ALLOWED = -32601
INVALID_REQUEST = -32600
PARSE_ERROR = -32700
INVALID_PARAMS = -32602
LIMIT_EXCEEDED = -32005
FORK_UNAVAILABLE = -32003
UNAUTHORIZED = -32001
WRONG_CHAIN = -32000  # a raw transaction not signed for this fork's chain id (geth answers invalid chain id so)


def canonical_write(method: str) -> str | None:
    return WRITES.get(method)


def is_allowed(method: str) -> bool:
    return method in READS or method in WRITES or method == REVERT


def fork_buckets(rate: float = RATE_PER_SECOND, burst: float = BURST) -> KeyedBuckets:
    """The proxy's per-fork rate limit: a bucket per fork id that refuses (never waits) when it runs dry.

    Why in memory and not in DynamoDB: a DynamoDB bucket costs a conditional write on every call, doubling the
    proxy's latency for reads; per-container buckets are free and, with API Gateway's throttling in front,
    bound a fork to RATE_PER_SECOND times the number of warm containers serving it (few, for one user).
    """
    return KeyedBuckets(rate, burst)
