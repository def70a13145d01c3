"""Which JSON-RPC methods a DePU fork serves, which of them are journaled writes, and the proxy's limits.

Anything not listed is refused: admin methods (``anvil_reset``, ``anvil_dumpState``, ``anvil_setRpcUrl``...)
would let one user break the host or read the upstream URL. WebSocket subscriptions are not served (HTTP only).

Filters live on the fork's host: its front keeps them across the follow steps it makes itself
(agent/depu_agent/forkfront.py), and a rebuild or a state-machine rebase drops them, so an old filter id then
answers "filter not found", as any node that drops filters does, and the client creates a new one.

Traces are bounded (docs/security.md, "Fork traces"): only the tracers in ``TRACERS``, each call charged
``TRACE_COST`` from the fork's rate bucket, at most ``TRACE_TIMEOUT_S`` seconds and ``TRACE_MAX_BYTES`` of answer.
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

# filters: host-local, kept by the host's front across its own follow steps (see the module docstring)
FILTERS = frozenset(
    {
        "eth_newFilter", "eth_newBlockFilter", "eth_newPendingTransactionFilter", "eth_getFilterChanges",
        "eth_getFilterLogs", "eth_uninstallFilter",
    }
)

TRACES = frozenset({"debug_traceTransaction", "debug_traceCall", "trace_transaction", "trace_block"})
# debug_* tracers a fork runs: anvil's native ones. None is the struct logger (opcode by opcode, the biggest);
# JavaScript tracers are refused (arbitrary code on the host).
TRACERS = frozenset({None, "callTracer", "prestateTracer", "4byteTracer", "noopTracer"})
TRACE_COST = 20.0  # rate-bucket tokens per trace: a trace can cost the host far more than a read
TRACE_TIMEOUT_S = 20.0
TRACE_MAX_BYTES = 2 * 1024 * 1024

# DePU's own methods: funding an ERC-20 balance (depu.forks.erc20) and the host's follow status
ERC20_BALANCE = "depu_setErc20Balance"
FOLLOW_STATUS = "depu_followStatus"
OWN_METHODS = frozenset({ERC20_BALANCE, "tenderly_setErc20Balance", FOLLOW_STATUS})

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
    return (method in READS or method in WRITES or method == REVERT or method in FILTERS or method in TRACES
            or method in OWN_METHODS)


def tracer_refused(method: str, params: list) -> str | None:
    """Why this trace request is not run on a fork (a tracer outside ``TRACERS``), or None."""
    if not method.startswith("debug_"):
        return None
    options = params[1] if method == "debug_traceTransaction" and len(params) > 1 else (
        params[2] if method == "debug_traceCall" and len(params) > 2 else None)
    if options is None:
        return None
    if not isinstance(options, dict):
        return "the trace options must be an object"
    tracer = options.get("tracer")
    if tracer not in TRACERS:
        names = ", ".join(sorted(t for t in TRACERS if t))
        return f"tracer {str(tracer)[:40]!r} is not available on DePU forks (use one of {names}, or none for opcode logs)"
    return None


def fork_buckets(rate: float = RATE_PER_SECOND, burst: float = BURST) -> KeyedBuckets:
    """The proxy's per-fork rate limit: a bucket per fork id that refuses (never waits) when it runs dry.

    Why in memory and not in DynamoDB: a DynamoDB bucket costs a conditional write on every call, doubling the
    proxy's latency for reads; per-container buckets are free and, with API Gateway's throttling in front,
    bound a fork to RATE_PER_SECOND times the number of warm containers serving it (few, for one user).
    """
    return KeyedBuckets(rate, burst)
